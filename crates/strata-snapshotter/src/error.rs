//! The snapshotter's error type. Every variant names the snapshot key (and
//! the layer or file where one is involved); [`SnapshotError::code`] gives
//! the gRPC code containerd's own snapshotters answer with in the same
//! situation, since containerd branches on the code (`errdefs.FromGRPC`):
//! NotFound, AlreadyExists, FailedPrecondition and InvalidArgument.

use std::io;

use strata_driver::DriverError;
use strata_snapshots_api::tonic::{Code, Status};

/// An error from a snapshotter operation.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot has this key or name.
    #[error("snapshot {key:?}: not found")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The parent named for a new snapshot does not exist.
    #[error("snapshot {key:?}: parent {parent:?} not found")]
    ParentNotFound {
        /// The snapshot being created.
        key: String,
        /// The missing parent.
        parent: String,
    },
    /// The key or name is taken (keys and names share one namespace).
    #[error("snapshot {key:?}: already exists")]
    AlreadyExists {
        /// The key or name.
        key: String,
    },
    /// The parent named for a new snapshot is active or a view.
    #[error("snapshot {key:?}: parent {parent:?} is not a committed snapshot")]
    ParentNotCommitted {
        /// The snapshot being created.
        key: String,
        /// The parent.
        parent: String,
    },
    /// Only an active snapshot can be committed.
    #[error("snapshot {key:?} is not active (it is {kind})")]
    NotActive {
        /// The key.
        key: String,
        /// Its kind.
        kind: &'static str,
    },
    /// A committed snapshot has no mounts of its own.
    #[error("snapshot {key:?} is committed: only active snapshots and views have mounts")]
    NoMounts {
        /// The key.
        key: String,
    },
    /// A snapshot with children cannot be removed.
    #[error("snapshot {key:?}: cannot remove snapshot with child ({children})")]
    HasChildren {
        /// The key.
        key: String,
        /// Some of its children's keys.
        children: String,
    },
    /// An argument is malformed (empty key, oversized label, bad size
    /// label, immutable field in an update mask, bad filter).
    #[error("{what}: {reason}")]
    InvalidArgument {
        /// What was refused, naming the key, label or filter.
        what: String,
        /// Why.
        reason: String,
    },
    /// The store's layer for a snapshot could not be created, read,
    /// changed or removed.
    #[error("snapshot {key:?} (layer {layer}): {source}")]
    Layer {
        /// The snapshot's key (or `(cleanup)` for a sweep).
        key: String,
        /// The layer id.
        layer: String,
        /// The driver's error (names the path).
        #[source]
        source: Box<DriverError>,
    },
    /// The metadata database failed.
    #[error("snapshot metadata {path}: {what}: {source}")]
    Db {
        /// The database file.
        path: String,
        /// What was being done.
        what: String,
        /// SQLite's error.
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// The metadata database holds something this version cannot read.
    #[error("snapshot metadata {path}: {reason}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file operation outside the store's layers failed (the socket, the
    /// database directory, a usage walk).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl SnapshotError {
    /// An I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        SnapshotError::Io {
            what: what.into(),
            source: source.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        SnapshotError::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A layer error for snapshot `key`.
    pub fn layer(key: &str, layer: impl ToString, source: DriverError) -> Self {
        SnapshotError::Layer {
            key: key.to_string(),
            layer: layer.to_string(),
            source: Box::new(source),
        }
    }

    /// The gRPC code containerd's own snapshotters use for this case.
    pub fn code(&self) -> Code {
        match self {
            SnapshotError::NotFound { .. } | SnapshotError::ParentNotFound { .. } => Code::NotFound,
            SnapshotError::AlreadyExists { .. } => Code::AlreadyExists,
            SnapshotError::ParentNotCommitted { .. } | SnapshotError::InvalidArgument { .. } => {
                Code::InvalidArgument
            }
            SnapshotError::NotActive { .. }
            | SnapshotError::NoMounts { .. }
            | SnapshotError::HasChildren { .. } => Code::FailedPrecondition,
            SnapshotError::Layer { source, .. } => match **source {
                DriverError::NotFound { .. } | DriverError::MissingParent { .. } => Code::NotFound,
                DriverError::InvalidOption { .. } | DriverError::InvalidId { .. } => {
                    Code::InvalidArgument
                }
                DriverError::HasChildren { .. } | DriverError::Busy { .. } => {
                    Code::FailedPrecondition
                }
                _ => Code::Internal,
            },
            SnapshotError::Db { .. } | SnapshotError::Corrupt { .. } | SnapshotError::Io { .. } => {
                Code::Internal
            }
        }
    }
}

impl From<SnapshotError> for Status {
    fn from(e: SnapshotError) -> Status {
        // The whole chain in one line: containerd shows only the message.
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let s = c.to_string();
            if !msg.contains(&s) {
                msg = format!("{msg}: {s}");
            }
            cause = c.source();
        }
        Status::new(e.code(), msg)
    }
}

/// Result alias for snapshotter operations.
pub type Result<T> = std::result::Result<T, SnapshotError>;
