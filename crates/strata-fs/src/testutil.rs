//! Helpers shared by this crate's unit tests: the root check and a tree
//! manifest for comparing two trees in full.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hasher};
use std::io::Read;

use rustix::fs::FileType;

use crate::walk::{Visitor, WalkControl, WalkEntry, walk};
use crate::xattr::{xattrs_at, xattrs_fd};
use crate::{Result, Root, display_path};

/// True when running as root. Otherwise prints a loud SKIP line and
/// returns false, or panics when `CI=true` (CI runs as root, so a skip
/// there hides a broken setup).
pub fn need_root(reason: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "test needs root ({reason}) but CI=true"
    );
    eprintln!("SKIP: not root, cannot test {reason}");
    false
}

/// One line per object of the tree (the root itself as "."): type, mode,
/// owner, size, mtime with ns, device number, symlink target, xattrs, a
/// content hash for regular files, and the first path of its hard-link
/// group when it has several names.
pub fn tree_manifest(root: &Root) -> Vec<String> {
    struct M<'a> {
        root: &'a Root,
        lines: Vec<String>,
        groups: HashMap<(u64, u64), String>,
    }
    impl Visitor for M<'_> {
        fn visit(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl> {
            let st = e.stat;
            let p = display_path(e.path);
            let mut l = format!(
                "{p} {:?} {:o} {}:{} mtime={}.{} rdev={}",
                e.file_type(),
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime,
                st.st_mtime_nsec,
                st.st_rdev
            );
            write!(l, " xattrs={:?}", xattrs_at(e.parent, e.name, e.path)?).unwrap();
            match e.file_type() {
                FileType::RegularFile => {
                    let mut f = self.root.open_file(e.path)?;
                    let mut h = DefaultHasher::new();
                    let mut buf = vec![0; 1 << 16];
                    loop {
                        let n = f.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        h.write(&buf[..n]);
                    }
                    write!(l, " size={} data={:x}", st.st_size, h.finish()).unwrap();
                }
                FileType::Symlink => {
                    write!(l, " -> {}", display_path(&self.root.read_link(e.path)?)).unwrap();
                }
                _ => {}
            }
            if e.file_type() != FileType::Directory && st.st_nlink > 1 {
                let first = self.groups.entry((st.st_dev, st.st_ino)).or_insert(p);
                write!(l, " group={first} nlink={}", st.st_nlink).unwrap();
            }
            self.lines.push(l);
            Ok(WalkControl::Continue)
        }
    }
    let st = rustix::fs::fstat(root.fd()).unwrap();
    let mut m = M {
        root,
        lines: Vec::new(),
        groups: HashMap::new(),
    };
    m.lines.push(format!(
        ". {:o} {}:{} mtime={}.{} xattrs={:?}",
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_mtime,
        st.st_mtime_nsec,
        xattrs_fd(root.fd(), b"").unwrap()
    ));
    walk(root, b"", &mut m).unwrap();
    m.lines
}
