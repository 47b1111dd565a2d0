//! The driver's error type. Each variant names the layer (and, through its
//! source, the path) so that an engine or a person can tell what failed;
//! the variants callers branch on (not found, exists, busy, ...) are typed
//! so protocol front ends can map them to their own codes.

use std::io;

/// An error from a driver operation.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// An id failed validation at the edge.
    #[error("invalid layer id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// No complete layer has this id.
    #[error("layer {id}: not found")]
    NotFound {
        /// The missing layer.
        id: String,
    },
    /// A layer with this id already exists.
    #[error("layer {id}: already exists")]
    AlreadyExists {
        /// The existing layer.
        id: String,
    },
    /// The parent named for a new layer does not exist.
    #[error("layer {id}: cannot create layer with missing parent {parent}")]
    MissingParent {
        /// The layer being created.
        id: String,
        /// The parent that is not there.
        parent: String,
    },
    /// The layer has children and cannot be removed.
    #[error("layer {id}: has children ({children}); remove them first")]
    HasChildren {
        /// The layer.
        id: String,
        /// Its children, comma-separated.
        children: String,
    },
    /// The layer is mounted or otherwise held.
    #[error("layer {id}: in use ({reason})")]
    Busy {
        /// The layer.
        id: String,
        /// What holds it.
        reason: String,
    },
    /// A storage option was unknown or malformed.
    #[error("layer {id}: storage option {option:?}: {reason}")]
    InvalidOption {
        /// The layer being created.
        id: String,
        /// The option as given (`key=value`).
        option: String,
        /// Why it was refused.
        reason: String,
    },
    /// The driver cannot do this at all.
    #[error("layer {id}: {what} is not supported by the {driver} driver")]
    NotSupported {
        /// The layer concerned.
        id: String,
        /// The driver's name.
        driver: &'static str,
        /// What was asked.
        what: String,
    },
    /// The driver cannot work on this home.
    #[error("driver {driver} cannot use home {home}: {reason}")]
    Unusable {
        /// The driver's name.
        driver: &'static str,
        /// The home directory.
        home: String,
        /// Why not (names the backing filesystem where relevant).
        reason: String,
    },
    /// Applying a tar stream failed.
    #[error("layer {id}: import failed: {source}")]
    Apply {
        /// The layer being written.
        id: String,
        /// The applier's error (names the tar entry).
        #[source]
        source: strata_layer::ApplyError,
    },
    /// An expected digest is not `sha256:` and 64 lowercase hex digits.
    #[error("layer {id}: invalid expected digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The layer being imported.
        id: String,
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The imported stream does not have the expected digest; the layer
    /// was not created.
    #[error("layer {id}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The layer being imported.
        id: String,
        /// The digest asked for.
        expected: String,
        /// The stream's digests (the tar's, and the blob's if compressed).
        actual: String,
    },
    /// Computing changes or writing a diff failed.
    #[error("layer {id}: {source}")]
    Export {
        /// The layer being read.
        id: String,
        /// The exporter's error (names the path).
        #[source]
        source: strata_layer::ExportError,
    },
    /// Replaying an imported layer's exact bytes failed (a file changed on
    /// disk, or the record is damaged).
    #[error("layer {id}: exact export: {source}")]
    Replay {
        /// The layer.
        id: String,
        /// The replay error (names the file).
        #[source]
        source: strata_tar::ReplayError,
    },
    /// A file operation inside a layer failed.
    #[error("layer {id}: {source}")]
    Fs {
        /// The layer.
        id: String,
        /// The failing operation (names the path).
        #[source]
        source: strata_fs::FsError,
    },
    /// Mounting or unmounting a layer's view failed.
    #[error("layer {id}: {source}")]
    Mount {
        /// The layer.
        id: String,
        /// The mount error (names the step, option and the kernel's text).
        #[source]
        source: strata_fs::mount::MountError,
    },
    /// A size-limited sandbox could not be made, mounted or released.
    #[error("layer {id}: {source}")]
    Sandbox {
        /// The layer.
        id: String,
        /// The sandbox error (names the image, device or mount point).
        #[source]
        source: strata_fs::SandboxError,
    },
    /// A project quota could not be read or set.
    #[error("layer {id}: {source}")]
    Quota {
        /// The layer (or the home, at open).
        id: String,
        /// The quota error (names the directory and project).
        #[source]
        source: strata_fs::QuotaError,
    },
    /// A store file (metadata, staging, home) could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the layer or file.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored metadata is unreadable.
    #[error("layer {id}: corrupt metadata {file}: {reason}")]
    Corrupt {
        /// The layer.
        id: String,
        /// The metadata file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl DriverError {
    /// An I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        DriverError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Result alias for driver operations.
pub type Result<T> = std::result::Result<T, DriverError>;
