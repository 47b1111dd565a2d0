//! Project quotas: tagging a directory tree with a project id
//! (`FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR`) and limiting the blocks a
//! project may use (`quotactl_fd` with the XFS quota commands).
//!
//! This is how Docker's overlay2 limits a container's writable layer on
//! XFS mounted with `prjquota`: the layer's upper dir gets a project id of
//! its own plus the inherit flag, so everything created beneath it counts
//! against that project, and the project gets a hard block limit. Strata
//! calls the kernel through `quotactl_fd(2)` (Linux 5.14+), which takes
//! any fd on the filesystem, instead of `quotactl(2)`, which needs a path
//! to the filesystem's block device (Docker `mknod`s one into its home for
//! that).

use std::os::fd::{AsFd, AsRawFd};

use rustix::io::{Errno, Result};
use rustix::ioctl::{Getter, Opcode, Setter, ioctl, opcode};

/// `FS_XFLAG_PROJINHERIT`: files and directories created in a directory
/// with this flag inherit its project id.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// The size of the quota layer's "basic block", in which XFS quota limits
/// and usage are counted.
const BASIC_BLOCK: u64 = 512;

/// `PRJQUOTA`: the quota type of projects.
const PRJQUOTA: u32 = 2;
/// `Q_XGETQUOTA`: read one id's limits and usage.
const Q_XGETQUOTA: u32 = (b'X' as u32) << 8 | 3;
/// `Q_XSETQLIM`: set one id's limits.
const Q_XSETQLIM: u32 = (b'X' as u32) << 8 | 4;
/// `Q_XGETQSTATV`: read which quotas are accounted and enforced.
const Q_XGETQSTATV: u32 = (b'X' as u32) << 8 | 8;

/// `FS_DQUOT_VERSION`, the version of `struct fs_disk_quota`.
const FS_DQUOT_VERSION: i8 = 1;
/// `FS_PROJ_QUOTA`: a `struct fs_disk_quota` about a project.
const FS_PROJ_QUOTA: i8 = 2;
/// `FS_DQ_BSOFT`: the soft block limit field is set.
const FS_DQ_BSOFT: u16 = 1 << 2;
/// `FS_DQ_BHARD`: the hard block limit field is set.
const FS_DQ_BHARD: u16 = 1 << 3;
/// `FS_QSTATV_VERSION1`, the version of `struct fs_quota_statv`.
const FS_QSTATV_VERSION1: i8 = 1;
/// `FS_QUOTA_PDQ_ACCT`: project quota usage is accounted.
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
/// `FS_QUOTA_PDQ_ENFD`: project quota limits are enforced.
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;

/// `struct fsxattr` from <linux/fs.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawFsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}

/// `struct fs_disk_quota` from <linux/dqblk_xfs.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct FsDiskQuota {
    d_version: i8,
    d_flags: i8,
    d_fieldmask: u16,
    d_id: u32,
    d_blk_hardlimit: u64,
    d_blk_softlimit: u64,
    d_ino_hardlimit: u64,
    d_ino_softlimit: u64,
    d_bcount: u64,
    d_icount: u64,
    d_itimer: i32,
    d_btimer: i32,
    d_iwarns: u16,
    d_bwarns: u16,
    d_itimer_hi: i8,
    d_btimer_hi: i8,
    d_rtbtimer_hi: i8,
    d_padding2: i8,
    d_rtb_hardlimit: u64,
    d_rtb_softlimit: u64,
    d_rtbcount: u64,
    d_rtbtimer: i32,
    d_rtbwarns: u16,
    d_padding3: i16,
    d_padding4: [u8; 8],
}

impl FsDiskQuota {
    const ZERO: Self = Self {
        d_version: 0,
        d_flags: 0,
        d_fieldmask: 0,
        d_id: 0,
        d_blk_hardlimit: 0,
        d_blk_softlimit: 0,
        d_ino_hardlimit: 0,
        d_ino_softlimit: 0,
        d_bcount: 0,
        d_icount: 0,
        d_itimer: 0,
        d_btimer: 0,
        d_iwarns: 0,
        d_bwarns: 0,
        d_itimer_hi: 0,
        d_btimer_hi: 0,
        d_rtbtimer_hi: 0,
        d_padding2: 0,
        d_rtb_hardlimit: 0,
        d_rtb_softlimit: 0,
        d_rtbcount: 0,
        d_rtbtimer: 0,
        d_rtbwarns: 0,
        d_padding3: 0,
        d_padding4: [0; 8],
    };
}

