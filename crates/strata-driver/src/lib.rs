//! Strata's layer store and graph drivers.
//!
//! A [`Store`] keeps one directory per layer under a private home and makes
//! a layer visible only once it is complete (built in `staging/`, synced,
//! renamed into place); removals rename to `<id>-removing` first and
//! [`Store::cleanup`] finishes whatever a crash interrupted. Drivers
//! implement the [`Driver`] trait (the graph-driver contract) over it and
//! register by name; [`open`] picks one by name or by priority.
//!
//! ```no_run
//! use strata_driver::{LayerId, CreateOpts};
//! let driver = strata_driver::open(Some("vfs"), "/tmp/strata-home".as_ref(), &[])?;
//! let base = LayerId::new("base")?;
//! driver.create(&base, None, &CreateOpts::default())?;
//! let dir = driver.get(&base, "")?;
//! println!("layer is at {}", dir.display());
//! driver.put(&base)?;
//! # Ok::<(), strata_driver::DriverError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backing;
mod digest;
mod driver;
mod error;
mod id;
mod options;
mod pipeline;
mod store;
pub mod vfs;

use std::path::Path;

pub use driver::{ApplyResult, Capabilities, Change, ChangeKind, Driver, FileGetter};
pub use error::{DriverError, Result};
pub use id::{LayerId, MAX_ID_LEN};
pub use options::{CreateOpts, StorageOpts, parse_size, parse_storage_opts};
pub use store::{CleanupReport, ImportInfo, LayerKind, LayerLock, LayerMeta, Staging, Store};

/// Registered drivers, in priority order for automatic choice.
pub const DRIVERS: &[&str] = &[vfs::NAME];

/// Opens the driver `name` on `home`, or, with no name, the first driver
/// in priority order that can work there.
pub fn open(name: Option<&str>, home: &Path, options: &[String]) -> Result<Box<dyn Driver>> {
    match name {
        Some(vfs::NAME) | None => Ok(Box::new(vfs::VfsDriver::open(home, options)?)),
        Some(other) => Err(DriverError::Unusable {
            driver: "strata",
            home: home.display().to_string(),
            reason: format!(
                "unknown driver {other:?} (available: {})",
                DRIVERS.join(", ")
            ),
        }),
    }
}
