//! The applier's file writer: regular files' data and final metadata are
//! written on a second thread while the applier reads the stream and
//! creates the next entries.
//!
//! Copying file data into the page cache is most of what an import costs
//! (about 70% of it for a typical `/usr` layer); the rest — reading the
//! stream, parsing headers, creating inodes — can overlap with it on a
//! second core. Correctness does not depend on the overlap: the applier
//! creates every object itself, in entry order (`O_CREAT|O_EXCL`), so the
//! tree is always built in tar order; the writer only acts on handles of
//! files already created, first-in first-out, so a file's data is written
//! in order and its metadata after its data. A later entry that replaces or
//! removes such a file only unlinks a name; finishing the unlinked inode is
//! harmless. Nothing the writer does touches a directory, so deferred
//! directory times are unaffected.
//!
//! Data travels as pieces of the stream's own read-ahead chunks where the
//! tar reader hands them out (the applier's thread then copies nothing),
//! else in a few fixed batch buffers that are reused. Either way memory
//! stays bounded whatever the file sizes: a batch holds at most
//! [`BATCH_BYTES`] of its buffer and pieces of at most [`MAX_CHUNKS`]
//! chunks, and at most [`MAX_FILES`] files, which bounds the open handles
//! in flight. If the thread cannot be started, batches are written inline
//! instead.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use rustix::fs::Timestamps;
use strata_fs::{FsError, Xattr, chmod_fd, chown_fd, set_times_fd, set_xattr_fd};
use strata_sys::{SyncFileRangeFlags, sync_file_range};
use strata_tar::Piece;

use super::set_xattrs;
use crate::error::{ApplyError, Problem};

/// Size of one batch buffer. Large enough that a hand-over between the
/// threads is rare compared with the files it carries.
const BATCH_BYTES: usize = 2 << 20;

/// Batch buffers in existence: one being filled, the others queued or
/// being written.
const BATCHES: usize = 3;

/// Files finished per batch at most: each holds an open handle until the
/// writer is done with it, and the default soft limit on open files is
/// 1024.
const MAX_FILES: usize = 64;

/// Stream chunks a batch may keep in memory through the pieces of them it
/// carries (each chunk is the read-ahead thread's 1 MiB), so that a batch
/// of small files spread over many chunks cannot pin them all.
const MAX_CHUNKS: usize = 3;

/// Below this much room left, a batch is handed over rather than split
/// data into a sliver of it.
const MIN_SPLIT: usize = 64 << 10;

/// A regular file being written: its handle and the archive name for
/// error messages.
pub(super) struct Target {
    pub(super) file: File,
    pub(super) entry: Vec<u8>,
}

/// What to do to a file once all its data is written, in this order.
pub(super) struct FileMeta {
    /// Final size (sparse files, whose data ends before their holes do).
    pub(super) len: Option<u64>,
    /// Start write-back of the file.
    pub(super) writeback: bool,
    /// New owner, if the file's creation did not already give it.
    pub(super) owner: Option<(u32, u32)>,
    /// Extended attributes to set (already filtered).
    pub(super) xattrs: Vec<Xattr>,
    /// Permission bits including setuid/setgid/sticky.
    pub(super) mode: u32,
    /// Access and modification times.
    pub(super) times: Timestamps,
}

enum Job {
    /// Write `buf[start..end]` at offset `at`.
    Write {
        target: Arc<Target>,
        at: u64,
        start: usize,
        end: usize,
    },
    /// Write a piece of the stream at offset `at`.
    WritePiece {
        target: Arc<Target>,
        at: u64,
        piece: Piece,
    },
    /// Apply the final metadata; dropping the last handle closes the file.
    Finish { target: Arc<Target>, meta: FileMeta },
}

