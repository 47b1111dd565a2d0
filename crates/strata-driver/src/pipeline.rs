//! Read-ahead for imports: one thread reads the tar stream in large chunks
//! and hashes it while the caller's thread applies what was already read,
//! so reading (and, on a cold cache, waiting for the disk), hashing and the
//! applier's file system calls overlap on two cores.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};

use strata_fs::Root;
use strata_layer::{Applier, ApplyError, ApplyOptions, ApplyStats, WhiteoutMode};
use strata_tar::{ChunkSource, RecordSummary, Recorder, SharedChunk, TarReader};

use crate::decompress::{self, Compression};
use crate::digest::DigestReader;
use crate::driver::ApplyResult;
use crate::store::Staging;
use crate::{DriverError, LayerId};

/// A layer's record of the tar it was imported from (Docker's name).
pub const TAR_SPLIT_FILE: &str = "tar-split.json.gz";

/// Size of one chunk handed from the reader thread to the applier.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds memory at `DEPTH * CHUNK` whatever the layer size.
const DEPTH: usize = 8;

/// What the reader thread saw of the whole stream.
pub struct StreamFacts {
    /// `sha256:<hex>` of every byte of the stream, read to EOF.
    pub digest: String,
    /// Bytes in the stream.
    pub bytes: u64,
}

/// Applies the tar stream `tar` onto the content dir of `staging` (the
/// import path every driver whose layers are plain trees shares).
/// `lower` is the merged view below a layer that stores only its own
/// changes, for hard links to files of the layers below.
pub fn apply_stream(
    id: &LayerId,
    staging: &Staging,
    tar: &mut (dyn Read + Send),
    whiteouts: WhiteoutMode,
    lower: Option<&Root>,
    decompress: bool,
) -> crate::Result<ApplyResult> {
    let root = Root::open(staging.content_path()).map_err(|source| DriverError::Fs {
        id: id.to_string(),
        source,
    })?;
    import_stream(id, staging.path(), &root, tar, decompress, |reader, rec| {
        let opts = ApplyOptions {
            whiteouts,
            writeback: true,
        };
        let applier = Applier::new(&root, opts);
        let applier = match lower {
            Some(l) => applier.with_lower(l),
            None => applier,
        };
        strata_layer::apply_recorded(applier, reader, rec)
    })
}

/// The tar-split recorder an import writes its record with.
pub(crate) type Record = Recorder<io::BufWriter<std::fs::File>>;

