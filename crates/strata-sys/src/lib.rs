//! The only `unsafe` code in Strata: thin wrappers over the few system calls
//! that rustix does not wrap.
//!
//! Every other crate in the workspace has `#![forbid(unsafe_code)]` and calls
//! the kernel through rustix; when it needs a call rustix lacks, the call is
//! added here, shaped like rustix's own API (borrowed fds, typed flags,
//! `rustix::io::Result`), so that callers never see a raw integer fd or
//! `errno`. Functions are single system calls with no policy of their own,
//! except where the kernel interface itself needs a protocol that only
//! makes sense in one place: attaching a loop device (take a free number,
//! configure it, retry when another process won the race, fall back to the
//! pre-5.8 ioctls).
#![deny(missing_docs)]
#![allow(unsafe_code)]

mod loopdev;
mod quota;

pub use loopdev::{
    LoopBacking, LoopDevice, loop_backing, loop_backing_file, loop_device_path, loop_numbers,
};
pub use quota::{
    FS_XFLAG_PROJINHERIT, FsXattr, ProjectQuota, ProjectQuotaState, get_fsxattr, project_quota,
    project_quota_state, set_fsxattr, set_project_quota_limit,
};

use std::ffi::CStr;
use std::ops::BitOr;
use std::os::fd::{AsFd, AsRawFd};

use rustix::fs::{AtFlags, Mode};
use rustix::io::{Errno, Result};

/// Flags for [`sync_file_range`] (`SYNC_FILE_RANGE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncFileRangeFlags(u32);

impl SyncFileRangeFlags {
    /// `SYNC_FILE_RANGE_WAIT_BEFORE`: wait for write-out already in flight
    /// on the range before starting anything.
    pub const WAIT_BEFORE: Self = Self(libc::SYNC_FILE_RANGE_WAIT_BEFORE);
    /// `SYNC_FILE_RANGE_WRITE`: start write-out of the range's dirty pages
    /// without waiting for it to finish.
    pub const WRITE: Self = Self(libc::SYNC_FILE_RANGE_WRITE);
    /// `SYNC_FILE_RANGE_WAIT_AFTER`: wait for the write-out to finish.
    pub const WAIT_AFTER: Self = Self(libc::SYNC_FILE_RANGE_WAIT_AFTER);

    /// The raw flag bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for SyncFileRangeFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Turns a `-1`-on-error return value into a `Result`, reading `errno`.
fn check(ret: i64) -> Result<()> {
    if ret == -1 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(())
    }
}

/// `sync_file_range(fd, offset, nbytes, flags)`: starts and/or waits for
/// write-back of a byte range of a file. `nbytes == 0` means "to the end of
/// the file". With [`SyncFileRangeFlags::WRITE`] alone the call only queues
/// the dirty pages for write-out and returns, so a later `syncfs` finds
/// little left to do; it gives no durability guarantee by itself.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/sync_file_range.2.html)
pub fn sync_file_range(
    fd: impl AsFd,
    offset: u64,
    nbytes: u64,
    flags: SyncFileRangeFlags,
) -> Result<()> {
    let offset = i64::try_from(offset).map_err(|_| Errno::INVAL)?;
    let nbytes = i64::try_from(nbytes).map_err(|_| Errno::INVAL)?;
    // SAFETY: the call takes only integers; the fd is borrowed for the
    // duration of the call so it stays open, and the kernel validates every
    // argument.
    let ret =
        unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), offset, nbytes, flags.bits()) };
    check(i64::from(ret))
}

/// `fchmodat2(dirfd, path, mode, flags)` (Linux 6.6+): like `fchmodat`, but
/// honours `AT_SYMLINK_NOFOLLOW` (and `AT_EMPTY_PATH`), so the mode of the
/// object named `path` in `dirfd` can be changed without following it if it
/// is a symlink. On a symlink with `AT_SYMLINK_NOFOLLOW` the kernel answers
/// `EOPNOTSUPP`; on older kernels the call fails with `ENOSYS`.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/fchmodat.2.html)
pub fn fchmodat2(dirfd: impl AsFd, path: &CStr, mode: Mode, flags: AtFlags) -> Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string that outlives the
    // call, the fd is borrowed (so open) for its duration, and the other
    // arguments are plain integers the kernel validates.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dirfd.as_fd().as_raw_fd(),
            path.as_ptr(),
            libc::c_uint::from(mode.bits()),
            libc::c_uint::from(flags.bits()),
        )
    };
    check(ret)
}

/// `unshare(CLONE_FS)`: gives the calling thread its own copy of the
/// filesystem context (current directory, root, umask), so that a later
/// `chdir` moves only this thread. Strata uses it on a short-lived helper
/// thread that mounts with paths relative to a chosen directory while the
/// rest of the process keeps its working directory.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/unshare.2.html)
pub fn unshare_fs() -> Result<()> {
    // SAFETY: rustix marks `unshare` unsafe because `CLONE_FILES` would
    // give this thread a private fd table, so fds opened elsewhere could
    // stop being valid here. `CLONE_FS` only copies the cwd/root/umask
    // record; the fd table stays shared, so no fd is invalidated.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unshare_fs_keeps_chdir_in_the_thread() {
        let before = std::env::current_dir().expect("cwd");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().to_path_buf();
        let inner = std::thread::spawn(move || {
            unshare_fs().expect("unshare");
            std::env::set_current_dir(&p).expect("chdir");
            std::env::current_dir().expect("cwd")
        })
        .join()
        .expect("thread");
        assert_eq!(inner, dir.path().canonicalize().expect("canonicalize"));
        assert_eq!(std::env::current_dir().expect("cwd"), before);
    }

    #[test]
    fn sync_file_range_starts_writeback() {
        let mut f = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut f, &[7u8; 8192]).expect("write");
        sync_file_range(&f, 0, 0, SyncFileRangeFlags::WRITE).expect("sync_file_range");
        let all = SyncFileRangeFlags::WAIT_BEFORE
            | SyncFileRangeFlags::WRITE
            | SyncFileRangeFlags::WAIT_AFTER;
        assert_eq!(all.bits(), 7);
        sync_file_range(&f, 0, 4096, all).expect("sync_file_range wait");
        assert_eq!(sync_file_range(&f, u64::MAX, 0, all), Err(Errno::INVAL));
    }

    #[test]
    fn fchmodat2_sets_mode_and_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        let d = std::fs::File::open(dir.path()).expect("open dir");
        match fchmodat2(
            &d,
            c"f",
            Mode::from_raw_mode(0o4751),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            // A kernel older than 6.6 lacks the call; nothing more to test.
            Err(Errno::NOSYS) => return,
            r => r.expect("fchmodat2"),
        }
        let meta = std::fs::metadata(dir.path().join("f")).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4751);
        assert_eq!(
            fchmodat2(
                &d,
                c"l",
                Mode::from_raw_mode(0o600),
                AtFlags::SYMLINK_NOFOLLOW
            ),
            Err(Errno::OPNOTSUPP)
        );
        // The symlink's target was not touched through the link.
        let meta = std::fs::metadata(dir.path().join("f")).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4751);
    }
}
