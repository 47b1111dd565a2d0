//! Overlayfs on-disk forms and feature probes, shared by the applier, the
//! native diff and the overlay driver.
//!
//! In an upper (or a layer's diff dir) overlayfs records a deletion as a
//! *whiteout*, a character device 0/0 ([`is_whiteout`]), and a directory
//! that hides everything below it as *opaque*, with the xattr
//! `trusted.overlay.opaque` (or `user.overlay.opaque` when mounted with
//! `userxattr`) set to `y` ([`is_opaque_dir`]).
//!
//! Reading a layer's diff dir as its changes ("native diff") is only right
//! when overlayfs writes nothing but those forms. With `redirect_dir`
//! a renamed directory is recorded as a redirect xattr, and with
//! `metacopy` a chmod leaves a metadata-only copy whose data lives in a
//! lower; a tar of the diff dir would then be wrong. [`OverlayFeatures`]
//! reads the module defaults, [`defaults_allow_native_diff`] judges them,
//! [`probe_native_diff`] runs moby's real test (a test mount on the
//! backing filesystem where a lower directory is renamed), and
//! [`native_diff_ok`] combines the two.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rand::Rng;
use rustix::fs::{FileType, Stat, XattrFlags};
use rustix::io::Errno;

use crate::mount::{self, MountError, OverlaySpec, mount_overlay, unmount};
use crate::{FsError, Result};

/// Where overlayfs publishes its module parameters (the defaults a mount
/// gets unless its options say otherwise).
const PARAMS: &str = "/sys/module/overlay/parameters";

/// True when `stat` is an overlay whiteout: a character device with
/// device number 0/0.
pub fn is_whiteout(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice && stat.st_rdev == 0
}

/// The xattr marking an opaque directory: `user.overlay.opaque` under
/// `userxattr`, `trusted.overlay.opaque` otherwise.
pub fn opaque_xattr_name(userxattr: bool) -> &'static str {
    if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// The xattr overlayfs sets on a directory renamed under `redirect_dir`.
fn redirect_xattr_name(userxattr: bool) -> &'static str {
    if userxattr {
        "user.overlay.redirect"
    } else {
        "trusted.overlay.redirect"
    }
}

/// True when the directory open at `fd` (a normal open, not `O_PATH`) is
/// opaque: its opaque xattr is exactly `y`. Overlayfs 6.7+ also writes
/// `x` there for a directory that merely *holds* xattr whiteouts; that is
/// not opaque. A filesystem without xattrs has no opaque directories.
pub fn is_opaque_dir(fd: impl AsFd, userxattr: bool) -> Result<bool> {
    let fd = fd.as_fd();
    let mut buf = [0u8; 8];
    match rustix::fs::fgetxattr(fd, opaque_xattr_name(userxattr), &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        // ENODATA: not set. ERANGE: longer than any value that means
        // opaque. ENOTSUP: no xattrs at all.
        Err(Errno::NODATA | Errno::RANGE | Errno::NOTSUP) => Ok(false),
        Err(e) => Err(FsError::io("getxattr", &fd_path(fd), e)),
    }
}

/// The path the kernel has for `fd`, to name it in an error (the caller
/// gave only the fd); `fd <n>` when even that is unavailable.
fn fd_path(fd: BorrowedFd<'_>) -> Vec<u8> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::readlink(link.as_str(), Vec::new())
        .map(|p| p.into_bytes())
        .unwrap_or_else(|_| format!("fd {}", fd.as_raw_fd()).into_bytes())
}

/// What the running kernel's overlayfs does by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayFeatures {
    /// Mounts can take one `lowerdir+` per lower (Linux 6.8+).
    pub lowerdir_plus: bool,
    /// Module default `redirect_dir`: renamed directories are recorded as
    /// redirects.
    pub redirect_dir: bool,
    /// Module default `metacopy`: metadata changes copy up metadata only.
    pub metacopy: bool,
    /// Module default `index` (Strata always mounts with `index=off`).
    pub index: bool,
    /// This process runs in a user namespace, where `trusted.*` xattrs are
    /// out of reach and mounts need `userxattr`.
    pub userxattr_needed: bool,
}

