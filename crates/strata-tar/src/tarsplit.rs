//! tar-split records: enough metadata to rebuild a layer tar byte for byte.
//!
//! A layer's diffID is the sha256 of its exact uncompressed tar, so
//! re-exporting a layer by re-tarring its directory would change the digest
//! (header encodings, PAX records, padding, trailing zero blocks all vary
//! between writers). vbatts/tar-split solves this by keeping, next to the
//! extracted files, a *record* of everything in the stream that is not file
//! content. This module reads and writes that record in tar-split's own
//! format (its `tar/storage` package), so records interoperate with the Go
//! tool in both directions:
//!
//! * the record is gzip-compressed JSON, one object per line:
//!   `{"type":…,"name":…|"name_raw":…,"size":…,"payload":…,"position":…}`;
//! * `type 2` (segment) carries raw stream bytes (headers, extension
//!   headers, padding, end-of-archive blocks, trailing bytes) base64-encoded
//!   in `payload`;
//! * `type 1` (file) names one tar entry (`name`, or base64 `name_raw` when
//!   the name is not UTF-8), its data size (`size`, omitted when 0) and the
//!   8-byte big-endian CRC-64/ISO of its data (`payload`, `null` when the
//!   size is 0) — the data itself lives in the extracted layer;
//! * `position` numbers the entries of both types from 0.
//!
//! [`record_stream`] writes a record while the applier consumes the stream,
//! [`RecordReader`] reads one back and [`replay`] rebuilds the tar from the
//! record plus a getter for file contents, verifying every file.
//!
//! Two kinds of archive cannot be rebuilt from an extracted directory, as
//! upstream documents: archives holding the same path twice (the directory
//! only has the last version; tar-split refuses them outright) and sparse
//! files (the record covers the archived chunks, the directory holds the
//! expanded file). [`record_stream`] still records them, and reports them
//! in [`RecordSummary`] so the caller can keep the original stream instead.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crc_fast::{CrcAlgorithm, Digest};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use crate::{EntryData, Header, Piece, TarError, TarReader};

/// tar-split's `storage.FileType`.
const FILE_TYPE: u8 = 1;
/// tar-split's `storage.SegmentType`.
const SEGMENT_TYPE: u8 = 2;

/// Go's `crc64.MakeTable(crc64.ISO)` with Go's pre/post inversion, which is
/// exactly the catalogued CRC-64/GO-ISO.
/// Copy buffer size for draining and replaying file data.
const COPY_BUF: usize = 64 * 1024;

/// CRC-64/ISO as tar-split computes it, fed incrementally.
///
/// [`finish`](Self::finish) gives the 8 bytes tar-split stores: Go's
/// `hash.Sum(nil)` appends the sum big-endian.
///
/// Computed by carry-less multiplication (PCLMULQDQ / PMULL) where the CPU
/// has it: every imported byte and every exported byte passes through this
/// checksum on the applier's critical path, and table-driven CRC-64 (even
/// slice-by-16) cost more than the rest of the record together.
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest,
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crc64")
            .field("sum", &self.finish())
            .finish()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    /// The checksum of no bytes so far.
    pub fn new() -> Self {
        Crc64 {
            digest: Digest::new(CrcAlgorithm::Crc64GoIso),
        }
    }

    /// Feeds `b` into the checksum.
    pub fn update(&mut self, b: &[u8]) {
        self.digest.update(b);
    }

    /// The checksum of everything fed so far, big-endian. Does not reset.
    pub fn finish(&self) -> [u8; 8] {
        self.digest.finalize().to_be_bytes()
    }
}

/// One line of a record, as tar-split's `storage.Entry` marshals it: the
/// field order, `omitempty` on name, name_raw and size, and an always
/// present (possibly `null`) payload all match Go's output. The reference
/// for [`Line::serialize`], which writes the same bytes by hand.
#[cfg(test)]
#[derive(Serialize)]
struct EntryOut<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_raw: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    payload: Option<String>,
    position: u64,
}

#[cfg(test)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of a record before it is serialised.
enum Line<'a> {
    /// Raw stream bytes.
    Segment(&'a [u8]),
    /// A tar entry: name, data bytes in the archive, their checksum.
    File {
        name: &'a [u8],
        size: u64,
        crc: Option<[u8; 8]>,
    },
}

/// Tags of [`Line::pack`]'s compact form.
const PACKED_SEGMENT: u8 = 0;
const PACKED_FILE: u8 = 1;
const PACKED_FILE_CRC: u8 = 2;

