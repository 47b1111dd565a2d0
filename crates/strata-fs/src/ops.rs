//! Creation, removal and metadata changes of objects inside a layer root,
//! each acting on a final name in an already resolved parent directory and
//! never following that name.
//!
//! These are the building blocks the applier and the tree copy share. The
//! rules they keep: a name is one component ([`check_name`]); the final
//! component is never followed (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`); a mode
//! is never changed through a name that could be a symlink (`fchmodat2`
//! with `AT_SYMLINK_NOFOLLOW`, or an `O_PATH|O_NOFOLLOW` handle where the
//! kernel is too old); missing parents are created one component at a time
//! through in-root resolution, so a symlink among them is followed inside
//! the root and nowhere else. Errors name the path inside the layer.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, Timestamps, Uid};
use rustix::io::Errno;

use crate::{FsError, Result, Root, check_name, components, display_path};

/// Permission bits a mode may carry: rwx for all, setuid, setgid, sticky.
pub const MODE_MASK: u32 = 0o7777;

/// Set once `fchmodat2` answered `ENOSYS`, so old kernels do not pay a
/// failing system call for every object.
static NO_FCHMODAT2: AtomicBool = AtomicBool::new(false);

/// Opens the directory `name` in `parent` without following it.
pub fn open_dir_at(parent: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<OwnedFd> {
    check_name(name, path)?;
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::io("open directory", path, e))
}

/// Removes `name` in `parent` and, if it is a directory, everything below
/// it, never following symlinks (a symlink is removed, not its target).
/// Directories without write or search permission are made accessible
/// first, so a non-root caller can remove read-only trees it owns. Returns
/// whether anything was there.
pub fn remove_all_at(parent: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<bool> {
    check_name(name, path)?;
    let mut scratch = path.to_vec();
    remove_all(parent, name, &mut scratch)
}

/// Recursive part of [`remove_all_at`]; `path` is the object's path and
/// is used as scratch space for its children's paths.
fn remove_all(parent: BorrowedFd<'_>, name: &[u8], path: &mut Vec<u8>) -> Result<bool> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(true),
        Err(Errno::NOENT) => return Ok(false),
        // Linux answers EISDIR for a directory; anything else is a real
        // failure to report.
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(FsError::io("unlink", path, e)),
    }
    let dir = match open_dir_at(parent, name, path) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
            chmod_at(parent, name, 0o700, path)?;
            open_dir_at(parent, name, path)?
        }
        Err(e) => return Err(e),
    };
    let st = rustix::fs::fstat(&dir).map_err(|e| FsError::io("stat", path, e))?;
    if !rustix::process::geteuid().is_root() && st.st_mode & 0o300 != 0o300 {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(st.st_mode | 0o700))
            .map_err(|e| FsError::io("chmod", path, e))?;
    }
    let mut d = Dir::new(dir).map_err(|e| FsError::io("opendir", path, e))?;
    let names = crate::walk::dir_names(&mut d, path)?;
    let fd = d.fd().map_err(|e| FsError::io("opendir", path, e))?;
    let base = path.len();
    for n in &names {
        path.push(b'/');
        path.extend_from_slice(n);
        let r = remove_all(fd, n, path);
        path.truncate(base);
        r?;
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(e) => Err(FsError::io("rmdir", path, e)),
    }
}

/// Opens the directory `rel` (a cleaned path) inside the root, creating
/// each missing component with `mode` (exactly, whatever the umask) and,
/// if `owner` is given, that (uid, gid). `created` is called with the path
/// of every directory made. Existing components, symlinks among them, are
/// resolved inside the root; a component that exists but does not resolve
/// to a directory (a file, a dangling symlink) is an error.
pub fn mkdir_all(
    root: &Root,
    rel: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    mut created: impl FnMut(&[u8]),
) -> Result<OwnedFd> {
    match root.open_dir(rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    let mut dir = root.open_dir(b"")?;
    // Once one directory was made here, everything below it is new too and
    // needs no resolution.
    let mut fresh = false;
    let mut end = 0;
    for name in components(rel) {
        end += usize::from(end != 0) + name.len();
        let prefix = &rel[..end];
        if !fresh {
            match root.open_dir(prefix) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & MODE_MASK)) {
            Ok(()) => {}
            // Made by someone else since we looked: use it if it resolves.
            Err(Errno::EXIST) if !fresh => {
                dir = root.open_dir(prefix).map_err(|_| FsError::Invalid {
                    path: display_path(prefix),
                    reason: "exists but does not resolve to a directory".into(),
                })?;
                continue;
            }
            Err(e) => return Err(FsError::io("mkdir", prefix, e)),
        }
        let fd = open_dir_at(dir.as_fd(), name, prefix)?;
        if let Some((uid, gid)) = owner {
            chown_fd(fd.as_fd(), uid, gid, prefix)?;
        }
        chmod_fd(fd.as_fd(), mode, prefix)?;
        created(prefix);
        dir = fd;
        fresh = true;
    }
    Ok(dir)
}

