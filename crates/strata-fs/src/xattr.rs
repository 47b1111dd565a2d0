//! Extended attributes of objects inside a layer, read and written without
//! following the object if it is a symlink.
//!
//! There is no `*xattrat` system call before Linux 6.13, and `f*xattr` needs
//! an fd that can only be opened on regular files and directories (opening
//! a device or fifo is exactly what an importer must not do). So the `_at`
//! functions name the object as `/proc/self/fd/<parent>/<name>` and use the
//! `l*xattr` calls: the magic link jumps straight to our own, already
//! resolved directory handle, and the final `name` (checked to be a single
//! component) is not followed. This needs procfs mounted at `/proc`, as
//! every container host has; without it the `_at` functions fail with
//! `ENOENT`. The `_fd` functions are the faster path for objects the caller
//! already holds open.
//!
//! Attribute names and values are raw bytes; lists come back sorted by name
//! so that callers comparing or exporting them get a stable order.

use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use crate::{FsError, Result, check_name};

/// One extended attribute: (name, value).
pub type Xattr = (Vec<u8>, Vec<u8>);

/// Size of the first buffer tried for a list or value; most objects have
/// no or few short attributes, so one call usually suffices and the size
/// query is only needed for large ones.
const FIRST_TRY: usize = 256;

/// All extended attributes of the object `name` in directory `parent`,
/// without following it, sorted by name. A filesystem without xattr support
/// yields an empty list. `path` is only used in errors.
pub fn xattrs_at(parent: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<Vec<Xattr>> {
    check_name(name, path)?;
    let p = proc_path(parent, name);
    collect(
        path,
        |buf| rustix::fs::llistxattr(p.as_slice(), buf),
        || rustix::fs::llistxattr_query(p.as_slice()),
        |key, buf| rustix::fs::lgetxattr(p.as_slice(), key, buf),
        |key| rustix::fs::lgetxattr_query(p.as_slice(), key),
    )
}

/// Sets the extended attribute `key` to `value` on the object `name` in
/// directory `parent`, without following it. `path` is only used in errors.
pub fn set_xattr_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
    path: &[u8],
) -> Result<()> {
    check_name(name, path)?;
    let p = proc_path(parent, name);
    rustix::fs::lsetxattr(p.as_slice(), key, value, XattrFlags::empty())
        .map_err(|e| xattr_error("setxattr", path, key, e))
}

/// All extended attributes of the open file or directory `fd`, sorted by
/// name; empty where the filesystem has no xattr support.
pub fn xattrs_fd(fd: BorrowedFd<'_>, path: &[u8]) -> Result<Vec<Xattr>> {
    collect(
        path,
        |buf| rustix::fs::flistxattr(fd, buf),
        || rustix::fs::flistxattr_query(fd),
        |key, buf| rustix::fs::fgetxattr(fd, key, buf),
        |key| rustix::fs::fgetxattr_query(fd, key),
    )
}

/// Sets the extended attribute `key` to `value` on the open file or
/// directory `fd`.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], path: &[u8]) -> Result<()> {
    rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty())
        .map_err(|e| xattr_error("setxattr", path, key, e))
}

/// `/proc/self/fd/<parent>/<name>`: a path that reaches `name` through our
/// own handle on its directory, whatever that directory's path is.
fn proc_path(parent: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// Lists and reads every attribute with the given primitives.
fn collect(
    path: &[u8],
    mut list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut list_len: impl FnMut() -> rustix::io::Result<usize>,
    mut get: impl FnMut(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
    mut get_len: impl FnMut(&[u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<Xattr>> {
    let names = match sized(&mut list, &mut list_len) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(FsError::io("listxattr", path, e)),
    };
    let mut out = Vec::new();
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        match sized(|buf| get(key, buf), || get_len(key)) {
            Ok(value) => out.push((key.to_vec(), value)),
            // Removed between the list and the read: it is no longer an
            // attribute of the object, so it is rightly absent.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(xattr_error("getxattr", path, key, e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `fetch` with a buffer big enough for its answer: a small guess
/// first, then the size `query` reports, retrying if the data grew in
/// between (`ERANGE`).
fn sized(
    mut fetch: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut query: impl FnMut() -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FIRST_TRY];
    loop {
        match fetch(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let want = query()?;
                // Grow past the reported size so a value that grew by a
                // little still fits; the kernel caps values at 64 KiB.
                buf.resize(want.max(buf.len()) + FIRST_TRY, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// An error naming the attribute as well as the object.
fn xattr_error(op: &'static str, path: &[u8], key: &[u8], e: Errno) -> FsError {
    let mut p = path.to_vec();
    p.extend_from_slice(b" [");
    p.extend_from_slice(key);
    p.push(b']');
    FsError::io(op, &p, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Root;
    use crate::testutil::need_root;
    use std::os::fd::AsFd;

    #[test]
    fn round_trip_on_every_kind_without_following() {
        if !need_root("trusted.* xattrs on symlinks and fifos") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"o").unwrap();
        let rd = dir.path().join("root");
        std::fs::create_dir(&rd).unwrap();
        std::fs::write(rd.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, rd.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            rd.join("p").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let root = Root::open(&rd).unwrap();
        let value: &[u8] = b"\x01\x00\x00\x02\xff\x00binary";
        for name in [&b"f"[..], b"l", b"p"] {
            set_xattr_at(root.fd(), name, b"trusted.b", b"2", name).unwrap();
            set_xattr_at(root.fd(), name, b"trusted.a", value, name).unwrap();
            let got = xattrs_at(root.fd(), name, name).unwrap();
            assert_eq!(
                got,
                vec![
                    (b"trusted.a".to_vec(), value.to_vec()),
                    (b"trusted.b".to_vec(), b"2".to_vec())
                ],
                "{name:?}"
            );
        }
        // The symlink's target outside the root got nothing.
        let o = std::fs::File::open(&outside).unwrap();
        assert!(xattrs_fd(o.as_fd(), b"outside").unwrap().is_empty());
        // A large value goes through the size query.
        let big = vec![b'v'; 3000];
        let f = root.open_file(b"f").unwrap();
        set_xattr_fd(f.as_fd(), b"trusted.big", &big, b"f").unwrap();
        let got = xattrs_fd(f.as_fd(), b"f").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (b"trusted.big".to_vec(), big));
    }

    #[test]
    fn names_are_single_components() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        for bad in [&b".."[..], b"a/b", b""] {
            assert!(matches!(
                xattrs_at(root.fd(), bad, bad),
                Err(FsError::Invalid { .. })
            ));
            assert!(matches!(
                set_xattr_at(root.fd(), bad, b"user.x", b"1", bad),
                Err(FsError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn missing_object_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let e = xattrs_at(root.fd(), b"nope", b"d/nope").unwrap_err();
        assert!(e.to_string().contains("d/nope"), "{e}");
        assert_eq!(e.raw_os_error(), Some(Errno::NOENT.raw_os_error()));
    }
}
