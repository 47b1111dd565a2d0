//! Streaming tar reader: turns a byte stream into [`Header`]s plus each
//! entry's data, folding every extension header (PAX local and global, GNU
//! long name/link, GNU sparse in all its forms) into the header it applies
//! to, and optionally recording every non-data byte so the exact input can
//! be rebuilt later.

use std::cmp::min;
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use crate::block::{self, BLOCK, Block, Format, field};
use crate::error::{Result, TarError};
use crate::header::{EntryKind, Header, Sparse, SparseChunk, Timestamp};

/// Largest PAX extended header or GNU long name/link the reader accepts, in
/// bytes. These are held in memory whole, so a hostile archive must not be
/// able to claim gigabytes; real ones are a few hundred bytes (xattr values
/// on Linux are at most 64 KiB).
pub const MAX_EXTENSION_SIZE: u64 = 1 << 20;

/// Largest sparse map the reader accepts, in bytes of map encoding (the
/// GNU 1.0 in-data map text, or old-GNU extension blocks). Larger than
/// [`MAX_EXTENSION_SIZE`] because heavily fragmented disk images carry
/// hundreds of thousands of extents; still bounded because the map is
/// held in memory.
pub const MAX_SPARSE_MAP_SIZE: u64 = 16 << 20;

/// Size of the internal read buffer. Large enough that a layer import is
/// not bound by read syscalls.
const BUF_SIZE: usize = 128 * 1024;

/// Reads of at least this many data bytes bypass the internal buffer when
/// it is empty, so bulk data is copied once (kernel to caller).
const DIRECT_READ_MIN: usize = BUF_SIZE / 4;

/// PAX records as (key, value) pairs, in stream order.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

const PAX_SCHILY_XATTR: &[u8] = b"SCHILY.xattr.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a header next.
    Headers,
    /// Inside an entry's data (possibly fully read, padding still pending).
    Data,
    /// End of archive seen (or reached without trailer).
    End,
}

/// A streaming tar reader.
///
/// Call [`next_entry`](Self::next_entry) for each entry, then read its data
/// with [`read_data`](Self::read_data) or [`data`](Self::data) (or don't: the
/// next call skips what is left). Memory use is bounded by the internal
/// 128 KiB buffer plus the extension headers of one entry, whatever the
/// size of the entries.
///
/// Entries of kinds other than [`EntryKind::Regular`] have no data: their
/// size field is ignored, as Go's `archive/tar` (and so Docker) does.
/// A type `'\0'` entry whose name ends in `/` is a directory (pre-POSIX
/// convention). Type flags outside `0-7`, `x`, `g`, `L`, `K`, `S` and NUL
/// are refused with [`TarError::UnknownType`].
///
/// After an error the reader stays failed: later calls return a copy of
/// the same error rather than resynchronising mid-stream.
pub struct TarReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// How `chunk` is refilled when `inner` hands out its own chunks
    /// ([`TarReader::over_chunks`]); `None`: read into `buf`.
    next_chunk: Option<NextChunk<R>>,
    /// The source's current chunk, read in place of `buf` in chunk mode.
    chunk: Option<SharedChunk>,
    pos: usize,
    len: usize,
    /// Stream offset of `buf[pos]`: bytes handed out so far.
    consumed: u64,
    state: State,
    /// Offset of the current entry's first header block.
    entry_offset: u64,
    /// Offset of the current entry's main (non-extension) header block.
    header_offset: u64,
    /// Current entry's path, for data error messages.
    entry_path: Vec<u8>,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Zero padding after the current entry's data.
    padding: u64,
    record_raw: bool,
    raw: Vec<u8>,
    /// PAX global records in force: one per key, in first-seen order.
    globals: Vec<(Vec<u8>, Vec<u8>)>,
    failed: Option<TarError>,
}

/// Extension headers read so far for the entry being assembled.
#[derive(Default)]
struct Pending {
    local: Vec<(Vec<u8>, Vec<u8>)>,
    /// Total size of the local PAX headers read.
    local_bytes: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// Offset of the first local extension header, if any.
    first_offset: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.first_offset.is_none()
    }

    /// The best guess at the entry path before its main header is parsed,
    /// for error messages.
    fn known_path(&self) -> Option<Vec<u8>> {
        if let Some(n) = &self.long_name {
            return Some(n.clone());
        }
        self.local
            .iter()
            .rev()
            .find(|(k, v)| k == b"path" && !v.is_empty())
            .map(|(_, v)| block::cstr(v).to_vec())
    }
}

/// [`ChunkSource::next_chunk`] of a reader's source.
type NextChunk<R> = fn(&mut R) -> io::Result<Option<SharedChunk>>;

