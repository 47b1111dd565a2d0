//! [`Root`]: a directory handle that every layer path is resolved under.
//!
//! Resolution uses `openat2` with `RESOLVE_IN_ROOT` so the kernel treats the
//! handle as `/` for the whole walk (absolute symlinks land inside, `..`
//! stops at the root) and `RESOLVE_NO_MAGICLINKS` so `/proc`-style links in a
//! hostile tree lead nowhere. Operations that create, replace or inspect an
//! object resolve only its *parent* this way and then act on the final name
//! with `*at` calls that never follow it.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::{FsError, Result, components};

/// Flags for every in-root resolution.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// A layer root: an open directory that anchors every path operation.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the directory at `path` (a host path the caller trusts, such
    /// as a layer directory inside the store) as a root.
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let path = path.as_ref();
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::io("open root", path.as_os_str().as_encoded_bytes(), e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path this root was opened from (for messages and for
    /// handing to engines; never used to reach objects inside the root).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory's handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (a cleaned path; `""` is the root) with `openat2`
    /// resolved in the root. Symlinks, including the last component, are
    /// followed inside the root unless `flags` has `NOFOLLOW`.
    pub fn resolve(&self, rel: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let target: &[u8] = if rel.is_empty() { b"." } else { rel };
        loop {
            match rustix::fs::openat2(&self.fd, target, flags | OFlags::CLOEXEC, mode, RESOLVE) {
                // The kernel answers EAGAIN when a concurrent rename raced
                // with the walk; the walk is safe to retry.
                Err(Errno::AGAIN) => continue,
                r => return r.map_err(|e| FsError::io("resolve", rel, e)),
            }
        }
    }

    /// Opens the directory at `rel`, following symlinks inside the root.
    pub fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd> {
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }

    /// Resolves the parent of `rel` inside the root and returns its handle
    /// with the final component's name. `rel` must be a cleaned, non-empty
    /// path; the final component is never followed.
    pub fn open_parent<'a>(&self, rel: &'a [u8]) -> Result<(OwnedFd, &'a [u8])> {
        let (parent, name) = split_last(rel).ok_or_else(|| FsError::Invalid {
            path: String::new(),
            reason: "no name".into(),
        })?;
        Ok((self.open_dir(parent)?, name))
    }

    /// `lstat` of `rel`: the parent is resolved in the root, the final
    /// component is not followed. `Ok(None)` when nothing is there (or a
    /// parent is missing or is not a directory).
    pub fn lstat(&self, rel: &[u8]) -> Result<Option<Stat>> {
        if rel.is_empty() {
            return rustix::fs::fstat(&self.fd)
                .map(Some)
                .map_err(|e| FsError::io("stat", rel, e));
        }
        let (parent, name) = match self.open_parent(rel) {
            Ok(p) => p,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(FsError::io("lstat", rel, e)),
        }
    }

    /// Opens the regular file at `rel` for reading without following a
    /// symlink in the last component.
    pub fn open_file(&self, rel: &[u8]) -> Result<File> {
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Reads the target of the symlink at `rel` (not followed).
    pub fn read_link(&self, rel: &[u8]) -> Result<Vec<u8>> {
        let (parent, name) = self.open_parent(rel)?;
        rustix::fs::readlinkat(&parent, name, Vec::new())
            .map(|c| c.into_bytes())
            .map_err(|e| FsError::io("readlink", rel, e))
    }
}

/// True when `e` says the object (or a parent of it) is not there.
pub(crate) fn is_absent(e: &FsError) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::NOENT.raw_os_error() || c == Errno::NOTDIR.raw_os_error())
}

/// Splits a cleaned path into (parent, name); `None` for the root.
fn split_last(rel: &[u8]) -> Option<(&[u8], &[u8])> {
    components(rel).next()?;
    Some(match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_resolve_inside() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("root");
        std::fs::create_dir_all(root_dir.join("real")).unwrap();
        std::fs::write(root_dir.join("real/f"), b"inside").unwrap();
        std::fs::write(outer.path().join("f"), b"outside").unwrap();
        // /etc -> /real inside the root, and an escape attempt via ../..
        symlink("/real", root_dir.join("etc")).unwrap();
        symlink("../../..", root_dir.join("up")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut root.open_file(b"etc/f").unwrap(), &mut s).unwrap();
        assert_eq!(s, "inside");
        // ../../.. from the root stays at the root: "up/f" is absent, not the outer f.
        assert!(root.open_file(b"up/f").is_err());
        assert!(root.open_file(b"up/real/f").is_ok());
        assert!(root.lstat(b"etc").unwrap().is_some());
        assert!(root.lstat(b"missing/x").unwrap().is_none());
        assert_eq!(root.read_link(b"etc").unwrap(), b"/real");
    }
}
