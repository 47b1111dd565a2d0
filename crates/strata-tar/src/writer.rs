//! Streaming tar writer producing what Go's `archive/tar` (and so Docker)
//! produces: plain ustar headers whenever the entry fits, otherwise one PAX
//! extended header carrying just the records that do not fit, followed by
//! the ustar header. Output is a pure function of the header sequence and
//! data, so layer exports are reproducible.

use std::cmp::min;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::block::{self, BLOCK, Block, field};
use crate::error::{Result, TarError};
use crate::header::{EntryKind, Header, Timestamp};
use crate::reader::MAX_EXTENSION_SIZE;

const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
const OWNER_NAME_LEN: usize = 32;
const COPY_BUF: usize = 128 * 1024;

/// PAX keys the writer derives from [`Header`] fields. Records with these
/// keys in [`Header::pax`] are never copied through, so a stale record
/// cannot contradict the field it came from.
const GENERATED_KEYS: [&[u8]; 7] = [
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"hdrcharset",
];

/// A streaming tar writer.
///
/// Format policy (Go's, which Docker uses): a plain ustar header when
/// everything fits — an ASCII path of at most 100 bytes or one that splits
/// into a 155-byte prefix and a 100-byte name at a `/`, an ASCII link
/// target of at most 100 bytes, numbers that fit their octal fields,
/// whole-second times, no xattrs. Otherwise one PAX `x` header first, with
/// only the records needed: `path`, `linkpath`, `size`, `uid`, `gid`,
/// `mtime`, `hdrcharset=BINARY` when a path or link record is not UTF-8
/// (libarchive refuses such values without it), `SCHILY.xattr.<name>`
/// (sorted by name, so the output does not depend on the order the
/// filesystem listed them) — all in key order, as Go writes them — then
/// every record of [`Header::pax`] whose key the writer does not generate
/// itself and that is not `GNU.sparse.*` (so records such as
/// `MSWINDOWS.fileattr` survive a read/write cycle), in their order.
///
/// What the writer does not emit, so does not survive a round trip:
/// `atime`/`ctime` (they change on every read of the source tree and would
/// make layers irreproducible; an `atime`/`ctime` record in `Header::pax` is
/// copied through like any other record); `uname`/`gname` longer than 32
/// bytes or containing NUL; mode bits outside `0o7777`; device numbers of
/// non-device entries; the sparse layout — a sparse [`Header`] is written
/// as a regular file of [`Header::file_size`] bytes, holes included, and
/// its data reader must supply them all.
///
/// `W` should be buffered if it is a file or socket: headers are written
/// with one `write_all` each. After an error the archive is incomplete and
/// should be discarded.
pub struct TarWriter<W: Write> {
    inner: W,
    pos: u64,
    copy_buf: Vec<u8>,
    /// Reused header buffer (PAX header, its data, the ustar header).
    hdr_buf: Vec<u8>,
    /// Bits of [`Header::mode`] written to the mode field.
    mode_mask: u32,
}

impl<W: Write> TarWriter<W> {
    /// A writer emitting into `w`.
    pub fn new(w: W) -> Self {
        TarWriter {
            inner: w,
            pos: 0,
            copy_buf: Vec::new(),
            hdr_buf: Vec::with_capacity(3 * BLOCK),
            mode_mask: 0o7777,
        }
    }

    /// Also writes the file-type bits of [`Header::mode`] (`0o170000`:
    /// `040000` for a directory, `0100000` for a file, ...) into the mode
    /// field, as Go's `archive/tar` does when a producer sets them (go-winio
    /// for Windows layers). Off by default: Docker layers carry permission
    /// bits only.
    pub fn set_mode_type_bits(&mut self, on: bool) {
        self.mode_mask = if on { 0o177777 } else { 0o7777 };
    }

