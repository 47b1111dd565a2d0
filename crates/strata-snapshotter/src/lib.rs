//! Strata's store as a containerd snapshotter: the
//! `containerd.services.snapshots.v1.Snapshots` gRPC service on a unix
//! socket, which containerd uses as a proxy plugin
//! (`[proxy_plugins.strata] type = "snapshot"`).
//!
//! Snapshots are layers of the overlay driver's store (`ctrd-<n>`), next
//! to the Docker plugin's, so one `strata` process can serve both over one
//! home and `strata ls` lists them with their containerd names
//! ([`names`]). Their containerd metadata (key, kind, parent, labels,
//! times) lives in SQLite beside the layers. containerd mounts what
//! [`Snapshotter::prepare`] and friends return itself: a bind mount for a
//! snapshot without parents, else one overlay mount whose upper dir
//! containerd writes layer tars into directly.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use strata_driver::overlay::OverlayDriver;
//! let driver = OverlayDriver::open_shared("/var/lib/strata".as_ref(), &[])?;
//! let snap = Arc::new(strata_snapshotter::Snapshotter::open(driver)?);
//! let listener = strata_snapshotter::bind("/run/strata/containerd.sock".as_ref())?;
//! strata_snapshotter::serve(listener, snap, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod db;
mod error;
pub mod filter;
mod model;
mod service;
mod snapshotter;
mod usage;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_snapshots_api::SnapshotsServer;
use strata_snapshots_api::tonic;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use db::{DB_DIR, DB_FILE};
pub use error::{Result, SnapshotError};
pub use model::{Info, Kind, Labels, MAX_LABEL_SIZE, Mount, SIZE_LABEL, Usage};
pub use service::Service;
pub use snapshotter::{
    CleanupReport, LAYER_PREFIX, PendingRemoval, SnapshotName, Snapshotter, mounts_for, names,
};
pub use usage::disk_usage;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("containerd snapshotter service: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds the unix socket at `path` for [`serve`], mode 0600 (only root
/// can connect). A stale socket left by a dead server is replaced; a
/// socket something still listens on, or any other file, is refused.
/// Missing parent directories are created. Call it inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let io_err =
        |what: &str, e: io::Error| SnapshotError::io(format!("{what} {}", path.display()), e);
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io_err(
                        "socket in use",
                        io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another server is listening on it",
                        ),
                    ));
                }
                Err(_) => {
                    std::fs::remove_file(path).map_err(|e| io_err("remove stale socket", e))?
                }
            }
        }
        Ok(_) => {
            return Err(io_err(
                "bind",
                io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| SnapshotError::io(format!("create {}", dir.display()), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io_err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("chmod", e))?;
    Ok(listener)
}

/// How long [`serve`] waits after `shutdown` for clients to hang up.
/// containerd keeps its connection open for good, so a server that waited
/// for it would never stop; calls in flight get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the Snapshots service over `snap` on `listener` until
/// `shutdown` completes, then stops accepting, asks clients to go away
/// and returns once they have, or after [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: UnixListener,
    snap: Arc<Snapshotter>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::result::Result<(), ServeError> {
    let (begun, grace) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service::new(snap)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.await;
            let _ = begun.send(());
        });
    tokio::select! {
        r = server => r?,
        () = async {
            if grace.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::info!("containerd snapshotter: clients still connected after the grace period; closing");
        }
    }
    Ok(())
}