/// The `Uid`/`Gid` pair for an owner, refusing `u32::MAX`, which the
/// kernel reads as "leave unchanged".
fn ids(uid: u32, gid: u32, path: &[u8]) -> Result<(Uid, Gid)> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(FsError::Invalid {
            path: display_path(path),
            reason: format!("invalid owner {uid}:{gid}"),
        });
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Sets the owner of `name` in `parent` without following it (`lchown`).
pub fn chown_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    uid: u32,
    gid: u32,
    path: &[u8],
) -> Result<()> {
    check_name(name, path)?;
    let (u, g) = ids(uid, gid, path)?;
    rustix::fs::chownat(parent, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::io("chown", path, e))
}

/// Sets the owner of an open object.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32, path: &[u8]) -> Result<()> {
    let (u, g) = ids(uid, gid, path)?;
    rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| FsError::io("chown", path, e))
}

/// Sets the permission bits (with setuid, setgid, sticky) of `name` in
/// `parent` without following it. Symlinks have no mode of their own on
/// Linux; asking for one is an error.
pub fn chmod_at(parent: BorrowedFd<'_>, name: &[u8], mode: u32, path: &[u8]) -> Result<()> {
    check_name(name, path)?;
    let m = Mode::from_raw_mode(mode & MODE_MASK);
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        let c = CString::new(name).map_err(|_| FsError::Nul {
            path: display_path(path),
        })?;
        match strata_sys::fchmodat2(parent, &c, m, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::NOSYS) => NO_FCHMODAT2.store(true, Ordering::Relaxed),
            Err(e) => return Err(FsError::io("chmod", path, e)),
        }
    }
    // Before Linux 6.6: pin the object itself with an O_PATH handle (which
    // opens nothing, so devices and fifos are safe) and change the mode
    // through its /proc magic link, which leads to that very inode.
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::io("open", path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::io("stat", path, e))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(FsError::io("chmod", path, Errno::OPNOTSUPP));
    }
    rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(), m)
        .map_err(|e| FsError::io("chmod", path, e))
}

/// Sets the permission bits of an open object.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32, path: &[u8]) -> Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & MODE_MASK))
        .map_err(|e| FsError::io("chmod", path, e))
}

/// Sets access and modification times (nanoseconds kept) of `name` in
/// `parent` without following it.
pub fn set_times_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    times: &Timestamps,
    path: &[u8],
) -> Result<()> {
    check_name(name, path)?;
    rustix::fs::utimensat(parent, name, times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::io("set times", path, e))
}

/// Sets access and modification times of an open object.
pub fn set_times_fd(fd: BorrowedFd<'_>, times: &Timestamps, path: &[u8]) -> Result<()> {
    rustix::fs::futimens(fd, times).map_err(|e| FsError::io("set times", path, e))
}

/// Creates a device node or fifo `name` in `parent` (never opening it).
/// `kind` must be [`FileType::CharacterDevice`], [`FileType::BlockDevice`]
/// or [`FileType::Fifo`]; the mode is subject to the umask, so callers that
/// need it exact set it afterwards with [`chmod_at`].
pub fn mknod_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    kind: FileType,
    mode: u32,
    dev: u64,
    path: &[u8],
) -> Result<()> {
    check_name(name, path)?;
    if !matches!(
        kind,
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo
    ) {
        return Err(FsError::Invalid {
            path: display_path(path),
            reason: format!("mknod of a {kind:?}"),
        });
    }
    rustix::fs::mknodat(
        parent,
        name,
        kind,
        Mode::from_raw_mode(mode & MODE_MASK),
        dev,
    )
    .map_err(|e| FsError::io("mknod", path, e))
}

