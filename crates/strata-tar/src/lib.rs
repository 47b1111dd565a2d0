//! Streaming tar codec for Strata's container layers.
//!
//! This crate owns the tar byte format and nothing else: it turns a byte
//! stream into parsed [`Header`]s and entry data ([`TarReader`]) and
//! headers plus data back into bytes ([`TarWriter`]), without touching the
//! filesystem or any other Strata crate. The reader folds every extension
//! a real layer may contain — ustar prefix, PAX local and global records
//! (including `SCHILY.xattr.*`), GNU long names and links, base-256
//! numbers, old GNU and PAX (0.0, 0.1, 1.0) sparse files — into one
//! [`Header`] per entry, streams data in bounded memory, and can record
//! every non-data byte it consumes so the exact original archive can be
//! rebuilt tar-split style. The writer emits what Go's `archive/tar` emits
//! (ustar, PAX only when needed), deterministically. Whiteout naming
//! ([`classify`]) lives here too because it is part of the layer tar
//! format, not of any filesystem.
//!
//! ```
//! use std::io::Read;
//! use strata_tar::{EntryKind, Header, TarReader, TarWriter};
//!
//! let mut h = Header::new(EntryKind::Regular, "etc/hostname");
//! h.mode = 0o644;
//! h.size = 5;
//! let mut w = TarWriter::new(Vec::new());
//! w.append_data(&h, b"host\n")?;
//! let archive = w.finish()?;
//!
//! // Read it back, recording the framing: framing + data == archive.
//! let mut r = TarReader::new(&archive[..]);
//! r.set_record_raw(true);
//! let mut rebuilt = Vec::new();
//! while let Some(entry) = r.next_entry()? {
//!     rebuilt.extend(r.take_raw());
//!     assert_eq!(entry.path, b"etc/hostname");
//!     r.data().read_to_end(&mut rebuilt)?;
//! }
//! rebuilt.extend(r.take_raw());
//! assert_eq!(rebuilt, archive);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod block;
mod error;
mod header;
mod reader;
mod tarsplit;
mod whiteout;
mod writer;

pub use error::{Result, TarError};
pub use header::{EntryKind, Header, Sparse, SparseChunk, Timestamp};
pub use reader::{
    ChunkSource, DataReader, EntryData, MAX_EXTENSION_SIZE, MAX_SPARSE_MAP_SIZE, Piece,
    SharedChunk, TarReader,
};
pub use tarsplit::{
    Crc64, RecordEntry, RecordError, RecordReader, RecordSummary, Recorder, ReplayError,
    record_stream, replay,
};
pub use whiteout::{
    OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX, Whiteout, WhiteoutError, classify,
    opaque_marker_path, whiteout_path,
};
pub use writer::TarWriter;
