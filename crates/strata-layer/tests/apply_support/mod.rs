//! Helpers shared by the applier tests: the root check, header builders,
//! running entries through an `Applier`, and a manifest of a host tree
//! that notices any change, read included, to what lies outside a layer.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use strata_fs::Root;
use strata_layer::{Applier, ApplyError, ApplyOptions, ApplyStats, WhiteoutMode};
use strata_tar::{EntryKind, Header, Timestamp};

/// True when running as root; otherwise prints a loud SKIP line, or fails
/// when `CI=true` (CI runs as root, so a skip there hides a broken setup).
pub fn need_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI=true"
    );
    eprintln!("SKIP: {what} needs root");
    false
}

/// The mtime every builder gives its entries.
pub const MTIME: Timestamp = Timestamp {
    secs: 1_500_000_000,
    nanos: 123_456_789,
};

fn base(kind: EntryKind, path: &[u8], mode: u32) -> Header {
    let mut h = Header::new(kind, path.to_vec());
    h.mode = mode;
    h.mtime = MTIME;
    h
}

/// A directory entry, mode 0755.
pub fn dir(path: &[u8]) -> (Header, Vec<u8>) {
    (base(EntryKind::Directory, path, 0o755), Vec::new())
}

/// A regular file entry with `data`, mode 0644.
pub fn file(path: &[u8], data: &[u8]) -> (Header, Vec<u8>) {
    let mut h = base(EntryKind::Regular, path, 0o644);
    h.size = data.len() as u64;
    (h, data.to_vec())
}

/// A symlink entry.
pub fn sym(path: &[u8], target: &[u8]) -> (Header, Vec<u8>) {
    let mut h = base(EntryKind::Symlink, path, 0o777);
    h.link_name = target.to_vec();
    (h, Vec::new())
}

/// A hard link entry.
pub fn hard(path: &[u8], target: &[u8]) -> (Header, Vec<u8>) {
    let mut h = base(EntryKind::HardLink, path, 0o644);
    h.link_name = target.to_vec();
    (h, Vec::new())
}

/// A character device entry.
pub fn chr(path: &[u8], major: u32, minor: u32) -> (Header, Vec<u8>) {
    let mut h = base(EntryKind::CharDevice, path, 0o620);
    h.dev_major = major;
    h.dev_minor = minor;
    (h, Vec::new())
}

/// A fifo entry.
pub fn fifo(path: &[u8]) -> (Header, Vec<u8>) {
    (base(EntryKind::Fifo, path, 0o600), Vec::new())
}

/// Delete-mode options.
pub const DELETE: ApplyOptions = ApplyOptions {
    whiteouts: WhiteoutMode::Delete,
    writeback: false,
};

/// Overlay-mode options with trusted.overlay.
pub const OVERLAY: ApplyOptions = ApplyOptions {
    whiteouts: WhiteoutMode::Overlay {
        xattr_prefix: "trusted.overlay.",
    },
    writeback: false,
};

/// Applies `entries` in order and finishes.
pub fn apply_all(
    root: &Root,
    opts: ApplyOptions,
    entries: &[(Header, Vec<u8>)],
) -> Result<ApplyStats, ApplyError> {
    let mut a = Applier::new(root, opts);
    for (h, data) in entries {
        a.apply(h, &mut data.as_slice())?;
    }
    a.finish()
}

/// A path from raw bytes.
pub fn p(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// `lstat` of a host path.
pub fn lstat(path: &Path) -> Option<rustix::fs::Stat> {
    rustix::fs::statat(rustix::fs::CWD, path, AtFlags::SYMLINK_NOFOLLOW).ok()
}

/// The kind of the object at a host path, without following it.
pub fn kind(path: &Path) -> Option<FileType> {
    lstat(path).map(|st| FileType::from_raw_mode(st.st_mode))
}

/// All xattrs of a host path, not following it.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for k in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, k, &mut v[..]).expect("lgetxattr");
        v.truncate(len);
        out.push((k.to_vec(), v));
    }
    out.sort();
    out
}

/// Sets an xattr on a host path without following it.
pub fn set_xattr(path: &Path, k: &str, v: &[u8]) {
    rustix::fs::lsetxattr(path, k, v, XattrFlags::empty()).expect("lsetxattr");
}

/// Sets both times of a host path without following it.
pub fn set_times(path: &Path, atime: i64, mtime: i64) {
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
}

/// A temp dir holding a fresh layer root (`<tmp>/layer`) and a sentinel
/// tree beside it, with the sentinel's manifest taken before the test.
pub struct Arena {
    pub tmp: tempfile::TempDir,
    pub layer: PathBuf,
    pub root: Root,
    before: BTreeMap<Vec<u8>, String>,
}