/// The timestamps of an `lstat` result, for copying them onto another
/// object.
pub fn stat_times(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need_root;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    #[test]
    fn remove_all_handles_trees_symlinks_and_readonly_dirs() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("t/a/b")).unwrap();
        std::fs::write(r.join("t/a/b/f"), b"x").unwrap();
        symlink(&outside, r.join("t/a/out")).unwrap();
        std::fs::set_permissions(r.join("t/a/b"), std::fs::Permissions::from_mode(0o500)).unwrap();
        std::fs::set_permissions(r.join("t/a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::write(r.join("file"), b"x").unwrap();
        symlink(&outside, r.join("lnk")).unwrap();
        let root = Root::open(&r).unwrap();
        assert!(remove_all_at(root.fd(), b"t", b"t").unwrap());
        assert!(remove_all_at(root.fd(), b"file", b"file").unwrap());
        assert!(remove_all_at(root.fd(), b"lnk", b"lnk").unwrap());
        assert!(!remove_all_at(root.fd(), b"absent", b"absent").unwrap());
        assert_eq!(std::fs::read_dir(&r).unwrap().count(), 0);
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        assert!(remove_all_at(root.fd(), b"..", b"..").is_err());
    }

    #[test]
    fn mkdir_all_creates_inside_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("/usr/lib", r.join("lib")).unwrap();
        symlink("../../../..", r.join("up")).unwrap();
        std::fs::write(r.join("file"), b"").unwrap();
        symlink("/nowhere", r.join("dangling")).unwrap();
        let root = Root::open(&r).unwrap();
        let mut made = Vec::new();
        mkdir_all(&root, b"lib/x/y", 0o751, None, |p| made.push(p.to_vec())).unwrap();
        assert_eq!(made, [b"lib/x".to_vec(), b"lib/x/y".to_vec()]);
        let m = std::fs::metadata(r.join("usr/lib/x/y")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o751);
        // ".." through a symlink stops at the root.
        made.clear();
        mkdir_all(&root, b"up/z", 0o755, None, |p| made.push(p.to_vec())).unwrap();
        assert!(r.join("z").is_dir());
        assert_eq!(made, [b"up/z".to_vec()]);
        assert!(!d.path().join("z").exists());
        // Existing path: nothing made.
        made.clear();
        mkdir_all(&root, b"usr/lib/x", 0o755, None, |p| made.push(p.to_vec())).unwrap();
        assert!(made.is_empty());
        assert!(mkdir_all(&root, b"file/x", 0o755, None, |_| {}).is_err());
        let e = mkdir_all(&root, b"dangling/x", 0o755, None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        assert!(!std::path::Path::new("/nowhere").exists());
    }

    #[test]
    fn metadata_never_follows_the_name() {
        if !need_root("chown and mknod") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"t").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = d.path().join("root");
        std::fs::create_dir(&r).unwrap();
        symlink(&target, r.join("l")).unwrap();
        let root = Root::open(&r).unwrap();
        chown_at(root.fd(), b"l", 7, 8, b"l").unwrap();
        let t = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1000,
                tv_nsec: 5,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 2000,
                tv_nsec: 123_456_789,
            },
        };
        set_times_at(root.fd(), b"l", &t, b"l").unwrap();
        assert!(chmod_at(root.fd(), b"l", 0o4777, b"l").is_err());
        let lm = std::fs::symlink_metadata(r.join("l")).unwrap();
        assert_eq!(
            (lm.uid(), lm.gid(), lm.mtime(), lm.mtime_nsec()),
            (7, 8, 2000, 123_456_789)
        );
        let tm = std::fs::metadata(&target).unwrap();
        assert_eq!((tm.uid(), tm.mode() & 0o7777), (0, 0o644));

        mknod_at(
            root.fd(),
            b"c",
            FileType::CharacterDevice,
            0o600,
            rustix::fs::makedev(1, 3),
            b"c",
        )
        .unwrap();
        mknod_at(root.fd(), b"p", FileType::Fifo, 0o600, 0, b"p").unwrap();
        for n in [&b"c"[..], b"p"] {
            chmod_at(root.fd(), n, 0o6751, n).unwrap();
            chown_at(root.fd(), n, 3, 4, n).unwrap();
        }
        let cm = std::fs::symlink_metadata(r.join("c")).unwrap();
        assert_eq!(cm.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!((cm.uid(), cm.gid()), (3, 4));
        // chown as root clears setuid on non-directories: the order callers
        // use is chown, then chmod.
        chmod_at(root.fd(), b"p", 0o6751, b"p").unwrap();
        let pm = std::fs::symlink_metadata(r.join("p")).unwrap();
        assert_eq!(pm.mode() & 0o7777, 0o6751);
        assert!(mknod_at(root.fd(), b"d", FileType::Directory, 0o755, 0, b"d").is_err());
        assert!(chown_at(root.fd(), b"p", u32::MAX, 0, b"p").is_err());
    }

    #[test]
    fn chmod_fallback_path_matches_fchmodat2() {
        // Force the pre-6.6 path once and check it behaves the same.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"").unwrap();
        symlink("f", d.path().join("l")).unwrap();
        let root = Root::open(d.path()).unwrap();
        let was = NO_FCHMODAT2.swap(true, Ordering::Relaxed);
        let r1 = chmod_at(root.fd(), b"f", 0o1640, b"f");
        let r2 = chmod_at(root.fd(), b"l", 0o777, b"l");
        NO_FCHMODAT2.store(was, Ordering::Relaxed);
        r1.unwrap();
        assert!(r2.is_err());
        let m = std::fs::metadata(d.path().join("f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o1640);
    }
}