    /// Appends an entry: its header(s), then exactly the entry's data
    /// size in bytes read from `data` (which must not end earlier), then
    /// padding to a block boundary. The data size is [`Header::file_size`]
    /// for regular files and zero for every other kind (a non-regular
    /// header with a non-zero `size` is refused).
    pub fn append(&mut self, h: &Header, data: &mut dyn Read) -> Result<()> {
        let offset = self.pos;
        let size = self.encode(h)?;
        let io_err = |source| TarError::Io {
            offset,
            path: Some(h.path.clone()),
            source,
        };
        self.inner.write_all(&self.hdr_buf).map_err(io_err)?;
        self.pos += self.hdr_buf.len() as u64;
        if size > 0 {
            if self.copy_buf.is_empty() {
                self.copy_buf = vec![0u8; COPY_BUF];
            }
            let mut left = size;
            while left > 0 {
                let want = usize::try_from(left).map_or(COPY_BUF, |l| min(l, COPY_BUF));
                let n = match data.read(&mut self.copy_buf[..want]) {
                    Ok(0) => {
                        return Err(io_err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("entry data ended after {} of {size} bytes", size - left),
                        )));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err(e)),
                };
                self.inner.write_all(&self.copy_buf[..n]).map_err(io_err)?;
                left -= n as u64;
                self.pos += n as u64;
            }
            let pad = (size.next_multiple_of(BLOCK as u64) - size) as usize;
            self.inner.write_all(&[0u8; BLOCK][..pad]).map_err(io_err)?;
            self.pos += pad as u64;
        }
        Ok(())
    }

    /// Appends an entry whose data is in memory; `data` must be exactly
    /// the entry's data size (see [`append`](Self::append)).
    pub fn append_data(&mut self, h: &Header, data: &[u8]) -> Result<()> {
        let expected = data_size(h);
        if data.len() as u64 != expected {
            return Err(TarError::Unencodable {
                offset: self.pos,
                path: Some(h.path.clone()),
                reason: format!(
                    "data is {} bytes but the header says {expected}",
                    data.len()
                ),
            });
        }
        let mut d = data;
        self.append(h, &mut d)
    }

    /// Writes the end-of-archive marker (two zero blocks), flushes, and
    /// returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        let offset = self.pos;
        let io_err = |source| TarError::Io {
            offset,
            path: None,
            source,
        };
        self.inner.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
        self.inner.flush().map_err(io_err)?;
        Ok(self.inner)
    }

    /// The underlying writer. Writing to it directly corrupts the archive
    /// unless done between entries in whole blocks.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Encodes `h` into `hdr_buf`; returns the data size that follows.
    fn encode(&mut self, h: &Header) -> Result<u64> {
        let offset = self.pos;
        let unencodable = |reason: String| TarError::Unencodable {
            offset,
            path: Some(h.path.clone()),
            reason,
        };
        if h.path.contains(&0) || h.link_name.contains(&0) {
            return Err(TarError::NulInName {
                offset,
                path: Some(block::cstr(&h.path).to_vec()),
            });
        }
        if h.kind != EntryKind::Regular && h.size != 0 {
            return Err(unencodable(format!(
                "{:?} entry with non-zero size {}",
                h.kind, h.size
            )));
        }
        let size = data_size(h);

        let mut blk: Block = [0u8; BLOCK];
        // Records in sorted key order, as Go writes them: "SCHILY.xattr.*"
        // sorts before the lowercase keys.
        let mut records: Vec<(Vec<u8>, &[u8])> = Vec::new();
        let mut xattrs: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        for (name, value) in &h.xattrs {
            if name.contains(&b'=') || name.contains(&0) {
                return Err(unencodable(format!(
                    "xattr name {:?} contains '=' or NUL",
                    String::from_utf8_lossy(name)
                )));
            }
            // Later duplicates win, as they do when reading.
            xattrs.insert(name, value);
        }
        for (name, value) in xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(name);
            records.push((k, value));
        }

        // Numbers that do not fit octal go to PAX with a zero field, as Go
        // does (base-256 is a GNU extension).
        let uid_s;
        if block::fits_octal(8, h.uid) {
            block::put_octal(&mut blk[field::UID], h.uid);
        } else {
            block::put_octal(&mut blk[field::UID], 0);
            uid_s = h.uid.to_string();
            records.push((b"uid".to_vec(), uid_s.as_bytes()));
        }
        let gid_s;
        if block::fits_octal(8, h.gid) {
            block::put_octal(&mut blk[field::GID], h.gid);
        } else {
            block::put_octal(&mut blk[field::GID], 0);
            gid_s = h.gid.to_string();
            records.push((b"gid".to_vec(), gid_s.as_bytes()));
        }

        // Link target.
        let link_fits = h.link_name.len() <= NAME_LEN && h.link_name.is_ascii();
        put_str(
            &mut blk[field::LINKNAME],
            &best_effort_ascii(&h.link_name, NAME_LEN),
        );
        if !link_fits {
            records.push((b"linkpath".to_vec(), &h.link_name));
        }

        // Modification time.
        let mtime_s;
        let secs_fit = u64::try_from(h.mtime.secs).is_ok_and(|s| block::fits_octal(12, s));
        block::put_octal(
            &mut blk[field::MTIME],
            if secs_fit { h.mtime.secs as u64 } else { 0 },
        );
        if !secs_fit || h.mtime.nanos != 0 {
            mtime_s = format_pax_time(h.mtime);
            records.push((b"mtime".to_vec(), mtime_s.as_bytes()));
        }

        // Path: name field, or prefix + name split at a '/'.
        if h.path.len() <= NAME_LEN && h.path.is_ascii() {
            put_str(&mut blk[field::NAME], &h.path);
        } else if let Some((prefix, name)) = split_ustar_path(&h.path) {
            put_str(&mut blk[field::NAME], name);
            put_str(&mut blk[field::PREFIX], prefix);
        } else {
            put_str(&mut blk[field::NAME], &best_effort_ascii(&h.path, NAME_LEN));
            records.push((b"path".to_vec(), &h.path));
        }

        let size_s;
        if block::fits_octal(12, size) {
            block::put_octal(&mut blk[field::SIZE], size);
        } else {
            block::put_octal(&mut blk[field::SIZE], 0);
            size_s = size.to_string();
            records.push((b"size".to_vec(), size_s.as_bytes()));
        }

        // POSIX says path and linkpath values are UTF-8 unless the header
        // says otherwise; libarchive refuses non-UTF-8 ones without this
        // record (GNU tar and libarchive write it in the same situation).
        if records
            .iter()
            .any(|(k, v)| (k == b"path" || k == b"linkpath") && std::str::from_utf8(v).is_err())
        {
            records.push((b"hdrcharset".to_vec(), b"BINARY"));
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        // Extra records alone also call for a PAX header.
        for (k, v) in &h.pax {
            if GENERATED_KEYS.contains(&k.as_slice())
                || k.starts_with(b"SCHILY.xattr.")
                || k.starts_with(b"GNU.sparse.")
            {
                continue;
            }
            records.push((k.clone(), v));
        }
        for (k, _) in &records {
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
                return Err(unencodable(format!(
                    "PAX key {:?} is empty or contains '=' or NUL",
                    String::from_utf8_lossy(k)
                )));
            }
        }

        block::put_octal(&mut blk[field::MODE], u64::from(h.mode & self.mode_mask));
        blk[field::TYPEFLAG] = type_flag(h.kind);
        blk[field::MAGIC].copy_from_slice(b"ustar\0");
        blk[field::VERSION].copy_from_slice(b"00");
        if h.uname.len() <= OWNER_NAME_LEN && !h.uname.contains(&0) {
            put_str(&mut blk[field::UNAME], &h.uname);
        }
        if h.gname.len() <= OWNER_NAME_LEN && !h.gname.contains(&0) {
            put_str(&mut blk[field::GNAME], &h.gname);
        }
        let (major, minor) = match h.kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => (h.dev_major, h.dev_minor),
            _ => (0, 0),
        };
        // u32 always fits an 8-byte field as base-256 when not as octal.
        block::put_numeric(&mut blk[field::DEVMAJOR], u64::from(major));
        block::put_numeric(&mut blk[field::DEVMINOR], u64::from(minor));
        block::set_checksum(&mut blk);

        self.hdr_buf.clear();
        if !records.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &records {
                push_pax_record(&mut data, k, v);
            }
            if data.len() as u64 > MAX_EXTENSION_SIZE {
                return Err(unencodable(format!(
                    "PAX header of {} bytes exceeds the {MAX_EXTENSION_SIZE}-byte limit",
                    data.len()
                )));
            }
            let mut pax: Block = [0u8; BLOCK];
            put_str(&mut pax[field::NAME], &pax_header_name(&h.path));
            block::put_octal(&mut pax[field::MODE], 0o644);
            block::put_octal(&mut pax[field::UID], 0);
            block::put_octal(&mut pax[field::GID], 0);
            block::put_octal(&mut pax[field::SIZE], data.len() as u64);
            block::put_octal(&mut pax[field::MTIME], 0);
            pax[field::TYPEFLAG] = b'x';
            pax[field::MAGIC].copy_from_slice(b"ustar\0");
            pax[field::VERSION].copy_from_slice(b"00");
            block::put_octal(&mut pax[field::DEVMAJOR], 0);
            block::put_octal(&mut pax[field::DEVMINOR], 0);
            block::set_checksum(&mut pax);
            self.hdr_buf.extend_from_slice(&pax);
            let padded = data.len().next_multiple_of(BLOCK);
            data.resize(padded, 0);
            self.hdr_buf.extend_from_slice(&data);
        }
        self.hdr_buf.extend_from_slice(&blk);
        Ok(size)
    }
}