/// A chunk of the stream as a [`ChunkSource`] hands it out. It is shared
/// so that pieces of it ([`Piece`]: file data queued for writing) can
/// outlive the reader's use of it; what happens when the last holder drops
/// it (a read-ahead thread takes its buffer back) is the source's affair.
pub type SharedChunk = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A stream that is read ahead into chunks of its own (a read-ahead
/// thread's buffers): [`TarReader::over_chunks`] parses those chunks in
/// place instead of copying them into a buffer of its own, and hands out
/// file data as [`Piece`]s of them.
pub trait ChunkSource {
    /// The stream's next bytes; `None` (or an empty chunk) at the end.
    fn next_chunk(&mut self) -> io::Result<Option<SharedChunk>>;
}

impl<T: ChunkSource + ?Sized> ChunkSource for &mut T {
    fn next_chunk(&mut self) -> io::Result<Option<SharedChunk>> {
        (**self).next_chunk()
    }
}

/// Part of an entry's data inside a [`SharedChunk`]: the bytes without a
/// copy, valid for as long as the piece is kept.
#[derive(Clone)]
pub struct Piece {
    chunk: SharedChunk,
    start: usize,
    end: usize,
}

impl Piece {
    /// The piece's bytes.
    pub fn bytes(&self) -> &[u8] {
        &(*self.chunk).as_ref()[self.start..self.end]
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for a piece of no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// True when both pieces lie in the same chunk (which stays in memory
    /// while either is kept).
    pub fn same_chunk(&self, other: &Piece) -> bool {
        Arc::ptr_eq(&self.chunk, &other.chunk)
    }
}

/// An entry's data as an applier consumes it: a `Read`, and, where the
/// bytes already sit in a shared chunk, [`Piece`]s of it handed out
/// without a copy.
pub trait EntryData: Read {
    /// The next piece of the data, at most `max` (> 0) bytes, without
    /// copying it; `Ok(None)` when the source cannot hand pieces out (the
    /// default) or the data is at its end: then read it as a `Read`.
    fn piece(&mut self, max: usize) -> io::Result<Option<Piece>> {
        let _ = max;
        Ok(None)
    }
}

impl EntryData for &[u8] {}

impl EntryData for io::Empty {}

/// The bytes the reader is working through: the source's chunk in chunk
/// mode, else its own buffer (a free function, so that callers can borrow
/// other fields of the reader beside it).
fn window<'a>(buf: &'a [u8], chunk: &'a Option<SharedChunk>) -> &'a [u8] {
    match chunk {
        Some(c) => (**c).as_ref(),
        None => buf,
    }
}

impl<R: Read + ChunkSource> TarReader<R> {
    /// A reader over the chunks `r` hands out: each becomes the reader's
    /// buffer as it is, so headers and file data are read where the source
    /// put them, one copy fewer than [`new`](Self::new), and file data can
    /// be taken as pieces of them ([`data_piece`](Self::data_piece)).
    pub fn over_chunks(r: R) -> Self {
        let mut t = TarReader::new(r);
        t.buf = Vec::new();
        t.next_chunk = Some(R::next_chunk);
        t
    }
}

impl<R: Read> TarReader<R> {
    /// A reader over `r`. `r` need not be buffered: the reader buffers.
    pub fn new(r: R) -> Self {
        TarReader {
            inner: r,
            buf: vec![0u8; BUF_SIZE],
            next_chunk: None,
            chunk: None,
            pos: 0,
            len: 0,
            consumed: 0,
            state: State::Headers,
            entry_offset: 0,
            header_offset: 0,
            entry_path: Vec::new(),
            remaining: 0,
            padding: 0,
            record_raw: false,
            raw: Vec::new(),
            globals: Vec::new(),
            failed: None,
        }
    }

    /// Turns raw framing capture on or off.
    ///
    /// While on, every byte the reader consumes that is not file data is
    /// appended to an internal buffer: header blocks, extension headers and
    /// their data, sparse maps stored in the data area, padding after data,
    /// the end-of-archive blocks and anything after them up to EOF (drained
    /// by the [`next_entry`](Self::next_entry) call that returns `None`).
    /// Concatenating, in stream order, what [`take_raw`](Self::take_raw)
    /// returns after each `next_entry` and the entry data read in between
    /// reproduces the input exactly — provided all data is read: data the
    /// reader skips on the caller's behalf is neither returned nor recorded.
    pub fn set_record_raw(&mut self, on: bool) {
        self.record_raw = on;
    }

    /// Returns the recorded non-data bytes and clears the record.
    pub fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// Appends the recorded non-data bytes to `dst` and clears the record,
    /// keeping the internal buffer's allocation for reuse.
    pub fn take_raw_into(&mut self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.raw);
        self.raw.clear();
    }

    /// Bytes of the stream consumed so far (headers, data, padding).
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// Offset of the current entry's first header block (its first
    /// extension header, if it has any).
    pub fn entry_offset(&self) -> u64 {
        self.entry_offset
    }

    /// Data bytes of the current entry not yet read.
    pub fn data_remaining(&self) -> u64 {
        if self.state == State::Data {
            self.remaining
        } else {
            0
        }
    }

    /// The underlying reader. Bytes already buffered are not in it.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Advances to the next entry, skipping unread data of the current
    /// one. Returns `Ok(None)` at the end of the archive: two zero blocks,
    /// or a clean EOF where a header would start (many producers omit the
    /// trailer); and keeps returning it after that.
    pub fn next_entry(&mut self) -> Result<Option<Header>> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate());
        }
        match self.advance() {
            Ok(h) => Ok(h),
            Err(e) => {
                self.failed = Some(e.duplicate());
                Err(e)
            }
        }
    }

    /// Reads the current entry's archived data into `buf`, returning 0 at
    /// its end (and when there is no current entry). A stream that ends
    /// before the entry's data does is an error of kind `UnexpectedEof`
    /// naming the entry.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into());
        }
        if self.state != State::Data || self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| min(r, buf.len()));
        let n = if self.pos < self.len {
            let n = min(want, self.len - self.pos);
            buf[..n].copy_from_slice(&window(&self.buf, &self.chunk)[self.pos..self.pos + n]);
            self.pos += n;
            n
        } else if want >= DIRECT_READ_MIN && self.next_chunk.is_none() {
            // Reading no more than the entry's data keeps the next header in
            // the underlying stream for the buffered path.
            self.read_inner_direct(&mut buf[..want])?
        } else {
            let avail = self.fill()?;
            let n = min(want, avail);
            buf[..n].copy_from_slice(&window(&self.buf, &self.chunk)[self.pos..self.pos + n]);
            self.pos += n;
            n
        };
        self.took_data(n)?;
        Ok(n)
    }

    /// The next piece of the current entry's data, at most `max` bytes, as
    /// a slice of the source's chunk instead of a copy (see
    /// [`over_chunks`](Self::over_chunks)). `Ok(None)` when the reader is
    /// not over chunks, and when there is no data left; errors as
    /// [`read_data`](Self::read_data).
    pub fn data_piece(&mut self, max: usize) -> io::Result<Option<Piece>> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into());
        }
        if self.next_chunk.is_none() || self.state != State::Data || self.remaining == 0 || max == 0
        {
            return Ok(None);
        }
        let want = usize::try_from(self.remaining).map_or(max, |r| min(r, max));
        let n = min(want, self.fill()?);
        let piece = self.chunk.as_ref().map(|c| Piece {
            chunk: Arc::clone(c),
            start: self.pos,
            end: self.pos + n,
        });
        self.pos += n;
        self.took_data(n)?;
        Ok(piece)
    }

    /// Accounts for `n` data bytes just handed out; none at all means the
    /// stream ended inside the entry's data, which fails the reader.
    fn took_data(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            let e = TarError::Truncated {
                offset: self.header_offset,
                path: Some(self.entry_path.clone()),
                what: "data",
            };
            self.failed = Some(e.duplicate());
            return Err(e.into());
        }
        self.consumed += n as u64;
        self.remaining -= n as u64;
        Ok(())
    }

    /// A `Read` over the current entry's data (see
    /// [`read_data`](Self::read_data)).
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { reader: self }
    }

    // ---- low-level stream access -------------------------------------

    /// Makes buffered bytes available, reading from the underlying stream
    /// if the buffer is empty. Returns how many are available; 0 at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos < self.len {
            return Ok(self.len - self.pos);
        }
        if let Some(next) = self.next_chunk {
            // Let go of the spent chunk first, so the source can reuse it.
            self.chunk = None;
            self.pos = 0;
            self.len = 0;
            self.chunk = next(&mut self.inner)?;
            self.len = window(&self.buf, &self.chunk).len();
            return Ok(self.len);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_inner_direct(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to `out.len()` non-data bytes, recording them as raw.
    /// Returns fewer only at EOF.
    fn read_meta(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < out.len() {
            let avail = self.fill()?;
            if avail == 0 {
                break;
            }
            let n = min(avail, out.len() - got);
            out[got..got + n]
                .copy_from_slice(&window(&self.buf, &self.chunk)[self.pos..self.pos + n]);
            self.pos += n;
            got += n;
        }
        self.consumed += got as u64;
        if self.record_raw {
            self.raw.extend_from_slice(&out[..got]);
        }
        Ok(got)
    }

    /// Consumes up to `n` bytes without returning them, recording them as
    /// raw if `meta` (padding) and not if file data. Returns how many were
    /// consumed; fewer than `n` only at EOF.
    fn skip(&mut self, n: u64, meta: bool) -> io::Result<u64> {
        let mut left = n;
        while left > 0 {
            let avail = self.fill()?;
            if avail == 0 {
                break;
            }
            let k = usize::try_from(left).map_or(avail, |l| min(l, avail));
            if meta && self.record_raw {
                self.raw
                    .extend_from_slice(&window(&self.buf, &self.chunk)[self.pos..self.pos + k]);
            }
            self.pos += k;
            self.consumed += k as u64;
            left -= k as u64;
        }
        Ok(n - left)
    }

    /// Appends everything up to EOF to the raw record.
    fn drain_to_eof(&mut self) -> io::Result<()> {
        loop {
            let avail = self.fill()?;
            if avail == 0 {
                return Ok(());
            }
            self.raw
                .extend_from_slice(&window(&self.buf, &self.chunk)[self.pos..self.pos + avail]);
            self.pos += avail;
            self.consumed += avail as u64;
        }
    }

    // ---- entry assembly ------------------------------------------------

    fn advance(&mut self) -> Result<Option<Header>> {
        match self.state {
            State::End => {
                if self.record_raw {
                    let off = self.consumed;
                    self.drain_to_eof().map_err(io_err(off, None))?;
                }
                return Ok(None);
            }
            State::Data => self.finish_entry()?,
            State::Headers => {}
        }
        self.read_entry()
    }

    /// Skips the rest of the current entry's data and its padding.
    fn finish_entry(&mut self) -> Result<()> {
        let offset = self.header_offset;
        let path = Some(self.entry_path.clone());
        let want = self.remaining;
        let got = self
            .skip(want, false)
            .map_err(io_err(offset, path.clone()))?;
        self.remaining -= got;
        if got < want {
            return Err(TarError::Truncated {
                offset,
                path,
                what: "data",
            });
        }
        let pad = self.padding;
        let got = self.skip(pad, true).map_err(io_err(offset, path.clone()))?;
        self.padding -= got;
        if got < pad {
            return Err(TarError::Truncated {
                offset,
                path,
                what: "data padding",
            });
        }
        self.state = State::Headers;
        Ok(())
    }

    /// Reads one whole block of metadata; `Ok(None)` on a clean EOF at the
    /// block boundary, `Truncated` on a partial block.
    fn read_block(
        &mut self,
        offset: u64,
        path: impl FnOnce() -> Option<Vec<u8>>,
        what: &'static str,
    ) -> Result<Option<Block>> {
        let mut blk = [0u8; BLOCK];
        let n = match self.read_meta(&mut blk) {
            Ok(n) => n,
            Err(source) => {
                return Err(TarError::Io {
                    offset,
                    path: path(),
                    source,
                });
            }
        };
        if n == 0 {
            return Ok(None);
        }
        if n < BLOCK {
            return Err(TarError::Truncated {
                offset,
                path: path(),
                what,
            });
        }
        Ok(Some(blk))
    }

    /// Reads the `size` bytes of an extension header's data plus padding.
    fn read_ext_data(&mut self, size: u64, offset: u64, pending: &Pending) -> Result<Vec<u8>> {
        // The caller bounded `size` by MAX_EXTENSION_SIZE.
        let padded = size.next_multiple_of(BLOCK as u64) as usize;
        let mut data = vec![0u8; padded];
        let n = self
            .read_meta(&mut data)
            .map_err(io_err(offset, pending.known_path()))?;
        if n < padded {
            return Err(TarError::Truncated {
                offset,
                path: pending.known_path(),
                what: "extension header data",
            });
        }
        data.truncate(size as usize);
        Ok(data)
    }

    fn read_entry(&mut self) -> Result<Option<Header>> {
        let mut pending = Pending::default();
        self.entry_offset = self.consumed;
        let (blk, hoff) = loop {
            let off = self.consumed;
            let Some(blk) = self.read_block(off, || pending.known_path(), "header")? else {
                if pending.is_empty() {
                    // No trailer: treat a clean EOF at a boundary as the end.
                    self.state = State::End;
                    return Ok(None);
                }
                return Err(TarError::Truncated {
                    offset: off,
                    path: pending.known_path(),
                    what: "header after extension header",
                });
            };
            if block::is_zero(&blk) {
                if !pending.is_empty() {
                    return Err(TarError::Truncated {
                        offset: off,
                        path: pending.known_path(),
                        what: "header after extension header",
                    });
                }
                self.end_of_archive(off)?;
                return Ok(None);
            }
            let (unsigned, signed) = block::checksums(&blk);
            let stored = block::parse_octal(&blk[field::CHKSUM]);
            if stored != Some(unsigned)
                && stored.and_then(|s| i64::try_from(s).ok()) != Some(signed)
            {
                return Err(TarError::BadChecksum {
                    offset: off,
                    path: pending.known_path(),
                });
            }
            match blk[field::TYPEFLAG] {
                flag @ (b'x' | b'g') => {
                    let size = block::parse_unsigned(&blk[field::SIZE]).ok_or_else(|| {
                        TarError::InvalidField {
                            offset: off,
                            path: pending.known_path(),
                            field: "PAX header size",
                        }
                    })?;
                    if size > MAX_EXTENSION_SIZE {
                        return Err(TarError::BadPax {
                            offset: off,
                            path: pending.known_path(),
                            reason: format!(
                                "absurd size {size} (limit {MAX_EXTENSION_SIZE} bytes)"
                            ),
                        });
                    }
                    let data = self.read_ext_data(size, off, &pending)?;
                    let records = parse_pax_records(&data).map_err(|reason| TarError::BadPax {
                        offset: off,
                        path: pending.known_path(),
                        reason,
                    })?;
                    if flag == b'g' {
                        self.apply_globals(records, off)?;
                        if pending.is_empty() {
                            // A global header belongs to no entry.
                            self.entry_offset = self.consumed;
                        }
                    } else {
                        // Each header is bounded, but a chain of them must be
                        // too, or memory would grow with the input.
                        pending.local_bytes += size;
                        if pending.local_bytes > MAX_EXTENSION_SIZE {
                            return Err(TarError::BadPax {
                                offset: off,
                                path: pending.known_path(),
                                reason: format!(
                                    "extended headers of one entry exceed {MAX_EXTENSION_SIZE} bytes"
                                ),
                            });
                        }
                        pending.first_offset.get_or_insert(off);
                        pending.local.extend(records);
                    }
                }
                flag @ (b'L' | b'K') => {
                    let what = if flag == b'L' {
                        "GNU long name size"
                    } else {
                        "GNU long link size"
                    };
                    let size = block::parse_unsigned(&blk[field::SIZE])
                        .filter(|&s| s <= MAX_EXTENSION_SIZE)
                        .ok_or_else(|| TarError::InvalidField {
                            offset: off,
                            path: pending.known_path(),
                            field: what,
                        })?;
                    let data = self.read_ext_data(size, off, &pending)?;
                    // GNU tar NUL-terminates the name and counts the NUL.
                    let name = block::cstr(&data).to_vec();
                    pending.first_offset.get_or_insert(off);
                    if flag == b'L' {
                        pending.long_name = Some(name);
                    } else {
                        pending.long_link = Some(name);
                    }
                }
                _ => break (blk, off),
            }
        };
        self.header_offset = hoff;
        if let Some(first) = pending.first_offset {
            self.entry_offset = first;
        } else {
            self.entry_offset = hoff;
        }
        let header = self.build_header(&blk, hoff, pending)?;
        self.entry_path.clear();
        self.entry_path.extend_from_slice(&header.path);
        self.state = State::Data;
        Ok(Some(header))
    }

    /// Handles a zero block where a header was expected: the archive ends
    /// here if the next block is zero too or the stream ends.
    fn end_of_archive(&mut self, off: u64) -> Result<()> {
        let off2 = self.consumed;
        match self.read_block(off2, || None, "end-of-archive marker")? {
            None => {}
            Some(b) if block::is_zero(&b) => {}
            Some(_) => {
                return Err(TarError::LoneZeroBlock {
                    offset: off,
                    path: None,
                });
            }
        }
        self.state = State::End;
        if self.record_raw {
            self.drain_to_eof().map_err(io_err(off, None))?;
        }
        Ok(())
    }

    fn apply_globals(&mut self, records: Vec<(Vec<u8>, Vec<u8>)>, off: u64) -> Result<()> {
        for (k, v) in records {
            self.globals.retain(|(gk, _)| *gk != k);
            // An empty value deletes the global (POSIX).
            if !v.is_empty() {
                self.globals.push((k, v));
            }
        }
        let total: usize = self.globals.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total as u64 > MAX_EXTENSION_SIZE {
            return Err(TarError::BadPax {
                offset: off,
                path: None,
                reason: format!("global records exceed {MAX_EXTENSION_SIZE} bytes"),
            });
        }
        Ok(())
    }

    fn build_header(&mut self, blk: &Block, off: u64, pending: Pending) -> Result<Header> {
        let format = block::format_of(blk);
        let flag = blk[field::TYPEFLAG];

        // Header-block view of the name and times.
        let mut gnu_times = (None, None);
        let mut prefix: &[u8] = &[];
        match format {
            Format::Ustar => prefix = block::cstr(&blk[field::PREFIX]),
            Format::Star => {
                prefix = block::cstr(&blk[field::STAR_PREFIX]);
                gnu_times = (
                    block::parse_numeric(&blk[field::STAR_ATIME]).map(Timestamp::from_secs),
                    block::parse_numeric(&blk[field::STAR_CTIME]).map(Timestamp::from_secs),
                );
            }
            Format::Gnu => {
                let at = &blk[field::GNU_ATIME];
                let ct = &blk[field::GNU_CTIME];
                let parse = |f: &[u8]| {
                    if f[0] == 0 {
                        Some(None)
                    } else {
                        block::parse_numeric(f).map(|s| Some(Timestamp::from_secs(s)))
                    }
                };
                match (parse(at), parse(ct)) {
                    (Some(a), Some(c)) => gnu_times = (a, c),
                    _ => {
                        // Go before 1.8 wrote a ustar prefix into GNU
                        // headers; Docker layers from that era exist. If the
                        // time fields do not parse, read them as a prefix.
                        let p = block::cstr(&blk[field::PREFIX]);
                        if p.is_ascii() {
                            prefix = p;
                        }
                    }
                }
            }
            Format::V7 => {}
        }
        let name = block::cstr(&blk[field::NAME]);
        let mut path = if prefix.is_empty() {
            name.to_vec()
        } else {
            let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
            p.extend_from_slice(prefix);
            p.push(b'/');
            p.extend_from_slice(name);
            p
        };
        let mut link_name = block::cstr(&blk[field::LINKNAME]).to_vec();

        // Fold PAX records: globals first, local ones override.
        let pax = EffectivePax::resolve(&self.globals, &pending.local).map_err(|e| match e {
            PaxError::Nul(v) => TarError::NulInName {
                offset: off,
                path: Some(v),
            },
            PaxError::Bad(reason) => TarError::BadPax {
                offset: off,
                path: pending.known_path(),
                reason,
            },
        })?;
        if let Some(p) = pax.path {
            path = p.to_vec();
        }
        if let Some(l) = pax.linkpath {
            link_name = l.to_vec();
        }
        if let Some(n) = pending.long_name {
            path = n;
        }
        if let Some(l) = pending.long_link {
            link_name = l;
        }

        let err_field = |field: &'static str, path: &[u8]| TarError::InvalidField {
            offset: off,
            path: Some(path.to_vec()),
            field,
        };

        let kind = match flag {
            b'0' | b'7' | b'S' => EntryKind::Regular,
            0 if path.last() == Some(&b'/') => EntryKind::Directory,
            0 => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            flag => {
                return Err(TarError::UnknownType {
                    offset: off,
                    path: Some(path),
                    flag,
                });
            }
        };

        let mode =
            block::parse_unsigned(&blk[field::MODE]).ok_or_else(|| err_field("mode", &path))?;
        let uid = match pax.uid {
            Some(v) => v,
            None => {
                block::parse_unsigned(&blk[field::UID]).ok_or_else(|| err_field("uid", &path))?
            }
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => {
                block::parse_unsigned(&blk[field::GID]).ok_or_else(|| err_field("gid", &path))?
            }
        };
        let size_field = match pax.size {
            Some(v) => v,
            None => {
                block::parse_unsigned(&blk[field::SIZE]).ok_or_else(|| err_field("size", &path))?
            }
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timestamp::from_secs(
                block::parse_numeric(&blk[field::MTIME])
                    .ok_or_else(|| err_field("mtime", &path))?,
            ),
        };
        let has_owner_names = format != Format::V7;
        let uname = match pax.uname {
            Some(u) => u.to_vec(),
            None if has_owner_names => block::cstr(&blk[field::UNAME]).to_vec(),
            None => Vec::new(),
        };
        let gname = match pax.gname {
            Some(g) => g.to_vec(),
            None if has_owner_names => block::cstr(&blk[field::GNAME]).to_vec(),
            None => Vec::new(),
        };
        // Other kinds leave garbage in these fields often enough that Go
        // only reads them for devices; so do we.
        let (dev_major, dev_minor) =
            if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice)
                && format != Format::V7
            {
                let major = block::parse_unsigned(&blk[field::DEVMAJOR])
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| err_field("devmajor", &path))?;
                let minor = block::parse_unsigned(&blk[field::DEVMINOR])
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| err_field("devminor", &path))?;
                (major, minor)
            } else {
                (0, 0)
            };

        // Only regular files carry data (Go's rule): a link or directory
        // with a non-zero size field is followed directly by the next
        // header.
        let mut size = if kind == EntryKind::Regular {
            size_field
        } else {
            0
        };

        let mut header = Header {
            path,
            link_name,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            uname,
            gname,
            size,
            mtime,
            atime: pax.atime.or(gnu_times.0),
            ctime: pax.ctime.or(gnu_times.1),
            dev_major,
            dev_minor,
            xattrs: pax
                .xattrs
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            pax: Vec::new(),
            sparse: None,
        };

        // Sparse files.
        let mut data_prefix_consumed = 0u64;
        if flag == b'S' {
            if format != Format::Gnu {
                // star uses the same flag with another layout.
                return Err(TarError::BadSparse {
                    offset: off,
                    path: Some(header.path),
                    reason: "type 'S' in a non-GNU header (star sparse files are not supported)"
                        .into(),
                });
            }
            header.sparse = Some(self.read_old_gnu_sparse(blk, off, &header.path)?);
        } else if kind == EntryKind::Regular {
            let sparse_info =
                SparsePax::from_local(&pending.local).map_err(|reason| TarError::BadSparse {
                    offset: off,
                    path: Some(header.path.clone()),
                    reason,
                })?;
            if let Some(sp) = sparse_info {
                if let Some(n) = sp.name {
                    header.path = n.to_vec();
                }
                let bad = |reason: String| TarError::BadSparse {
                    offset: off,
                    path: Some(header.path.clone()),
                    reason,
                };
                let real_size = sp
                    .real_size
                    .ok_or_else(|| bad("missing GNU.sparse.realsize/size".into()))?;
                let chunks = match sp.map {
                    SparseMap::InPax(chunks) => chunks,
                    SparseMap::InData => {
                        let (chunks, used) = self.read_sparse_map_1_0(size, off, &header.path)?;
                        data_prefix_consumed = used;
                        chunks
                    }
                };
                header.sparse = Some(Sparse { real_size, chunks });
            }
        }
        if let Some(sp) = &header.sparse {
            size -= data_prefix_consumed;
            validate_sparse(sp, size).map_err(|reason| TarError::BadSparse {
                offset: off,
                path: Some(header.path.clone()),
                reason,
            })?;
        }
        header.size = size;
        // Padding is computed from the archived data size including any
        // in-data map, since that is what the producer padded.
        let total = size + data_prefix_consumed;
        self.remaining = size;
        self.padding = total.next_multiple_of(BLOCK as u64) - total;

        header.pax = self.globals.iter().cloned().chain(pending.local).collect();
        Ok(header)
    }

    /// Reads the old GNU sparse map: four slots in the header, then
    /// extension blocks (no checksum) while the "is extended" flag is set.
    fn read_old_gnu_sparse(&mut self, blk: &Block, off: u64, path: &[u8]) -> Result<Sparse> {
        let bad_field = |field| TarError::InvalidField {
            offset: off,
            path: Some(path.to_vec()),
            field,
        };
        let real_size = block::parse_unsigned(&blk[field::GNU_REALSIZE])
            .ok_or_else(|| bad_field("realsize"))?;
        let mut chunks = Vec::new();
        parse_sparse_slots(
            &blk[field::GNU_SPARSE..field::GNU_SPARSE + 4 * 24],
            &mut chunks,
        )
        .ok_or_else(|| bad_field("sparse map"))?;
        let mut extended = blk[field::GNU_IS_EXTENDED] != 0;
        let mut map_bytes = 0u64;
        while extended {
            map_bytes += BLOCK as u64;
            if map_bytes > MAX_SPARSE_MAP_SIZE {
                return Err(TarError::BadSparse {
                    offset: off,
                    path: Some(path.to_vec()),
                    reason: format!("sparse map exceeds {MAX_SPARSE_MAP_SIZE} bytes"),
                });
            }
            let ext_off = self.consumed;
            let ext = self
                .read_block(ext_off, || Some(path.to_vec()), "sparse extension header")?
                .ok_or_else(|| TarError::Truncated {
                    offset: off,
                    path: Some(path.to_vec()),
                    what: "sparse extension header",
                })?;
            parse_sparse_slots(&ext[..21 * 24], &mut chunks)
                .ok_or_else(|| bad_field("sparse extension map"))?;
            extended = ext[504] != 0;
        }
        Ok(Sparse { real_size, chunks })
    }

    /// Reads the GNU 1.0 sparse map at the start of the data area: decimal
    /// numbers, one per line (count, then offset/length pairs), padded to a
    /// block boundary. Returns the chunks and the bytes consumed.
    fn read_sparse_map_1_0(
        &mut self,
        data_size: u64,
        off: u64,
        path: &[u8],
    ) -> Result<(Vec<SparseChunk>, u64)> {
        let bad = |reason: &str| TarError::BadSparse {
            offset: off,
            path: Some(path.to_vec()),
            reason: reason.to_string(),
        };
        let mut parser = SparseMapParser::default();
        let mut used = 0u64;
        while !parser.done() {
            if used + BLOCK as u64 > data_size {
                return Err(bad("sparse map runs past the entry data"));
            }
            if used + BLOCK as u64 > MAX_SPARSE_MAP_SIZE {
                return Err(bad("sparse map too large"));
            }
            let at = self.consumed;
            let b = self
                .read_block(at, || Some(path.to_vec()), "sparse map")?
                .ok_or_else(|| TarError::Truncated {
                    offset: off,
                    path: Some(path.to_vec()),
                    what: "sparse map",
                })?;
            used += BLOCK as u64;
            parser.feed(&b).map_err(bad)?;
        }
        Ok((parser.chunks, used))
    }
}

