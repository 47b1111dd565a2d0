//! Depth-first walks of a tree inside a layer root, by directory handle.
//!
//! The walk never reaches an object by joining path strings: each directory
//! is opened relative to its parent's handle with `O_NOFOLLOW|O_DIRECTORY`,
//! every object is `lstat`ed relative to its parent, and the visitor gets
//! the parent's handle so it can act on the object with `*at` calls. A
//! directory swapped for a symlink mid-walk therefore makes the open fail
//! instead of leading the walk elsewhere. Children are visited in bytewise
//! name order, the order GNU `tar --sort=name` and Docker write, so that
//! anything built from a walk (an export, a comparison) is deterministic.
//! Open handles are bounded by the depth of the tree: one per directory on
//! the current branch.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::{FsError, Result, Root};

/// One object met by [`walk`].
#[derive(Debug)]
pub struct WalkEntry<'a> {
    /// Cleaned path relative to the root, `/`-separated, never empty.
    pub path: &'a [u8],
    /// Last component of `path`.
    pub name: &'a [u8],
    /// Handle of the directory that holds the object, for `*at` calls.
    pub parent: BorrowedFd<'a>,
    /// `lstat` of the object.
    pub stat: &'a Stat,
}

impl WalkEntry<'_> {
    /// The object's type, from its `lstat`.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }
}

/// What the walk does after a visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkControl {
    /// Go on; descend into the object if it is a directory.
    Continue,
    /// Do not descend into this directory (no effect on other objects).
    /// A visitor that removes the directory it is visiting returns this.
    SkipChildren,
}

/// What a [`walk`] calls for each object.
pub trait Visitor {
    /// Called for each object, before a directory's children (pre-order).
    fn visit(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl>;

    /// Called after all of a directory's children were visited
    /// (post-order), e.g. to set directory times. Only called for
    /// directories whose visit returned [`WalkControl::Continue`].
    fn leave_dir(&mut self, e: &WalkEntry<'_>) -> Result<()> {
        let _ = e;
        Ok(())
    }
}

/// Walks depth-first, pre-order, the subtree at `start` (`""` is the whole
/// root; the start itself is not visited), children of each directory in
/// bytewise-sorted name order, never following symlinks.
///
/// `start` is a cleaned path resolved inside the root; its last component
/// must be a directory, not a symlink to one. Objects that vanish between
/// reading a directory and visiting them (removed by the visitor itself or
/// by someone else) are skipped, since they are no longer part of the tree.
pub fn walk(root: &Root, start: &[u8], v: &mut dyn Visitor) -> Result<()> {
    let dir = root.resolve(
        start,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    walk_dir(dir, start, v)
}

/// Like [`walk`], for a directory the caller already holds: `dir` is its
/// handle and `path` its cleaned path, used as the prefix of every
/// reported path (`""` for the root).
pub fn walk_dir(dir: OwnedFd, path: &[u8], v: &mut dyn Visitor) -> Result<()> {
    let mut buf = path.to_vec();
    walk_children(dir, &mut buf, v)
}

/// Visits the children of `dir`, whose path is `path`; `path` is used as
/// scratch space and restored before returning.
fn walk_children(dir: OwnedFd, path: &mut Vec<u8>, v: &mut dyn Visitor) -> Result<()> {
    // All names are read before any visit, so the getdents offset of the
    // handle no longer matters and the same handle serves the `*at` calls.
    let mut d = Dir::new(dir).map_err(|e| FsError::io("opendir", path, e))?;
    let names = dir_names(&mut d, path)?;
    let fd = d.fd().map_err(|e| FsError::io("opendir", path, e))?;
    let base = path.len();
    for name in &names {
        if base > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let r = visit_one(fd, name, path, v);
        path.truncate(base);
        r?;
    }
    Ok(())
}

/// Visits one object and, if it is a directory the visitor wants to enter,
/// its subtree.
fn visit_one(
    parent: BorrowedFd<'_>,
    name: &[u8],
    path: &mut Vec<u8>,
    v: &mut dyn Visitor,
) -> Result<()> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(FsError::io("lstat", path, e)),
    };
    let ctl = v.visit(&WalkEntry {
        path,
        name,
        parent,
        stat: &stat,
    })?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory
        || ctl == WalkControl::SkipChildren
    {
        return Ok(());
    }
    let dir = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(FsError::io("open", path, e)),
    };
    walk_children(dir, path, v)?;
    v.leave_dir(&WalkEntry {
        path,
        name,
        parent,
        stat: &stat,
    })
}