/// `struct fs_qfilestatv` from <linux/dqblk_xfs.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct FsQfilestatv {
    qfs_ino: u64,
    qfs_nblks: u64,
    qfs_nextents: u32,
    qfs_pad: u32,
}

/// `struct fs_quota_statv` from <linux/dqblk_xfs.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct FsQuotaStatv {
    qs_version: i8,
    qs_pad1: u8,
    qs_flags: u16,
    qs_incoredqs: u32,
    qs_uquota: FsQfilestatv,
    qs_gquota: FsQfilestatv,
    qs_pquota: FsQfilestatv,
    qs_btimelimit: i32,
    qs_itimelimit: i32,
    qs_rtbtimelimit: i32,
    qs_bwarnlimit: u16,
    qs_iwarnlimit: u16,
    qs_rtbwarnlimit: u16,
    qs_pad3: u16,
    qs_pad4: u32,
    qs_pad2: [u64; 7],
}

// The kernel copies exactly these many bytes in and out; a layout mistake
// would let it write past the structs.
const _: () = assert!(size_of::<RawFsXattr>() == 28);
const _: () = assert!(size_of::<FsDiskQuota>() == 112);
const _: () = assert!(size_of::<FsQuotaStatv>() == 160);
// Field offsets checked against the C headers (gcc, linux-libc-dev 6.1).
const _: () = assert!(core::mem::offset_of!(FsDiskQuota, d_blk_hardlimit) == 8);
const _: () = assert!(core::mem::offset_of!(FsDiskQuota, d_bcount) == 40);
const _: () = assert!(core::mem::offset_of!(FsDiskQuota, d_rtb_hardlimit) == 72);
const _: () = assert!(core::mem::offset_of!(FsQuotaStatv, qs_flags) == 2);
const _: () = assert!(core::mem::offset_of!(FsQuotaStatv, qs_pquota) == 56);
const _: () = assert!(core::mem::offset_of!(FsQuotaStatv, qs_bwarnlimit) == 92);

const FS_IOC_FSGETXATTR: Opcode = opcode::read::<RawFsXattr>(b'X', 31);
const FS_IOC_FSSETXATTR: Opcode = opcode::write::<RawFsXattr>(b'X', 32);

/// The extended inode flags of a file (`struct fsxattr`), as read by
/// [`get_fsxattr`] and written by [`set_fsxattr`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FsXattr {
    /// `FS_XFLAG_*` bits, e.g. [`FS_XFLAG_PROJINHERIT`].
    pub xflags: u32,
    /// Extent size hint, in bytes.
    pub extsize: u32,
    /// Number of data extents (read-only).
    pub nextents: u32,
    /// Project id.
    pub projid: u32,
    /// Copy-on-write extent size hint, in bytes.
    pub cowextsize: u32,
}

