//! Sandboxes (size-limited writable areas in loop-mounted ext4 images) and
//! XFS project quotas, against the real kernel: real loop devices, real
//! mounts, real `ENOSPC`.
//!
//! Every test needs root and loop devices (and `mkfs.ext4`, or
//! `mkfs.xfs` for the quota test). Without them it prints a loud `SKIP`
//! and passes, except under `CI=true`, where it fails: CI runs as root, so
//! a skip there hides a broken setup.
//!
//! The crash tests run a second copy of this test binary (the
//! [`child_helper`] "test", which does nothing unless asked through the
//! environment) that mounts or attaches and is then killed with
//! `SIGKILL`, so what is left behind is exactly what a killed daemon
//! leaves.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::io::Errno;
use strata_fs::{
    MIN_SANDBOX_SIZE, SANDBOX_IMAGE, SANDBOX_MOUNT, SandboxError, create_image, image_size_for,
    mount_image, project_id, project_quota_usage, release_stale, set_project_quota, unmount_image,
    xfs_project_quota_supported,
};
use strata_sys::{LoopDevice, loop_backing, loop_backing_file, loop_numbers};

const MIB: u64 = 1 << 20;

/// Environment variable that turns [`child_helper`] into a crash-test
/// child: `mount:<layer dir>` or `attach:<layer dir>`.
const CHILD_ENV: &str = "STRATA_SANDBOX_TEST_CHILD";
/// What the child prints once it holds the mount or device.
const CHILD_READY: &str = "STRATA-SANDBOX-CHILD-READY";

/// How long a crash-test child waits to be killed before it gives up.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

/// Finds `tool` in `PATH` or the sbin directories.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// True when the test can run: root, loop devices and each of `tools`.
/// Otherwise a loud SKIP, or a failure under `CI=true`.
fn need(what: &str, tools: &[&str]) -> bool {
    let reason = if !rustix::process::geteuid().is_root() {
        "not root".to_owned()
    } else if !Path::new("/dev/loop-control").exists() {
        "no /dev/loop-control (modprobe loop)".to_owned()
    } else if let Some(tool) = tools.iter().find(|t| find_tool(t).is_none()) {
        format!("{tool} is not installed")
    } else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} cannot run ({reason}) but CI=true"
    );
    eprintln!("SKIP: {what}: {reason}");
    false
}

/// A fresh layer directory under the system temp dir.
fn layer_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-sandbox-test-")
        .tempdir()
        .expect("tempdir")
}

/// The loop devices backed by `file`, by both ways of asking: the
/// kernel's status ioctl (dev/ino) and sysfs's `backing_file` path.
fn devices_backing(file: &Path) -> Vec<u32> {
    let meta = std::fs::metadata(file).expect("stat image");
    let mut found = Vec::new();
    for n in loop_numbers().expect("list loop devices") {
        let by_ioctl = loop_backing(n)
            .expect("loop status")
            .is_some_and(|b| b.is(meta.dev(), meta.ino()));
        let by_sysfs = loop_backing_file(n)
            .expect("sysfs")
            .is_some_and(|p| p == file);
        if by_ioctl || by_sysfs {
            found.push(n);
        }
    }
    found
}

/// Polls until no loop device is backed by `file` and returns what is
/// left: a device is freed on its last close, which can trail the close by
/// a moment.
fn wait_no_devices(file: &Path) -> Vec<u32> {
    let mut left = devices_backing(file);
    for _ in 0..300 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        left = devices_backing(file);
    }
    left
}

/// The mounts on `path` in this process's mount table.
fn mounts_at(path: &Path) -> usize {
    strata_fs::mountinfo::read_self()
        .expect("mountinfo")
        .iter()
        .filter(|m| m.mount_point == path)
        .count()
}