/// Appends `b` as a quoted base64 JSON string.
fn push_base64(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
    // Cannot fail: the room is exactly the encoded length.
    let n = BASE64.encode_slice(b, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
    out.push(b'"');
}

impl<'a> Line<'a> {
    /// Appends the line's JSON (and a newline) to `out`.
    fn serialize(&self, position: u64, out: &mut Vec<u8>) -> io::Result<()> {
        // Written by hand in `EntryOut`'s layout: base64 never needs JSON
        // escaping, and encoding it straight into the line spares a
        // string per payload and serde's scan of every character (on a
        // Windows layer, whose headers carry large PAX records, that scan
        // alone was 3% of the import).
        match *self {
            Line::Segment(raw) => {
                out.extend_from_slice(b"{\"type\":2,\"payload\":");
                push_base64(out, raw);
            }
            Line::File { name, size, crc } => {
                out.extend_from_slice(b"{\"type\":1");
                // Non-UTF-8 names go to `name_raw`, as tar-split does.
                match std::str::from_utf8(name) {
                    Ok("") => {}
                    Ok(s) => {
                        out.extend_from_slice(b",\"name\":");
                        serde_json::to_writer(&mut *out, s)?;
                    }
                    Err(_) => {
                        out.extend_from_slice(b",\"name_raw\":");
                        push_base64(out, name);
                    }
                }
                if size != 0 {
                    write!(out, ",\"size\":{size}")?;
                }
                out.extend_from_slice(b",\"payload\":");
                match crc {
                    Some(c) => push_base64(out, &c),
                    None => out.extend_from_slice(b"null"),
                }
            }
        }
        writeln!(out, ",\"position\":{position}}}")
    }

    /// Appends a compact binary form (a tag, then length-prefixed bytes)
    /// for the background thread, which serialises it: copying the bytes is
    /// all the recording costs the applier's thread.
    fn pack(&self, out: &mut Vec<u8>) {
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        };
        match *self {
            Line::Segment(raw) => {
                out.push(PACKED_SEGMENT);
                bytes(out, raw);
            }
            Line::File { name, size, crc } => {
                out.push(if crc.is_some() {
                    PACKED_FILE_CRC
                } else {
                    PACKED_FILE
                });
                bytes(out, name);
                out.extend_from_slice(&size.to_le_bytes());
                if let Some(c) = crc {
                    out.extend_from_slice(&c);
                }
            }
        }
    }

    /// Takes one line in [`pack`](Self::pack)'s form off the front of
    /// `buf`; `None` when `buf` is empty.
    fn unpack(buf: &mut &'a [u8]) -> io::Result<Option<Line<'a>>> {
        fn take<'b>(buf: &mut &'b [u8], n: usize) -> io::Result<&'b [u8]> {
            if buf.len() < n {
                return Err(io::Error::other("tar-split record batch cut short"));
            }
            let (head, rest) = buf.split_at(n);
            *buf = rest;
            Ok(head)
        }
        fn word(buf: &mut &[u8]) -> io::Result<u64> {
            let mut w = [0u8; 8];
            w.copy_from_slice(take(buf, 8)?);
            Ok(u64::from_le_bytes(w))
        }
        let Some((&tag, rest)) = buf.split_first() else {
            return Ok(None);
        };
        *buf = rest;
        let len = usize::try_from(word(buf)?).map_err(io::Error::other)?;
        let b = take(buf, len)?;
        Ok(Some(match tag {
            PACKED_SEGMENT => Line::Segment(b),
            PACKED_FILE | PACKED_FILE_CRC => {
                let size = word(buf)?;
                let crc = if tag == PACKED_FILE_CRC {
                    let mut c = [0u8; 8];
                    c.copy_from_slice(take(buf, 8)?);
                    Some(c)
                } else {
                    None
                };
                Line::File { name: b, size, crc }
            }
            t => return Err(io::Error::other(format!("tar-split record batch: tag {t}"))),
        }))
    }
}

/// Writes a tar-split record (gzip-compressed NDJSON) to `W`.
///
/// Entries are written in call order and numbered from 0. Call
/// [`finish`](Self::finish) to complete the gzip stream; a recorder dropped
/// without it leaves a truncated record.
pub struct Recorder<W: Write> {
    out: Sink<W>,
    position: u64,
    /// Inline: the line being serialised. Background: packed lines not yet
    /// handed over, so the thread is fed in large pieces (one channel send
    /// per [`BATCH`] bytes, not per entry).
    pending: Vec<u8>,
}

