//! Strata as a Docker graph-driver plugin: `dockerd --experimental
//! --storage-driver=NAME` then keeps every image and container layer in a
//! Strata store.
//!
//! The protocol (../shared/docs/docker-graphdriver.md §2) is JSON over
//! HTTP/1.1 on a unix socket, every call a `POST /<Endpoint>`; two calls
//! stream raw tars (`ApplyDiff`'s request, `Diff`'s reply). This crate maps
//! it onto [`strata_driver::Driver`]: [`protocol`] holds the wire format
//! (pure, tested without a socket), [`Plugin`] the driver state and the
//! synchronous calls, [`serve`] the server, and [`socket`] how dockerd
//! finds it (socket, spec file).
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_plugin::PluginError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! let mut socket = strata_plugin::socket::bind("/run/docker/plugins/strata.sock".as_ref())?;
//! let listener = tokio::net::UnixListener::from_std(socket.take_listener().expect("fresh socket"))
//!     .expect("inside a tokio runtime");
//! let plugin = Arc::new(strata_plugin::Plugin::new(strata_plugin::Config::default())?);
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! strata_plugin::serve(listener, plugin, stop, Duration::from_secs(10)).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod plugin;
pub mod protocol;
mod server;
pub mod socket;

pub use error::PluginError;
pub use plugin::{Config, Plugin};
pub use server::serve;
