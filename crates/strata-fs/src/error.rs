//! The error type of root-anchored operations: every variant names the
//! path (relative to the layer root) it concerns.

use std::io;

/// An error from a file operation inside a layer root.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed on `path`.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done (`"open"`, `"mkdir"`, ...).
        op: &'static str,
        /// The path inside the layer, lossily displayed.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A relative path climbs above the layer root once cleaned.
    #[error("path {path:?} climbs out of the layer root")]
    Escapes {
        /// The offending path as given.
        path: String,
    },
    /// A path holds a NUL byte, which no filesystem name may contain.
    #[error("path {path:?} contains a NUL byte")]
    Nul {
        /// The offending path as given.
        path: String,
    },
    /// An object is not of the kind the operation needs.
    #[error("{path:?}: {reason}")]
    Invalid {
        /// The path inside the layer.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl FsError {
    /// Wraps an errno from `op` on the layer path `path`.
    pub fn io(op: &'static str, path: &[u8], source: impl Into<io::Error>) -> Self {
        FsError::Io {
            op,
            path: crate::display_path(path),
            source: source.into(),
        }
    }

    /// The raw OS error number, if this is an I/O error carrying one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            FsError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, FsError>;