impl OverlayFeatures {
    /// Probes the kernel: the `lowerdir+` probe
    /// ([`mount::lowerdir_plus_supported`], which also loads the overlay
    /// module if needed), the module parameters in
    /// `/sys/module/overlay/parameters` (`Y`/`N`; absent means a kernel
    /// without that feature), and whether `userxattr` is needed: only in a
    /// user namespace, and there only if a test mount with it succeeds in
    /// a fresh directory under `scratch` (as moby's `NeedsUserXattr`; a
    /// kernel before 5.11 does not know the option, and mounting without
    /// it is all that is left).
    pub fn probe(scratch: &Path) -> std::result::Result<Self, MountError> {
        let userxattr_needed = in_user_namespace()? && userxattr_mount_works(scratch)?;
        Ok(OverlayFeatures {
            lowerdir_plus: mount::lowerdir_plus_supported()?,
            redirect_dir: module_param("redirect_dir")?,
            metacopy: module_param("metacopy")?,
            index: module_param("index")?,
            userxattr_needed,
        })
    }
}

/// Whether a read-only overlay mounted with `userxattr` works in a test
/// directory under `scratch`.
fn userxattr_mount_works(scratch: &Path) -> std::result::Result<bool, MountError> {
    in_test_dir(scratch, "userxattr-check", |td| {
        let merged = td.join("merged");
        for d in ["l1", "l2", "merged"] {
            let p = td.join(d);
            fs::create_dir(&p).map_err(|e| MountError::io("mkdir", &p, e))?;
        }
        let spec = OverlaySpec {
            lowers: vec![td.join("l2"), td.join("l1")],
            readonly: true,
            userxattr: true,
            ..OverlaySpec::default()
        };
        Ok(mount_overlay(&spec, &merged).is_ok())
    })
}

