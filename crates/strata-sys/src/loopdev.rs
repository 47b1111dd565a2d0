//! Loop devices: attaching a file as a block device, detaching it, and
//! finding which file a device is backed by.
//!
//! Strata uses loop devices for one thing: a read-write layer with a size
//! limit keeps its writable area in a sparse filesystem image, attached to
//! a loop device and mounted (the Linux counterpart of Windows'
//! `sandbox.vhdx`). The loop ioctls are old, encoded without the `_IOC`
//! direction/size bits, and wrapped here on top of [`rustix::ioctl`]
//! because the loopdev crates need libclang at build time.
//!
//! Every device Strata attaches carries `LO_FLAGS_AUTOCLEAR`: the kernel
//! detaches it by itself when its last opener goes away, i.e. once the
//! filesystem on it is unmounted and the [`LoopDevice`] handle is dropped.
//! A process killed half-way therefore leaks nothing but, at worst, a
//! mount; unmounting that frees the device too. [`loop_backing`] and
//! [`loop_numbers`] let a cleanup pass find devices backed by a given file
//! when something (a lazy unmount, an old kernel, a foreign tool) still
//! holds one.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use rustix::fs::{Dir, Mode, OFlags, open};
use rustix::io::{Errno, Result};
use rustix::ioctl::{Getter, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, ioctl};

/// The control device that hands out free loop device numbers.
const LOOP_CONTROL: &str = "/dev/loop-control";

// The loop ioctls predate `_IOC` encoding; these are the raw numbers from
// <linux/loop.h>.
const LOOP_SET_FD: Opcode = 0x4C00;
const LOOP_CLR_FD: Opcode = 0x4C01;
const LOOP_SET_STATUS64: Opcode = 0x4C04;
const LOOP_GET_STATUS64: Opcode = 0x4C05;
const LOOP_SET_DIRECT_IO: Opcode = 0x4C08;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;

/// `LO_FLAGS_READ_ONLY`: the device refuses writes.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the kernel detaches the device on its last close.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// How many times [`LoopDevice::attach`] asks for a free device before it
/// gives up. Each retry follows another process binding the device handed
/// out to us first (`EBUSY`); dozens of concurrent attachers racing for
/// the same numbers would be needed to exhaust this.
const ATTACH_ATTEMPTS: usize = 64;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    /// All fields zero: no offset, no size limit, no flags.
    const ZERO: Self = Self {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    };
}

/// `struct loop_config` from <linux/loop.h> (Linux 5.8+).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The kernel copies exactly these many bytes; a layout mistake here would
// make it read or write past the structs.
const _: () = assert!(size_of::<LoopInfo64>() == 232);
const _: () = assert!(size_of::<LoopConfig>() == 304);
const _: () = assert!(core::mem::offset_of!(LoopInfo64, lo_flags) == 52);
const _: () = assert!(core::mem::offset_of!(LoopInfo64, lo_file_name) == 56);

/// `LOOP_CTL_GET_FREE`, whose answer is the ioctl's return value rather
/// than anything written through a pointer (so none of rustix's patterns
/// fits).
struct GetFree;

// SAFETY: LOOP_CTL_GET_FREE takes no argument and writes no user memory;
// its non-negative return value is the number of a free (possibly newly
// created) loop device.
unsafe impl Ioctl for GetFree {
    type Output = u32;

    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }

    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        core::ptr::null_mut()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut core::ffi::c_void) -> Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// The path of loop device `number`, `/dev/loop<number>`.
pub fn loop_device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// The file behind a loop device, as the kernel reports it in
/// `LOOP_GET_STATUS64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoopBacking {
    /// Device number of the filesystem holding the backing file, encoded
    /// like `st_dev` (compare with `rustix::fs::major`/`minor`).
    pub dev: u64,
    /// Inode number of the backing file.
    pub ino: u64,
}