/// Bytes of packed lines handed to the background thread at a time.
const BATCH: usize = 256 * 1024;

/// Batches in flight to a background thread; bounds its memory.
const BATCHES_IN_FLIGHT: usize = 4;

/// Where a recorder's lines go.
enum Sink<W: Write> {
    /// Serialised and compressed on the caller's thread.
    Inline(GzEncoder<W>),
    /// Serialised, compressed and written by a thread of the recorder's own.
    Background {
        batches: Option<SyncSender<Vec<u8>>>,
        worker: Option<JoinHandle<io::Result<W>>>,
    },
}

impl<W: Write> fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// The record is mostly headers and compresses well anyway, so the fast
/// level: on a busy import it is the compressor, not the disk, that costs.
fn gzip<W: Write>(w: W) -> GzEncoder<W> {
    GzEncoder::new(w, Compression::fast())
}

/// The background thread: serialises the packed lines of each batch, in
/// order, and compresses them into `w`.
fn serialize_batches<W: Write>(batches: Receiver<Vec<u8>>, w: W) -> io::Result<W> {
    let mut out = gzip(w);
    let mut json = Vec::with_capacity(2 * BATCH);
    let mut position = 0;
    for batch in batches {
        let mut packed = &batch[..];
        while let Some(line) = Line::unpack(&mut packed)? {
            line.serialize(position, &mut json)?;
            position += 1;
        }
        out.write_all(&json)?;
        json.clear();
    }
    out.finish()
}

impl<W: Write> Recorder<W> {
    /// A recorder writing a new record to `w`, serialising and compressing
    /// on the calling thread.
    pub fn new(w: W) -> Self {
        Recorder {
            out: Sink::Inline(gzip(w)),
            position: 0,
            pending: Vec::new(),
        }
    }

    /// A recorder writing a new record to `w` from a thread of its own, so
    /// that serialising, compressing and writing the record overlap with
    /// the caller's work (the importer records while it applies; JSON,
    /// base64 and deflate would otherwise sit on the import's critical
    /// path). Memory stays bounded: at most a few batches wait for the
    /// thread.
    pub fn in_background(w: W) -> io::Result<Self>
    where
        W: Send + 'static,
    {
        let (batches, rx) = sync_channel::<Vec<u8>>(BATCHES_IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("strata-record".into())
            .spawn(move || serialize_batches(rx, w))?;
        Ok(Recorder {
            out: Sink::Background {
                batches: Some(batches),
                worker: Some(worker),
            },
            position: 0,
            pending: Vec::with_capacity(BATCH),
        })
    }

    /// Records raw stream bytes. Empty input records nothing: an empty
    /// segment rebuilds nothing and only costs a line.
    pub fn segment(&mut self, raw: &[u8]) -> io::Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        self.write(Line::Segment(raw))
    }

    /// Records a tar entry: its name, the number of data bytes it has in
    /// the archive and their checksum (tar-split stores none when `size`
    /// is 0). Non-UTF-8 names go to `name_raw`, as tar-split does.
    pub fn file(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) -> io::Result<()> {
        self.write(Line::File { name, size, crc })
    }

    /// Completes the gzip stream and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.hand_over()?;
        match self.out {
            Sink::Inline(out) => out.finish(),
            Sink::Background {
                batches,
                mut worker,
            } => {
                // Closing the channel ends the worker's loop.
                drop(batches);
                Self::join(&mut worker)
            }
        }
    }

    fn write(&mut self, line: Line<'_>) -> io::Result<()> {
        match &mut self.out {
            Sink::Inline(out) => {
                line.serialize(self.position, &mut self.pending)?;
                out.write_all(&self.pending)?;
                self.pending.clear();
            }
            Sink::Background { .. } => {
                line.pack(&mut self.pending);
                if self.pending.len() >= BATCH {
                    self.hand_over()?;
                }
            }
        }
        self.position += 1;
        Ok(())
    }

    /// Sends the pending lines to the background thread. A closed channel
    /// means the worker stopped on an error, which joining it returns.
    fn hand_over(&mut self) -> io::Result<()> {
        let Sink::Background { batches, worker } = &mut self.out else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let sent = batches.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if sent {
            return Ok(());
        }
        drop(batches.take());
        match Self::join(worker) {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("the record writer stopped early")),
        }
    }

    fn join(worker: &mut Option<JoinHandle<io::Result<W>>>) -> io::Result<W> {
        worker
            .take()
            .ok_or_else(|| io::Error::other("the record writer already stopped"))?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the record writer panicked")))
    }
}