/// Bytes of data that follow the header: the whole extracted file for
/// regular files (sparse ones included), nothing for other kinds.
fn data_size(h: &Header) -> u64 {
    if h.kind == EntryKind::Regular {
        h.file_size()
    } else {
        0
    }
}

fn type_flag(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Regular => b'0',
        EntryKind::HardLink => b'1',
        EntryKind::Symlink => b'2',
        EntryKind::CharDevice => b'3',
        EntryKind::BlockDevice => b'4',
        EntryKind::Directory => b'5',
        EntryKind::Fifo => b'6',
    }
}

/// Copies `s` into a text field; a value as long as the field has no NUL
/// terminator, which readers accept.
fn put_str(f: &mut [u8], s: &[u8]) {
    let n = min(s.len(), f.len());
    f[..n].copy_from_slice(&s[..n]);
}

/// What goes into a ustar field whose real value is in a PAX record: the
/// value with non-ASCII bytes dropped, truncated (Go's choice; readers that
/// ignore PAX see something close to the name).
fn best_effort_ascii(s: &[u8], max: usize) -> Vec<u8> {
    s.iter().copied().filter(u8::is_ascii).take(max).collect()
}

/// Splits an ASCII path longer than the name field into ustar prefix and
/// name at a `/`, as Go's `splitUSTARPath` does: the prefix takes as much
/// as fits, a trailing `/` stays with the name.
fn split_ustar_path(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= NAME_LEN || !p.is_ascii() {
        return None;
    }
    let mut limit = p.len();
    if limit > PREFIX_LEN + 1 {
        limit = PREFIX_LEN + 1;
    } else if p[limit - 1] == b'/' {
        limit -= 1;
    }
    let i = p[..limit].iter().rposition(|&b| b == b'/')?;
    let (prefix, name) = (&p[..i], &p[i + 1..]);
    if i == 0 || name.is_empty() || name.len() > NAME_LEN || prefix.len() > PREFIX_LEN {
        return None;
    }
    Some((prefix, name))
}

