//! Disk usage of a snapshot's own content, counted the way containerd
//! counts it for its overlay snapshotter: every inode once (hard links are
//! not counted twice), the content's root directory included, size as
//! allocated blocks (`st_blocks` × 512), so sparse files count what they
//! occupy and whiteouts count as the inodes they are.

use std::collections::HashSet;
use std::path::Path;

use rustix::fs::Stat;
use strata_fs::{FsError, Root, Visitor, WalkControl, WalkEntry};

use crate::model::Usage;

/// The usage of the tree at `dir`.
pub fn disk_usage(dir: &Path) -> Result<Usage, FsError> {
    let root = Root::open(dir)?;
    let top = rustix::fs::fstat(root.fd()).map_err(|e| FsError::io("fstat", b"", e))?;
    let mut count = Count::default();
    count.add(&top);
    strata_fs::walk(&root, b"", &mut count)?;
    Ok(count.usage)
}

#[derive(Default)]
struct Count {
    seen: HashSet<(u64, u64)>,
    usage: Usage,
}

impl Count {
    fn add(&mut self, st: &Stat) {
        if self.seen.insert((st.st_dev, st.st_ino)) {
            self.usage.inodes += 1;
            self.usage.size += st.st_blocks * 512;
        }
    }
}

impl Visitor for Count {
    fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
        self.add(e.stat);
        Ok(WalkControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_inode_once_with_the_root() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir(d.join("a")).unwrap();
        std::fs::write(d.join("a/f"), vec![7u8; 10_000]).unwrap();
        std::fs::hard_link(d.join("a/f"), d.join("g")).unwrap();
        std::os::unix::fs::symlink("a/f", d.join("l")).unwrap();
        let u = disk_usage(d).unwrap();
        // root, a, f (twice linked), l
        assert_eq!(u.inodes, 4);
        let blocks = |p: &Path| {
            std::os::unix::fs::MetadataExt::blocks(&std::fs::symlink_metadata(p).unwrap()) as i64
                * 512
        };
        let want = blocks(d) + blocks(&d.join("a")) + blocks(&d.join("a/f")) + blocks(&d.join("l"));
        assert_eq!(u.size, want);
        assert!(u.size >= 10_000);
    }
}