impl LoopBacking {
    /// True when this is the file whose `stat` gave `dev` and `ino`.
    pub fn is(&self, dev: u64, ino: u64) -> bool {
        // Compare major and minor rather than raw numbers: the kernel
        // encodes `lo_device` with the 32-bit "new" encoding while `st_dev`
        // comes in the 64-bit glibc one; they only agree for small numbers.
        self.ino == ino
            && rustix::fs::major(self.dev) == rustix::fs::major(dev)
            && rustix::fs::minor(self.dev) == rustix::fs::minor(dev)
    }
}

/// An open loop device, attached to a backing file or opened by number.
///
/// Dropping the handle closes the device. Devices attached by
/// [`LoopDevice::attach`] carry `LO_FLAGS_AUTOCLEAR`, so the close detaches
/// them unless something else (a mount) still holds them; that is how the
/// caller hands a device over to a mount and stops caring about it.
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
}

impl fmt::Debug for LoopDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopDevice")
            .field("number", &self.number)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl LoopDevice {
    /// Attaches `backing` (a regular file or block device, opened read-write
    /// unless `read_only`) to a free loop device, with
    /// `LO_FLAGS_AUTOCLEAR` set.
    ///
    /// Asks `/dev/loop-control` for a free device (`LOOP_CTL_GET_FREE`,
    /// which creates one when none is free) and binds it with
    /// `LOOP_CONFIGURE`. When another process binds the same device first
    /// the kernel answers `EBUSY` and a new device is asked for. Kernels
    /// older than 5.8 lack `LOOP_CONFIGURE` (`EINVAL`); there the device is
    /// bound with `LOOP_SET_FD` and then flagged with `LOOP_SET_STATUS64`,
    /// which leaves a short window in which a crash leaks the device.
    ///
    /// The device keeps its own reference to the backing file: `backing`
    /// may be closed once this returns.
    ///
    /// # References
    ///  - [Linux](https://man7.org/linux/man-pages/man4/loop.4.html)
    pub fn attach(backing: BorrowedFd<'_>, read_only: bool) -> Result<LoopDevice> {
        let control = open(LOOP_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        let access = if read_only {
            OFlags::RDONLY
        } else {
            OFlags::RDWR
        };
        let mut last = Errno::BUSY;
        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: GetFree describes LOOP_CTL_GET_FREE exactly (no
            // argument, result in the return value) and `control` is the
            // loop control device.
            let number = unsafe { ioctl(&control, GetFree) }?;
            let fd = match open(
                loop_device_path(number),
                access | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // The device was removed (LOOP_CTL_REMOVE) between the two
                // calls, or its node is not there yet: ask again.
                Err(e @ (Errno::NOENT | Errno::NXIO)) => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match bind(fd.as_fd(), backing, read_only) {
                Ok(()) => return Ok(LoopDevice { fd, number }),
                // Someone else bound this device since it was handed out.
                Err(Errno::BUSY) => last = Errno::BUSY,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Opens existing loop device `number` (bound or not) read-only, to
    /// inspect or detach it.
    pub fn open(number: u32) -> Result<LoopDevice> {
        let fd = open(
            loop_device_path(number),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(LoopDevice { fd, number })
    }

    /// The device number `N` of `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The device's path, `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        loop_device_path(self.number)
    }

    /// The backing file's identity (`LOOP_GET_STATUS64`), or `None` when
    /// the device is not bound.
    pub fn backing(&self) -> Result<Option<LoopBacking>> {
        // SAFETY: LOOP_GET_STATUS64 fills exactly one `struct loop_info64`,
        // which `LoopInfo64` mirrors (size checked at compile time).
        let info = unsafe { ioctl(&self.fd, Getter::<LOOP_GET_STATUS64, LoopInfo64>::new()) };
        match info {
            Ok(info) => Ok(Some(LoopBacking {
                dev: info.lo_device,
                ino: info.lo_inode,
            })),
            Err(Errno::NXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns direct I/O on the backing file on or off
    /// (`LOOP_SET_DIRECT_IO`). With it on, the backing file's pages are
    /// not cached a second time beneath the page cache of the filesystem
    /// on the device. The kernel refuses (`EINVAL`) when the backing
    /// filesystem cannot do direct I/O at the device's block size.
    pub fn set_direct_io(&self, on: bool) -> Result<()> {
        // SAFETY: LOOP_SET_DIRECT_IO takes its argument as an integer
        // (0 or 1), not a pointer.
        unsafe {
            ioctl(
                &self.fd,
                IntegerSetter::<LOOP_SET_DIRECT_IO>::new_usize(usize::from(on)),
            )
        }
    }

    /// Detaches the device from its backing file (`LOOP_CLR_FD`) and
    /// closes it.
    ///
    /// The kernel only marks the device for clearing and does the work on
    /// the last close, so when a mount or another process still holds the
    /// device it stays bound until they let go. `ENXIO` means the device
    /// was not bound.
    pub fn detach(self) -> Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { ioctl(&self.fd, NoArg::<LOOP_CLR_FD>::new()) }
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Binds the open, unbound loop device `dev` to `backing` with autoclear.
fn bind(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>, read_only: bool) -> Result<()> {
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let config = LoopConfig {
        fd: backing_number(backing)?,
        // 0: keep the default 512-byte logical block size, which any
        // filesystem image can be mounted with.
        block_size: 0,
        info: LoopInfo64 {
            lo_flags: flags,
            ..LoopInfo64::ZERO
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, mirrored by
    // `LoopConfig`; the fd in it is borrowed for the call, and the kernel
    // takes its own reference to the file.
    match unsafe { ioctl(dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) } {
        // Before Linux 5.8 the loop driver answers unknown commands with
        // EINVAL; fall back to the two-step legacy bind.
        Err(Errno::INVAL) => bind_legacy(dev, backing),
        other => other,
    }
}

/// Binds `dev` to `backing` with `LOOP_SET_FD`, then sets autoclear with
/// `LOOP_SET_STATUS64` (the only way before `LOOP_CONFIGURE`).
fn bind_legacy(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>) -> Result<()> {
    let backing_fd = backing_number(backing)?;
    // SAFETY: LOOP_SET_FD takes the backing fd as an integer argument; the
    // fd stays open for the call and the kernel takes its own reference.
    unsafe {
        ioctl(
            dev,
            IntegerSetter::<LOOP_SET_FD>::new_usize(backing_fd as usize),
        )
    }?;
    // LOOP_SET_STATUS64 cannot set READ_ONLY; with the legacy bind the
    // device is read-only when it or the backing file was opened read-only,
    // which `attach` arranges.
    let info = LoopInfo64 {
        lo_flags: LO_FLAGS_AUTOCLEAR,
        ..LoopInfo64::ZERO
    };
    // SAFETY: LOOP_SET_STATUS64 reads one `struct loop_info64`, mirrored
    // by `LoopInfo64`.
    let status = unsafe { ioctl(dev, Setter::<LOOP_SET_STATUS64, LoopInfo64>::new(info)) };
    if let Err(e) = status {
        // Without autoclear the device would outlive us: unbind it now.
        // The status error is the one worth reporting; a failure to unbind
        // a device we just bound cannot be acted on here.
        // SAFETY: LOOP_CLR_FD takes no argument.
        let _unbound = unsafe { ioctl(dev, NoArg::<LOOP_CLR_FD>::new()) };
        return Err(e);
    }
    Ok(())
}

/// The fd number of `backing` as the loop ioctls take it.
fn backing_number(backing: BorrowedFd<'_>) -> Result<u32> {
    u32::try_from(backing.as_raw_fd()).map_err(|_| Errno::BADF)
}

/// The backing file of loop device `number` (`LOOP_GET_STATUS64`), or
/// `None` when the device does not exist or is not bound.
pub fn loop_backing(number: u32) -> Result<Option<LoopBacking>> {
    match LoopDevice::open(number) {
        Ok(dev) => dev.backing(),
        // No such device (node), or it is being torn down or removed.
        Err(Errno::NOENT | Errno::NXIO | Errno::NODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The numbers of all loop devices that exist, bound or not, from the
/// `loopN` entries of `/sys/block`, in ascending order.
pub fn loop_numbers() -> Result<Vec<u32>> {
    let dir = open(
        "/sys/block",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut numbers = Vec::new();
    for entry in Dir::read_from(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if let Some(digits) = name.strip_prefix(b"loop")
            && let Some(number) = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The path of the file backing loop device `number` as sysfs shows it
/// (`/sys/block/loopN/loop/backing_file`, resolved by the kernel at read
/// time, with ` (deleted)` appended when the file was unlinked), or `None`
/// when the device does not exist or is not bound.
///
/// The path is the kernel's view from the reading process's root; prefer
/// [`loop_backing`] to identify a file.
pub fn loop_backing_file(number: u32) -> Result<Option<PathBuf>> {
    let path = format!("/sys/block/loop{number}/loop/backing_file");
    let fd = match open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        // No such device, or not bound: the `loop` directory exists only
        // while the device is bound.
        Err(Errno::NOENT | Errno::NODEV) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut content = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match rustix::io::read(&fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            // The device was cleared (its `loop` directory removed) or
            // deleted between the open and the read.
            Err(Errno::NODEV | Errno::NXIO) => return Ok(None),
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        content.extend_from_slice(&buf[..n]);
    }
    if content.last() == Some(&b'\n') {
        content.pop();
    }
    // An unbound device shows an empty file.
    if content.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(OsString::from_vec(content))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// True when loop devices can be attached here; otherwise prints a
    /// loud SKIP, or panics under `CI=true` (CI runs as root with loop
    /// support, so a skip there hides a broken setup).
    fn need_loop(what: &str) -> bool {
        let reason = if !rustix::process::geteuid().is_root() {
            "not root"
        } else if !std::path::Path::new(LOOP_CONTROL).exists() {
            "no /dev/loop-control (modprobe loop)"
        } else {
            return true;
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} needs loop devices ({reason}) but CI=true"
        );
        eprintln!("SKIP: {what}: {reason}");
        false
    }

    fn backing_file(dir: &std::path::Path, len: usize) -> std::fs::File {
        let path = dir.join("backing.img");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create backing file");
        f.write_all(&vec![0x5a; len]).expect("fill backing file");
        f
    }

    /// Polls until no loop device is backed by (dev, ino): the kernel
    /// clears on the last close, which a concurrent `udev`-like opener can
    /// delay by a moment.
    fn wait_unbacked(dev: u64, ino: u64) -> Vec<u32> {
        let mut left = Vec::new();
        for _ in 0..200 {
            left = loop_numbers()
                .expect("list loop devices")
                .into_iter()
                .filter(|&n| {
                    loop_backing(n)
                        .expect("loop status")
                        .is_some_and(|b| b.is(dev, ino))
                })
                .collect();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        left
    }

    #[test]
    fn attach_reports_backing_and_autoclears_on_close() {
        if !need_loop("attach_reports_backing_and_autoclears_on_close") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backing_file(dir.path(), 1 << 20);
        let meta = file.metadata().expect("stat backing");
        let dev = LoopDevice::attach(file.as_fd(), false).expect("attach");
        drop(file);
        assert_eq!(
            dev.path(),
            PathBuf::from(format!("/dev/loop{}", dev.number()))
        );
        let backing = dev.backing().expect("status").expect("bound");
        assert!(
            backing.is(meta.dev(), meta.ino()),
            "{backing:?} vs {meta:?}"
        );
        assert_eq!(loop_backing(dev.number()).expect("status"), Some(backing));
        let shown = loop_backing_file(dev.number())
            .expect("sysfs")
            .expect("sysfs shows bound device");
        assert_eq!(shown, dir.path().join("backing.img"));
        // The device reads the file's bytes.
        let mut head = [0u8; 512];
        rustix::io::pread(&dev, &mut head, 0).expect("read device");
        assert!(head.iter().all(|&b| b == 0x5a));
        let number = dev.number();
        drop(dev);
        assert!(
            wait_unbacked(meta.dev(), meta.ino()).is_empty(),
            "loop{number} still bound after the last close"
        );
    }

    #[test]
    fn read_only_attach_refuses_writes() {
        if !need_loop("read_only_attach_refuses_writes") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backing_file(dir.path(), 1 << 20);
        let dev = LoopDevice::attach(file.as_fd(), true).expect("attach read-only");
        // The kernel lets the node be opened for writing, but the block
        // layer refuses every write to a read-only device.
        let rw = open(dev.path(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .expect("open device for writing");
        assert_eq!(rustix::io::pwrite(&rw, &[1u8; 512], 0), Err(Errno::PERM));
        dev.detach().expect("detach");
    }

    #[test]
    fn detach_frees_the_device_and_repeated_cycles_leak_nothing() {
        if !need_loop("detach_frees_the_device_and_repeated_cycles_leak_nothing") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backing_file(dir.path(), 1 << 20);
        let meta = file.metadata().expect("stat backing");
        for _ in 0..40 {
            let dev = LoopDevice::attach(file.as_fd(), false).expect("attach");
            // Direct I/O is optional: a backing filesystem may refuse it.
            match dev.set_direct_io(true) {
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => panic!("LOOP_SET_DIRECT_IO: {e}"),
            }
            dev.detach().expect("detach");
        }
        // Attach a few at once (distinct devices), then drop them all.
        let devs: Vec<_> = (0..4)
            .map(|_| LoopDevice::attach(file.as_fd(), false).expect("attach"))
            .collect();
        let mut numbers: Vec<_> = devs.iter().map(LoopDevice::number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 4, "distinct devices: {numbers:?}");
        drop(devs);
        assert_eq!(wait_unbacked(meta.dev(), meta.ino()), Vec::<u32>::new());
    }

    #[test]
    fn legacy_bind_sets_autoclear() {
        if !need_loop("legacy_bind_sets_autoclear") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backing_file(dir.path(), 1 << 20);
        let meta = file.metadata().expect("stat backing");
        let control = open(LOOP_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .expect("open loop-control");
        // Like `attach`, but through the pre-5.8 path; retry if another
        // test grabs the same free device first.
        let dev = (0..ATTACH_ATTEMPTS)
            .find_map(|_| {
                // SAFETY: as in `attach`.
                let number = unsafe { ioctl(&control, GetFree) }.expect("LOOP_CTL_GET_FREE");
                let dev = LoopDevice::open(number).expect("open free device");
                match bind_legacy(dev.as_fd(), file.as_fd()) {
                    Ok(()) => Some(dev),
                    Err(Errno::BUSY) => None,
                    Err(e) => panic!("legacy bind: {e}"),
                }
            })
            .expect("a free device");
        let backing = dev.backing().expect("status").expect("bound");
        assert!(backing.is(meta.dev(), meta.ino()));
        let autoclear =
            std::fs::read_to_string(format!("/sys/block/loop{}/loop/autoclear", dev.number()))
                .expect("sysfs autoclear");
        assert_eq!(autoclear.trim(), "1");
        drop(dev);
        assert_eq!(wait_unbacked(meta.dev(), meta.ino()), Vec::<u32>::new());
    }

    #[test]
    fn unbound_devices_report_nothing() {
        if !need_loop("unbound_devices_report_nothing") {
            return;
        }
        // A number far beyond any device: no node at all.
        assert_eq!(loop_backing(u32::MAX - 1).expect("status"), None);
        assert_eq!(loop_backing_file(u32::MAX - 1).expect("sysfs"), None);
        let numbers = loop_numbers().expect("list");
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }
}
