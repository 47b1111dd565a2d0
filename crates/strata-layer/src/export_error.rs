//! The error type of change detection and diff export. Both read two layer
//! trees and write one tar stream, so one enum covers them; every variant
//! names where the failure happened (the host path of the object when the
//! tree it belongs to is known, else its path inside the layer).

use std::io;
use std::path::Path;

use strata_fs::{FsError, display_path};
use strata_tar::TarError;

/// An error from [`changes`](crate::changes()), [`changes_size`](crate::changes_size)
/// or one of the export functions.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A root-anchored file operation failed (walking, resolving, reading
    /// extended attributes).
    #[error("{path}: {source}")]
    Fs {
        /// Where: the host path of the object, or its path in the layer.
        path: String,
        /// The underlying error, which also names the in-layer path.
        #[source]
        source: FsError,
    },
    /// A system call or read on one object failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"lstat"`, `"read"`, `"open"`...).
        op: &'static str,
        /// Where: the host path of the object, or its path in the layer.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tar writer refused an entry or could not write it.
    #[error("writing tar entry {path}: {source}")]
    Tar {
        /// The entry's path inside the layer.
        path: String,
        /// The underlying error.
        #[source]
        source: TarError,
    },
}

impl ExportError {
    /// Wraps `source` from an operation on `rel` inside the tree at `tree`.
    pub(crate) fn fs(tree: &Path, rel: &[u8], source: FsError) -> Self {
        ExportError::Fs {
            path: host_path(tree, rel),
            source,
        }
    }

    /// Wraps `source` from an operation on `rel` when the tree is unknown.
    pub(crate) fn fs_rel(rel: &[u8], source: FsError) -> Self {
        ExportError::Fs {
            path: display_path(rel),
            source,
        }
    }

    /// Wraps an errno or I/O error from `op` on `rel` inside `tree`.
    pub(crate) fn io(op: &'static str, tree: &Path, rel: &[u8], e: impl Into<io::Error>) -> Self {
        ExportError::Io {
            op,
            path: host_path(tree, rel),
            source: e.into(),
        }
    }

    /// Wraps an errno or I/O error from `op` on `rel` when the tree is
    /// unknown.
    pub(crate) fn io_rel(op: &'static str, rel: &[u8], e: impl Into<io::Error>) -> Self {
        ExportError::Io {
            op,
            path: display_path(rel),
            source: e.into(),
        }
    }

    /// Wraps a tar writer error for the entry at `rel`.
    pub(crate) fn tar(rel: &[u8], source: TarError) -> Self {
        ExportError::Tar {
            path: display_path(rel),
            source,
        }
    }
}

/// `tree/rel` for messages, with `rel` escaped like every layer path.
fn host_path(tree: &Path, rel: &[u8]) -> String {
    let tree = display_path(tree.as_os_str().as_encoded_bytes());
    if rel.is_empty() {
        tree
    } else {
        format!("{}/{}", tree.trim_end_matches('/'), display_path(rel))
    }
}