struct Batch {
    buf: Box<[u8]>,
    used: usize,
    files: usize,
    /// Distinct chunks the batch's pieces lie in.
    chunks: usize,
    /// The last piece queued (its chunk is the one being counted).
    last_piece: Option<Piece>,
    jobs: Vec<Job>,
    /// The first failure met while writing this batch.
    error: Option<ApplyError>,
    /// Xattrs the filesystem refused as unsupported.
    skipped: u64,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: vec![0; BATCH_BYTES].into_boxed_slice(),
            used: 0,
            files: 0,
            chunks: 0,
            last_piece: None,
            jobs: Vec::new(),
            error: None,
            skipped: 0,
        }
    }

    /// Performs the jobs, stopping at the first failure.
    fn run(&mut self) {
        for job in self.jobs.drain(..) {
            if self.error.is_some() {
                break;
            }
            let r = match job {
                Job::Write {
                    target,
                    at,
                    start,
                    end,
                } => target
                    .file
                    .write_all_at(&self.buf[start..end], at)
                    .map_err(|e| fail(&target, FsError::io("write", &target.entry, e))),
                Job::WritePiece { target, at, piece } => target
                    .file
                    .write_all_at(piece.bytes(), at)
                    .map_err(|e| fail(&target, FsError::io("write", &target.entry, e))),
                Job::Finish { target, meta } => {
                    finish_file(&target, meta, &mut self.skipped).map_err(|e| fail(&target, e))
                }
            };
            if let Err(e) = r {
                self.error = Some(e);
            }
        }
        self.reset();
    }

    /// Drops the jobs (closing their files, letting go of their pieces)
    /// without performing them.
    fn reset(&mut self) {
        self.jobs.clear();
        self.used = 0;
        self.files = 0;
        self.chunks = 0;
        self.last_piece = None;
    }
}

fn fail(t: &Target, e: FsError) -> ApplyError {
    ApplyError::entry(&t.entry, e.into())
}

/// Truncation, write-back, owner, xattrs, mode and times of a written file.
fn finish_file(t: &Target, m: FileMeta, skipped: &mut u64) -> Result<(), FsError> {
    let (fd, p) = (t.file.as_fd(), t.entry.as_slice());
    if let Some(len) = m.len {
        t.file
            .set_len(len)
            .map_err(|e| FsError::io("truncate", p, e))?;
    }
    if m.writeback {
        sync_file_range(fd, 0, 0, SyncFileRangeFlags::WRITE)
            .map_err(|e| FsError::io("sync_file_range", p, e))?;
    }
    if let Some((uid, gid)) = m.owner {
        chown_fd(fd, uid, gid, p)?;
    }
    set_xattrs(&m.xattrs, skipped, |k, v| set_xattr_fd(fd, k, v, p))?;
    chmod_fd(fd, m.mode, p)?;
    set_times_fd(fd, &m.times, p)
}

/// The writer thread: performs batches in order and hands them back. After
/// a failure it only hands them back, since the import has failed.
fn work(batches: Receiver<Batch>, back: Sender<Batch>) {
    let mut failed = false;
    for mut b in batches {
        if failed {
            b.reset();
        } else {
            b.run();
            failed = b.error.is_some();
        }
        if back.send(b).is_err() {
            return;
        }
    }
}

/// The applier's side of the writer.
pub(super) struct Pipeline {
    cur: Batch,
    to_worker: Option<SyncSender<Batch>>,
    back: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
    /// The first failure reported back, not yet handed to the caller.
    error: Option<ApplyError>,
    /// Once failed, later batches are dropped unwritten.
    failed: bool,
    skipped: u64,
}

impl Pipeline {
    pub(super) fn new() -> Pipeline {
        Pipeline::start(true)
    }

    /// A pipeline with a writer thread, or (`threaded == false`, or if the
    /// thread cannot be started) one that writes each batch inline.
    fn start(threaded: bool) -> Pipeline {
        let (to_worker, batches) = sync_channel(BATCHES);
        let (give_back, back) = channel();
        for _ in 1..BATCHES {
            // Cannot fail: `back` is alive right here.
            let _ = give_back.send(Batch::new());
        }
        let worker = threaded
            .then(|| {
                std::thread::Builder::new()
                    .name("strata-apply-writer".into())
                    .spawn(move || work(batches, give_back))
                    .ok()
            })
            .flatten();
        Pipeline {
            cur: Batch::new(),
            to_worker: worker.as_ref().map(|_| to_worker),
            back,
            worker,
            error: None,
            failed: false,
            skipped: 0,
        }
    }

