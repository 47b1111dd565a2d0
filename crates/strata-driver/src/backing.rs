//! Facts about the filesystem a home lives on: its name (from the statfs
//! magic) and whether it reports file types in directory entries (d_type),
//! which overlayfs needs and `status` shows.

use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags};

/// statfs magic of overlayfs, which cannot serve as an upper dir's backing.
pub const OVERLAYFS_MAGIC: i64 = 0x794C_7630;

/// Names of filesystems by their statfs magic, as `docker info` shows them.
const MAGICS: &[(i64, &str)] = &[
    (0xEF53, "extfs"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (OVERLAYFS_MAGIC, "overlayfs"),
    (0x2FC1_2FC1, "zfs"),
    (0x6573_5546, "fuse"),
    (0x5346_544E, "ntfs"),
    (0x4D44, "vfat"),
    (0x7366_7173, "squashfs"),
    (0x0000_9FA0, "proc"),
    (0xF15F, "ecryptfs"),
    (0x6969, "nfs"),
    (0x0102_1997, "9p"),
    (0xCA45_1A4E, "bcachefs"),
    (0x6462_6720, "debugfs"),
    (0x6163_6673, "virtiofs"),
];

/// The filesystem under `fd`: its display name and raw magic.
pub fn fs_name(fd: impl AsFd) -> rustix::io::Result<(String, i64)> {
    let st = rustix::fs::fstatfs(fd)?;
    let magic = st.f_type as i64;
    let name = MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("<unknown {magic:#x}>"));
    Ok((name, magic))
}

/// True when directory entries under `dir` carry their file type. Probed
/// on a scratch file, as Docker does, because some xfs filesystems were
/// formatted without `ftype=1`.
pub fn supports_d_type(dir: impl AsFd) -> rustix::io::Result<bool> {
    let probe = format!(".d_type-probe-{:016x}", rand::random::<u64>());
    rustix::fs::mkdirat(&dir, probe.as_str(), Mode::from_raw_mode(0o700))?;
    let result = (|| {
        let pd = rustix::fs::openat(
            &dir,
            probe.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::openat(
            &pd,
            "f",
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut known = false;
        for ent in rustix::fs::Dir::read_from(&pd)? {
            let ent = ent?;
            if ent.file_name().to_bytes() == b"f" {
                known = ent.file_type() != rustix::fs::FileType::Unknown;
            }
        }
        rustix::fs::unlinkat(&pd, "f", rustix::fs::AtFlags::empty())?;
        Ok(known)
    })();
    rustix::fs::unlinkat(&dir, probe.as_str(), rustix::fs::AtFlags::REMOVEDIR)?;
    result
}
