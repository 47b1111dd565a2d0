//! The per-layer metadata index: the source of truth for everything a
//! Windows layer says that a Linux file tree cannot hold.
//!
//! Linux cannot store most of it on the files themselves: `user.*`
//! xattrs are refused on symlinks (Windows symlinks carry a security
//! descriptor and attributes), values are capped, and creation and change
//! times cannot be set at all. So every entry of the imported tar is
//! recorded here, in tar order: its raw name, what it is (object, stream,
//! tombstone, opaque marker, hard link and whether the link reaches into a
//! parent layer), the header fields, and every PAX record in force for it
//! verbatim and in order, known or not. The typed Windows view
//! ([`WinRecords`]) is derived from the records when needed, so the index
//! cannot disagree with itself.
//!
//! On disk it is gzip-compressed JSON lines (`wcow-index.json.gz`): a
//! header line `{"version":1,"base":...}`, then one line per entry; byte
//! strings are JSON strings when they are UTF-8 and `{"b64": "..."}`
//! otherwise. The driver streams it, while the layer is imported, from a
//! thread of its own ([`IndexWriter`]) into a temp file in the layer's
//! staging directory, then fsyncs and renames it before the layer is
//! committed.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strata_tar::{EntryKind, Header, Timestamp};

use crate::records::{RecordError, WinRecords};

/// File name of the index in a layer directory.
pub const INDEX_FILE: &str = "wcow-index.json.gz";

/// Current format version.
pub const INDEX_VERSION: u32 = 1;

/// Why an index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The bytes are not a valid index.
    #[error("layer index: {0}")]
    Corrupt(String),
    /// The index is of a newer format.
    #[error("layer index version {0} is newer than this Strata understands ({INDEX_VERSION})")]
    Version(u32),
    /// (De)compression failed.
    #[error("layer index: {0}")]
    Io(std::io::Error),
}

/// What an entry is in the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A file, directory or symlink stored at its path.
    Object,
    /// An alternate data stream of `file`, stored under
    /// [`STREAMS_DIR`](crate::STREAMS_DIR).
    Stream,
    /// A deletion of `target` from the layers below.
    Tombstone,
    /// An opaque marker (no effect on Windows).
    Opaque,
    /// A hard link to `target`.
    Link,
}

/// The tar kind of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link or junction.
    Symlink,
    /// Hard link.
    HardLink,
}

impl Kind {
    /// The kind of a tar entry; `None` for kinds Windows layers cannot
    /// hold (devices, fifos).
    pub fn of(k: EntryKind) -> Option<Kind> {
        match k {
            EntryKind::Regular => Some(Kind::File),
            EntryKind::Directory => Some(Kind::Dir),
            EntryKind::Symlink => Some(Kind::Symlink),
            EntryKind::HardLink => Some(Kind::HardLink),
            _ => None,
        }
    }

    /// The tar kind.
    pub fn entry_kind(self) -> EntryKind {
        match self {
            Kind::File => EntryKind::Regular,
            Kind::Dir => EntryKind::Directory,
            Kind::Symlink => EntryKind::Symlink,
            Kind::HardLink => EntryKind::HardLink,
        }
    }
}

/// One PAX record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Record {
    /// The key.
    #[serde(with = "wire")]
    pub k: Vec<u8>,
    /// The value, verbatim.
    #[serde(with = "wire")]
    pub v: Vec<u8>,
}

/// One entry of the layer's tar, as read back (written as an
/// [`IndexLine`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    /// The raw tar name.
    #[serde(with = "wire")]
    pub name: Vec<u8>,
    /// The cleaned path (for streams, of the whole `file:stream` name).
    #[serde(with = "wire")]
    pub path: Vec<u8>,
    /// What the entry is in the layer.
    pub role: Role,
    /// For a stream: its file. For a tombstone or link: its target.
    #[serde(with = "wire", default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<u8>,
    /// A hard link whose target is in a parent layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_layer: bool,
    /// The tar kind.
    pub kind: Kind,
    /// Permission bits of the header.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Owner name.
    #[serde(with = "wire", default, skip_serializing_if = "Vec::is_empty")]
    pub uname: Vec<u8>,
    /// Group name.
    #[serde(with = "wire", default, skip_serializing_if = "Vec::is_empty")]
    pub gname: Vec<u8>,
    /// Data bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// The raw `Linkname` (symlinks keep backslashes and drive letters).
    #[serde(with = "wire", default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<u8>,
    /// Every PAX record in force for the entry, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<Record>,
}