/// Reads the boolean module parameter `name`; false when it is absent.
fn module_param(name: &str) -> std::result::Result<bool, MountError> {
    let p = Path::new(PARAMS).join(name);
    match fs::read_to_string(&p) {
        Ok(s) => match s.trim() {
            "Y" | "y" | "1" => Ok(true),
            "N" | "n" | "0" => Ok(false),
            _ => Err(MountError::io(
                "parse module parameter",
                &p,
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("value {s:?}")),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MountError::io("read", &p, e)),
    }
}

/// True when this process is not in the initial user namespace, whose
/// `uid_map` is the single identity line `0 0 4294967295`.
fn in_user_namespace() -> std::result::Result<bool, MountError> {
    let p = Path::new("/proc/self/uid_map");
    match fs::read_to_string(p) {
        Ok(s) => Ok(s.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"]),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MountError::io("read", p, e)),
    }
}

/// Whether overlayfs's defaults allow native diff, and why: not with
/// `redirect_dir` or `metacopy` on (a diff dir would hold redirects or
/// metadata-only copies), as moby's overlay2 decides. Pure; see
/// [`native_diff_ok`] for the full check.
pub fn defaults_allow_native_diff(features: &OverlayFeatures) -> (bool, String) {
    if features.redirect_dir {
        (
            false,
            "overlay redirect_dir is on by default: renamed directories become redirects".into(),
        )
    } else if features.metacopy {
        (
            false,
            "overlay metacopy is on by default: metadata changes leave data in lower layers".into(),
        )
    } else {
        (true, "redirect_dir and metacopy are off by default".into())
    }
}

/// Whether a layer's diff dir can be exported as is (native diff), and
/// why: the module defaults must allow it ([`defaults_allow_native_diff`])
/// and the real test mount must agree ([`probe_native_diff`], run in
/// `scratch` with `userxattr` as the features say).
pub fn native_diff_ok(
    features: &OverlayFeatures,
    scratch: &Path,
) -> std::result::Result<(bool, String), MountError> {
    let (ok, why) = defaults_allow_native_diff(features);
    if !ok {
        return Ok((ok, why));
    }
    probe_native_diff(scratch, features.userxattr_needed)
}

/// Moby's `doesSupportNativeDiff`, run on the backing filesystem: in a
/// fresh directory under `scratch`, mounts an overlay (lowers `l2` over
/// `l1`, upper `l3`, as Strata mounts: `index=off`, module defaults
/// otherwise) where `l2/d` is opaque, then
///
/// 1. writes `d/f`, copying `d` up: if the upper copy of `d` came out
///    opaque, the kernel has the pre-4.8 opaque copy-up bug;
/// 2. renames the lower-only directory `d1`: `EXDEV` is the good answer (no
///    redirects); success with a redirect xattr on the upper `d2` means the
///    kernel redirects directories.
///
/// Returns (native diff safe, why). A failed test mount is an error: then
/// overlay does not work on this filesystem at all. The directory is
/// unmounted and removed afterwards. Setting the `trusted.*` opaque xattr
/// needs `CAP_SYS_ADMIN`; pass `userxattr` in a user namespace.
pub fn probe_native_diff(
    scratch: &Path,
    userxattr: bool,
) -> std::result::Result<(bool, String), MountError> {
    in_test_dir(scratch, "native-diff-check", |td| {
        run_native_diff_probe(td, &td.join("merged"), userxattr)
    })
}

/// Runs `f` in a new directory under `scratch`, then unmounts whatever
/// `f` mounted on its `merged` and removes the directory, reporting the
/// first error.
fn in_test_dir<T>(
    scratch: &Path,
    prefix: &str,
    f: impl FnOnce(&Path) -> std::result::Result<T, MountError>,
) -> std::result::Result<T, MountError> {
    let name = format!("{prefix}-{:016x}", rand::rng().random::<u64>());
    let td = scratch.join(&name);
    fs::create_dir(&td).map_err(|e| MountError::io("mkdir", &td, e))?;
    let result = f(&td);
    // Unmount before removing: removal must not reach through a live
    // mount. There is no mount if `f` failed early.
    let merged = td.join("merged");
    let unmounted = match unmount(&merged, true) {
        Err(e) if !e.is_not_mounted() && e.raw_os_error() != Some(Errno::NOENT.raw_os_error()) => {
            Err(e)
        }
        _ => Ok(()),
    };
    let removed = remove_tree(scratch, &name);
    let value = result?;
    unmounted?;
    removed?;
    Ok(value)
}

/// The body of [`probe_native_diff`], in `td`.
fn run_native_diff_probe(
    td: &Path,
    merged: &Path,
    userxattr: bool,
) -> std::result::Result<(bool, String), MountError> {
    let p = |s: &str| td.join(s);
    for d in ["l1/d", "l1/d1", "l2/d", "l3", "work", "merged"] {
        fs::create_dir_all(p(d)).map_err(|e| MountError::io("mkdir", &p(d), e))?;
    }
    let opaque = opaque_xattr_name(userxattr);
    rustix::fs::lsetxattr(p("l2/d"), opaque, b"y", XattrFlags::empty())
        .map_err(|e| MountError::io("set opaque xattr on", &p("l2/d"), e))?;
    let spec = OverlaySpec {
        lowers: vec![p("l2"), p("l1")],
        upper: Some(p("l3")),
        work: Some(p("work")),
        userxattr,
        ..OverlaySpec::default()
    };
    mount_overlay(&spec, merged)?;

    let f = merged.join("d/f");
    fs::write(&f, b"").map_err(|e| MountError::io("write", &f, e))?;
    if xattr_value(&p("l3/d"), opaque)?.as_deref() == Some(b"y") {
        return Ok((
            false,
            "the opaque flag is copied up with its directory (kernel older than 4.8)".into(),
        ));
    }
    let (from, to) = (merged.join("d1"), merged.join("d2"));
    match rustix::fs::rename(&from, &to) {
        Err(Errno::XDEV) => Ok((
            true,
            "renaming a lower directory fails with EXDEV: no redirects".into(),
        )),
        Err(e) => Err(MountError::io("rename lower directory", &from, e)),
        Ok(()) => match xattr_value(&p("l3/d2"), redirect_xattr_name(userxattr))? {
            Some(_) => Ok((
                false,
                "a renamed lower directory is recorded as a redirect (redirect_dir)".into(),
            )),
            None => Ok((true, "a renamed lower directory was copied whole".into())),
        },
    }
}

/// The value of xattr `name` on `path` (not following it), if set.
fn xattr_value(path: &Path, name: &str) -> std::result::Result<Option<Vec<u8>>, MountError> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA | Errno::NOTSUP) => Ok(None),
        Err(e) => Err(MountError::io("getxattr", path, e)),
    }
}