    /// Room for up to `want` (> 0) bytes of data in the current batch,
    /// handing the batch over first if it has too little. Fill the slice
    /// fully, then [`commit_write`](Self::commit_write) it.
    pub(super) fn room(&mut self, want: usize) -> Result<&mut [u8], Problem> {
        let free = BATCH_BYTES - self.cur.used;
        if free < want.min(MIN_SPLIT) {
            self.flush()?;
        }
        let start = self.cur.used;
        let n = want.min(BATCH_BYTES - start);
        Ok(&mut self.cur.buf[start..start + n])
    }

    /// Queues the write of the `n` bytes just filled into
    /// [`room`](Self::room), at offset `at` of the target.
    pub(super) fn commit_write(&mut self, target: &Arc<Target>, at: u64, n: usize) {
        let start = self.cur.used;
        self.cur.used += n;
        self.cur.jobs.push(Job::Write {
            target: Arc::clone(target),
            at,
            start,
            end: start + n,
        });
    }

    /// Queues the write of `piece` at offset `at` of the target, handing
    /// the batch over once its pieces hold [`MAX_CHUNKS`] chunks.
    pub(super) fn queue_piece(
        &mut self,
        target: &Arc<Target>,
        at: u64,
        piece: Piece,
    ) -> Result<(), Problem> {
        // Pieces come in stream order, so each chunk's pieces are adjacent.
        if !self
            .cur
            .last_piece
            .as_ref()
            .is_some_and(|p| p.same_chunk(&piece))
        {
            if self.cur.chunks >= MAX_CHUNKS {
                self.flush()?;
            }
            self.cur.chunks += 1;
        }
        self.cur.last_piece = Some(piece.clone());
        self.cur.jobs.push(Job::WritePiece {
            target: Arc::clone(target),
            at,
            piece,
        });
        Ok(())
    }

    /// Queues the final metadata of a file whose data is all queued.
    pub(super) fn finish_file(
        &mut self,
        target: Arc<Target>,
        meta: FileMeta,
    ) -> Result<(), Problem> {
        self.cur.jobs.push(Job::Finish { target, meta });
        self.cur.files += 1;
        if self.cur.files >= MAX_FILES {
            self.flush()?;
        }
        Ok(())
    }

    /// The first failure of the writer not yet reported, if any.
    pub(super) fn take_error(&mut self) -> Option<ApplyError> {
        self.error.take()
    }