/// What [`record_stream`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Number of tar entries recorded.
    pub entries: u64,
    /// Names occurring more than once (compared after Go's
    /// `filepath.Clean`, as tar-split does), each listed once, in the
    /// cleaned form. A directory holds only the last version of such a
    /// path, so the record cannot be replayed from one; tar-split itself
    /// refuses such archives.
    pub duplicates: Vec<Vec<u8>>,
    /// Names of sparse entries. Their record covers the archived chunks,
    /// not the expanded file an extraction produces, so replaying from a
    /// directory would fail the checksum.
    pub sparse: Vec<Vec<u8>>,
}

impl RecordSummary {
    /// Whether the record can be replayed from an extracted directory: no
    /// duplicate paths and no sparse files. When false, the caller must
    /// keep the original stream (or give up byte-exact export).
    pub fn replayable_from_dir(&self) -> bool {
        self.duplicates.is_empty() && self.sparse.is_empty()
    }
}

/// Why [`record_stream`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError<E> {
    /// The tar stream is malformed or could not be read.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// Reading an entry's data (left unread by the callback) failed.
    #[error("reading tar entry data: {0}")]
    Data(#[source] io::Error),
    /// Writing the record failed.
    #[error("writing tar-split record: {0}")]
    Record(#[source] io::Error),
    /// The per-entry callback failed.
    #[error("applying tar entry: {0}")]
    Entry(#[source] E),
}

/// A `Read` over an entry's data that checksums and counts what passes.
struct CrcReader<'a, R: Read> {
    inner: crate::DataReader<'a, R>,
    crc: Crc64,
    len: u64,
}

impl<R: Read> Read for CrcReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<R: Read> EntryData for CrcReader<'_, R> {
    fn piece(&mut self, max: usize) -> io::Result<Option<Piece>> {
        let p = self.inner.piece(max)?;
        if let Some(p) = &p {
            self.crc.update(p.bytes());
            self.len += p.len() as u64;
        }
        Ok(p)
    }
}

/// Reads the whole tar stream from `r`, handing every entry to `on_entry`
/// and writing its tar-split record to `rec`.
///
/// `on_entry` gets the parsed header and the entry's data (empty for
/// entries without data; read, or taken in [`Piece`]s where `r` is over
/// chunks, each checksummed either way); it may consume any part of it. The rest
/// is drained here, because the record must checksum all of it and the
/// reader only records bytes it is asked for. Raw recording is switched on
/// on `r`, which should be fresh (bytes consumed before this call are not
/// in the record). Everything up to EOF, including bytes after the
/// end-of-archive blocks, ends up in the record. `rec` is not finished, so
/// the caller may decide what to do with a record of a failed stream.
///
/// The file entry's size is the number of data bytes the reader delivered,
/// which is what replay must reproduce. See [`RecordSummary`] for archives
/// that are recorded but cannot be replayed from a directory.
pub fn record_stream<R: Read, W: Write, E>(
    r: &mut TarReader<R>,
    rec: &mut Recorder<W>,
    mut on_entry: impl FnMut(&Header, &mut dyn EntryData) -> Result<(), E>,
) -> Result<RecordSummary, RecordError<E>> {
    r.set_record_raw(true);
    let mut summary = RecordSummary::default();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut dup_set: HashSet<Vec<u8>> = HashSet::new();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let next = r.next_entry()?;
        raw.clear();
        r.take_raw_into(&mut raw);
        rec.segment(&raw).map_err(RecordError::Record)?;
        let Some(header) = next else { break };
        summary.entries += 1;

        let clean = go_clean(&header.path);
        if !seen.insert(clean.clone()) && dup_set.insert(clean.clone()) {
            summary.duplicates.push(clean);
        }
        if header.sparse.is_some() {
            summary.sparse.push(header.path.clone());
        }

        let mut data = CrcReader {
            inner: r.data(),
            crc: Crc64::new(),
            len: 0,
        };
        on_entry(&header, &mut data).map_err(RecordError::Entry)?;
        loop {
            match data.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecordError::Data(e)),
            }
        }
        let crc = (data.len > 0).then(|| data.crc.finish());
        rec.file(&header.path, data.len, crc)
            .map_err(RecordError::Record)?;
    }
    Ok(summary)
}