/// Bytes `statvfs` reports available at `path`.
fn available(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// Writes `bytes` of non-zero data to a new file `path` in 1 MiB chunks,
/// then fsyncs. Returns how much was written before the first error.
fn fill(path: &Path, bytes: u64) -> (u64, io::Result<()>) {
    let mut f = match File::create_new(path) {
        Ok(f) => f,
        Err(e) => return (0, Err(e)),
    };
    let chunk = vec![0xa5u8; MIB as usize];
    let mut written = 0;
    while written < bytes {
        let n = (bytes - written).min(MIB) as usize;
        if let Err(e) = f.write_all(&chunk[..n]) {
            return (written, Err(e));
        }
        written += n as u64;
    }
    (written, f.sync_all())
}

/// Not a test of its own: the body of the crash tests' child process.
/// Does nothing unless [`CHILD_ENV`] is set.
#[test]
fn child_helper() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, layer) = task.split_once(':').expect("mode:layer");
    let layer = Path::new(layer);
    // Keep whatever was made alive until the parent kills us.
    let _held = match mode {
        "mount" => {
            mount_image(layer, &layer.join(SANDBOX_MOUNT)).expect("child mount");
            None
        }
        "attach" => {
            let image = File::options()
                .read(true)
                .write(true)
                .open(layer.join(SANDBOX_IMAGE))
                .expect("child open image");
            Some(LoopDevice::attach(image.as_fd(), false).expect("child attach"))
        }
        other => panic!("unknown child mode {other}"),
    };
    // On a line of its own: libtest has printed "test child_helper ... "
    // without a newline.
    println!("\n{CHILD_READY}");
    io::stdout().flush().expect("flush");
    // The parent kills us within moments; should it die first, do not
    // linger (the mount or device is then released by the parent's
    // cleanup or by autoclear).
    std::thread::sleep(CHILD_LIFETIME);
    std::process::exit(1);
}

/// Starts the child in `mode` on `layer` and waits until it is ready.
fn spawn_child(mode: &str, layer: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "child_helper", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", layer.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim_end() == CHILD_READY);
    if !ready {
        let status = child.wait().expect("wait child");
        panic!("child never got ready ({status})");
    }
    child
}

/// Kills the child with SIGKILL, as a crash would.
fn kill_child(mut child: Child) {
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
}

