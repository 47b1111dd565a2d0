//! Errors of the tar codec. Every error names where in the stream it
//! happened (the offset of the header block concerned) and, once the reader
//! knows it, the entry's path, so that a failed layer import can be traced
//! to one entry of one archive.

use std::fmt;
use std::io;

/// Result of tar codec operations.
pub type Result<T> = std::result::Result<T, TarError>;

/// Where an error happened: rendered as `tar entry "<path>" at offset N` or,
/// before the path is known, `tar header at offset N`.
struct Location<'a> {
    offset: u64,
    path: Option<&'a [u8]>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path {
            // Debug formatting of the lossy string quotes it and escapes
            // control characters, which keeps the message on one line even
            // for hostile names.
            Some(p) => write!(
                f,
                "tar entry {:?} at offset {}",
                String::from_utf8_lossy(p),
                self.offset
            ),
            None => write!(f, "tar header at offset {}", self.offset),
        }
    }
}

fn loc<'a>(offset: &u64, path: &'a Option<Vec<u8>>) -> Location<'a> {
    Location {
        offset: *offset,
        path: path.as_deref(),
    }
}

/// An error reading or writing a tar stream.
///
/// `offset` is the byte offset in the stream of the header block the error
/// concerns (for data errors: the entry's main header block; for the
/// writer: the position at which the entry's headers would start). `path`
/// is the entry path when it is known at the time of the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The underlying reader or writer failed.
    #[error("{}: I/O error: {source}", loc(.offset, .path))]
    Io {
        /// Offset of the header block concerned.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A header block's checksum does not match its contents (neither the
    /// unsigned nor the signed sum).
    #[error("{}: header checksum mismatch (not a tar archive, or corrupt)", loc(.offset, .path))]
    BadChecksum {
        /// Offset of the header block.
        offset: u64,
        /// Entry path, when known (e.g. from a preceding long-name header).
        path: Option<Vec<u8>>,
    },
    /// The stream ended inside a header, inside extension data, inside
    /// file data, or between an extension header and the header it
    /// applies to.
    #[error("{}: {what} truncated (stream ended)", loc(.offset, .path))]
    Truncated {
        /// Offset of the header block concerned.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// What was being read: `"header"`, `"data"`, `"extension data"`…
        what: &'static str,
    },
    /// A numeric or size field is malformed (not octal, bad base-256,
    /// overflow) or absurd (an extension header larger than the limit).
    #[error("{}: invalid {field} field", loc(.offset, .path))]
    InvalidField {
        /// Offset of the header block.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// Which field: `"size"`, `"uid"`, `"mtime"`…
        field: &'static str,
    },
    /// A PAX extended header is malformed.
    #[error("{}: bad PAX header: {reason}", loc(.offset, .path))]
    BadPax {
        /// Offset of the PAX header block.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// What is wrong with it.
        reason: String,
    },
    /// A path or link target contains a NUL byte (possible only through
    /// PAX records; refused because no filesystem can represent it and
    /// truncating it would change meaning).
    #[error("{}: NUL byte in path or link name", loc(.offset, .path))]
    NulInName {
        /// Offset of the header block.
        offset: u64,
        /// The offending name up to its first NUL, when known.
        path: Option<Vec<u8>>,
    },
    /// The entry's type flag is not one Strata handles.
    #[error("{}: unknown entry type flag {}", loc(.offset, .path), DisplayFlag(*.flag))]
    UnknownType {
        /// Offset of the header block.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// The type flag byte.
        flag: u8,
    },
    /// A sparse map is malformed: unparsable, overlapping or out-of-order
    /// chunks, chunks past the real size, or chunk lengths that do not add
    /// up to the archived data size.
    #[error("{}: bad sparse map: {reason}", loc(.offset, .path))]
    BadSparse {
        /// Offset of the entry's header block.
        offset: u64,
        /// Entry path, when known.
        path: Option<Vec<u8>>,
        /// What is wrong with it.
        reason: String,
    },
    /// A single zero block is followed by a non-zero block: the
    /// end-of-archive marker is corrupt, and silently ignoring what follows
    /// could hide entries from the importer.
    #[error("{}: lone zero block followed by more data (corrupt end-of-archive marker)", loc(.offset, .path))]
    LoneZeroBlock {
        /// Offset of the zero block.
        offset: u64,
        /// Always `None`; present for uniformity.
        path: Option<Vec<u8>>,
    },
    /// The writer was given a header it cannot encode.
    #[error("{}: cannot encode header: {reason}", loc(.offset, .path))]
    Unencodable {
        /// Stream offset at which the entry would have started.
        offset: u64,
        /// Entry path.
        path: Option<Vec<u8>>,
        /// Why.
        reason: String,
    },
}

/// Renders a type flag byte readably: printable ASCII as `'c'`, anything
/// else as hex.
struct DisplayFlag(u8);