/// The names in `d` (without `.` and `..`), sorted bytewise, all read
/// before the caller acts on any: unlinking or creating while a directory
/// is being read may make getdents skip or repeat entries. `path` names the
/// directory in errors.
pub fn dir_names(d: &mut Dir, path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent.map_err(|e| FsError::io("readdir", path, e))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        skip: Vec<u8>,
    }

    impl Visitor for Log {
        fn visit(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl> {
            let t = match e.file_type() {
                FileType::Directory => "d",
                FileType::Symlink => "l",
                _ => "f",
            };
            self.events
                .push(format!("{t} {}", String::from_utf8_lossy(e.path)));
            // The parent handle really holds the object.
            let st = rustix::fs::statat(e.parent, e.name, AtFlags::SYMLINK_NOFOLLOW).unwrap();
            assert_eq!(st.st_ino, e.stat.st_ino);
            assert!(e.path.ends_with(e.name));
            Ok(if e.path == self.skip {
                WalkControl::SkipChildren
            } else {
                WalkControl::Continue
            })
        }
        fn leave_dir(&mut self, e: &WalkEntry<'_>) -> Result<()> {
            self.events
                .push(format!("leave {}", String::from_utf8_lossy(e.path)));
            Ok(())
        }
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("b/y")).unwrap();
        std::fs::create_dir_all(p.join("a")).unwrap();
        std::fs::create_dir_all(p.join("B")).unwrap();
        std::fs::write(p.join("b/z"), b"").unwrap();
        std::fs::write(p.join("b/y/f"), b"").unwrap();
        std::fs::write(p.join("a.txt"), b"").unwrap();
        // A symlink to a directory is reported but never entered.
        symlink("/", p.join("b/link")).unwrap();
        d
    }

    #[test]
    fn sorted_preorder_with_postorder_leave() {
        let d = tree();
        let root = Root::open(d.path()).unwrap();
        let mut log = Log::default();
        walk(&root, b"", &mut log).unwrap();
        assert_eq!(
            log.events,
            [
                "d B",
                "leave B",
                "d a",
                "leave a",
                "f a.txt",
                "d b",
                "l b/link",
                "d b/y",
                "f b/y/f",
                "leave b/y",
                "f b/z",
                "leave b",
            ]
        );
    }

    #[test]
    fn subtree_and_skip() {
        let d = tree();
        let root = Root::open(d.path()).unwrap();
        let mut log = Log {
            skip: b"b/y".to_vec(),
            ..Log::default()
        };
        walk(&root, b"b", &mut log).unwrap();
        assert_eq!(log.events, ["l b/link", "d b/y", "f b/z"]);
        // A symlink as the start is refused rather than followed.
        assert!(walk(&root, b"b/link", &mut Log::default()).is_err());
    }

    #[test]
    fn visitor_errors_stop_the_walk() {
        struct Fail;
        impl Visitor for Fail {
            fn visit(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl> {
                Err(FsError::Invalid {
                    path: crate::display_path(e.path),
                    reason: "stop".into(),
                })
            }
        }
        let d = tree();
        let root = Root::open(d.path()).unwrap();
        let e = walk(&root, b"", &mut Fail).unwrap_err();
        assert_eq!(e.to_string(), "\"B\": stop");
    }
}