/// `ioctl(fd, FS_IOC_FSGETXATTR)`: reads a file's extended inode flags
/// and project id. Filesystems without the interface answer `ENOTTY`.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/ioctl_xfs_fsgetxattr.2.html)
pub fn get_fsxattr(fd: impl AsFd) -> Result<FsXattr> {
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr`, which
    // `RawFsXattr` mirrors (size checked at compile time; the opcode
    // encodes that size too).
    let raw = unsafe { ioctl(fd, Getter::<FS_IOC_FSGETXATTR, RawFsXattr>::new()) }?;
    Ok(FsXattr {
        xflags: raw.fsx_xflags,
        extsize: raw.fsx_extsize,
        nextents: raw.fsx_nextents,
        projid: raw.fsx_projid,
        cowextsize: raw.fsx_cowextsize,
    })
}

/// `ioctl(fd, FS_IOC_FSSETXATTR)`: sets a file's extended inode flags and
/// project id. Changing the project id needs `CAP_FOWNER` outside the
/// initial user namespace's view; read the current values with
/// [`get_fsxattr`] first and change only what is meant to change.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/ioctl_xfs_fsgetxattr.2.html)
pub fn set_fsxattr(fd: impl AsFd, attr: &FsXattr) -> Result<()> {
    let raw = RawFsXattr {
        fsx_xflags: attr.xflags,
        fsx_extsize: attr.extsize,
        fsx_nextents: attr.nextents,
        fsx_projid: attr.projid,
        fsx_cowextsize: attr.cowextsize,
        fsx_pad: [0; 8],
    };
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr`, which
    // `RawFsXattr` mirrors.
    unsafe { ioctl(fd, Setter::<FS_IOC_FSSETXATTR, RawFsXattr>::new(raw)) }
}

/// `quotactl_fd(fd, QCMD(cmd, PRJQUOTA), id, addr)`.
///
/// # Safety
///
/// `addr` must point to a value of the type the kernel reads or writes for
/// `cmd`, valid for reads and writes for the duration of the call.
unsafe fn quotactl_fd_project(
    fd: impl AsFd,
    cmd: u32,
    id: u32,
    addr: *mut core::ffi::c_void,
) -> Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: the fd is borrowed (so open) for the call; the caller
    // guarantees `addr`; the other arguments are integers the kernel
    // validates.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd,
            libc::c_uint::from(cmd << 8 | PRJQUOTA),
            id,
            addr,
        )
    };
    if ret == -1 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(())
    }
}

/// Whether the filesystem accounts and enforces project quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProjectQuotaState {
    /// Project usage is tracked (XFS: mounted with `pquota`/`prjquota` or
    /// `pqnoenforce`).
    pub accounting: bool,
    /// Project limits are enforced (XFS: `pquota`/`prjquota`).
    pub enforcing: bool,
}

/// `quotactl_fd(fd, Q_XGETQSTATV)`: which project quotas the filesystem
/// holding `fd` keeps. Filesystems with no quota support answer `ENOSYS`
/// or `EOPNOTSUPP`; Linux before 5.14 lacks the call (`ENOSYS`).
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/quotactl.2.html)
pub fn project_quota_state(fd: impl AsFd) -> Result<ProjectQuotaState> {
    let empty = FsQfilestatv {
        qfs_ino: 0,
        qfs_nblks: 0,
        qfs_nextents: 0,
        qfs_pad: 0,
    };
    let mut stat = FsQuotaStatv {
        qs_version: FS_QSTATV_VERSION1,
        qs_pad1: 0,
        qs_flags: 0,
        qs_incoredqs: 0,
        qs_uquota: empty,
        qs_gquota: empty,
        qs_pquota: empty,
        qs_btimelimit: 0,
        qs_itimelimit: 0,
        qs_rtbtimelimit: 0,
        qs_bwarnlimit: 0,
        qs_iwarnlimit: 0,
        qs_rtbwarnlimit: 0,
        qs_pad3: 0,
        qs_pad4: 0,
        qs_pad2: [0; 7],
    };
    // SAFETY: Q_XGETQSTATV reads the version of and fills one
    // `struct fs_quota_statv`, which `FsQuotaStatv` mirrors.
    unsafe { quotactl_fd_project(fd, Q_XGETQSTATV, 0, (&raw mut stat).cast()) }?;
    Ok(ProjectQuotaState {
        accounting: stat.qs_flags & FS_QUOTA_PDQ_ACCT != 0,
        enforcing: stat.qs_flags & FS_QUOTA_PDQ_ENFD != 0,
    })
}