/// `Read` over the current entry's data; see [`TarReader::read_data`].
pub struct DataReader<'a, R: Read> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

impl<R: Read> EntryData for DataReader<'_, R> {
    fn piece(&mut self, max: usize) -> io::Result<Option<Piece>> {
        self.reader.data_piece(max)
    }
}

fn io_err(offset: u64, path: Option<Vec<u8>>) -> impl FnOnce(io::Error) -> TarError {
    move |source| TarError::Io {
        offset,
        path,
        source,
    }
}

/// Parses old-GNU sparse slots of 24 bytes (12 offset, 12 length). A slot
/// whose offset starts with NUL ends the list in this block (GNU and BSD
/// tar's rule). `None` on an unparsable number.
fn parse_sparse_slots(slots: &[u8], out: &mut Vec<SparseChunk>) -> Option<()> {
    for slot in slots.chunks_exact(24) {
        if slot[0] == 0 {
            break;
        }
        let offset = block::parse_unsigned(&slot[..12])?;
        let length = block::parse_unsigned(&slot[12..])?;
        out.push(SparseChunk { offset, length });
    }
    Some(())
}

/// Chunks must be in order, must not overlap, must lie within the real
/// size, and must add up to the archived data (the header's promise that
/// the data is their concatenation).
fn validate_sparse(sp: &Sparse, data_size: u64) -> std::result::Result<(), String> {
    let mut prev_end = 0u64;
    let mut total = 0u64;
    for c in &sp.chunks {
        let end = c
            .offset
            .checked_add(c.length)
            .ok_or("chunk end overflows")?;
        if c.offset < prev_end {
            return Err(format!("chunk at {} overlaps or is out of order", c.offset));
        }
        if end > sp.real_size {
            return Err(format!(
                "chunk {}+{} beyond real size {}",
                c.offset, c.length, sp.real_size
            ));
        }
        prev_end = end;
        total = total
            .checked_add(c.length)
            .ok_or("chunk lengths overflow")?;
    }
    if total != data_size {
        return Err(format!(
            "chunks hold {total} bytes but the entry has {data_size} bytes of data"
        ));
    }
    Ok(())
}