/// Go's PAX header name: `<dir>/PaxHeaders.0/<base>`, ASCII only,
/// truncated to the name field, without a trailing slash.
fn pax_header_name(path: &[u8]) -> Vec<u8> {
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0");
    if !base.is_empty() {
        name.push(b'/');
        name.extend_from_slice(base);
    }
    let mut name = best_effort_ascii(&name, NAME_LEN);
    while name.last() == Some(&b'/') {
        name.pop();
    }
    name
}

/// Appends `"<len> <key>=<value>\n"`, where `len` counts the whole record
/// including its own digits.
fn push_pax_record(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    let body = k.len() + v.len() + 3; // ' ', '=', '\n'
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

/// Formats a time as PAX does: `secs[.frac]`, fraction without trailing
/// zeros; negative times as a negative decimal (-1.25 for seconds -2 plus
/// 750 ms).
fn format_pax_time(t: Timestamp) -> String {
    if t.nanos == 0 {
        return t.secs.to_string();
    }
    let (sign, secs, nanos) = if t.secs < 0 {
        // -2 s + 0.75 s == -(1 + 0.25) s
        ("-", (-(t.secs + 1)) as u64, 1_000_000_000 - t.nanos)
    } else {
        ("", t.secs as u64, t.nanos)
    };
    let frac = format!("{nanos:09}");
    format!("{sign}{secs}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{parse_pax_records, parse_pax_time};

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [0usize, 1, 5, 6, 7, 90, 95, 96, 97, 990, 995, 996, 9995] {
            let mut out = Vec::new();
            push_pax_record(&mut out, b"k", &vec![b'v'; n]);
            let recs = parse_pax_records(&out).expect("own record parses");
            assert_eq!(recs[0].1.len(), n);
        }
    }

    #[test]
    fn pax_time_format_roundtrip() {
        for t in [
            Timestamp { secs: 0, nanos: 1 },
            Timestamp {
                secs: -1,
                nanos: 500_000_000,
            },
            Timestamp {
                secs: -2,
                nanos: 750_000_000,
            },
            Timestamp {
                secs: i64::MIN,
                nanos: 1,
            },
            Timestamp {
                secs: i64::MAX,
                nanos: 999_999_999,
            },
            Timestamp {
                secs: i64::MIN,
                nanos: 0,
            },
        ] {
            let s = format_pax_time(t);
            assert_eq!(parse_pax_time(s.as_bytes()), Some(t), "{s}");
        }
        assert_eq!(
            format_pax_time(Timestamp {
                secs: -2,
                nanos: 750_000_000
            }),
            "-1.25"
        );
    }

    #[test]
    fn ustar_split_like_go() {
        let long = format!("{}/{}", "a".repeat(120), "b".repeat(50));
        let (p, n) = split_ustar_path(long.as_bytes()).expect("splits");
        assert_eq!((p.len(), n.len()), (120, 50));
        // A trailing slash is not a split point.
        let dir = format!("{}/{}/", "a".repeat(60), "b".repeat(60));
        let (p, n) = split_ustar_path(dir.as_bytes()).expect("splits");
        assert_eq!(p, "a".repeat(60).as_bytes());
        assert_eq!(n, format!("{}/", "b".repeat(60)).as_bytes());
        assert!(split_ustar_path("x".repeat(101).as_bytes()).is_none());
        assert!(split_ustar_path(format!("{}/b", "a".repeat(156)).as_bytes()).is_none());
        assert!(split_ustar_path(format!("a/{}", "b".repeat(101)).as_bytes()).is_none());
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"file"), b"PaxHeaders.0/file");
        assert_eq!(pax_header_name(b"dir/"), b"dir/PaxHeaders.0");
        assert_eq!(pax_header_name(b"\xff\xfe"), b"PaxHeaders.0");
        assert_eq!(pax_header_name(&[b'x'; 300]).len(), NAME_LEN);
    }
}