/// Removes `dir/name` and everything in it.
fn remove_tree(dir: &Path, name: &str) -> std::result::Result<(), MountError> {
    let parent = crate::Root::open(dir)?;
    crate::remove_all_at(parent.fd(), name.as_bytes(), name.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need_root;

    fn stat(p: &Path) -> Stat {
        rustix::fs::lstat(p).expect("lstat")
    }

    #[test]
    fn xattr_names() {
        assert_eq!(opaque_xattr_name(false), "trusted.overlay.opaque");
        assert_eq!(opaque_xattr_name(true), "user.overlay.opaque");
        assert_eq!(redirect_xattr_name(true), "user.overlay.redirect");
    }

    #[test]
    fn native_diff_verdicts() {
        let f = OverlayFeatures::default();
        assert!(defaults_allow_native_diff(&f).0);
        let r = defaults_allow_native_diff(&OverlayFeatures {
            redirect_dir: true,
            ..f
        });
        assert!(!r.0 && r.1.contains("redirect_dir"), "{r:?}");
        let m = defaults_allow_native_diff(&OverlayFeatures {
            metacopy: true,
            ..f
        });
        assert!(!m.0 && m.1.contains("metacopy"), "{m:?}");
    }

    #[test]
    fn whiteouts_are_char_devices_0_0() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"").expect("write");
        assert!(!is_whiteout(&stat(&dir.path().join("f"))));
        assert!(!is_whiteout(&stat(dir.path())));
        if !need_root("mknod of character devices") {
            return;
        }
        let mk = |name: &str, dev| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.path().join(name).as_path(),
                FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                dev,
            )
            .expect("mknod");
        };
        mk("wh", rustix::fs::makedev(0, 0));
        mk("null", rustix::fs::makedev(1, 3));
        assert!(is_whiteout(&stat(&dir.path().join("wh"))));
        assert!(!is_whiteout(&stat(&dir.path().join("null"))));
    }

    #[test]
    fn opaque_dirs_need_exactly_y() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            let p = dir.path().join(name);
            fs::create_dir(&p).expect("mkdir");
            fs::File::open(&p).expect("open")
        };
        // user.* xattrs work unprivileged on directories we own.
        let plain = open("plain");
        assert!(!is_opaque_dir(&plain, true).expect("plain"));
        let mut user_ok = true;
        for (name, value, want) in [
            ("y", &b"y"[..], true),
            ("x", b"x", false),
            ("long", b"yyyyyyyyyy", false),
        ] {
            let d = open(name);
            match rustix::fs::fsetxattr(&d, "user.overlay.opaque", value, XattrFlags::empty()) {
                Err(Errno::NOTSUP) => {
                    user_ok = false;
                    break;
                }
                r => r.expect("setxattr"),
            }
            assert_eq!(is_opaque_dir(&d, true).expect(name), want, "{name}");
            // The other namespace is not consulted.
            assert!(!is_opaque_dir(&d, false).expect(name));
        }
        assert!(
            user_ok,
            "backing filesystem of the temp dir has no user xattrs"
        );
        if !need_root("trusted.* xattrs") {
            return;
        }
        let t = open("trusted");
        rustix::fs::fsetxattr(&t, "trusted.overlay.opaque", b"y", XattrFlags::empty())
            .expect("setxattr");
        assert!(is_opaque_dir(&t, false).expect("trusted"));
        assert!(!is_opaque_dir(&t, true).expect("trusted"));
    }

    #[test]
    fn features_match_the_module_parameters() {
        if !need_root("overlay mounts (the lowerdir+ probe)") {
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let f = OverlayFeatures::probe(scratch.path()).expect("probe");
        let param = |n: &str| {
            fs::read_to_string(Path::new(PARAMS).join(n))
                .map(|s| s.trim() == "Y")
                .unwrap_or(false)
        };
        assert_eq!(f.redirect_dir, param("redirect_dir"));
        assert_eq!(f.metacopy, param("metacopy"));
        assert_eq!(f.index, param("index"));
        // The test machines run Linux 6.8+ in the initial user namespace.
        assert!(f.lowerdir_plus);
        assert!(!f.userxattr_needed);
        // Only a user namespace needs the userxattr test mount, but it
        // must work (and clean up) here too.
        assert!(userxattr_mount_works(scratch.path()).expect("userxattr mount"));
        assert_eq!(fs::read_dir(scratch.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn native_diff_probe_agrees_with_the_module_default() {
        if !need_root("overlay mounts and trusted.* xattrs") {
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let (ok, why) = probe_native_diff(scratch.path(), false).expect("probe");
        let f = OverlayFeatures::probe(scratch.path()).expect("features");
        // With redirect_dir off by default, the rename must fail with EXDEV.
        assert_eq!(ok, !f.redirect_dir, "{why}");
        if !f.redirect_dir {
            assert!(why.contains("EXDEV"), "{why}");
        }
        assert_eq!(
            native_diff_ok(&f, scratch.path()).expect("combined"),
            (ok, why)
        );
        // The probes cleaned up after themselves.
        assert_eq!(fs::read_dir(scratch.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn probe_with_a_missing_scratch_dir_names_it() {
        let e = probe_native_diff(Path::new("/nonexistent-scratch"), false)
            .expect_err("no scratch dir")
            .to_string();
        assert!(e.contains("/nonexistent-scratch"), "{e}");
    }
}
