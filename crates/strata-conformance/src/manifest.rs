//! A canonical manifest of a directory tree (type, mode, owner, size,
//! content hash, link target, device, hard-link group, xattrs, mtime), so
//! tests can compare two trees, e.g. Strata's against umoci's, with one
//! `assert_eq!` whose diff shows exactly which entry differs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// What to leave out of a manifest.
#[derive(Clone, Debug, Default)]
pub struct ManifestOptions {
    /// Leave out all mtimes.
    pub no_mtime: bool,
    /// Leave out directory mtimes (they change as entries come and go).
    pub no_dir_mtime: bool,
    /// Xattr name prefixes to leave out.
    pub ignore_xattr: Vec<String>,
}

/// Builds the manifest of the tree at `root`: one line per entry, sorted
/// by path bytes.
pub fn manifest(root: &Path, opts: &ManifestOptions) -> String {
    let mut entries = BTreeMap::new();
    collect(root, Vec::new(), &mut entries);
    let mut first_of_inode: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (path, md) in &entries {
        if !md.is_dir() && md.nlink() > 1 {
            first_of_inode
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| path.clone());
        }
    }
    let mut out = String::new();
    for (path, md) in &entries {
        let full = root.join(std::ffi::OsStr::from_bytes(path));
        let ft = md.file_type();
        let t = if ft.is_file() {
            'f'
        } else if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let _ = write!(
            out,
            "{} type={t} mode={:o} uid={} gid={}",
            strata_fs::display_path(path),
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        if ft.is_file() {
            let _ = write!(out, " size={} sha256={}", md.len(), sha256_file(&full));
        }
        if ft.is_symlink() {
            let target = fs::read_link(&full)
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .unwrap_or_default();
            let _ = write!(out, " target={}", strata_fs::display_path(&target));
        }
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let _ = write!(
                out,
                " rdev={},{}",
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev)
            );
        }
        if let Some(first) = first_of_inode.get(&(md.dev(), md.ino())) {
            let _ = write!(out, " hardlink={}", strata_fs::display_path(first));
        }
        for (k, v) in xattrs(&full) {
            if opts.ignore_xattr.iter().any(|p| k.starts_with(p.as_str())) {
                continue;
            }
            let _ = write!(out, " xattr.{k}={}", hex::encode(v));
        }
        let skip_mtime = opts.no_mtime || (ft.is_dir() && opts.no_dir_mtime);
        if !skip_mtime {
            let _ = write!(out, " mtime={}.{:09}", md.mtime(), md.mtime_nsec());
        }
        out.push('\n');
    }
    out
}

fn collect(root: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, fs::Metadata>) {
    let dir = root.join(std::ffi::OsStr::from_bytes(&rel));
    let Ok(rd) = fs::read_dir(&dir) else { return };
    for ent in rd.flatten() {
        let mut p = rel.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(ent.file_name().as_bytes());
        let Ok(md) = fs::symlink_metadata(ent.path()) else {
            continue;
        };
        let is_dir = md.is_dir();
        out.insert(p.clone(), md);
        if is_dir {
            collect(root, p, out);
        }
    }
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    let Ok(mut f) = fs::File::open(p) else {
        return "unreadable".into();
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return "unreadable".into(),
        }
    }
    hex::encode(h.finalize())
}

/// All xattrs of `p` (not following a symlink), sorted by name.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(p, name, &mut val[..]) {
            val.truncate(len);
            out.push((String::from_utf8_lossy(name).into_owned(), val));
        }
    }
    out.sort();
    out
}
