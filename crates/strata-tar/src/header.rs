//! The parsed form of one tar entry, after every extension header (PAX,
//! GNU long name/link, GNU sparse) has been folded in. This is the shape the
//! rest of Strata works with: the reader produces it, the writer consumes
//! it, and the applier turns it into filesystem objects. Names are raw bytes
//! because layer tars carry non-UTF-8 names and must round-trip exactly.

/// A point in time as tar stores it: seconds since the epoch (may be
/// negative) and nanoseconds (always < 1e9). PAX records give sub-second
/// precision; plain ustar headers give whole seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// A whole-second timestamp.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }
}

/// What an entry is. Tar type flags map onto these; the reader rejects
/// flags it does not know (the contract: unknown types are refused), so
/// every value here is one the applier must handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (`'0'`, `'\0'`, or the contiguous-file flag `'7'`).
    Regular,
    /// A hard link to an earlier entry (`'1'`); `link_name` is its target.
    HardLink,
    /// A symbolic link (`'2'`); `link_name` is its target, stored verbatim.
    Symlink,
    /// A character device (`'3'`).
    CharDevice,
    /// A block device (`'4'`).
    BlockDevice,
    /// A directory (`'5'`).
    Directory,
    /// A named pipe (`'6'`).
    Fifo,
}

/// One sparse data chunk: `length` bytes of the archived data belong at
/// `offset` in the extracted file. Chunks are in ascending offset order and
/// the archived data is their concatenation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SparseChunk {
    /// Offset in the extracted file.
    pub offset: u64,
    /// Number of bytes of archived data for this chunk.
    pub length: u64,
}

/// Sparse-file layout (GNU old-style `'S'` headers or PAX `GNU.sparse.*`
/// versions 0.0, 0.1 and 1.0).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sparse {
    /// Size of the extracted file, holes included.
    pub real_size: u64,
    /// Where the archived data goes, in order.
    pub chunks: Vec<SparseChunk>,
}

/// A fully parsed tar entry header.
///
/// `size` is the number of data bytes that follow the header in the
/// archive (for sparse files: the archived chunks only, after the reader has
/// consumed any in-data sparse map). Use [`Header::file_size`] for the size
/// of the extracted file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The entry name exactly as the archive gives it (PAX `path`, GNU long
    /// name or ustar prefix + name), not cleaned. A trailing `/` on
    /// directories is kept as written.
    pub path: Vec<u8>,
    /// Link target for hard links and symlinks (PAX `linkpath`, GNU long
    /// link, or the ustar field), verbatim; empty otherwise.
    pub link_name: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Numeric owner; PAX `uid` overrides the header field.
    pub uid: u64,
    /// Numeric group; PAX `gid` overrides the header field.
    pub gid: u64,
    /// Owner name, informational only (Strata applies numeric owners).
    pub uname: Vec<u8>,
    /// Group name, informational only.
    pub gname: Vec<u8>,
    /// Bytes of data that follow in the archive.
    pub size: u64,
    /// Modification time (PAX `mtime` overrides the header field).
    pub mtime: Timestamp,
    /// Access time, when a PAX record or GNU header carries one.
    pub atime: Option<Timestamp>,
    /// Change time, when a PAX record or GNU header carries one.
    pub ctime: Option<Timestamp>,
    /// Device major number (char and block devices).
    pub dev_major: u32,
    /// Device minor number (char and block devices).
    pub dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.<name>` records, in archive
    /// order. Names are the part after the prefix.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every PAX record that applies to this entry (global records first,
    /// then local ones, later keys overriding earlier ones), in the order
    /// they were read. Kept so that records Strata does not interpret
    /// (e.g. `MSWINDOWS.*`) reach whoever needs them.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// Sparse layout, when the entry is a sparse file.
    pub sparse: Option<Sparse>,
}

impl Header {
    /// A header of the given kind and path with everything else zero or
    /// empty; callers fill in what they need.
    pub fn new(kind: EntryKind, path: impl Into<Vec<u8>>) -> Self {
        Header {
            path: path.into(),
            link_name: Vec::new(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            uname: Vec::new(),
            gname: Vec::new(),
            size: 0,
            mtime: Timestamp::default(),
            atime: None,
            ctime: None,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            pax: Vec::new(),
            sparse: None,
        }
    }

    /// Size of the file once extracted: the sparse real size for sparse
    /// files, else the archived size.
    pub fn file_size(&self) -> u64 {
        match &self.sparse {
            Some(s) => s.real_size,
            None => self.size,
        }
    }
}