/// `quotactl_fd(fd, Q_XSETQLIM)`: sets the soft and hard block limits of
/// project `project_id` on the filesystem holding `fd`, in bytes (rounded
/// up to the quota layer's 512-byte blocks). A limit of 0 means none.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/quotactl.2.html)
pub fn set_project_quota_limit(
    fd: impl AsFd,
    project_id: u32,
    soft_bytes: u64,
    hard_bytes: u64,
) -> Result<()> {
    let mut quota = FsDiskQuota {
        d_version: FS_DQUOT_VERSION,
        d_flags: FS_PROJ_QUOTA,
        d_fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD,
        d_id: project_id,
        d_blk_softlimit: soft_bytes.div_ceil(BASIC_BLOCK),
        d_blk_hardlimit: hard_bytes.div_ceil(BASIC_BLOCK),
        ..FsDiskQuota::ZERO
    };
    // SAFETY: Q_XSETQLIM reads one `struct fs_disk_quota`, which
    // `FsDiskQuota` mirrors.
    unsafe { quotactl_fd_project(fd, Q_XSETQLIM, project_id, (&raw mut quota).cast()) }
}

/// A project's block limits and usage, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProjectQuota {
    /// Soft limit (0: none).
    pub soft_limit: u64,
    /// Hard limit (0: none).
    pub hard_limit: u64,
    /// Bytes of blocks the project uses now.
    pub used: u64,
}

/// `quotactl_fd(fd, Q_XGETQUOTA)`: the block limits and usage of project
/// `project_id` on the filesystem holding `fd`. A project with neither
/// limits nor usage is `ENOENT`.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/quotactl.2.html)
pub fn project_quota(fd: impl AsFd, project_id: u32) -> Result<ProjectQuota> {
    let mut quota = FsDiskQuota::ZERO;
    // SAFETY: Q_XGETQUOTA fills one `struct fs_disk_quota`, which
    // `FsDiskQuota` mirrors.
    unsafe { quotactl_fd_project(fd, Q_XGETQUOTA, project_id, (&raw mut quota).cast()) }?;
    Ok(ProjectQuota {
        soft_limit: quota.d_blk_softlimit.saturating_mul(BASIC_BLOCK),
        hard_limit: quota.d_blk_hardlimit.saturating_mul(BASIC_BLOCK),
        used: quota.d_bcount.saturating_mul(BASIC_BLOCK),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_c_headers() {
        // Values printed by a C program built against <linux/fs.h> and
        // <linux/dqblk_xfs.h>.
        assert_eq!(u64::from(FS_IOC_FSGETXATTR), 0x801c_581f);
        assert_eq!(u64::from(FS_IOC_FSSETXATTR), 0x401c_5820);
        assert_eq!(Q_XSETQLIM << 8 | PRJQUOTA, 0x0058_0402);
        assert_eq!((Q_XGETQUOTA, Q_XGETQSTATV), (0x5803, 0x5808));
    }

    #[test]
    fn fsxattr_round_trips_on_a_plain_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = std::fs::File::open(dir.path()).expect("open dir");
        let attr = match get_fsxattr(&d) {
            Ok(attr) => attr,
            // tmpfs and some others lack the interface altogether.
            Err(Errno::NOTTY | Errno::OPNOTSUPP) => {
                eprintln!("SKIP: FS_IOC_FSGETXATTR unsupported on the temp dir's filesystem");
                return;
            }
            Err(e) => panic!("FS_IOC_FSGETXATTR: {e}"),
        };
        // Writing back what was read changes nothing and is allowed.
        set_fsxattr(&d, &attr).expect("FS_IOC_FSSETXATTR");
        assert_eq!(get_fsxattr(&d).expect("FS_IOC_FSGETXATTR"), attr);
    }

    #[test]
    fn quota_state_of_a_filesystem_without_project_quota() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = std::fs::File::open(dir.path()).expect("open dir");
        // The temp dir's filesystem (ext4 or tmpfs here) has no project
        // quota turned on: either the call is refused or it says so.
        match project_quota_state(&d) {
            Ok(state) => assert!(!state.enforcing, "{state:?}"),
            Err(e) => assert!(
                [
                    Errno::NOSYS,
                    Errno::OPNOTSUPP,
                    Errno::INVAL,
                    Errno::PERM,
                    Errno::NOENT
                ]
                .contains(&e),
                "Q_XGETQSTATV: {e}"
            ),
        }
    }
}
