//! Read-ahead for imports: one thread reads the tar stream in large chunks
//! and hashes it while the caller's thread applies what was already read,
//! so reading (and, on a cold cache, waiting for the disk), hashing and the
//! applier's file system calls overlap on two cores.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::digest::DigestReader;

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

/// Runs `consume` on a reader fed by a read-ahead thread over `src`. When
/// `consume` succeeds the thread reads `src` to its end (the digest covers
/// trailing bytes after the tar's end blocks, as an engine's diffID does);
/// when it fails the thread stops at once, so a rejected stream is not
/// drained.
pub fn read_ahead<T, E>(
    src: &mut (dyn Read + Send),
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E>,
) -> Result<(T, io::Result<StreamFacts>), E> {
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    std::thread::scope(|s| {
        let stop = &stop;
        let reader = s.spawn(move || -> io::Result<StreamFacts> {
            let mut src = DigestReader::new(src);
            let mut receiver_gone = false;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("import abandoned"));
                }
                let mut buf = vec![0u8; CHUNK];
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
        let mut chunks = ChunkReader {
            rx,
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

/// The applier's side: a `Read` over the chunks the thread sends.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
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
