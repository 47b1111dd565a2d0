//! A 2 GiB entry produced on the fly streams through the reader in
//! constant memory, both when its data is read and when it is skipped,
//! with raw framing on (which must record only the framing).
//!
//! Alone in its test binary so the peak-RSS check sees only this test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{self, Read};

use common::{push_padded, ustar_block};
use strata_tar::TarReader;

const BIG: u64 = (2 << 30) + 123;

/// header(big) + BIG bytes of pattern + padding + header(small) + data +
/// end-of-archive, generated as it is read.
struct Synthetic {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    pos: u64,
    pattern: Vec<u8>,
}

impl Synthetic {
    fn new() -> Self {
        let prefix = ustar_block(b"huge.bin", b'0', BIG).to_vec();
        let mut suffix = vec![0u8; (BIG.next_multiple_of(512) - BIG) as usize];
        let mut small = ustar_block(b"small", b'0', 5).to_vec();
        push_padded(&mut small, b"tail!");
        small.extend_from_slice(&[0u8; 1024]);
        suffix.extend_from_slice(&small);
        // A period of 251 bytes, so misplaced data would be noticed.
        let pattern = (0..64 * 1024 + 251).map(|i| (i % 251) as u8).collect();
        Synthetic {
            prefix,
            suffix,
            pos: 0,
            pattern,
        }
    }

    fn len(&self) -> u64 {
        self.prefix.len() as u64 + BIG + self.suffix.len() as u64
    }
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.prefix.len() as u64;
        let n = if self.pos < p {
            let s = &self.prefix[self.pos as usize..];
            let n = s.len().min(buf.len());
            buf[..n].copy_from_slice(&s[..n]);
            n
        } else if self.pos < p + BIG {
            let off = self.pos - p;
            let start = (off % 251) as usize;
            let n = ((p + BIG - self.pos) as usize)
                .min(buf.len())
                .min(self.pattern.len() - start);
            buf[..n].copy_from_slice(&self.pattern[start..start + n]);
            n
        } else {
            let s = &self.suffix[(self.pos - p - BIG) as usize..];
            let n = s.len().min(buf.len());
            buf[..n].copy_from_slice(&s[..n]);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn two_gib_entry_streams_in_constant_memory() {
    let before = peak_rss_kib();

    // Pass 1: read all data, spot-checking the pattern at each chunk start.
    let src = Synthetic::new();
    let total = src.len();
    let mut r = TarReader::new(src);
    r.set_record_raw(true);
    let h = r.next_entry().unwrap().unwrap();
    assert_eq!(h.size, BIG);
    let mut raw_len = r.take_raw().len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = r.read_data(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(buf[0], (read % 251) as u8, "at {read}");
        assert_eq!(buf[n - 1], ((read + n as u64 - 1) % 251) as u8);
        read += n as u64;
    }
    assert_eq!(read, BIG);
    let small = r.next_entry().unwrap().unwrap();
    raw_len += r.take_raw().len() as u64;
    let mut tail = Vec::new();
    r.data().read_to_end(&mut tail).unwrap();
    assert_eq!(
        (small.path.as_slice(), tail.as_slice()),
        (&b"small"[..], &b"tail!"[..])
    );
    assert!(r.next_entry().unwrap().is_none());
    raw_len += r.take_raw().len() as u64;
    assert_eq!(raw_len + BIG + 5, total, "raw holds exactly the framing");

    // Pass 2: skip the big entry's data entirely.
    let mut r = TarReader::new(Synthetic::new());
    r.set_record_raw(true);
    r.next_entry().unwrap().unwrap();
    let small = r.next_entry().unwrap().unwrap();
    assert_eq!(small.path, b"small");
    // Skipped data is not recorded: only the framing is.
    assert_eq!(r.take_raw().len(), 389 + 512 * 2);
    assert!(r.next_entry().unwrap().is_none());
    assert_eq!(r.position(), total);

    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");
}
