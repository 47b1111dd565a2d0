//! Size limits by XFS project quota, the alternative to a sandbox image
//! (see [`crate::sandbox`]) where the store's home is on XFS mounted with
//! `prjquota` (or `pquota`).
//!
//! As in Docker's overlay2 (daemon/internal/quota), a read-write layer's
//! upper dir gets a project id of its own with the inherit flag, so that
//! everything created beneath it is charged to that project, and the
//! project gets a hard block limit. Writes beyond it fail with `ENOSPC`
//! (XFS reports project quota exhaustion as a full filesystem, so that
//! `df` on the directory and the error agree). Choosing project ids is the
//! caller's business; [`project_id`] reads the one a directory has.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FsWord, Mode, OFlags};
use rustix::io::Errno;

/// `XFS_SUPER_MAGIC` (`linux/magic.h`), as `statfs` reports it in
/// `f_type`.
pub const XFS_SUPER_MAGIC: FsWord = 0x5846_5342;

/// An error from a project quota operation; each names its directory.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A system call failed on `path`.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`"set project quota on"`, ...).
        op: &'static str,
        /// The directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Project id 0 is every untagged file's project; limiting it would
    /// limit the whole filesystem.
    #[error("project id 0 is reserved (it holds every untagged file), refusing it for {}", .path.display())]
    ReservedProject {
        /// The directory it was asked for.
        path: PathBuf,
    },
}

impl QuotaError {
    fn io(op: &'static str, path: &Path, source: Errno) -> Self {
        QuotaError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// The raw OS error number, if the error carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            QuotaError::Io { source, .. } => source.raw_os_error(),
            QuotaError::ReservedProject { .. } => None,
        }
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, QuotaError> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| QuotaError::io("open", dir, e))
}

/// Whether `home` can have its layers limited by project quota: it is on
/// XFS, project quotas are enforced there (mounted `prjquota`/`pquota`),
/// and this process may set limits.
///
/// The kernel is asked directly (`Q_XGETQSTATV`) instead of reading mount
/// options, and the privilege is probed with a harmless read of project
/// 0's quota: in a user namespace the read is refused (`EPERM`) just as
/// setting a limit would be. Errors about `home` itself (missing,
/// unreadable) are returned; every "no" from the quota layer is `false`.
pub fn xfs_project_quota_supported(home: &Path) -> Result<bool, QuotaError> {
    let fd = open_dir(home)?;
    let fs = rustix::fs::fstatfs(&fd).map_err(|e| QuotaError::io("statfs", home, e))?;
    if fs.f_type != XFS_SUPER_MAGIC {
        return Ok(false);
    }
    match strata_sys::project_quota_state(&fd) {
        Ok(state) if state.enforcing => {}
        Ok(_) => return Ok(false),
        // No quota support compiled in, no quotactl_fd (Linux < 5.14), or
        // not allowed to ask.
        Err(Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM | Errno::INVAL) => return Ok(false),
        Err(e) => return Err(QuotaError::io("query quota state of", home, e)),
    }
    match strata_sys::project_quota(&fd, 0) {
        // ENOENT: project 0 has no record yet, but asking was allowed.
        Ok(_) | Err(Errno::NOENT) => Ok(true),
        Err(Errno::PERM | Errno::ACCESS) => Ok(false),
        Err(e) => Err(QuotaError::io("query project 0 quota of", home, e)),
    }
}

/// Limits the directory tree at `dir` to `bytes` bytes of blocks: sets
/// the hard (and soft) block limit of project `project_id` (rounded up to
/// 512 bytes), then tags `dir` with that project id and the inherit flag
/// (`FS_IOC_FSSETXATTR`), so everything created beneath it is charged to
/// the project. Files already in `dir`'s tree keep their project; call
/// this on an empty directory.
///
/// Refuses project id 0, which every untagged file belongs to.
pub fn set_project_quota(dir: &Path, project_id: u32, bytes: u64) -> Result<(), QuotaError> {
    if project_id == 0 {
        return Err(QuotaError::ReservedProject {
            path: dir.to_path_buf(),
        });
    }
    let fd = open_dir(dir)?;
    strata_sys::set_project_quota_limit(&fd, project_id, bytes, bytes)
        .map_err(|e| QuotaError::io("set project quota limit for", dir, e))?;
    let mut attr =
        strata_sys::get_fsxattr(&fd).map_err(|e| QuotaError::io("read project id of", dir, e))?;
    attr.projid = project_id;
    attr.xflags |= strata_sys::FS_XFLAG_PROJINHERIT;
    strata_sys::set_fsxattr(&fd, &attr).map_err(|e| QuotaError::io("set project id of", dir, e))?;
    Ok(())
}

/// The project id of `dir` (0 when it was never given one).
pub fn project_id(dir: &Path) -> Result<u32, QuotaError> {
    let fd = open_dir(dir)?;
    strata_sys::get_fsxattr(&fd)
        .map(|attr| attr.projid)
        .map_err(|e| QuotaError::io("read project id of", dir, e))
}

/// The hard block limit and usage, in bytes, of the project `dir` belongs
/// to, as (limit, used); (0, 0) when the project has no quota record.
pub fn project_quota_usage(dir: &Path) -> Result<(u64, u64), QuotaError> {
    let fd = open_dir(dir)?;
    let id = strata_sys::get_fsxattr(&fd)
        .map_err(|e| QuotaError::io("read project id of", dir, e))?
        .projid;
    match strata_sys::project_quota(&fd, id) {
        Ok(q) => Ok((q.hard_limit, q.used)),
        Err(Errno::NOENT) => Ok((0, 0)),
        Err(e) => Err(QuotaError::io("read project quota of", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_xfs_is_unsupported() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!xfs_project_quota_supported(dir.path()).expect("probe"));
    }

    #[test]
    fn missing_home_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = xfs_project_quota_supported(&missing).expect_err("missing home");
        assert_eq!(err.raw_os_error(), Some(libc_enoent()));
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn project_zero_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = set_project_quota(dir.path(), 0, 1 << 20).expect_err("project 0");
        assert!(matches!(err, QuotaError::ReservedProject { .. }), "{err}");
    }

    fn libc_enoent() -> i32 {
        Errno::NOENT.raw_os_error()
    }
}
