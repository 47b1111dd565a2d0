//! A reader that hashes and counts what passes through it, so an import
//! computes the stream's sha256 (its diffID) in the same pass that applies
//! it.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Wraps a reader, hashing every byte read.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> DigestReader<R> {
    /// Starts hashing `inner`.
    pub fn new(inner: R) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads the rest of the stream (engines send trailing padding after
    /// the end-of-archive blocks, and the diffID covers it), then returns
    /// `("sha256:<hex>", bytes)`.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.bytes,
        ))
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_whole_stream() {
        let data = b"hello world";
        let mut r = DigestReader::new(&data[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(
            d,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
