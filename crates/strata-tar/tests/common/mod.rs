//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;

use strata_tar::{Header, TarReader};

/// One entry as read back: the header and its archived data.
pub struct Entry {
    pub header: Header,
    pub data: Vec<u8>,
}

/// Reads every entry of `archive` with raw recording on, reading all data,
/// and checks that raw + data concatenation rebuilds `archive` exactly.
pub fn read_all_checked(archive: &[u8]) -> Vec<Entry> {
    read_all_checked_with(TarReader::new(archive), archive)
}

/// [`read_all_checked`] with the reader given (e.g. one over chunks).
pub fn read_all_checked_with<R: Read>(mut r: TarReader<R>, archive: &[u8]) -> Vec<Entry> {
    r.set_record_raw(true);
    let mut rebuilt = Vec::with_capacity(archive.len());
    let mut out = Vec::new();
    loop {
        let next = r.next_entry();
        r.take_raw_into(&mut rebuilt);
        let Some(header) = next.unwrap() else { break };
        // The data in pieces of varying sizes, mixed with reads; the pieces
        // are kept until the entry is done, long after the reader moved
        // past (and, over small chunks, dropped) the chunks they lie in.
        let mut pieces = Vec::new();
        let mut data = Vec::new();
        for step in 1usize.. {
            let max = 1 + step * 997 % 4096;
            if step % 3 != 0
                && let Some(p) = r.data_piece(max).unwrap()
            {
                assert!(!p.is_empty() && p.len() <= max);
                let at = data.len();
                data.resize(at + p.len(), 0);
                pieces.push((at, p));
                continue;
            }
            let mut buf = vec![0u8; max];
            let n = r.data().read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        for (at, p) in &pieces {
            data[*at..at + p.len()].copy_from_slice(p.bytes());
        }
        assert_eq!(data.len() as u64, header.size, "{:?}", header.path);
        rebuilt.extend_from_slice(&data);
        out.push(Entry { header, data });
    }
    // Further calls stay at the end and record nothing more.
    assert!(r.next_entry().unwrap().is_none());
    assert!(r.take_raw().is_empty());
    assert_eq!(r.position(), archive.len() as u64);
    if rebuilt != archive {
        let at = rebuilt
            .iter()
            .zip(archive)
            .position(|(a, b)| a != b)
            .unwrap_or(rebuilt.len().min(archive.len()));
        panic!(
            "raw+data ({} bytes) differs from the archive ({} bytes) at byte {at}",
            rebuilt.len(),
            archive.len()
        );
    }
    out
}

/// The extracted content of a sparse entry: its chunks placed at their
/// offsets in a zero-filled file of the real size.
pub fn expand_sparse(h: &Header, data: &[u8]) -> Vec<u8> {
    let Some(sp) = &h.sparse else {
        return data.to_vec();
    };
    let mut out = vec![0u8; sp.real_size as usize];
    let mut at = 0usize;
    for c in &sp.chunks {
        let (o, l) = (c.offset as usize, c.length as usize);
        out[o..o + l].copy_from_slice(&data[at..at + l]);
        at += l;
    }
    assert_eq!(at, data.len());
    out
}

/// A hand-made ustar header block with a valid checksum, for crafting
/// archives no tool writes (malformed or unusual ones).
pub fn ustar_block(name: &[u8], flag: u8, size: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    put_octal(&mut b[100..108], 0o644);
    put_octal(&mut b[108..116], 0);
    put_octal(&mut b[116..124], 0);
    put_octal(&mut b[124..136], size);
    put_octal(&mut b[136..148], 1_700_000_000);
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    fix_checksum(&mut b);
    b
}

/// Zero-padded octal with a trailing NUL.
pub fn put_octal(f: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = f.len() - 1);
    f.copy_from_slice(s.as_bytes());
}

/// Recomputes the (unsigned) header checksum after a test edited a block.
pub fn fix_checksum(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// PAX extended header data from records.
pub fn pax_data(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + body.to_string().len();
        if len.to_string().len() + body != len {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Appends `data` padded with zeros to a block boundary.
pub fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// An extension header (`x`, `g`, `L`, `K`) followed by its data.
pub fn ext_entry(flag: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ustar_block(b"././@ext", flag, data.len() as u64).to_vec();
    push_padded(&mut out, data);
    out
}

/// `data` handed out in chunks of the sizes given (cycled), as a read-ahead
/// thread does; reading it as a plain `Read` fails, so a reader over it
/// must take the chunks.
pub struct Chunks<'a> {
    pub data: &'a [u8],
    pub sizes: Vec<usize>,
    pub next: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("a chunk source is not read"))
    }
}

impl strata_tar::ChunkSource for Chunks<'_> {
    fn next_chunk(&mut self) -> std::io::Result<Option<strata_tar::SharedChunk>> {
        let n = self.sizes[self.next % self.sizes.len()].min(self.data.len());
        self.next += 1;
        let chunk = self.data[..n].to_vec();
        self.data = &self.data[n..];
        Ok((n > 0).then(|| std::sync::Arc::new(chunk) as strata_tar::SharedChunk))
    }
}
