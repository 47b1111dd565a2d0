//! Size-limited writable areas for read-write layers: an ext4 filesystem
//! in a sparse image file, attached to a loop device and mounted.
//!
//! This is the Linux counterpart of the Windows driver's `sandbox.vhdx`,
//! used when a read-write layer is created with a `size` option and the
//! backing filesystem offers no project quota (see [`crate::quota`] for
//! that path). The layer directory holds:
//!
//! ```text
//! <layer>/
//!   sandbox.img    sparse ext4 image (SANDBOX_IMAGE), 0600
//!   sandbox/       its mount point (SANDBOX_MOUNT, by convention)
//!     diff/        overlay upper dir (SANDBOX_UPPER)
//!     work/        overlay work dir (SANDBOX_WORK)
//!     lost+found/  ext4's own
//! ```
//!
//! Writes beyond the image's capacity fail with `ENOSPC`, which is the
//! whole point. Sizes are *usable* bytes: [`create_image`] makes the image
//! larger than `size` by ext4's own overhead, so that a 50 MiB sandbox
//! takes 50 MiB of data (see [`image_size_for`] for the accounting). The
//! extra bytes cost no disk space until ext4 writes to them, and most of
//! them (inode tables, journal) it never writes in full.
//!
//! The loop device is attached with autoclear and closed right after the
//! mount, so the mount is the device's only holder: unmounting frees the
//! device, and a process killed at any point leaks at most a mount.
//! [`release_stale`] clears that up (for `remove` and `cleanup`).

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use strata_sys::{LoopDevice, loop_backing, loop_device_path, loop_numbers};

/// Name of the image file in the layer directory.
pub const SANDBOX_IMAGE: &str = "sandbox.img";
/// Name of the directory, in the layer directory, where the image is
/// mounted by convention; [`release_stale`] looks there.
pub const SANDBOX_MOUNT: &str = "sandbox";
/// The overlay upper dir inside the mounted image.
pub const SANDBOX_UPPER: &str = "diff";
/// The overlay work dir inside the mounted image.
pub const SANDBOX_WORK: &str = "work";

/// The smallest sandbox [`create_image`] makes: 16 MiB. ext4's journal
/// alone takes 4 MiB (its 1024-block minimum at 4 KiB blocks), so below
/// this most of the image would be overhead; no container runs in less.
pub const MIN_SANDBOX_SIZE: u64 = 16 * MIB;

const MIB: u64 = 1 << 20;

/// ext4 block size. 4 KiB is the page size, ext4's default for anything
/// but tiny filesystems, and what keeps per-block overhead low.
const BLOCK_SIZE: u64 = 4096;
/// Bytes of capacity per inode (`mkfs.ext4 -i`): one inode per 8 KiB, so
/// a sandbox runs out of space before it runs out of inodes unless its
/// files average under 8 KiB. mkfs's own choice for small filesystems is
/// 4 KiB, for larger ones 16 KiB; Docker's xfs quota limits no inodes at
/// all, so the image errs towards more.
const INODE_RATIO: u64 = 8192;
/// On-disk inode size (`mkfs.ext4 -I`), ext4's default: room for
/// nanosecond times and small xattrs in the inode.
const INODE_SIZE: u64 = 256;
/// Blocks per block group at 4 KiB blocks (one block of bitmap bits).
const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
/// Journal size bounds. The journal is kept (a host crash must not leave
/// the container's writable layer to fsck) but sized to the sandbox:
/// 1/64 of it, from ext4's minimum of 4 MiB up to 128 MiB, which is
/// mkfs's own default for filesystems of 8 GiB and more.
const MIN_JOURNAL: u64 = 4 * MIB;
const MAX_JOURNAL: u64 = 128 * MIB;
/// ext4 keeps back 2% of the blocks, at most 4096 clusters, for metadata
/// allocated at write-back of delayed allocations (`s_resv_clusters`);
/// `statfs` does not count them as available.
const RESERVE_DIVISOR: u64 = 50;
const MAX_RESERVE_BLOCKS: u64 = 4096;

