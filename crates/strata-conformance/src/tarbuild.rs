//! Builds layer tars for tests with a small fluent API over strata-tar's
//! writer, so each case states its layer in a few readable lines.

use strata_tar::{EntryKind, Header, TarWriter, Timestamp};

/// Fixed mtime for test entries (2023-11-14), whole seconds.
pub const EPOCH: i64 = 1_700_000_000;

/// A tar under construction.
#[derive(Default)]
pub struct TarBuilder {
    entries: Vec<(Header, Vec<u8>)>,
}

fn header(kind: EntryKind, path: &[u8], mode: u32) -> Header {
    let mut h = Header::new(kind, path.to_vec());
    h.mode = mode;
    h.mtime = Timestamp::from_secs(EPOCH);
    h
}

impl TarBuilder {
    /// An empty tar.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a fully specified entry.
    pub fn entry(mut self, h: Header, data: &[u8]) -> Self {
        let mut h = h;
        if h.kind == EntryKind::Regular {
            h.size = data.len() as u64;
        }
        self.entries.push((h, data.to_vec()));
        self
    }

    /// Adds a directory.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(header(EntryKind::Directory, path.as_bytes(), mode), b"")
    }

    /// Adds a regular file.
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(header(EntryKind::Regular, path.as_bytes(), mode), data)
    }

    /// Adds a regular file with a raw (possibly non-UTF-8) name.
    pub fn file_raw(self, path: &[u8], mode: u32, data: &[u8]) -> Self {
        self.entry(header(EntryKind::Regular, path, mode), data)
    }

    /// Adds a symlink.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        let mut h = header(EntryKind::Symlink, path.as_bytes(), 0o777);
        h.link_name = target.as_bytes().to_vec();
        self.entry(h, b"")
    }

    /// Adds a hard link to an earlier entry.
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        let mut h = header(EntryKind::HardLink, path.as_bytes(), 0o644);
        h.link_name = target.as_bytes().to_vec();
        self.entry(h, b"")
    }

    /// Adds a whiteout removing `path`.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), 0o600, b"")
    }

    /// Adds an opaque marker for directory `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o600, b"")
    }

    /// Adds a device node or fifo.
    pub fn node(self, path: &str, kind: EntryKind, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = header(kind, path.as_bytes(), mode);
        h.dev_major = major;
        h.dev_minor = minor;
        self.entry(h, b"")
    }

    /// Sets owner and xattrs on the last entry.
    pub fn owned(mut self, uid: u64, gid: u64) -> Self {
        if let Some((h, _)) = self.entries.last_mut() {
            h.uid = uid;
            h.gid = gid;
        }
        self
    }

    /// Adds an xattr to the last entry.
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        if let Some((h, _)) = self.entries.last_mut() {
            h.xattrs.push((key.as_bytes().to_vec(), value.to_vec()));
        }
        self
    }

    /// Sets the last entry's mtime.
    pub fn mtime(mut self, secs: i64, nanos: u32) -> Self {
        if let Some((h, _)) = self.entries.last_mut() {
            h.mtime = Timestamp { secs, nanos };
        }
        self
    }

    /// Applies `f` only when `cond` holds, so that variants of one image
    /// stay one chain of entries.
    pub fn when(self, cond: bool, f: impl FnOnce(Self) -> Self) -> Self {
        if cond { f(self) } else { self }
    }

    /// The tar bytes.
    pub fn build(self) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (h, data) in &self.entries {
            w.append(h, &mut &data[..])
                .expect("writing to a Vec cannot fail");
        }
        w.finish().expect("writing to a Vec cannot fail")
    }
}