/// One entry as the index writes it: [`IndexEntry`]'s fields, in its
/// order and with its encoding, borrowed from a tar header (while
/// importing) or from an entry, so that writing one copies none of them.
#[derive(Serialize)]
pub struct IndexLine<'a> {
    #[serde(with = "wire")]
    name: &'a [u8],
    #[serde(with = "wire")]
    path: &'a [u8],
    role: Role,
    /// For a stream: its file. For a tombstone or link: its target.
    #[serde(with = "wire", skip_serializing_if = "<[u8]>::is_empty")]
    pub target: &'a [u8],
    /// A hard link whose target is in a parent layer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cross_layer: bool,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    #[serde(with = "wire", skip_serializing_if = "<[u8]>::is_empty")]
    uname: &'a [u8],
    #[serde(with = "wire", skip_serializing_if = "<[u8]>::is_empty")]
    gname: &'a [u8],
    size: u64,
    mtime: (i64, u32),
    #[serde(with = "wire", skip_serializing_if = "<[u8]>::is_empty")]
    link: &'a [u8],
    #[serde(skip_serializing_if = "Records::is_empty")]
    records: Records<'a>,
}

/// The records of an [`IndexLine`]: a header's PAX pairs or an entry's.
enum Records<'a> {
    Pax(&'a [(Vec<u8>, Vec<u8>)]),
    Kept(&'a [Record]),
}

impl Records<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Records::Pax(r) => r.is_empty(),
            Records::Kept(r) => r.is_empty(),
        }
    }
}

/// [`Record`] as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(with = "wire")]
    k: &'a [u8],
    #[serde(with = "wire")]
    v: &'a [u8],
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Records::Pax(r) => s.collect_seq(r.iter().map(|(k, v)| RecordOut { k, v })),
            Records::Kept(r) => s.collect_seq(r.iter().map(|r| RecordOut { k: &r.k, v: &r.v })),
        }
    }
}

impl<'a> IndexLine<'a> {
    /// The line recording header `h` in `role` at `path` (no target, not
    /// cross-layer: set those fields where they apply).
    pub fn of_header(h: &'a Header, kind: Kind, role: Role, path: &'a [u8]) -> IndexLine<'a> {
        IndexLine {
            name: &h.path,
            path,
            role,
            target: &[],
            cross_layer: false,
            kind,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            uname: &h.uname,
            gname: &h.gname,
            size: h.size,
            mtime: (h.mtime.secs, h.mtime.nanos),
            link: &h.link_name,
            records: Records::Pax(&h.pax),
        }
    }

    /// The line of entry `e`.
    pub fn of(e: &'a IndexEntry) -> IndexLine<'a> {
        IndexLine {
            name: &e.name,
            path: &e.path,
            role: e.role,
            target: &e.target,
            cross_layer: e.cross_layer,
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            uname: &e.uname,
            gname: &e.gname,
            size: e.size,
            mtime: e.mtime,
            link: &e.link,
            records: Records::Kept(&e.records),
        }
    }
}

impl IndexEntry {
    /// An entry recording header `h` in `role` at `path`.
    pub fn from_header(h: &Header, kind: Kind, role: Role, path: Vec<u8>) -> IndexEntry {
        IndexEntry {
            name: h.path.clone(),
            path,
            role,
            target: Vec::new(),
            cross_layer: false,
            kind,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            uname: h.uname.clone(),
            gname: h.gname.clone(),
            size: h.size,
            mtime: (h.mtime.secs, h.mtime.nanos),
            link: h.link_name.clone(),
            records: h
                .pax
                .iter()
                .map(|(k, v)| Record {
                    k: k.clone(),
                    v: v.clone(),
                })
                .collect(),
        }
    }

    /// The records as (key, value) pairs.
    pub fn record_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.records
            .iter()
            .map(|r| (r.k.clone(), r.v.clone()))
            .collect()
    }

    /// The typed Windows view of the records.
    pub fn win(&self) -> Result<WinRecords, RecordError> {
        WinRecords::parse(&self.record_pairs())
    }

    /// A tar header equal to the recorded one in every field the tar
    /// writer emits (records included).
    pub fn to_header(&self) -> Header {
        let mut h = Header::new(self.kind.entry_kind(), self.name.clone());
        h.mode = self.mode;
        h.uid = self.uid;
        h.gid = self.gid;
        h.uname = self.uname.clone();
        h.gname = self.gname.clone();
        h.size = if self.kind == Kind::File {
            self.size
        } else {
            0
        };
        h.mtime = Timestamp {
            secs: self.mtime.0,
            nanos: self.mtime.1,
        };
        h.link_name = self.link.clone();
        h.pax = self.record_pairs();
        h
    }
}