/// Runs an import of the stream `tar` (every driver's import path):
/// `apply` reads the tar entries and records them in the layer's tar-split
/// record, created in `dir`, on this thread, while a read-ahead thread
/// reads and hashes the stream and the flusher pushes write-back on the
/// filesystem of `root`. `apply` returns what it applied and the record's
/// summary.
///
/// With `decompress` (imports, not `apply_diff`), a gzip or zstd blob is
/// recognised by its magic bytes and decompressed on a thread of its own
/// that also hashes the compressed bytes, feeding the read-ahead thread
/// (which hashes the tar), so decompression, hashing and applying overlap.
pub(crate) fn import_stream(
    id: &LayerId,
    dir: &Path,
    root: &Root,
    tar: &mut (dyn Read + Send),
    decompress: bool,
    apply: impl FnOnce(
        &mut TarReader<&mut ChunkReader>,
        &mut Record,
    ) -> Result<(ApplyStats, RecordSummary), ApplyError>,
) -> crate::Result<ApplyResult> {
    let record_path = dir.join(TAR_SPLIT_FILE);
    let record = std::fs::File::create(&record_path)
        .map_err(|e| DriverError::io(format!("layer {id}: create {}", record_path.display()), e))?;
    // The peeked bytes are chained back in front, so nothing is lost and
    // the digests cover the whole stream.
    let head = if decompress {
        decompress::peek(tar)
            .map_err(|e| DriverError::io(format!("layer {id}: read layer stream"), e))?
    } else {
        Vec::new()
    };
    let compression = Compression::detect(&head);
    let mut src = (&head[..]).chain(tar);
    let apply = |r: &mut ChunkReader| -> Result<_, ApplyError> {
        let mut reader = TarReader::over_chunks(r);
        let record_error = |source| ApplyError::Stream {
            what: "writing the tar-split record",
            source,
        };
        let out = record.try_clone().map_err(record_error)?;
        // The record is compressed and written by a thread of its own,
        // off the applier's path.
        let mut rec = Recorder::in_background(io::BufWriter::new(out)).map_err(record_error)?;
        let applied = apply(&mut reader, &mut rec)?;
        rec.finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()).map(drop))
            .map_err(record_error)?;
        Ok(applied)
    };
    let ((stats, summary), facts, blob_facts) = with_flusher(root.fd(), || match compression {
        None => read_ahead(&mut src, apply).map(|(t, facts)| (t, facts, None)),
        // Nested read-ahead: the outer thread reads and hashes the blob,
        // the inner one decompresses and hashes the tar, and this thread
        // applies; each hop is a bounded channel, so memory stays bounded.
        Some(c) => read_ahead(&mut src, |blob| {
            let mut tar = c.decoder(blob).map_err(|source| ApplyError::Stream {
                what: "starting the decompressor",
                source,
            })?;
            read_ahead(&mut tar, apply)
        })
        .map(|((t, facts), blob_facts)| (t, facts, Some(blob_facts))),
    })
    .map_err(|source| DriverError::Apply {
        id: id.to_string(),
        source,
    })?;
    let what = compression.map_or("tar", Compression::name);
    let facts = facts.map_err(|e| DriverError::io(format!("layer {id}: read {what} stream"), e))?;
    let blob_facts = blob_facts
        .transpose()
        .map_err(|e| DriverError::io(format!("layer {id}: read {what} blob"), e))?;
    let export_fallback = (!summary.replayable_from_dir()).then(|| {
        let shown = |v: &[Vec<u8>]| {
            v.iter()
                .map(|p| strata_fs::display_path(p))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut why = Vec::new();
        if !summary.duplicates.is_empty() {
            why.push(format!(
                "the tar names these paths twice: {}",
                shown(&summary.duplicates)
            ));
        }
        if !summary.sparse.is_empty() {
            why.push(format!("sparse files: {}", shown(&summary.sparse)));
        }
        format!("exported by generation, not replay ({})", why.join("; "))
    });
    Ok(ApplyResult {
        size: stats.size,
        entries: stats.entries,
        tar_bytes: facts.bytes,
        digest: facts.digest,
        compression: compression.map(|c| c.name().to_string()),
        compressed_digest: blob_facts.map(|f| f.digest),
        export_fallback,
    })
}

/// Runs `consume` on a reader fed by a read-ahead thread over `src`. When
/// `consume` succeeds the thread reads `src` to its end (the digest covers
/// trailing bytes after the tar's end blocks, as an engine's diffID does);
/// when it fails the thread stops at once, so a rejected stream is not
/// drained.
pub(crate) fn read_ahead<T, E>(
    src: &mut (dyn Read + Send),
    consume: impl FnOnce(&mut ChunkReader) -> Result<T, E>,
) -> Result<(T, io::Result<StreamFacts>), E> {
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    // Emptied chunks come back for reuse, so the import allocates (and the
    // kernel maps and zeroes) a bounded number of buffers, not one per MiB:
    // DEPTH in the queue, one being parsed, and those whose pieces the
    // applier's writer still holds.
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let stop = &stop;
        let reader = std::thread::Builder::new()
            .name("strata-read".into())
            .spawn_scoped(s, move || -> io::Result<StreamFacts> {
                let mut src = DigestReader::new(src);
                let mut receiver_gone = false;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Err(io::Error::other("import abandoned"));
                    }
                    let mut buf = recycle_rx.try_recv().unwrap_or_default();
                    buf.resize(CHUNK, 0);
                    let n = match read_full(&mut src, &mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = tx.send(Err(e));
                            return Err(io::Error::other(msg));
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    if !receiver_gone && tx.send(Ok(buf)).is_err() {
                        receiver_gone = true;
                    }
                }
                drop(tx);
                let (digest, bytes) = src.finish()?;
                Ok(StreamFacts { digest, bytes })
            });
        // As `std::thread::spawn`, an OS that cannot start a thread is a
        // panic: there is no sensible way to go on.
        let reader = reader.expect("start the read-ahead thread");
        let mut chunks = ChunkReader {
            rx,
            recycle: recycle_tx,
            cur: Vec::new(),
            pos: 0,
        };
        let result = consume(&mut chunks);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Dropping the receiver unblocks a reader waiting to send.
        drop(chunks);
        let facts = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("read-ahead thread panicked")));
        result.map(|t| (t, facts))
    })
}