/// ext4 mount options of the image. `noinit_itable`: never zero inode
/// tables in the background; the image is sparse, so they read as zeros
/// already, and zeroing them would allocate them in the host filesystem.
const MOUNT_DATA: &CStr = c"noinit_itable";

/// An error from creating, mounting or releasing a sandbox; each names
/// the image, device or mount point concerned.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The requested size is below [`MIN_SANDBOX_SIZE`].
    #[error("sandbox size {size} bytes is below the minimum of {min} bytes (16 MiB)")]
    TooSmall {
        /// The size asked for.
        size: u64,
        /// [`MIN_SANDBOX_SIZE`].
        min: u64,
    },
    /// The requested size plus ext4's overhead does not fit in 64 bits.
    #[error("sandbox size {size} bytes is too large")]
    TooLarge {
        /// The size asked for.
        size: u64,
    },
    /// A system call failed on `path`.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`"create"`, `"unmount"`, ...).
        op: &'static str,
        /// The file, directory or device concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` is not installed.
    #[error("mkfs.ext4 not found in PATH, /usr/sbin or /sbin (install e2fsprogs) to format {}", .image.display())]
    MkfsMissing {
        /// The image that was to be formatted.
        image: PathBuf,
    },
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 {} failed ({status}): {stderr}", .image.display())]
    Mkfs {
        /// The image being formatted.
        image: PathBuf,
        /// How mkfs exited.
        status: ExitStatus,
        /// What it said on stderr.
        stderr: String,
    },
    /// No loop device could be attached to the image.
    #[error("attach {} to a loop device: {source}", .image.display())]
    Attach {
        /// The image.
        image: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Mounting the image's loop device failed.
    #[error("mount {} (image {}) on {}: {source}", .device.display(), .image.display(), .mountpoint.display())]
    Mount {
        /// The loop device.
        device: PathBuf,
        /// The image behind it.
        image: PathBuf,
        /// Where it was to be mounted.
        mountpoint: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Something is already mounted on the mount point.
    #[error("{} is already a mount point", .path.display())]
    AlreadyMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// The mount table could not be read.
    #[error("read the mount table: {source}")]
    Mounts {
        /// The underlying error.
        #[source]
        source: crate::mount::MountError,
    },
    /// Detaching a stale loop device from the image failed.
    #[error("detach {} (backed by {}): {source}", .device.display(), .image.display())]
    Detach {
        /// The loop device.
        device: PathBuf,
        /// The image behind it.
        image: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl SandboxError {
    fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        SandboxError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// The raw OS error number, if the error carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SandboxError::Io { source, .. }
            | SandboxError::Attach { source, .. }
            | SandboxError::Mount { source, .. }
            | SandboxError::Detach { source, .. } => source.raw_os_error(),
            SandboxError::Mounts { source } => source.raw_os_error(),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, SandboxError>;

/// The journal size for a sandbox of `usable` bytes, a whole number of
/// MiB (what `mkfs.ext4 -J size=` takes).
fn journal_size(usable: u64) -> u64 {
    (usable / 64 / MIB * MIB).clamp(MIN_JOURNAL, MAX_JOURNAL)
}

/// The image size that gives `usable` bytes of available space (as
/// `statfs` reports `f_bavail`) once formatted by [`create_image`], or
/// `None` on overflow.
///
/// ext4 takes from the image: the journal (1/64 of the size, 4 to
/// 128 MiB); the inode tables (256 bytes per 8 KiB of image); two bitmap
/// blocks per 128 MiB group; the delayed-allocation reserve (2% of the
/// blocks, at most 16 MiB); and a little more (superblock copies, group descriptors, root
/// and `lost+found` directories, the orphan file), bounded here by
/// 256 KiB plus 1/65536 of the image. The overhead depends on the image
/// size, so the size is found by iterating to a fixed point, then rounded
/// up to a whole block. Measured with e2fsprogs 1.47 on Linux 6.18:
///
/// | size asked | image | available (`f_bavail`) | overhead (of image) |
/// |---|---|---|---|
/// | 16 MiB | 21.4 MiB | 16.2 MiB | 5.1 MiB (24%) |
/// | 50 MiB | 57.2 MiB | 50.2 MiB | 7.0 MiB (12%) |
/// | 1 GiB | 1090.4 MiB | 1024.2 MiB | 66.2 MiB (6.1%) |
/// | 20 GiB | 20.8 GiB | 20.0 GiB + 0.3 MiB | 811 MiB (3.8%) |
///
/// (`usable_space_matches_the_size` in tests/sandbox.rs prints the table
/// and checks that the available space is the size plus at most 512 KiB
/// and 0.05%).
pub fn image_size_for(usable: u64) -> Option<u64> {
    let journal = journal_size(usable);
    let mut image = usable;
    // The overhead grows by under 8% of any growth of the image, so each
    // step shrinks the remaining error more than tenfold: ten steps end
    // far within the slack below.
    for _ in 0..10 {
        let blocks = image.div_ceil(BLOCK_SIZE);
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let inode_tables = (image / INODE_RATIO).checked_mul(INODE_SIZE)?;
        let bitmaps = groups.checked_mul(2 * BLOCK_SIZE)?;
        let reserve = (blocks / RESERVE_DIVISOR).min(MAX_RESERVE_BLOCKS) * BLOCK_SIZE;
        let slack = 256 * 1024 + image / 65536;
        let next = usable
            .checked_add(journal)?
            .checked_add(inode_tables)?
            .checked_add(bitmaps)?
            .checked_add(reserve)?
            .checked_add(slack)?;
        if next == image {
            break;
        }
        image = next;
    }
    image.checked_next_multiple_of(BLOCK_SIZE)
}

/// Creates `<layer_dir>/sandbox.img`, a sparse ext4 image giving `size`
/// bytes of usable space (see [`image_size_for`]).
///
/// Refuses sizes below [`MIN_SANDBOX_SIZE`] and an existing image. The
/// image is formatted by `mkfs.ext4` (e2fsprogs) with 4 KiB blocks, no
/// blocks reserved for root, and lazy inode-table and journal
/// initialisation: the file is sparse, so those read as zeros already and
/// writing them would only cost time and disk. On failure the image is
/// removed again.
pub fn create_image(layer_dir: &Path, size: u64) -> Result<()> {
    if size < MIN_SANDBOX_SIZE {
        return Err(SandboxError::TooSmall {
            size,
            min: MIN_SANDBOX_SIZE,
        });
    }
    let image_size = image_size_for(size).ok_or(SandboxError::TooLarge { size })?;
    let image = layer_dir.join(SANDBOX_IMAGE);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(o_nofollow())
        .open(&image)
        .map_err(|e| SandboxError::io("create", &image, e))?;
    let made = file
        .set_len(image_size)
        .map_err(|e| SandboxError::io("set length of", &image, e))
        .and_then(|()| {
            drop(file);
            mkfs_ext4(&image, size)
        });
    if let Err(e) = made {
        // The half-made image is useless; the error that made it so is the
        // one to report. Should the removal fail too, the image goes with
        // the layer directory, which the caller removes on error.
        let _removed = std::fs::remove_file(&image);
        return Err(e);
    }
    Ok(())
}

/// `O_NOFOLLOW`, so that a symlink planted at the image path is refused
/// instead of followed.
fn o_nofollow() -> i32 {
    // Lossless: open(2) flags are a C int.
    OFlags::NOFOLLOW.bits() as i32
}

/// Formats `image` as ext4 for a sandbox of `usable` bytes.
fn mkfs_ext4(image: &Path, usable: u64) -> Result<()> {
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| SandboxError::MkfsMissing {
        image: image.to_path_buf(),
    })?;
    let journal_mib = journal_size(usable) / MIB;
    let output = Command::new(&mkfs)
        .arg("-q")
        // A regular file, not a block device: no question to confirm.
        .arg("-F")
        // No usage type from mke2fs.conf ("small", "floppy") may override
        // the explicit geometry below.
        .args(["-T", "default"])
        .args(["-b", &BLOCK_SIZE.to_string()])
        .args(["-I", &INODE_SIZE.to_string()])
        .args(["-i", &INODE_RATIO.to_string()])
        // The sandbox belongs to the container: no blocks kept for root.
        .args(["-m", "0"])
        .args(["-J", &format!("size={journal_mib}")])
        // Sandboxes are never grown online; the GDT reserve would only
        // take space.
        .args(["-O", "^resize_inode"])
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg(image)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| SandboxError::io("run mkfs.ext4 on", image, e))?;
    if !output.status.success() {
        return Err(SandboxError::Mkfs {
            image: image.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Finds an executable `name` in `PATH`, then in the sbin directories a
/// non-root `PATH` often lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A mounted sandbox image.
///
/// The handle only describes the mount: the kernel keeps the mount (and,
/// through it, the loop device) until [`Sandbox::unmount`] or
/// [`unmount_image`], whether or not the handle is still around. That is
/// what a driver wants: a mount that outlives one call, found again by its
/// path, and cleaned up by [`release_stale`] after a crash.
#[derive(Clone, Debug)]
pub struct Sandbox {
    mountpoint: PathBuf,
    device: PathBuf,
}

impl Sandbox {
    /// Where the image is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The loop device the image was attached to when mounted.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The overlay upper dir inside the image (`<mountpoint>/diff`).
    pub fn upper_dir(&self) -> PathBuf {
        self.mountpoint.join(SANDBOX_UPPER)
    }

    /// The overlay work dir inside the image (`<mountpoint>/work`).
    pub fn work_dir(&self) -> PathBuf {
        self.mountpoint.join(SANDBOX_WORK)
    }

    /// Unmounts the image, which frees its loop device (see
    /// [`unmount_image`]).
    pub fn unmount(self) -> Result<bool> {
        unmount_image(&self.mountpoint)
    }
}

/// Attaches `<layer_dir>/sandbox.img` to a loop device and mounts it on
/// `mountpoint` (created if missing; `<layer_dir>/sandbox` by
/// convention), then makes sure `diff/` and `work/` exist in it.
///
/// The mount has no `nodev`: overlayfs records deletions in its upper dir
/// as 0/0 character devices. The loop device is handed to the mount and
/// closed here, so it goes away when the image is unmounted. Direct I/O
/// on the image is turned on where the host filesystem supports it, which
/// keeps the image's pages from being cached twice (and measured 3× faster
/// for large writes); elsewhere the device stays buffered.
///
/// Refuses a mount point that already is one ([`SandboxError::AlreadyMounted`]):
/// after a crash, call [`release_stale`] first.
pub fn mount_image(layer_dir: &Path, mountpoint: &Path) -> Result<Sandbox> {
    let image = layer_dir.join(SANDBOX_IMAGE);
    match std::fs::create_dir(mountpoint) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SandboxError::io("create", mountpoint, e)),
    }
    check_mountpoint(mountpoint)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(o_nofollow())
        .open(&image)
        .map_err(|e| SandboxError::io("open", &image, e))?;
    let dev = LoopDevice::attach(file.as_fd(), false).map_err(|e| SandboxError::Attach {
        image: image.clone(),
        source: e.into(),
    })?;
    drop(file);
    let device = dev.path();
    match dev.set_direct_io(true) {
        // EINVAL: the host filesystem cannot do direct I/O at the loop
        // device's block size; buffered I/O works everywhere.
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(SandboxError::io("enable direct I/O on", &device, e)),
    }
    rustix::mount::mount(
        &device,
        mountpoint,
        "ext4",
        MountFlags::empty(),
        Some(MOUNT_DATA),
    )
    .map_err(|e| SandboxError::Mount {
        device: device.clone(),
        image: image.clone(),
        mountpoint: mountpoint.to_path_buf(),
        source: e.into(),
    })?;
    // The mount holds the device now; with autoclear, closing our handle
    // leaves the mount as its only user.
    drop(dev);
    let sandbox = Sandbox {
        mountpoint: mountpoint.to_path_buf(),
        device,
    };
    for dir in [sandbox.upper_dir(), sandbox.work_dir()] {
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                let err = SandboxError::io("create", &dir, e);
                // Leave nothing mounted behind a failed call; the mkdir
                // error is what the caller needs to see.
                let _unmounted = unmount_image(mountpoint);
                return Err(err);
            }
        }
    }
    Ok(sandbox)
}

/// Checks that `path` is a real directory (not a symlink, which
/// `mount(2)` would follow) and not already the root of a mount
/// (`STATX_ATTR_MOUNT_ROOT`).
fn check_mountpoint(path: &Path) -> Result<()> {
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .map_err(|e| SandboxError::io("statx", path, e))?;
    if rustix::fs::FileType::from_raw_mode(stx.stx_mode.into()) != rustix::fs::FileType::Directory {
        return Err(SandboxError::io("mount on", path, Errno::NOTDIR));
    }
    let attr = rustix::fs::StatxAttributes::MOUNT_ROOT;
    let mounted = if stx.stx_attributes_mask.contains(attr) {
        stx.stx_attributes.contains(attr)
    } else {
        // Kernels before 5.8 cannot tell; compare with the parent's
        // device instead, which catches any mount of another filesystem.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let up = std::fs::metadata(parent).map_err(|e| SandboxError::io("stat", parent, e))?;
        rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor) != up.dev()
    };
    if mounted {
        return Err(SandboxError::AlreadyMounted {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Unmounts whatever is mounted on `mountpoint` (one mount), lazily
/// (`MNT_DETACH`) if it is busy, and returns whether there was a mount.
///
/// Nothing mounted there (or no such directory) is not an error, so a
/// second unmount is harmless. A lazily detached image keeps its loop
/// device until the last open file in it is closed; then autoclear frees
/// the device.
pub fn unmount_image(mountpoint: &Path) -> Result<bool> {
    match rustix::mount::unmount(mountpoint, UnmountFlags::NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::BUSY) => {
            rustix::mount::unmount(mountpoint, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                .map_err(|e| SandboxError::io("lazily unmount", mountpoint, e))?;
            Ok(true)
        }
        // EINVAL: not a mount point.
        Err(Errno::INVAL | Errno::NOENT) => Ok(false),
        Err(e) => Err(SandboxError::io("unmount", mountpoint, e)),
    }
}

/// How many mounts may be stacked on one mount point before
/// [`release_stale`] stops unmounting; far more than any crash leaves.
const MAX_STACKED_MOUNTS: usize = 64;

/// Releases what a killed process may have left of the layer's sandbox:
/// every mount of a loop device backed by `<layer_dir>/sandbox.img` (as
/// `/proc/self/mountinfo` shows them), whatever remains mounted on
/// `<layer_dir>/sandbox`, and those loop devices themselves. Busy mounts
/// are detached lazily. Returns how many mounts and devices it released;
/// 0 when there was nothing to do.
///
/// A device still held by something this process cannot unmount (a mount
/// in another namespace, a lazily detached mount with open files, an
/// overlay mount using the sandbox as its upper dir) is only marked for
/// clearing and goes away when that holder does; deleting the image
/// meanwhile is safe, its blocks are freed with the device.
pub fn release_stale(layer_dir: &Path) -> Result<usize> {
    let image = layer_dir.join(SANDBOX_IMAGE);
    let devices = match std::fs::symlink_metadata(&image) {
        Ok(meta) => devices_backed_by(meta.dev(), meta.ino())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(SandboxError::io("stat", &image, e)),
    };
    let mut released = 0;
    let mut dev_ids = Vec::with_capacity(devices.len());
    for &number in &devices {
        let path = loop_device_path(number);
        match rustix::fs::stat(&path) {
            Ok(st) => dev_ids.push((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))),
            // Cleared and removed since it was listed.
            Err(Errno::NOENT) => {}
            Err(e) => return Err(SandboxError::io("stat", &path, e)),
        }
    }
    // Later mounts may sit on top of (or inside) earlier ones: undo them
    // in reverse order.
    for mountpoint in mounts_of(&dev_ids)?.into_iter().rev() {
        if unmount_image(&mountpoint)? {
            released += 1;
        }
    }
    let conventional = layer_dir.join(SANDBOX_MOUNT);
    for _ in 0..MAX_STACKED_MOUNTS {
        if !unmount_image(&conventional)? {
            break;
        }
        released += 1;
    }
    for number in devices {
        let device = loop_device_path(number);
        let detach_err = |e: Errno| SandboxError::Detach {
            device: device.clone(),
            image: image.clone(),
            source: e.into(),
        };
        let dev = match LoopDevice::open(number) {
            Ok(dev) => dev,
            Err(Errno::NOENT | Errno::NXIO) => continue,
            Err(e) => return Err(detach_err(e)),
        };
        match dev.detach() {
            Ok(()) => released += 1,
            // Autoclear got there first: the unmount above was the last
            // holder.
            Err(Errno::NXIO) => {}
            Err(e) => return Err(detach_err(e)),
        }
    }
    Ok(released)
}

/// The loop devices whose backing file is the one with `dev`/`ino`.
fn devices_backed_by(dev: u64, ino: u64) -> Result<Vec<u32>> {
    let sys_block = Path::new("/sys/block");
    let mut found = Vec::new();
    for number in loop_numbers().map_err(|e| SandboxError::io("list", sys_block, e))? {
        let backing = loop_backing(number)
            .map_err(|e| SandboxError::io("query", &loop_device_path(number), e))?;
        if backing.is_some_and(|b| b.is(dev, ino)) {
            found.push(number);
        }
    }
    Ok(found)
}

/// Mount points of the filesystems on the block devices `devs` (major,
/// minor), as this process sees them, in an order they can be unmounted
/// one by one: deepest first, and the later of two mounts on one point
/// first.
fn mounts_of(devs: &[(u32, u32)]) -> Result<Vec<PathBuf>> {
    if devs.is_empty() {
        return Ok(Vec::new());
    }
    let table = crate::mountinfo::read_self().map_err(|source| SandboxError::Mounts { source })?;
    let mut found: Vec<(usize, PathBuf)> = table
        .into_iter()
        .enumerate()
        .filter(|(_, m)| devs.contains(&(m.major, m.minor)))
        .map(|(i, m)| (i, m.mount_point))
        .collect();
    found.sort_by_key(|(i, p)| std::cmp::Reverse((p.components().count(), *i)));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_grows_by_the_overhead() {
        assert_eq!(image_size_for(50 * MIB), Some(59_965_440));
        for size in [16 * MIB, 50 * MIB, 1 << 30, 20 << 30, 1 << 40] {
            let image = image_size_for(size).expect("fits");
            assert!(
                image > size && image.is_multiple_of(BLOCK_SIZE),
                "{size} -> {image}"
            );
            // Overhead stays within 40% for the smallest and falls with
            // size (the journal is capped, the rest is proportional).
            assert!(image - size < size / 5 * 2, "{size} -> {image}");
        }
        assert_eq!(image_size_for(u64::MAX - MIB), None);
    }

    #[test]
    fn journal_is_bounded() {
        assert_eq!(journal_size(16 * MIB), MIN_JOURNAL);
        assert_eq!(journal_size(1 << 30), 16 * MIB);
        assert_eq!(journal_size(1 << 40), MAX_JOURNAL);
    }

    #[test]
    fn too_small_names_the_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = create_image(dir.path(), MIN_SANDBOX_SIZE - 1).expect_err("too small");
        assert!(matches!(err, SandboxError::TooSmall { .. }), "{err}");
        assert!(err.to_string().contains("16777216 bytes (16 MiB)"), "{err}");
        assert!(!dir.path().join(SANDBOX_IMAGE).exists());
    }
}