/// A layer's index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerIndex {
    /// Format version ([`INDEX_VERSION`]).
    pub version: u32,
    /// The layer was imported without a parent (a base layer).
    pub base: bool,
    /// The entries, in tar order.
    pub entries: Vec<IndexEntry>,
}

impl LayerIndex {
    /// An empty index.
    pub fn new(base: bool) -> LayerIndex {
        LayerIndex {
            version: INDEX_VERSION,
            base,
            entries: Vec::new(),
        }
    }

    /// The on-disk form (see the module documentation).
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut w = IndexWriter::inline(Vec::new(), self.base)?;
        for e in &self.entries {
            w.push(&IndexLine::of(e))?;
        }
        Ok(w.finish()?)
    }

    /// Reads the on-disk form.
    pub fn from_reader(r: impl Read) -> Result<LayerIndex, IndexError> {
        let mut lines = io::BufReader::new(flate2::read::GzDecoder::new(r)).lines();
        let corrupt = |e: serde_json::Error| IndexError::Corrupt(e.to_string());
        let head = lines
            .next()
            .ok_or_else(|| IndexError::Corrupt("empty".into()))??;
        let head: Head = serde_json::from_str(&head).map_err(corrupt)?;
        if head.version > INDEX_VERSION {
            return Err(IndexError::Version(head.version));
        }
        let mut idx = LayerIndex {
            version: head.version,
            base: head.base,
            entries: Vec::new(),
        };
        for line in lines {
            let line = line?;
            if !line.is_empty() {
                idx.entries
                    .push(serde_json::from_str(&line).map_err(corrupt)?);
            }
        }
        Ok(idx)
    }

    /// Paths this layer deletes from the layers below.
    pub fn tombstones(&self) -> impl Iterator<Item = &[u8]> {
        self.entries
            .iter()
            .filter(|e| e.role == Role::Tombstone)
            .map(|e| e.target.as_slice())
    }
}

/// The first line of an index.
#[derive(Serialize, Deserialize)]
struct Head {
    version: u32,
    base: bool,
}

/// Serialised entries handed to the compressor at a time.
const BATCH: usize = 256 << 10;
/// Batches waiting for the compressor, at most.
const BATCHES_IN_FLIGHT: usize = 4;

/// Where an [`IndexWriter`] compresses.
enum Sink<W: Write> {
    Inline(flate2::write::GzEncoder<W>),
    Background {
        batches: Option<SyncSender<Vec<u8>>>,
        worker: Option<JoinHandle<io::Result<W>>>,
    },
}

/// Writes an index entry by entry, as an import produces them.
pub struct IndexWriter<W: Write> {
    sink: Sink<W>,
    lines: Vec<u8>,
}

fn gzip<W: Write>(w: W) -> flate2::write::GzEncoder<W> {
    flate2::write::GzEncoder::new(w, flate2::Compression::fast())
}

impl<W: Write> IndexWriter<W> {
    /// A writer compressing on the calling thread.
    pub fn inline(w: W, base: bool) -> io::Result<IndexWriter<W>> {
        let mut iw = IndexWriter {
            sink: Sink::Inline(gzip(w)),
            lines: Vec::new(),
        };
        iw.head(base)?;
        Ok(iw)
    }