/// Go's `filepath.Clean` on bytes (Unix separators): the key tar-split uses
/// to detect duplicate paths, so `./a`, `a/` and `a` are the same path.
fn go_clean(p: &[u8]) -> Vec<u8> {
    let rooted = p.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(&last) if last != b".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(c),
            },
            _ => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    if rooted {
        out.push(b'/');
    }
    for (i, c) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// One entry of a record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordEntry {
    /// Raw stream bytes to emit verbatim.
    Segment(Vec<u8>),
    /// A tar entry whose `size` data bytes come from the extracted file
    /// `name`. `crc` is present whenever `size > 0` (the reader enforces
    /// it) and may be absent otherwise.
    File {
        /// The entry name as recorded (raw bytes).
        name: Vec<u8>,
        /// Number of data bytes.
        size: u64,
        /// Big-endian CRC-64/ISO of the data.
        crc: Option<[u8; 8]>,
    },
}

/// One line of a record as read. Everything is optional because Go's
/// decoder leaves absent (or `null`) fields at their zero value. Strings
/// borrow from the decompressed text where they have no escapes (base64
/// payloads never do), so a record is not copied twice.
#[derive(Deserialize)]
struct EntryIn<'a> {
    #[serde(rename = "type", default)]
    kind: Option<u64>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name_raw: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, borrow)]
    payload: Option<Cow<'a, str>>,
}

/// Decompressed record text read at a time.
const RECORD_CHUNK: usize = 256 * 1024;

