//! Errors of applying a layer tar onto a root. Every error names the tar
//! entry it concerns (and the entry's offset in the stream when the tar
//! reader told us) in one line, so a refused import can be traced to the
//! exact entry of the exact archive; `Debug` formatting of the name keeps
//! even hostile names (newlines, control bytes) on that one line.

use std::fmt;
use std::io;

use strata_fs::{FsError, display_path};
use strata_tar::TarError;

/// Why applying a layer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// An entry was refused by the path policy or could not be applied.
    #[error("tar entry {:?}{}: {problem}", display_path(.entry), AtOffset(*.offset))]
    Entry {
        /// The entry's name as the archive gives it (not cleaned).
        entry: Vec<u8>,
        /// Offset of the entry's first header block in the stream, when
        /// known.
        offset: Option<u64>,
        /// What was wrong.
        problem: Problem,
    },
    /// The tar stream itself is malformed, truncated or unreadable (its
    /// message names the entry and offset).
    #[error(transparent)]
    Tar(#[from] TarError),
    /// The stream could not be read, or the record of its framing (for
    /// exact re-export) could not be written.
    #[error("{what}: {source}")]
    Stream {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ApplyError {
    /// An error about the entry named `entry`.
    pub fn entry(entry: &[u8], problem: Problem) -> Self {
        ApplyError::Entry {
            entry: entry.to_vec(),
            offset: None,
            problem,
        }
    }

    /// Adds the entry's stream offset to an entry error that lacks one.
    pub fn with_offset(self, at: u64) -> Self {
        match self {
            ApplyError::Entry {
                entry,
                offset: None,
                problem,
            } => ApplyError::Entry {
                entry,
                offset: Some(at),
                problem,
            },
            e => e,
        }
    }

    /// The raw name of the entry concerned, when known.
    pub fn entry_path(&self) -> Option<&[u8]> {
        match self {
            ApplyError::Entry { entry, .. } => Some(entry),
            ApplyError::Tar(e) => e.path(),
            ApplyError::Stream { .. } => None,
        }
    }

    /// The entry-level problem, for callers that branch on the reason.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ApplyError::Entry { problem, .. } => Some(problem),
            ApplyError::Tar(_) | ApplyError::Stream { .. } => None,
        }
    }
}

/// What was wrong with one entry. The messages are written to follow
/// `tar entry "<name>": `.
///
/// Underlying errors are carried in the variants and included in the
/// message rather than exposed as `source()`, so that printing an error
/// chain does not repeat them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The cleaned name climbs above the layer root (`../x`, `a/../../x`).
    #[error("path climbs out of the layer root")]
    Escapes,
    /// The name or link target holds a NUL byte.
    #[error("NUL byte in name")]
    Nul,
    /// `.wh.` with nothing after it.
    #[error("whiteout names no file (empty name after .wh.)")]
    EmptyWhiteout,
    /// `.wh..` or `.wh...`: would remove the directory itself or its
    /// parent.
    #[error("whiteout names . or ..")]
    DotWhiteout,
    /// A whiteout where the caller handles whiteouts itself
    /// ([`WhiteoutMode::Refuse`](crate::WhiteoutMode::Refuse)).
    #[error("a whiteout cannot be applied here")]
    Whiteout,
    /// A symlink whose relative target, joined to the entry's directory,
    /// climbs above the layer root.
    #[error("symlink target {0:?} climbs out of the layer root")]
    SymlinkEscapes(String),
    /// A hard link whose target name climbs above the layer root.
    #[error("hard link target {0:?} climbs out of the layer root")]
    LinkEscapes(String),
    /// A hard link whose target cannot be linked.
    #[error("hard link target {target:?} {reason}")]
    LinkTarget {
        /// The target as written in the archive.
        target: String,
        /// Why: "does not exist in the layer", "is a directory", ...
        reason: &'static str,
    },
    /// A non-directory entry named `.` or `/`.
    #[error("a {0} cannot replace the layer root directory")]
    RootNotDir(&'static str),
    /// Owner ids that do not fit a Linux uid/gid.
    #[error("invalid owner {uid}:{gid}")]
    Owner {
        /// The archive's uid.
        uid: u64,
        /// The archive's gid.
        gid: u64,
    },
    /// The entry's data ended before its size.
    #[error("data ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes the header promised.
        expected: u64,
        /// Bytes actually supplied.
        got: u64,
    },
    /// A sparse map that does not describe the data.
    #[error("bad sparse map: {0}")]
    BadSparse(String),
    /// Reading the entry's data failed.
    #[error("reading data: {0}")]
    Read(io::Error),
    /// A filesystem operation failed.
    #[error("{0}")]
    Fs(FsError),
    /// The thread writing file contents stopped without reporting why
    /// (it panicked).
    #[error("the file writer thread stopped unexpectedly")]
    WriterGone,
}

impl From<FsError> for Problem {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Escapes { .. } => Problem::Escapes,
            FsError::Nul { .. } => Problem::Nul,
            e => Problem::Fs(e),
        }
    }
}

/// Renders `" at offset N"` when the offset is known.
struct AtOffset(Option<u64>);

impl fmt::Display for AtOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(o) => write!(f, " at offset {o}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_naming_the_entry() {
        let e = ApplyError::entry(b"../etc/shadow", Problem::Escapes);
        assert_eq!(
            e.to_string(),
            r#"tar entry "../etc/shadow": path climbs out of the layer root"#
        );
        let e = ApplyError::entry(b"a\nb\xff", Problem::Nul).with_offset(1536);
        assert_eq!(
            e.to_string(),
            r#"tar entry "a\nb\\xff" at offset 1536: NUL byte in name"#
        );
        assert_eq!(e.entry_path(), Some(&b"a\nb\xff"[..]));
        // An offset already known is kept.
        assert!(e.with_offset(7).to_string().contains("offset 1536"));
    }
}