    /// A writer compressing and writing on a thread of its own, so an
    /// import does not wait for it; a few batches at most are in memory.
    pub fn in_background(w: W, base: bool) -> io::Result<IndexWriter<W>>
    where
        W: Send + 'static,
    {
        let (batches, rx) = sync_channel::<Vec<u8>>(BATCHES_IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("strata-index".into())
            .spawn(move || {
                let mut out = gzip(w);
                for b in rx {
                    out.write_all(&b)?;
                }
                out.finish()
            })?;
        let mut iw = IndexWriter {
            sink: Sink::Background {
                batches: Some(batches),
                worker: Some(worker),
            },
            lines: Vec::with_capacity(BATCH),
        };
        iw.head(base)?;
        Ok(iw)
    }

    fn head(&mut self, base: bool) -> io::Result<()> {
        serde_json::to_writer(
            &mut self.lines,
            &Head {
                version: INDEX_VERSION,
                base,
            },
        )?;
        self.lines.push(b'\n');
        Ok(())
    }

    /// Appends one entry.
    pub fn push(&mut self, e: &IndexLine<'_>) -> io::Result<()> {
        serde_json::to_writer(&mut self.lines, e)?;
        self.lines.push(b'\n');
        if self.lines.len() >= BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Inline(gz) => {
                gz.write_all(&self.lines)?;
                self.lines.clear();
            }
            Sink::Background { batches, .. } => {
                let b = std::mem::replace(&mut self.lines, Vec::with_capacity(BATCH));
                let gone = || io::Error::other("the index compressor stopped");
                batches
                    .as_ref()
                    .ok_or_else(gone)?
                    .send(b)
                    .map_err(|_| gone())?;
            }
        }
        Ok(())
    }

    /// Completes the gzip stream and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_batch()?;
        match self.sink {
            Sink::Inline(gz) => gz.finish(),
            Sink::Background {
                mut batches,
                mut worker,
            } => {
                drop(batches.take());
                let w = worker
                    .take()
                    .ok_or_else(|| io::Error::other("the index compressor is gone"))?;
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("the index compressor panicked")))
            }
        }
    }
}

impl From<io::Error> for IndexError {
    fn from(e: io::Error) -> Self {
        IndexError::Io(e)
    }
}

/// Byte strings as JSON: a string when UTF-8, else `{"b64": ...}`.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Raw { b64: String },
    }

    /// [`Repr`] as written: text is borrowed, so serialising an entry
    /// copies no field.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum ReprOut<'a> {
        Text(&'a str),
        Raw { b64: String },
    }

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(t) => ReprOut::Text(t),
            Err(_) => ReprOut::Raw {
                b64: BASE64.encode(v),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(t.into_bytes()),
            Repr::Raw { b64 } => BASE64.decode(b64).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_binary_bytes() {
        let mut h = Header::new(EntryKind::Regular, b"Files/\xffname".to_vec());
        h.size = 3;
        h.mtime = Timestamp { secs: -5, nanos: 7 };
        h.pax = vec![(b"VENDOR.bin".to_vec(), vec![0, 0xff, b'\n'])];
        let mut idx = LayerIndex::new(true);
        idx.entries.push(IndexEntry::from_header(
            &h,
            Kind::File,
            Role::Object,
            h.path.clone(),
        ));
        let back = LayerIndex::from_reader(&idx.to_bytes().unwrap()[..]).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.entries[0].to_header(), h);
        assert!(LayerIndex::from_reader(&b"junk"[..]).is_err());
    }

    /// A line borrowed from the header is the line of the entry made from
    /// it, byte for byte, whatever the fields hold.
    #[test]
    fn header_lines_are_entry_lines() {
        let mut h = Header::new(EntryKind::Symlink, b"Files/a\\b\xff".to_vec());
        h.mode = 0o777;
        h.uid = 7;
        h.uname = b"\xffroot".to_vec();
        h.link_name = b"C:\\x".to_vec();
        h.pax = vec![
            (b"MSWINDOWS.rawsd".to_vec(), b"AQAEgA==".to_vec()),
            (b"VENDOR.bin".to_vec(), vec![0, 0xff, b'"']),
        ];
        let line = |l: &IndexLine<'_>| serde_json::to_vec(l).unwrap();
        let mut ours = IndexLine::of_header(&h, Kind::Symlink, Role::Link, b"Files/a");
        ours.target = b"Files/t\xfe";
        ours.cross_layer = true;
        let mut e = IndexEntry::from_header(&h, Kind::Symlink, Role::Link, b"Files/a".to_vec());
        e.target = b"Files/t\xfe".to_vec();
        e.cross_layer = true;
        assert_eq!(line(&ours), line(&IndexLine::of(&e)));
        h.pax.clear();
        h.uname.clear();
        let bare = IndexLine::of_header(&h, Kind::File, Role::Object, b"Files/a");
        let e = IndexEntry::from_header(&h, Kind::File, Role::Object, b"Files/a".to_vec());
        assert_eq!(line(&bare), line(&IndexLine::of(&e)));
    }
}