/// How often the flusher pushes dirty data of the layer being written.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `work` while a thread writes back the filesystem under `fd` every
/// [`FLUSH_EVERY`], so that most data and inodes reach the disk while the
/// import is still going and the final `syncfs` before the commit finds
/// little left to do.
pub fn with_flusher<T>(fd: BorrowedFd<'_>, work: impl FnOnce() -> T) -> T {
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|s| {
        let done = &done;
        let flusher = std::thread::Builder::new()
            .name("strata-flush".into())
            .spawn_scoped(s, move || {
                let mut finished = done.0.lock().unwrap_or_else(PoisonError::into_inner);
                while !*finished {
                    let (guard, timeout) = done
                        .1
                        .wait_timeout(finished, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    finished = guard;
                    if timeout.timed_out() && !*finished {
                        drop(finished);
                        // Only a head start: the commit's own syncfs is what
                        // makes the layer durable, so a failure here is moot.
                        let _ = rustix::fs::syncfs(fd);
                        finished = done.0.lock().unwrap_or_else(PoisonError::into_inner);
                    }
                }
            });
        let result = work();
        *done.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        done.1.notify_all();
        drop(flusher);
        result
    })
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The applier's side: the chunks the thread sends, as a `Read` or handed
/// over whole ([`ChunkSource`]: the tar reader parses them in place and
/// passes pieces of file data on to the writer).
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    // The reader may be gone already; then the buffer is just dropped.
                    let _ = self.recycle.send(std::mem::replace(&mut self.cur, chunk));
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChunkSource for ChunkReader {
    fn next_chunk(&mut self) -> io::Result<Option<SharedChunk>> {
        let data = if self.pos < self.cur.len() {
            // The rest of a chunk `read` began (not done by a tar reader,
            // which takes whole chunks; kept correct all the same).
            let mut rest = std::mem::take(&mut self.cur);
            rest.drain(..self.pos);
            self.pos = 0;
            rest
        } else {
            match self.rx.recv() {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(None),
            }
        };
        Ok(Some(Arc::new(Pooled {
            data,
            home: self.recycle.clone(),
        })))
    }
}

/// A read-ahead buffer lent to the tar reader: it goes back to the
/// read-ahead thread for reuse when its last holder (the reader, or the
/// writer with the last piece of file data in it) lets go.
struct Pooled {
    data: Vec<u8>,
    home: mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The reader may be gone already; then the buffer is just dropped.
        let _ = self.home.send(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_through_and_hashes_all() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut src = &data[..];
        let (got, facts) = read_ahead(&mut src, |r| {
            let mut first = vec![0u8; CHUNK + 5];
            r.read_exact(&mut first)?;
            Ok::<_, io::Error>(first)
        })
        .unwrap();
        assert_eq!(got, data[..CHUNK + 5]);
        let facts = facts.unwrap();
        assert_eq!(
            facts.bytes,
            data.len() as u64,
            "the rest is drained for the digest"
        );
        let mut whole = DigestReader::new(&data[..]);
        io::copy(&mut whole, &mut io::sink()).unwrap();
        assert_eq!(facts.digest, whole.finish().unwrap().0);
    }

    #[test]
    fn failure_stops_the_reader() {
        // An endless stream: a failing consumer must not wait for its end.
        let mut endless = io::repeat(0);
        let r: Result<((), _), &str> = read_ahead(&mut endless, |_| Err("rejected"));
        assert_eq!(r.err(), Some("rejected"));
    }
}
