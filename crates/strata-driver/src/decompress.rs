//! Compressed layer blobs for `import`: the compression is told from the
//! stream's first bytes (as engines do), and a decoder turns the blob back
//! into the layer tar. `apply_diff` never uses this: Docker's `ApplyDiff`
//! takes only uncompressed tar.

use std::io::{self, Read};

/// A compression `import` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip, including multi-member streams (pigz, Docker).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Bytes needed to tell the compressions apart.
const MAGIC_LEN: usize = 4;

impl Compression {
    /// The name recorded in the layer's metadata.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The compression whose magic number starts `head`, if any; anything
    /// else is taken for a plain tar (whose first bytes are a file name).
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// A reader of the decompressed stream of `blob`, whose errors say
    /// which decompression failed (a bare "invalid data" from a decoder
    /// would not tell the user the blob, not the tar, is damaged).
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        blob: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        let inner: Box<dyn Read + Send + 'a> = match self {
            // Multi-member: pigz and Docker write several gzip members, and
            // a single-member decoder would stop silently after the first.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
        };
        Ok(Box::new(Labeled {
            inner,
            what: self.name(),
        }))
    }
}

/// `src` as a plain tar stream: decompressed when its first bytes say gzip
/// or zstd, as it is otherwise. For readers of layer tars outside an import
/// (e.g. a build from a layer a user hands over in either form).
pub fn plain_tar<'a, R: Read + Send + 'a>(mut src: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let head = peek(&mut src)?;
    let compression = Compression::detect(&head);
    let whole = io::Cursor::new(head).chain(src);
    match compression {
        Some(c) => c.decoder(whole),
        None => Ok(Box::new(whole)),
    }
}

/// Reads up to [`MAGIC_LEN`] bytes from `src` (fewer only at its end), so
/// the caller can detect the compression and then chain them back in front
/// of the rest.
pub fn peek(src: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; MAGIC_LEN];
    let mut n = 0;
    while n < MAGIC_LEN {
        match src.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

/// Prefixes a decoder's errors with the compression's name.
struct Labeled<'a> {
    inner: Box<dyn Read + Send + 'a>,
    what: &'static str,
}

impl Read for Labeled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{} decompression: {e}", self.what)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8, 0]),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::detect(b"etc/"), None);
        assert_eq!(Compression::detect(&[]), None);
    }

    #[test]
    fn peek_short_stream() {
        let mut s = &b"ab"[..];
        assert_eq!(peek(&mut s).unwrap(), b"ab");
    }
}