    /// Writes out everything queued and stops the thread. Returns the
    /// number of xattrs refused as unsupported, or the first failure.
    pub(super) fn close(&mut self) -> Result<u64, ApplyError> {
        let flushed = self.flush();
        self.to_worker = None;
        let joined = self.worker.take().map(JoinHandle::join);
        while let Ok(mut b) = self.back.try_recv() {
            self.note(b.error.take(), b.skipped);
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match (flushed, joined) {
            (Err(p), _) => Err(ApplyError::entry(b"", p)),
            (_, Some(Err(_))) => Err(ApplyError::entry(b"", Problem::WriterGone)),
            _ => Ok(self.skipped),
        }
    }

    /// Hands the current batch to the writer and takes a free one (or, with
    /// no thread, writes it here).
    fn flush(&mut self) -> Result<(), Problem> {
        if self.cur.jobs.is_empty() {
            return Ok(());
        }
        if self.failed {
            self.cur.reset();
            return Ok(());
        }
        match &self.to_worker {
            None => self.cur.run(),
            Some(tx) => {
                let free = self.back.recv().map_err(|_| Problem::WriterGone)?;
                let full = std::mem::replace(&mut self.cur, free);
                tx.send(full).map_err(|_| Problem::WriterGone)?;
            }
        }
        // A batch back from the writer carries its report.
        let (e, skipped) = (self.cur.error.take(), std::mem::take(&mut self.cur.skipped));
        self.note(e, skipped);
        Ok(())
    }

    /// Records a batch's report.
    fn note(&mut self, e: Option<ApplyError>, skipped: u64) {
        self.skipped += skipped;
        if let Some(e) = e {
            self.failed = true;
            if self.error.is_none() {
                self.error = Some(e);
            }
        }
    }
}

impl Drop for Pipeline {
    /// An applier dropped without `finish` (after a failure) still waits
    /// for its writer, so no thread outlives it holding handles.
    fn drop(&mut self) {
        self.to_worker = None;
        if let Some(w) = self.worker.take() {
            // A panic in the writer has nothing left to report to.
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::Timespec;

    fn meta(mode: u32) -> FileMeta {
        let t = Timespec {
            tv_sec: 1_000,
            tv_nsec: 5,
        };
        FileMeta {
            len: None,
            writeback: true,
            owner: None,
            xattrs: Vec::new(),
            mode,
            times: Timestamps {
                last_access: t,
                last_modification: t,
            },
        }
    }

    /// Queues `data` for a new file in `dir` in pieces of at most `piece`.
    fn queue(p: &mut Pipeline, dir: &std::path::Path, name: &str, data: &[u8], piece: usize) {
        let file = File::create_new(dir.join(name)).expect("create");
        let t = Arc::new(Target {
            file,
            entry: name.as_bytes().to_vec(),
        });
        let mut at = 0;
        while at < data.len() {
            let want = piece.min(data.len() - at);
            let buf = p.room(want).expect("room");
            let n = buf.len();
            buf.copy_from_slice(&data[at..at + n]);
            p.commit_write(&t, at as u64, n);
            at += n;
        }
        p.finish_file(t, meta(0o640)).expect("finish");
    }

    #[test]
    fn threaded_and_inline_write_the_same() {
        use std::os::unix::fs::MetadataExt;
        for threaded in [true, false] {
            let d = tempfile::tempdir().expect("tempdir");
            let mut p = Pipeline::start(threaded);
            assert_eq!(p.worker.is_some(), threaded);
            // Enough files and bytes to cycle every batch several times,
            // with data split across batches.
            let big: Vec<u8> = (0..5 * BATCH_BYTES + 17).map(|i| (i % 253) as u8).collect();
            for i in 0..(3 * MAX_FILES) {
                queue(
                    &mut p,
                    d.path(),
                    &format!("f{i}"),
                    format!("file {i}").as_bytes(),
                    usize::MAX,
                );
            }
            queue(&mut p, d.path(), "big", &big, 300_000);
            assert_eq!(p.close().expect("close"), 0);
            for i in 0..(3 * MAX_FILES) {
                let got = std::fs::read(d.path().join(format!("f{i}"))).expect("read");
                assert_eq!(got, format!("file {i}").as_bytes());
            }
            assert_eq!(std::fs::read(d.path().join("big")).expect("read"), big);
            let m = std::fs::metadata(d.path().join("big")).expect("stat");
            assert_eq!(
                (m.mode() & 0o7777, m.mtime(), m.mtime_nsec()),
                (0o640, 1_000, 5)
            );
        }
    }

    #[test]
    fn first_failure_is_reported_and_later_work_dropped() {
        for threaded in [true, false] {
            let d = tempfile::tempdir().expect("tempdir");
            let mut p = Pipeline::start(threaded);
            // A read-only handle: writing to it fails.
            std::fs::write(d.path().join("ro"), b"").expect("write");
            let t = Arc::new(Target {
                file: File::open(d.path().join("ro")).expect("open"),
                entry: b"ro".to_vec(),
            });
            let buf = p.room(3).expect("room");
            buf.copy_from_slice(b"abc");
            p.commit_write(&t, 0, 3);
            p.finish_file(t, meta(0o600)).expect("finish");
            queue(&mut p, d.path(), "later", b"never", usize::MAX);
            let e = p.close().expect_err("write to a read-only handle");
            assert!(
                e.to_string().starts_with("tar entry \"ro\": write \"ro\""),
                "{e}"
            );
            assert_eq!(std::fs::read(d.path().join("later")).expect("read"), b"");
        }
    }
}