/// Incremental parser for the GNU 1.0 in-data sparse map.
#[derive(Default)]
struct SparseMapParser {
    /// Digits of the number being read, if any.
    acc: Option<u64>,
    count: Option<u64>,
    pending_offset: Option<u64>,
    chunks: Vec<SparseChunk>,
}

impl SparseMapParser {
    fn done(&self) -> bool {
        self.count == Some(self.chunks.len() as u64) && self.pending_offset.is_none()
    }

    fn feed(&mut self, b: &[u8]) -> std::result::Result<(), &'static str> {
        for &c in b {
            if self.done() {
                // The rest of the block is padding.
                return Ok(());
            }
            match c {
                b'0'..=b'9' => {
                    let v = self
                        .acc
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(c - b'0')))
                        .ok_or("number overflows")?;
                    self.acc = Some(v);
                }
                b'\n' => {
                    let v = self.acc.take().ok_or("empty line in sparse map")?;
                    if self.count.is_none() {
                        // Each chunk is at least two digits and two newlines
                        // of map, so a count beyond this cannot fit the limit.
                        if v > MAX_SPARSE_MAP_SIZE / 4 {
                            return Err("absurd sparse chunk count");
                        }
                        self.count = Some(v);
                    } else if let Some(offset) = self.pending_offset.take() {
                        self.chunks.push(SparseChunk { offset, length: v });
                    } else {
                        self.pending_offset = Some(v);
                    }
                }
                _ => return Err("non-digit in sparse map"),
            }
        }
        Ok(())
    }
}