/// Moby's quota test, on a sandbox: 50 MiB image, 25 MiB fits, 50 MiB
/// more does not (ENOSPC), and unmounting leaves no device behind.
#[test]
fn quota_50m_image_takes_25m_and_refuses_50m_more() {
    if !need(
        "quota_50m_image_takes_25m_and_refuses_50m_more",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    create_image(layer, 50 * MIB).expect("create image");
    let image = layer.join(SANDBOX_IMAGE);
    let meta = std::fs::metadata(&image).expect("stat image");
    assert_eq!(Some(meta.len()), image_size_for(50 * MIB));
    assert!(
        meta.blocks() * 512 < 8 * MIB,
        "image should be sparse, uses {} bytes",
        meta.blocks() * 512
    );
    assert_eq!(meta.mode() & 0o777, 0o600);

    let mnt = layer.join(SANDBOX_MOUNT);
    let sandbox = mount_image(layer, &mnt).expect("mount image");
    assert_eq!(sandbox.mountpoint(), mnt);
    assert!(sandbox.upper_dir().is_dir() && sandbox.work_dir().is_dir());
    assert_eq!(mounts_at(&mnt), 1);
    assert_eq!(devices_backing(&image).len(), 1);
    let avail = available(&mnt);
    assert!(
        (50 * MIB..50 * MIB + MIB / 2).contains(&avail),
        "50 MiB sandbox has {avail} bytes available"
    );

    let (written, res) = fill(&sandbox.upper_dir().join("a"), 25 * MIB);
    res.expect("25 MiB fits");
    assert_eq!(written, 25 * MIB);
    let (written, res) = fill(&sandbox.upper_dir().join("b"), 50 * MIB);
    let err = res.expect_err("50 MiB more must not fit");
    assert_eq!(
        err.raw_os_error(),
        Some(Errno::NOSPC.raw_os_error()),
        "{err}"
    );
    // What was left of the 50 MiB was usable up to (nearly) the byte.
    assert!(
        written >= 24 * MIB,
        "only {written} bytes fitted after 25 MiB"
    );

    assert!(sandbox.unmount().expect("unmount"));
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
    // A second unmount is harmless.
    assert!(!unmount_image(&mnt).expect("unmount again"));

    // The data survived: mount again and read the sizes back.
    let sandbox = mount_image(layer, &mnt).expect("remount");
    assert_eq!(
        std::fs::metadata(sandbox.upper_dir().join("a"))
            .expect("a")
            .len(),
        25 * MIB
    );
    assert!(sandbox.unmount().expect("unmount"));
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
}

/// The usable space of a sandbox is its size (plus at most 512 KiB and
/// 0.05%), whatever the size: the image carries ext4's overhead.
#[test]
fn usable_space_matches_the_size() {
    if !need("usable_space_matches_the_size", &["mkfs.ext4"]) {
        return;
    }
    eprintln!("size asked | image | available | overhead of image");
    for size in [MIN_SANDBOX_SIZE, 50 * MIB, 1 << 30, 20 << 30] {
        let dir = layer_dir();
        let layer = dir.path();
        create_image(layer, size).expect("create image");
        let image_len = std::fs::metadata(layer.join(SANDBOX_IMAGE))
            .expect("stat")
            .len();
        let mnt = layer.join(SANDBOX_MOUNT);
        let sandbox = mount_image(layer, &mnt).expect("mount");
        let avail = available(&mnt);
        eprintln!(
            "{size} | {image_len} | {avail} | {} ({:.1}%)",
            image_len - avail,
            (image_len - avail) as f64 * 100.0 / image_len as f64
        );
        sandbox.unmount().expect("unmount");
        assert!(
            avail >= size && avail - size <= MIB / 2 + size / 2000,
            "{size}-byte sandbox has {avail} bytes available"
        );
    }
}

#[test]
fn create_image_refuses_small_sizes_and_existing_images() {
    if !need(
        "create_image_refuses_small_sizes_and_existing_images",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let dir = layer_dir();
    let err = create_image(dir.path(), 15 * MIB).expect_err("15 MiB");
    assert!(matches!(err, SandboxError::TooSmall { .. }), "{err}");
    assert!(
        err.to_string().contains("minimum of 16777216 bytes"),
        "{err}"
    );
    create_image(dir.path(), MIN_SANDBOX_SIZE).expect("minimum size");
    let err = create_image(dir.path(), MIN_SANDBOX_SIZE).expect_err("again");
    assert_eq!(
        err.raw_os_error(),
        Some(Errno::EXIST.raw_os_error()),
        "{err}"
    );
    assert!(err.to_string().contains(SANDBOX_IMAGE), "{err}");
}

#[test]
fn mount_refuses_a_mounted_mountpoint_and_a_missing_image() {
    if !need(
        "mount_refuses_a_mounted_mountpoint_and_a_missing_image",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    let mnt = layer.join(SANDBOX_MOUNT);
    let err = mount_image(layer, &mnt).expect_err("no image yet");
    assert_eq!(
        err.raw_os_error(),
        Some(Errno::NOENT.raw_os_error()),
        "{err}"
    );
    assert!(err.to_string().contains(SANDBOX_IMAGE), "{err}");

    create_image(layer, MIN_SANDBOX_SIZE).expect("create");
    let sandbox = mount_image(layer, &mnt).expect("mount");
    let err = mount_image(layer, &mnt).expect_err("mounted twice");
    assert!(matches!(err, SandboxError::AlreadyMounted { .. }), "{err}");
    // The refused second mount attached nothing.
    assert_eq!(devices_backing(&layer.join(SANDBOX_IMAGE)).len(), 1);
    sandbox.unmount().expect("unmount");
    // A symlink as mount point is refused, not followed.
    let elsewhere = layer.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, layer.join("link")).expect("symlink");
    let err = mount_image(layer, &layer.join("link")).expect_err("symlink mount point");
    assert_eq!(
        err.raw_os_error(),
        Some(Errno::NOTDIR.raw_os_error()),
        "{err}"
    );
    assert_eq!(mounts_at(&elsewhere), 0);
    assert_eq!(
        wait_no_devices(&layer.join(SANDBOX_IMAGE)),
        Vec::<u32>::new()
    );
}

/// A process killed while its sandbox is mounted leaves the mount (and
/// through it the loop device); `release_stale` removes both.
#[test]
fn release_stale_after_a_killed_mounter() {
    if !need("release_stale_after_a_killed_mounter", &["mkfs.ext4"]) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    let image = layer.join(SANDBOX_IMAGE);
    let mnt = layer.join(SANDBOX_MOUNT);
    create_image(layer, MIN_SANDBOX_SIZE).expect("create");
    kill_child(spawn_child("mount", layer));
    // The crash left exactly what it should: a mount and its device.
    assert_eq!(mounts_at(&mnt), 1);
    assert_eq!(devices_backing(&image).len(), 1);

    let released = release_stale(layer).expect("release");
    assert!(released >= 1, "released {released}");
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
    assert_eq!(release_stale(layer).expect("release again"), 0);
    // The layer can be used again.
    mount_image(layer, &mnt)
        .expect("mount after release")
        .unmount()
        .expect("unmount");
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
}

/// A process killed with the image attached but not yet mounted leaks
/// nothing (autoclear); one still alive and holding the device gets it
/// marked for detaching, and it goes when that process does.
#[test]
fn release_stale_detaches_a_device_held_by_another_process() {
    if !need(
        "release_stale_detaches_a_device_held_by_another_process",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    let image = layer.join(SANDBOX_IMAGE);
    create_image(layer, MIN_SANDBOX_SIZE).expect("create");

    kill_child(spawn_child("attach", layer));
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());

    let child = spawn_child("attach", layer);
    let held = devices_backing(&image);
    assert_eq!(held.len(), 1);
    assert_eq!(release_stale(layer).expect("release"), 1);
    // Marked: still bound while the holder lives, with autoclear set.
    let autoclear = std::fs::read_to_string(format!("/sys/block/loop{}/loop/autoclear", held[0]))
        .expect("sysfs autoclear");
    assert_eq!(autoclear.trim(), "1");
    kill_child(child);
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
}

/// A mount that is busy (an open file inside) is detached lazily: it
/// leaves the mount table at once, and the device goes with the last
/// open file.
#[test]
fn release_stale_lazily_detaches_a_busy_mount() {
    if !need("release_stale_lazily_detaches_a_busy_mount", &["mkfs.ext4"]) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    let image = layer.join(SANDBOX_IMAGE);
    let mnt = layer.join(SANDBOX_MOUNT);
    create_image(layer, MIN_SANDBOX_SIZE).expect("create");
    let sandbox = mount_image(layer, &mnt).expect("mount");
    let busy = File::create(sandbox.upper_dir().join("open")).expect("open a file inside");
    assert!(release_stale(layer).expect("release") >= 1);
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(
        devices_backing(&image).len(),
        1,
        "the open file keeps the device"
    );
    drop(busy);
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
}

/// Many mount/unmount cycles leave no device behind.
#[test]
fn mount_cycles_leak_no_devices() {
    if !need("mount_cycles_leak_no_devices", &["mkfs.ext4"]) {
        return;
    }
    let dir = layer_dir();
    let layer = dir.path();
    let image = layer.join(SANDBOX_IMAGE);
    let mnt = layer.join(SANDBOX_MOUNT);
    create_image(layer, MIN_SANDBOX_SIZE).expect("create");
    for i in 0..25 {
        let sandbox = mount_image(layer, &mnt).expect("mount");
        std::fs::write(sandbox.upper_dir().join(format!("f{i}")), b"x").expect("write");
        assert!(sandbox.unmount().expect("unmount"));
        assert_eq!(mounts_at(&mnt), 0);
    }
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
    let sandbox = mount_image(layer, &mnt).expect("mount");
    assert_eq!(
        std::fs::read_dir(sandbox.upper_dir()).expect("ls").count(),
        25
    );
    sandbox.unmount().expect("unmount");
    assert_eq!(wait_no_devices(&image), Vec::<u32>::new());
}

/// Unmounts `mnt` when dropped, so a failing assertion does not leave an
/// XFS test filesystem mounted.
struct MountGuard<'a>(&'a Path);

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = unmount_image(self.0) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A fresh 300 MiB XFS image (the smallest current xfsprogs makes) and
/// an empty mount point beside it, both in `dir`.
fn xfs_image(dir: &Path) -> (PathBuf, PathBuf) {
    let img = dir.join("xfs.img");
    File::create_new(&img)
        .and_then(|f| f.set_len(300 * MIB))
        .expect("sparse image");
    let mkfs = find_tool("mkfs.xfs").expect("mkfs.xfs");
    let out = Command::new(mkfs)
        .args(["-q", "-f"])
        .arg(&img)
        .output()
        .expect("run mkfs.xfs");
    assert!(
        out.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    (img, mnt)
}

/// Mounts the XFS image `img` on `mnt` through our own loop code, with
/// mount options `data`.
fn mount_xfs(img: &Path, mnt: &Path, data: Option<&std::ffi::CStr>) -> rustix::io::Result<()> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(img)
        .expect("open image");
    let dev = LoopDevice::attach(file.as_fd(), false).expect("attach");
    // On failure `dev` is dropped, and autoclear detaches it.
    rustix::mount::mount(
        dev.path(),
        mnt,
        "xfs",
        rustix::mount::MountFlags::empty(),
        data,
    )
}

/// On XFS without project quota: the probe says no, setting a limit fails
/// naming the directory, and project ids (set through
/// `FS_IOC_FSSETXATTR`) are inherited by new entries.
#[test]
fn xfs_without_prjquota_is_refused_but_project_ids_work() {
    if !need(
        "xfs_without_prjquota_is_refused_but_project_ids_work",
        &["mkfs.xfs"],
    ) {
        return;
    }
    let dir = layer_dir();
    let (img, mnt) = xfs_image(dir.path());
    mount_xfs(&img, &mnt, None).expect("mount xfs");
    {
        let _guard = MountGuard(&mnt);
        assert!(!xfs_project_quota_supported(&mnt).expect("probe"));
        let upper = mnt.join("upper");
        std::fs::create_dir(&upper).expect("mkdir upper");
        let err = set_project_quota(&upper, 4242, 50 * MIB).expect_err("no quota here");
        assert!(err.to_string().contains("upper"), "{err}");
        assert!(err.raw_os_error().is_some(), "{err}");

        let fd = File::open(&upper).expect("open upper");
        let mut attr = strata_sys::get_fsxattr(&fd).expect("FS_IOC_FSGETXATTR");
        assert_eq!(attr.projid, 0);
        attr.projid = 4242;
        attr.xflags |= strata_sys::FS_XFLAG_PROJINHERIT;
        strata_sys::set_fsxattr(&fd, &attr).expect("FS_IOC_FSSETXATTR");
        assert_eq!(project_id(&upper).expect("project id"), 4242);
        std::fs::create_dir(upper.join("sub")).expect("mkdir sub");
        std::fs::write(upper.join("sub/f"), b"x").expect("write");
        assert_eq!(project_id(&upper.join("sub")).expect("project id"), 4242);
        let f = File::open(upper.join("sub/f")).expect("open f");
        assert_eq!(strata_sys::get_fsxattr(&f).expect("get").projid, 4242);
        assert_eq!(project_id(&mnt).expect("project id"), 0);
    }
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(wait_no_devices(&img), Vec::<u32>::new());
}

/// Moby's quota test on XFS with project quota: a 50 MiB project limit
/// on a directory lets 25 MiB in and refuses 50 MiB more.
///
/// Needs a kernel built with `CONFIG_XFS_QUOTA`; without it the mount
/// with `prjquota` fails (`EINVAL`, "quota support not available in this
/// kernel" in the kernel log) and the test skips loudly, even under
/// `CI=true`: that is the kernel's configuration, not a broken setup.
#[test]
fn xfs_project_quota_limits_a_directory() {
    if !need("xfs_project_quota_limits_a_directory", &["mkfs.xfs"]) {
        return;
    }
    let dir = layer_dir();
    let (img, mnt) = xfs_image(dir.path());
    // A plain mount first: if this works and the prjquota one below does
    // not, the kernel's XFS lacks quota support.
    mount_xfs(&img, &mnt, None).expect("mount xfs");
    assert!(unmount_image(&mnt).expect("unmount"));
    match mount_xfs(&img, &mnt, Some(c"prjquota")) {
        Ok(()) => {}
        Err(Errno::INVAL) => {
            eprintln!(
                "SKIP: xfs_project_quota_limits_a_directory: this kernel's XFS has no quota \
                 support (CONFIG_XFS_QUOTA is not set): mount -o prjquota fails with EINVAL"
            );
            assert_eq!(wait_no_devices(&img), Vec::<u32>::new());
            return;
        }
        Err(e) => panic!("mount xfs with prjquota: {e}"),
    }
    let guard = MountGuard(&mnt);
    assert!(xfs_project_quota_supported(&mnt).expect("probe"));

    let upper = mnt.join("upper");
    std::fs::create_dir(&upper).expect("mkdir upper");
    set_project_quota(&upper, 4242, 50 * MIB).expect("set project quota");
    assert_eq!(project_id(&upper).expect("project id"), 4242);
    assert_eq!(project_quota_usage(&upper).expect("usage").0, 50 * MIB);
    // New entries inherit the project.
    std::fs::create_dir(upper.join("sub")).expect("mkdir sub");
    assert_eq!(project_id(&upper.join("sub")).expect("project id"), 4242);

    let (written, res) = fill(&upper.join("sub/a"), 25 * MIB);
    res.expect("25 MiB fits");
    assert_eq!(written, 25 * MIB);
    let (written, res) = fill(&upper.join("b"), 50 * MIB);
    let err = res.expect_err("50 MiB more must not fit");
    let errno = err.raw_os_error();
    assert!(
        errno == Some(Errno::NOSPC.raw_os_error()) || errno == Some(Errno::DQUOT.raw_os_error()),
        "{err}"
    );
    assert!(
        written >= 20 * MIB,
        "only {written} bytes fitted after 25 MiB"
    );
    let (_, used) = project_quota_usage(&upper).expect("usage");
    assert!(used <= 50 * MIB, "project uses {used} bytes");
    // Outside the project there is plenty of room.
    fill(&mnt.join("outside"), 60 * MIB)
        .1
        .expect("unlimited outside the project");

    drop(guard);
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(wait_no_devices(&img), Vec::<u32>::new());
}