/// Reads a tar-split record: gunzips it (multi-member gzip accepted, as
/// Go's reader does) and yields its entries in order.
///
/// Accepts what tar-split writes and what its assembler accepts: objects
/// separated by any JSON whitespace, unknown fields, absent or `null`
/// fields. `position` is not checked (tar-split's assembler ignores it).
/// Rejected as `InvalidData`: malformed JSON or base64, an entry type other
/// than 1 or 2, and a file entry with data but no 8-byte checksum (it could
/// never be verified). Iteration stops after the first error.
///
/// The text is parsed from memory a chunk at a time (serde_json parsing
/// from an `io::Read` goes byte by byte, and was most of an export's time
/// for layers with large headers); memory stays at one chunk plus the
/// largest entry.
pub struct RecordReader<R: Read> {
    text: MultiGzDecoder<R>,
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf`.
    pos: usize,
    eof: bool,
    failed: bool,
}

impl<R: Read> fmt::Debug for RecordReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordReader")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: Read> RecordReader<R> {
    /// A reader over the gzip-compressed record `r`.
    pub fn new(r: R) -> Self {
        RecordReader {
            text: MultiGzDecoder::new(r),
            buf: Vec::new(),
            pos: 0,
            eof: false,
            failed: false,
        }
    }

    /// Appends the next chunk of text after the unparsed part.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + RECORD_CHUNK, 0);
        let n = loop {
            match self.text.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        let n = n.inspect_err(|_| self.buf.truncate(old))?;
        self.buf.truncate(old + n);
        self.eof = n == 0;
        Ok(())
    }

    /// The next entry, or `None` at the end of the text.
    fn parse_next(&mut self) -> Option<io::Result<RecordEntry>> {
        loop {
            let mut values =
                serde_json::Deserializer::from_slice(&self.buf[self.pos..]).into_iter::<EntryIn>();
            let parsed = match values.next() {
                Some(Ok(e)) => Some(Self::decode(e)),
                // Only whitespace left, or a value cut at the chunk's end:
                // more text decides, unless there is none.
                None if self.eof => return None,
                Some(Err(e)) if !e.is_eof() || self.eof => {
                    return Some(Err(invalid(e.to_string())));
                }
                None | Some(Err(_)) => None,
            };
            let used = values.byte_offset();
            if let Some(entry) = parsed {
                self.pos += used;
                return Some(entry);
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
        }
    }

    fn decode(e: EntryIn<'_>) -> io::Result<RecordEntry> {
        let b64 = |s: &str, what: &str| {
            BASE64
                .decode(s)
                .map_err(|err| invalid(format!("bad base64 in {what}: {err}")))
        };
        let payload = match &e.payload {
            Some(p) => b64(p, "payload")?,
            None => Vec::new(),
        };
        match e.kind.unwrap_or(0) {
            k if k == u64::from(SEGMENT_TYPE) => Ok(RecordEntry::Segment(payload)),
            k if k == u64::from(FILE_TYPE) => {
                // Go's GetName: a non-empty name_raw wins.
                let name = match (&e.name_raw, e.name) {
                    (Some(raw), _) if !raw.is_empty() => b64(raw, "name_raw")?,
                    (_, Some(n)) => n.into_owned().into_bytes(),
                    (_, None) => Vec::new(),
                };
                let size = e.size.unwrap_or(0);
                let crc = match <[u8; 8]>::try_from(payload.as_slice()) {
                    Ok(c) => Some(c),
                    Err(_) if size == 0 => None,
                    Err(_) => {
                        return Err(invalid(format!(
                            "file entry {:?} of {size} bytes has no 8-byte checksum",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                };
                Ok(RecordEntry::File { name, size, crc })
            }
            k => Err(invalid(format!("unknown record entry type {k}"))),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("tar-split record: {msg}"),
    )
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = io::Result<RecordEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.parse_next()?;
        self.failed = item.is_err();
        Some(item)
    }
}

/// Why [`replay`] failed. On any error the output holds a partial stream
/// and must be discarded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The record could not be read or is malformed.
    #[error("reading tar-split record: {0}")]
    Record(#[source] io::Error),
    /// The getter could not provide the file.
    #[error("opening {:?} for tar reassembly: {source}", String::from_utf8_lossy(.name))]
    Get {
        /// The file's recorded name.
        name: Vec<u8>,
        /// The getter's error.
        #[source]
        source: io::Error,
    },
    /// Reading the file's contents failed.
    #[error("reading {:?} for tar reassembly: {source}", String::from_utf8_lossy(.name))]
    Read {
        /// The file's recorded name.
        name: Vec<u8>,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The file's size differs from the recorded one.
    #[error("{:?} has {actual} bytes, the record says {expected}", String::from_utf8_lossy(.name))]
    Size {
        /// The file's recorded name.
        name: Vec<u8>,
        /// Recorded size.
        expected: u64,
        /// Size the getter delivered.
        actual: u64,
    },
    /// The file's contents do not match the recorded checksum.
    #[error("{:?} does not match its recorded checksum", String::from_utf8_lossy(.name))]
    Checksum {
        /// The file's recorded name.
        name: Vec<u8>,
    },
    /// Writing the rebuilt stream failed.
    #[error("writing reassembled tar: {0}")]
    Write(#[source] io::Error),
}

impl ReplayError {
    /// The name of the file concerned, for errors about one file.
    pub fn name(&self) -> Option<&[u8]> {
        match self {
            ReplayError::Get { name, .. }
            | ReplayError::Read { name, .. }
            | ReplayError::Size { name, .. }
            | ReplayError::Checksum { name } => Some(name),
            ReplayError::Record(_) | ReplayError::Write(_) => None,
        }
    }
}

/// Rebuilds the original tar stream from `record` into `out` and returns
/// the number of bytes written.
///
/// Segments are written verbatim. For each file entry with data, `get`
/// is called with its recorded name and must return its contents, which
/// are copied to `out` while being checked: exactly the recorded size and
/// the recorded CRC, else the error names the file. Entries without data
/// are not fetched (hard links, directories, empty files), as in
/// tar-split's assembler. The stream is written as it is verified, so on
/// error `out` holds a partial stream.
pub fn replay<'g, R: Read, W: Write>(
    record: RecordReader<R>,
    mut get: impl FnMut(&[u8]) -> io::Result<Box<dyn Read + 'g>>,
    mut out: W,
) -> Result<u64, ReplayError> {
    let mut written = 0u64;
    let mut buf = vec![0u8; COPY_BUF];
    for entry in record {
        match entry.map_err(ReplayError::Record)? {
            RecordEntry::Segment(b) => {
                out.write_all(&b).map_err(ReplayError::Write)?;
                written += b.len() as u64;
            }
            RecordEntry::File { size: 0, .. } => {}
            RecordEntry::File { name, size, crc } => {
                let mut src = match get(&name) {
                    Ok(s) => s,
                    Err(source) => return Err(ReplayError::Get { name, source }),
                };
                let mut sum = Crc64::new();
                let mut n = 0u64;
                // Copy at most `size` bytes, then probe for more: a longer
                // file must fail rather than shift the rest of the stream.
                let mut extra = 0u64;
                loop {
                    let probing = n == size;
                    let want = if probing {
                        buf.len()
                    } else {
                        usize::try_from(size - n).map_or(buf.len(), |r| r.min(buf.len()))
                    };
                    let got = match src.read(&mut buf[..want]) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => return Err(ReplayError::Read { name, source }),
                    };
                    if probing {
                        extra += got as u64;
                        continue;
                    }
                    sum.update(&buf[..got]);
                    out.write_all(&buf[..got]).map_err(ReplayError::Write)?;
                    n += got as u64;
                    written += got as u64;
                }
                if n + extra != size {
                    return Err(ReplayError::Size {
                        name,
                        expected: size,
                        actual: n + extra,
                    });
                }
                if crc != Some(sum.finish()) {
                    return Err(ReplayError::Checksum { name });
                }
            }
        }
    }
    out.flush().map_err(ReplayError::Write)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written lines are byte for byte what serde writes for
    /// `EntryOut`, for every kind of name, size and payload.
    #[test]
    fn lines_are_serde_s_bytes() {
        let raw: Vec<u8> = (0..=255u8).chain(0..7).collect();
        let names: [&[u8]; 7] = [
            b"",
            b"etc/passwd",
            b"a \"quoted\" \\ back\\slash/\t\n\x01\x7f",
            "ünïcødé/日本語/😀".as_bytes(),
            b"<html>&amp;",
            b"not\xffutf8",
            b"x",
        ];
        let mut lines = vec![(Line::Segment(&raw), 0u64), (Line::Segment(b"x"), 1)];
        for (i, n) in names.iter().enumerate() {
            for (size, crc) in [
                (0, None),
                (5, Some([1, 2, 3, 4, 5, 6, 7, 0xff])),
                (u64::MAX, Some([0; 8])),
            ] {
                lines.push((
                    Line::File { name: n, size, crc },
                    i as u64 * 1000 + size % 7,
                ));
            }
        }
        for (line, position) in &lines {
            let mut ours = Vec::new();
            line.serialize(*position, &mut ours).unwrap();
            let reference = match *line {
                Line::Segment(raw) => EntryOut {
                    kind: SEGMENT_TYPE,
                    name: None,
                    name_raw: None,
                    size: 0,
                    payload: Some(BASE64.encode(raw)),
                    position: *position,
                },
                Line::File { name, size, crc } => {
                    let (name, name_raw) = match std::str::from_utf8(name) {
                        Ok("") => (None, None),
                        Ok(s) => (Some(s), None),
                        Err(_) => (None, Some(BASE64.encode(name))),
                    };
                    EntryOut {
                        kind: FILE_TYPE,
                        name,
                        name_raw,
                        size,
                        payload: crc.map(|c| BASE64.encode(c)),
                        position: *position,
                    }
                }
            };
            let mut theirs = serde_json::to_vec(&reference).unwrap();
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn crc_matches_go() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO))
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xb909_56c7_75a4_1001u64.to_be_bytes());
        // From a record written by tar-split: "hello" -> PD7u4tgQAAA=.
        let mut c = Crc64::new();
        c.update(b"hello");
        assert_eq!(BASE64.encode(c.finish()), "PD7u4tgQAAA=");
    }

    /// Bit-at-a-time CRC-64/GO-ISO (reflected polynomial 0xD8 << 56), the
    /// definition the accelerated code must match on every length and
    /// every way of splitting the input.
    fn crc_reference(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in data {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xD800_0000_0000_0000
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc_matches_reference_on_all_lengths_and_splits() {
        let data: Vec<u8> = (0u32..9000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..600).chain([1023, 1024, 1025, 4096, 8191, 9000]) {
            let want = crc_reference(&data[..len]).to_be_bytes();
            let mut whole = Crc64::new();
            whole.update(&data[..len]);
            assert_eq!(whole.finish(), want, "length {len}");
            let mut split = Crc64::new();
            for chunk in data[..len].chunks(len / 3 + 7) {
                split.update(chunk);
            }
            assert_eq!(split.finish(), want, "length {len} in chunks");
        }
    }

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("./a", "a"),
            ("a/", "a"),
            ("a//b/./c/..", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/", "/"),
        ] {
            assert_eq!(go_clean(i.as_bytes()), o.as_bytes(), "{i}");
        }
    }
}