/// Why PAX records could not be applied.
enum PaxError {
    /// `path` or `linkpath` contained a NUL; carries the value up to it.
    Nul(Vec<u8>),
    Bad(String),
}

/// The PAX records in force for one entry, resolved.
#[derive(Default)]
struct EffectivePax<'a> {
    path: Option<&'a [u8]>,
    linkpath: Option<&'a [u8]>,
    uname: Option<&'a [u8]>,
    gname: Option<&'a [u8]>,
    uid: Option<u64>,
    gid: Option<u64>,
    size: Option<u64>,
    mtime: Option<Timestamp>,
    atime: Option<Timestamp>,
    ctime: Option<Timestamp>,
    xattrs: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> EffectivePax<'a> {
    fn resolve(
        globals: &'a [(Vec<u8>, Vec<u8>)],
        local: &'a [(Vec<u8>, Vec<u8>)],
    ) -> std::result::Result<Self, PaxError> {
        let mut p = EffectivePax::default();
        let mut xattr_index: HashMap<&'a [u8], usize> = HashMap::new();
        for (k, v) in globals.iter().chain(local) {
            let (k, v) = (k.as_slice(), v.as_slice());
            // An empty value removes the record: the header field applies
            // again (POSIX). Not for xattrs, where empty is a real value.
            let val = (!v.is_empty()).then_some(v);
            let num = |v: Option<&[u8]>| -> std::result::Result<Option<u64>, PaxError> {
                v.map(|v| {
                    parse_decimal(v).ok_or_else(|| {
                        PaxError::Bad(format!(
                            "invalid {} value {:?}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        ))
                    })
                })
                .transpose()
            };
            let time = |v: Option<&[u8]>| -> std::result::Result<Option<Timestamp>, PaxError> {
                v.map(|v| {
                    parse_pax_time(v).ok_or_else(|| {
                        PaxError::Bad(format!(
                            "invalid {} value {:?}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        ))
                    })
                })
                .transpose()
            };
            let no_nul = |v: Option<&'a [u8]>, name: bool| match v {
                Some(v) if v.contains(&0) => Err(if name {
                    PaxError::Nul(block::cstr(v).to_vec())
                } else {
                    PaxError::Bad(format!("NUL in {}", String::from_utf8_lossy(k)))
                }),
                v => Ok(v),
            };
            match k {
                b"path" => p.path = no_nul(val, true)?,
                b"linkpath" => p.linkpath = no_nul(val, true)?,
                b"uname" => p.uname = no_nul(val, false)?,
                b"gname" => p.gname = no_nul(val, false)?,
                b"uid" => p.uid = num(val)?,
                b"gid" => p.gid = num(val)?,
                b"size" => p.size = num(val)?,
                b"mtime" => p.mtime = time(val)?,
                b"atime" => p.atime = time(val)?,
                b"ctime" => p.ctime = time(val)?,
                _ => {
                    if let Some(name) = k.strip_prefix(PAX_SCHILY_XATTR) {
                        match xattr_index.get(name) {
                            Some(&i) => p.xattrs[i].1 = v,
                            None => {
                                xattr_index.insert(name, p.xattrs.len());
                                p.xattrs.push((name, v));
                            }
                        }
                    }
                }
            }
        }
        Ok(p)
    }
}

/// Where a PAX-described sparse file keeps its map.
enum SparseMap {
    /// 0.0 (repeated offset/numbytes records) or 0.1 (`GNU.sparse.map`).
    InPax(Vec<SparseChunk>),
    /// 1.0: at the start of the data area.
    InData,
}

/// GNU sparse information from an entry's local PAX records.
struct SparsePax<'a> {
    name: Option<&'a [u8]>,
    real_size: Option<u64>,
    map: SparseMap,
}

impl<'a> SparsePax<'a> {
    fn from_local(local: &'a [(Vec<u8>, Vec<u8>)]) -> std::result::Result<Option<Self>, String> {
        let mut major = None;
        let mut minor = None;
        let mut name = None;
        let mut size = None;
        let mut realsize = None;
        let mut numblocks = None;
        let mut map = None;
        let mut pairs: Vec<u64> = Vec::new();
        let mut any = false;
        let num = |k: &str, v: &[u8]| {
            parse_decimal(v).ok_or_else(|| {
                format!(
                    "invalid GNU.sparse.{k} value {:?}",
                    String::from_utf8_lossy(v)
                )
            })
        };
        for (k, v) in local {
            let Some(k) = k.strip_prefix(b"GNU.sparse.") else {
                continue;
            };
            any = true;
            let v = v.as_slice();
            match k {
                b"major" => major = Some(v),
                b"minor" => minor = Some(v),
                b"name" => name = (!v.is_empty()).then_some(v),
                b"size" => size = Some(num("size", v)?),
                b"realsize" => realsize = Some(num("realsize", v)?),
                b"numblocks" => numblocks = Some(num("numblocks", v)?),
                b"map" => map = Some(v),
                // 0.0: offset and numbytes records alternate, in that order.
                b"offset" | b"numbytes" => {
                    let want_offset = pairs.len().is_multiple_of(2);
                    if want_offset != (k == b"offset") {
                        return Err("GNU.sparse.offset/numbytes out of order".into());
                    }
                    pairs.push(num("offset", v)?);
                }
                _ => {}
            }
        }
        if !any {
            return Ok(None);
        }
        let version = (major, minor);
        let in_data = match version {
            (Some(b"1"), Some(b"0")) => true,
            (Some(b"0"), Some(b"0" | b"1")) => false,
            (None, None) if map.is_some() || !pairs.is_empty() => false,
            (None, None) => return Ok(None),
            (ma, mi) => {
                return Err(format!(
                    "unsupported GNU sparse version {}.{}",
                    String::from_utf8_lossy(ma.unwrap_or(b"?")),
                    String::from_utf8_lossy(mi.unwrap_or(b"?"))
                ));
            }
        };
        let real_size = size.or(realsize);
        if in_data {
            return Ok(Some(SparsePax {
                name,
                real_size,
                map: SparseMap::InData,
            }));
        }
        let numbers: Vec<u64> = match map {
            Some(_) if !pairs.is_empty() => {
                return Err("both GNU.sparse.map and GNU.sparse.offset records".into());
            }
            Some(b"") => Vec::new(),
            Some(m) => m
                .split(|&b| b == b',')
                .map(|n| num("map", n))
                .collect::<std::result::Result<_, _>>()?,
            None => pairs,
        };
        if !numbers.len().is_multiple_of(2) {
            return Err("odd number of values in sparse map".into());
        }
        let numblocks = numblocks.ok_or("missing GNU.sparse.numblocks")?;
        if numblocks != (numbers.len() / 2) as u64 {
            return Err(format!(
                "GNU.sparse.numblocks is {numblocks} but the map has {} chunks",
                numbers.len() / 2
            ));
        }
        let chunks = numbers
            .chunks_exact(2)
            .map(|p| SparseChunk {
                offset: p[0],
                length: p[1],
            })
            .collect();
        Ok(Some(SparsePax {
            name,
            real_size,
            map: SparseMap::InPax(chunks),
        }))
    }
}

/// Splits PAX extended header data into records (`"%d %s=%s\n"`, the
/// length counting the whole record). Values are raw bytes and may contain
/// newlines and NULs, which is why records are length-prefixed. Trailing
/// NUL padding after the last record is tolerated (some writers add it).
pub(crate) fn parse_pax_records(mut data: &[u8]) -> std::result::Result<Records, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without length")?;
        let len = parse_decimal(&data[..sp])
            .and_then(|l| usize::try_from(l).ok())
            .ok_or("bad record length")?;
        if len <= sp + 1 || len > data.len() {
            return Err(format!("record length {len} out of range"));
        }
        let rec = &data[sp + 1..len];
        let Some((&b'\n', rec)) = rec.split_last() else {
            return Err("record not terminated by newline".into());
        };
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        if k.is_empty() || k.contains(&0) {
            return Err("empty key or NUL in key".into());
        }
        out.push((k.to_vec(), v.to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A non-empty run of ASCII digits as a u64.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// Parses a PAX time: optional sign, decimal seconds, optional fraction
/// (more than nine digits truncated). Negative times count down from the
/// epoch, so `-1.25` is 1.25 s before it: seconds -2, nanoseconds 750 ms.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let (neg, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, v),
    };
    let (secs, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(i) => (&digits[..i], Some(&digits[i + 1..])),
        None => (digits, None),
    };
    let secs = parse_decimal(secs)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = frac {
        if !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            nanos = nanos * 10 + frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
        }
    }
    if !neg {
        return Some(Timestamp {
            secs: i64::try_from(secs).ok()?,
            nanos,
        });
    }
    // -secs.nanos == -(secs + 1) + (1e9 - nanos) / 1e9 when nanos > 0.
    let neg_secs = 0i64.checked_sub_unsigned(secs)?;
    if nanos == 0 {
        Some(Timestamp {
            secs: neg_secs,
            nanos: 0,
        })
    } else {
        Some(Timestamp {
            secs: neg_secs.checked_sub(1)?,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_time_forms() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(t("12"), Some(Timestamp { secs: 12, nanos: 0 }));
        assert_eq!(
            t("12.5"),
            Some(Timestamp {
                secs: 12,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            t("1.1234567891"),
            Some(Timestamp {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Timestamp {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(
            t("-0.5"),
            Some(Timestamp {
                secs: -1,
                nanos: 500_000_000
            })
        );
        assert_eq!(t("-3"), Some(Timestamp { secs: -3, nanos: 0 }));
        assert_eq!(
            t("-9223372036854775808"),
            Some(Timestamp {
                secs: i64::MIN,
                nanos: 0
            })
        );
        assert_eq!(t("-9223372036854775808.5"), None);
        assert_eq!(t("9223372036854775808"), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("."), None);
    }

    #[test]
    fn pax_records_binary_values() {
        let recs = parse_pax_records(b"14 k=a\nb\0c=d\n\n7 x=yz\n\0\0\0").expect("parse");
        assert_eq!(recs[0], (b"k".to_vec(), b"a\nb\0c=d\n".to_vec()));
        assert_eq!(recs[1], (b"x".to_vec(), b"yz".to_vec()));
        assert!(parse_pax_records(b"5 k=v\n").is_err());
        assert!(parse_pax_records(b"7 k=v\n").is_err());
        assert!(parse_pax_records(b"6 =v\n").is_err());
        assert!(parse_pax_records(b"99 k=v\n").is_err());
        assert!(parse_pax_records(b"garbage").is_err());
    }

    #[test]
    fn sparse_map_parser_stops_at_count() {
        let mut p = SparseMapParser::default();
        let mut blk = [0u8; BLOCK];
        let text = b"2\n0\n10\n4096\n5\n";
        blk[..text.len()].copy_from_slice(text);
        p.feed(&blk).expect("feed");
        assert!(p.done());
        assert_eq!(
            p.chunks,
            vec![
                SparseChunk {
                    offset: 0,
                    length: 10
                },
                SparseChunk {
                    offset: 4096,
                    length: 5
                }
            ]
        );
        let mut p = SparseMapParser::default();
        assert!(p.feed(b"1\n0\nx\n").is_err());
    }

    #[test]
    fn sparse_validation() {
        let sp = |chunks: &[(u64, u64)], real| Sparse {
            real_size: real,
            chunks: chunks
                .iter()
                .map(|&(offset, length)| SparseChunk { offset, length })
                .collect(),
        };
        assert!(validate_sparse(&sp(&[(0, 5), (10, 5)], 20), 10).is_ok());
        assert!(validate_sparse(&sp(&[(0, 5), (3, 5)], 20), 10).is_err());
        assert!(validate_sparse(&sp(&[(10, 5), (0, 5)], 20), 10).is_err());
        assert!(validate_sparse(&sp(&[(0, 5), (18, 5)], 20), 10).is_err());
        assert!(validate_sparse(&sp(&[(0, 5)], 20), 6).is_err());
        assert!(validate_sparse(&sp(&[(u64::MAX, 5)], 20), 5).is_err());
    }
}