impl fmt::Display for DisplayFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl TarError {
    /// Offset in the stream of the header block the error concerns.
    pub fn offset(&self) -> u64 {
        match self {
            TarError::Io { offset, .. }
            | TarError::BadChecksum { offset, .. }
            | TarError::Truncated { offset, .. }
            | TarError::InvalidField { offset, .. }
            | TarError::BadPax { offset, .. }
            | TarError::NulInName { offset, .. }
            | TarError::UnknownType { offset, .. }
            | TarError::BadSparse { offset, .. }
            | TarError::LoneZeroBlock { offset, .. }
            | TarError::Unencodable { offset, .. } => *offset,
        }
    }

    /// The entry path, when it was known at the time of the error.
    pub fn path(&self) -> Option<&[u8]> {
        match self {
            TarError::Io { path, .. }
            | TarError::BadChecksum { path, .. }
            | TarError::Truncated { path, .. }
            | TarError::InvalidField { path, .. }
            | TarError::BadPax { path, .. }
            | TarError::NulInName { path, .. }
            | TarError::UnknownType { path, .. }
            | TarError::BadSparse { path, .. }
            | TarError::LoneZeroBlock { path, .. }
            | TarError::Unencodable { path, .. } => path.as_deref(),
        }
    }

    /// A copy of this error. The reader keeps a failed stream failed by
    /// handing out copies of the first error; `io::Error` is not `Clone`,
    /// so its copy keeps the kind and message but not the source chain.
    pub(crate) fn duplicate(&self) -> TarError {
        match self {
            TarError::Io {
                offset,
                path,
                source,
            } => TarError::Io {
                offset: *offset,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            TarError::BadChecksum { offset, path } => TarError::BadChecksum {
                offset: *offset,
                path: path.clone(),
            },
            TarError::Truncated { offset, path, what } => TarError::Truncated {
                offset: *offset,
                path: path.clone(),
                what,
            },
            TarError::InvalidField {
                offset,
                path,
                field,
            } => TarError::InvalidField {
                offset: *offset,
                path: path.clone(),
                field,
            },
            TarError::BadPax {
                offset,
                path,
                reason,
            } => TarError::BadPax {
                offset: *offset,
                path: path.clone(),
                reason: reason.clone(),
            },
            TarError::NulInName { offset, path } => TarError::NulInName {
                offset: *offset,
                path: path.clone(),
            },
            TarError::UnknownType { offset, path, flag } => TarError::UnknownType {
                offset: *offset,
                path: path.clone(),
                flag: *flag,
            },
            TarError::BadSparse {
                offset,
                path,
                reason,
            } => TarError::BadSparse {
                offset: *offset,
                path: path.clone(),
                reason: reason.clone(),
            },
            TarError::LoneZeroBlock { offset, path } => TarError::LoneZeroBlock {
                offset: *offset,
                path: path.clone(),
            },
            TarError::Unencodable {
                offset,
                path,
                reason,
            } => TarError::Unencodable {
                offset: *offset,
                path: path.clone(),
                reason: reason.clone(),
            },
        }
    }
}

impl From<TarError> for io::Error {
    /// Maps truncation to `UnexpectedEof`, I/O errors to their own kind,
    /// and everything else to `InvalidData`, keeping the tar error as the
    /// payload so its message (entry and offset) survives.
    fn from(e: TarError) -> io::Error {
        let kind = match &e {
            TarError::Io { source, .. } => source.kind(),
            TarError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            TarError::Unencodable { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_path_is_one_line() {
        let e = TarError::Truncated {
            offset: 1536,
            path: Some(b"etc/passwd".to_vec()),
            what: "data",
        };
        assert_eq!(
            e.to_string(),
            "tar entry \"etc/passwd\" at offset 1536: data truncated (stream ended)"
        );
        let e = TarError::BadChecksum {
            offset: 512,
            path: Some(b"a\nb\xff".to_vec()),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("tar entry \"a\\nb\u{fffd}\" at offset 512"),
            "{s}"
        );
    }

    #[test]
    fn display_without_path() {
        let e = TarError::UnknownType {
            offset: 0,
            path: None,
            flag: b'Z',
        };
        assert_eq!(
            e.to_string(),
            "tar header at offset 0: unknown entry type flag 'Z'"
        );
        let e = TarError::UnknownType {
            offset: 0,
            path: None,
            flag: 0x81,
        };
        assert!(e.to_string().ends_with("flag 0x81"));
    }

    #[test]
    fn io_conversion_keeps_message_and_kind() {
        let e = TarError::Truncated {
            offset: 7,
            path: None,
            what: "header",
        };
        let io: io::Error = e.duplicate().into();
        assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(io.to_string(), e.to_string());
        assert_eq!(e.offset(), 7);
        assert_eq!(e.path(), None);
    }
}