impl Arena {
    /// Builds the arena. The sentinel has files (one secret, one with an
    /// xattr, one with a second hard link), directories and symlinks; file
    /// and directory atimes are set before their mtimes so that, on a
    /// `relatime` mount, any read of them moves the atime and shows.
    pub fn new() -> Arena {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let w = |rel: &str, data: &[u8]| std::fs::write(t.join(rel), data).expect("write");
        for d in ["outside", "outside/sub", "etc", "layer"] {
            std::fs::create_dir(t.join(d)).expect("mkdir");
        }
        w("outside/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
        w("outside/secret", b"top secret");
        w("outside/sub/f", b"f");
        w("etc/passwd", b"sentinel passwd\n");
        w("x", b"x");
        std::fs::hard_link(t.join("outside/passwd"), t.join("outside/passwd-link")).expect("link");
        std::os::unix::fs::symlink(t.join("outside"), t.join("lnk")).expect("symlink");
        std::os::unix::fs::symlink("/", t.join("outside/root-link")).expect("symlink");
        rustix::fs::chmod(
            t.join("outside/secret").as_path(),
            Mode::from_raw_mode(0o600),
        )
        .expect("chmod");
        rustix::fs::chown(
            t.join("outside/secret").as_path(),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(1234)),
        )
        .expect("chown");
        set_xattr(&t.join("outside/passwd"), "trusted.sentinel", b"s");
        for f in [
            "outside/passwd",
            "outside/secret",
            "outside/sub/f",
            "etc/passwd",
            "x",
            "outside/sub",
            "outside",
            "etc",
        ] {
            set_times(&t.join(f), 1_000_000, 2_000_000);
        }
        // The temp dir itself holds `layer`, which the test changes.
        let layer = t.join("layer");
        let root = Root::open(&layer).expect("open root");
        let before = manifest(t);
        Arena {
            tmp,
            layer,
            root,
            before,
        }
    }

    /// Host path of `rel` inside the layer.
    pub fn at(&self, rel: &[u8]) -> PathBuf {
        self.layer.join(p(rel))
    }

    /// The temp dir's absolute path as bytes (for absolute host paths in
    /// entries).
    pub fn tmp_bytes(&self) -> Vec<u8> {
        self.tmp.path().as_os_str().as_bytes().to_vec()
    }

    /// Asserts the sentinel is exactly as it was.
    pub fn assert_untouched(&self, case: &str) {
        let after = manifest(self.tmp.path());
        for (k, v) in &self.before {
            assert_eq!(
                after.get(k),
                Some(v),
                "{case}: sentinel {:?} changed",
                String::from_utf8_lossy(k)
            );
        }
        for k in after.keys() {
            assert!(
                self.before.contains_key(k),
                "{case}: {:?} appeared outside the layer",
                String::from_utf8_lossy(k)
            );
        }
    }
}

/// One line per object under `top`, except the contents of `top/layer`:
/// type, mode, owner, size, nlink, atime (not for symlinks, whose atime
/// our own `readlink` moves), mtime, ctime (any metadata change moves
/// it), xattrs, symlink target and a content hash. Files and directories
/// are read with `O_NOATIME` so taking the manifest does not disturb it.
pub fn manifest(top: &Path) -> BTreeMap<Vec<u8>, String> {
    let d = rustix::fs::open(
        top,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOATIME,
        Mode::empty(),
    )
    .expect("open top");
    let mut out = BTreeMap::new();
    let st = rustix::fs::fstat(&d).expect("fstat");
    out.insert(
        b".".to_vec(),
        format!(
            "dir {:o} {}:{} ino={} mtime={}.{} ctime={}.{}",
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_ino,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec
        ),
    );
    walk(d, top, b"", &mut out);
    out
}

fn walk(d: OwnedFd, host: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, String>) {
    let mut dir = Dir::new(d).expect("dir");
    let mut names = Vec::new();
    while let Some(e) = dir.read() {
        let n = e.expect("readdir").file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(n);
        }
    }
    let fd = dir.fd().expect("fd");
    for n in names {
        // The layer root is what the test changes; the rest is sentinel.
        if rel.is_empty() && n == b"layer" {
            continue;
        }
        let mut path = rel.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&n);
        let st = rustix::fs::statat(fd, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW).expect("lstat");
        let ft = FileType::from_raw_mode(st.st_mode);
        let hp = host.join(p(&n));
        let mut line = format!(
            "{ft:?} {:o} {}:{} size={} nlink={} mtime={}.{} ctime={}.{} xattrs={:?}",
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_nlink,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
            xattrs(&hp)
        );
        if ft != FileType::Symlink {
            line.push_str(&format!(" atime={}.{}", st.st_atime, st.st_atime_nsec));
        }
        match ft {
            FileType::RegularFile => {
                let f = rustix::fs::openat(
                    fd,
                    n.as_slice(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOATIME,
                    Mode::empty(),
                )
                .expect("open");
                line.push_str(&format!(" data={:x}", hash_fd(f.as_fd())));
            }
            FileType::Symlink => {
                let t = rustix::fs::readlinkat(fd, n.as_slice(), Vec::new()).expect("readlink");
                line.push_str(&format!(" -> {:?}", t));
            }
            _ => {}
        }
        out.insert(path.clone(), line);
        if ft == FileType::Directory {
            let sub = rustix::fs::openat(
                fd,
                n.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NOATIME,
                Mode::empty(),
            )
            .expect("open dir");
            walk(sub, &hp, &path, out);
        }
    }
}

fn hash_fd(fd: BorrowedFd<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = rustix::io::read(fd, &mut buf[..]).expect("read");
        if n == 0 {
            return h.finish();
        }
        h.write(&buf[..n]);
    }
}
