//! Real overlay mounts through `strata_fs::mount`: deep `lowerdir+`
//! chains and the kernel's 500-lower limit, read-write mounts, the legacy
//! `mount(2)` path with and without short links (checked against the new
//! API), error texts, unmounting and mount-table queries.
//!
//! Everything here needs root (mounting). Without it each test prints a
//! loud SKIP and returns, except under `CI=true`, where it fails. The tests
//! take one lock: one of them changes the overlay module's default `index`
//! for a moment, which must not leak into the others' mount options.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use strata_fs::mount::{
    FsContext, MountApi, MountError, OverlaySpec, is_overlay_mount, mount_overlay, unmount,
};
use strata_fs::mountinfo::{self, MountEntry};
use strata_fs::overlay::{is_opaque_dir, is_whiteout};

/// Serializes the tests of this file (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

/// The lock plus the root check: `None` (after a SKIP line) when the test
/// cannot run here.
fn setup(what: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let reason = if !rustix::process::geteuid().is_root() {
        Some("not root")
    } else if !fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.ends_with("\toverlay")))
        .unwrap_or(false)
    {
        Some("no overlay filesystem in /proc/filesystems")
    } else {
        None
    };
    match reason {
        None => Some(guard),
        Some(r) => {
            assert!(
                !ci,
                "test needs overlay mounts ({what}) but {r} and CI=true"
            );
            eprintln!("SKIP: {r}, cannot test {what}");
            None
        }
    }
}

/// A mount made by a test, detached on drop so a failing assertion does
/// not leave it behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        // Already unmounted by the test is the usual case.
        let _ = unmount(&self.0, true);
    }
}

fn mount(spec: &OverlaySpec, target: &Path) -> Mounted {
    mount_overlay(spec, target).expect("mount_overlay");
    Mounted(target.to_path_buf())
}

fn mkdirs(base: &Path, names: &[&str]) {
    for n in names {
        fs::create_dir_all(base.join(n)).expect("mkdir");
    }
}

/// `n` lower dirs `<base>/<prefix>NNN`, each holding `fNNN` (its number)
/// and `same` (its number too, so the nearest must win).
fn layer_chain(base: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = base.join(format!("{prefix}{i:03}"));
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join(format!("f{i:03}")), i.to_string()).expect("write");
            fs::write(d.join("same"), i.to_string()).expect("write");
            d
        })
        .collect()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The mount-table entry for `target`.
fn entry(target: &Path) -> MountEntry {
    let target = target.canonicalize().expect("canonicalize");
    mountinfo::read_self()
        .expect("mountinfo")
        .into_iter()
        .rev()
        .find(|e| e.mount_point == target)
        .unwrap_or_else(|| panic!("{} is not in mountinfo", target.display()))
}

/// The lower dirs an entry names, from either `lowerdir+=` options (new
/// API) or one `lowerdir=a:b` (legacy).
fn lowers_of(e: &MountEntry) -> Vec<String> {
    match e.super_option("lowerdir") {
        Some(l) => l.split(':').map(str::to_owned).collect(),
        None => e
            .super_option_values("lowerdir+")
            .map(str::to_owned)
            .collect(),
    }
}

/// Every object under `dir`: relative path, kind and content or target,
/// sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn go(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let m = fs::symlink_metadata(&p).expect("lstat");
            if m.is_dir() {
                out.push(format!("{r} dir"));
                go(&p, &r, out);
            } else if m.file_type().is_symlink() {
                out.push(format!("{r} -> {:?}", fs::read_link(&p).expect("readlink")));
            } else {
                out.push(format!("{r} = {}", read(&p)));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, "", &mut out);
    out
}

#[test]
fn five_hundred_lowers_mount_read_only_through_lowerdir_plus() {
    let Some(_g) = setup("a 500-lower overlay") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let lowers = layer_chain(td.path(), "l", 500);
    let m = td.path().join("merged");
    mkdirs(td.path(), &["merged"]);
    let spec = OverlaySpec {
        lowers,
        readonly: true,
        api: MountApi::New,
        ..OverlaySpec::default()
    };
    let mounted = mount(&spec, &m);
    for i in 0..500 {
        assert_eq!(read(&m.join(format!("f{i:03}"))), i.to_string());
    }
    assert_eq!(read(&m.join("same")), "0", "the nearest lower wins");
    let e = entry(&m);
    assert_eq!(e.fstype, "overlay");
    assert_eq!(e.source, "overlay");
    assert_eq!(e.super_option_values("lowerdir+").count(), 500);
    assert!(e.options.split(',').any(|o| o == "ro"), "{}", e.options);
    assert!(is_overlay_mount(&m).expect("is_overlay_mount"));
    assert!(
        fs::write(m.join("new"), b"x").is_err(),
        "read-only mount took a write"
    );
    unmount(&m, false).expect("unmount");
    drop(mounted);
    assert!(!is_overlay_mount(&m).expect("is_overlay_mount"));
}

#[test]
fn lower_501_fails_with_the_kernel_limit_text() {
    let Some(_g) = setup("the kernel's lower limit") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let lowers = layer_chain(td.path(), "l", 501);
    let m = td.path().join("merged");
    mkdirs(td.path(), &["merged"]);
    let spec = OverlaySpec {
        lowers,
        readonly: true,
        ..OverlaySpec::default()
    };
    let e = mount_overlay(&spec, &m).expect_err("501 lowers must fail");
    let s = e.to_string();
    assert!(
        s.contains("too many lower directories, limit is 500"),
        "{s}"
    );
    assert!(s.contains("lowerdir+"), "{s}");
    assert!(s.contains(&format!("{}/l500", td.path().display())), "{s}");
    assert!(
        matches!(
            e,
            MountError::Kernel {
                step: "fsconfig",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!is_overlay_mount(&m).expect("is_overlay_mount"));
}

#[test]
fn kernel_refuses_a_single_lower_without_upper() {
    // Why `plan` refuses it: the kernel's only answer is a bare EINVAL (its
    // text goes to the kernel log).
    let Some(_g) = setup("a single-lower overlay") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    mkdirs(td.path(), &["l"]);
    let ctx = FsContext::open("overlay").expect("fsopen");
    ctx.set_string("lowerdir+", td.path().join("l").as_os_str())
        .expect("lowerdir+");
    let e = ctx.create().expect_err("one lower, no upper");
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::INVAL.raw_os_error())
    );
    let spec = OverlaySpec {
        lowers: vec![td.path().join("l")],
        readonly: true,
        ..OverlaySpec::default()
    };
    let s = mount_overlay(&spec, td.path())
        .expect_err("refused")
        .to_string();
    assert!(s.contains("at least 2 lower"), "{s}");
}

#[test]
fn read_write_overlay_writes_land_in_upper() {
    let Some(_g) = setup("a read-write overlay") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    mkdirs(td.path(), &["lower/dir", "upper", "work", "merged"]);
    fs::write(p("lower/a"), "lower-a").expect("write");
    fs::write(p("lower/c"), "lower-c").expect("write");
    fs::write(p("lower/dir/x"), "x").expect("write");
    let spec = OverlaySpec {
        lowers: vec![p("lower")],
        upper: Some(p("upper")),
        work: Some(p("work")),
        ..OverlaySpec::default()
    };
    let m = p("merged");
    let mounted = mount(&spec, &m);
    fs::write(m.join("b"), "new-b").expect("write b");
    fs::write(m.join("a"), "changed-a").expect("write a");
    fs::remove_file(m.join("c")).expect("remove c");
    fs::remove_dir_all(m.join("dir")).expect("remove dir");
    fs::create_dir(m.join("dir")).expect("mkdir dir");
    fs::write(m.join("dir/y"), "y").expect("write dir/y");
    assert_eq!(
        tree(&m),
        ["/a = changed-a", "/b = new-b", "/dir dir", "/dir/y = y"]
    );
    let e = entry(&m);
    assert_eq!(e.super_option("upperdir"), p("upper").to_str());
    assert_eq!(e.super_option("workdir"), p("work").to_str());
    assert!(e.options.split(',').any(|o| o == "rw"), "{}", e.options);
    unmount(&m, false).expect("unmount");
    drop(mounted);

    assert_eq!(read(&p("upper/a")), "changed-a");
    assert_eq!(read(&p("upper/b")), "new-b");
    assert_eq!(read(&p("upper/dir/y")), "y");
    assert!(!p("upper/dir/x").exists());
    let c = rustix::fs::lstat(p("upper/c")).expect("lstat whiteout");
    assert!(is_whiteout(&c), "upper/c is not a whiteout");
    let dir = fs::File::open(p("upper/dir")).expect("open upper/dir");
    assert!(is_opaque_dir(&dir, false).expect("opaque"));
    // The lower is untouched.
    assert_eq!(
        tree(&p("lower")),
        ["/a = lower-a", "/c = lower-c", "/dir dir", "/dir/x = x"]
    );
}

/// Sets the overlay module's default `index` for the life of the value.
struct IndexDefault(String);

impl IndexDefault {
    const PATH: &str = "/sys/module/overlay/parameters/index";

    fn set(v: &str) -> Self {
        let old = read(Path::new(Self::PATH)).trim().to_owned();
        fs::write(Self::PATH, v).expect("set index default");
        IndexDefault(old)
    }
}

impl Drop for IndexDefault {
    fn drop(&mut self) {
        fs::write(Self::PATH, &self.0).expect("restore index default");
    }
}

#[test]
fn index_off_shows_in_mountinfo() {
    let Some(_g) = setup("index=off in mountinfo") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    mkdirs(td.path(), &["l1", "l2", "u", "w", "m"]);
    let spec = OverlaySpec {
        lowers: vec![p("l1"), p("l2")],
        upper: Some(p("u")),
        work: Some(p("w")),
        ..OverlaySpec::default()
    };
    // The kernel shows `index` only when it differs from the module
    // default as it is when mountinfo is read, so make the default `on`
    // while mounting and reading.
    let (mounted, e) = {
        let _on = IndexDefault::set("Y");
        let mounted = mount(&spec, &p("m"));
        (mounted, entry(&p("m")))
    };
    assert_eq!(e.super_option("index"), Some("off"), "{}", e.super_options);
    // And index=off is in force: no index directory in the work dir.
    assert!(!p("w/index").exists());
    unmount(&p("m"), false).expect("unmount");
    drop(mounted);
}

#[test]
fn missing_lower_error_names_key_path_and_errno() {
    let Some(_g) = setup("mount errors") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    mkdirs(td.path(), &["l", "m"]);
    let missing = td.path().join("no/such/lower");
    let spec = OverlaySpec {
        lowers: vec![td.path().join("l"), missing.clone()],
        readonly: true,
        ..OverlaySpec::default()
    };
    let s = mount_overlay(&spec, &td.path().join("m"))
        .expect_err("missing lower")
        .to_string();
    // For a path that does not resolve, overlayfs logs its text ("failed
    // to resolve") to the kernel log, not the fs context; the error says
    // which key, which path and the errno.
    assert!(
        s.starts_with(&format!("fsconfig lowerdir+={missing:?}: ")),
        "{s}"
    );
    assert!(s.contains("No such file or directory"), "{s}");
    let legacy = OverlaySpec {
        api: MountApi::Legacy,
        ..spec
    };
    let s = mount_overlay(&legacy, &td.path().join("m"))
        .expect_err("missing lower")
        .to_string();
    assert!(s.starts_with("mount overlay on "), "{s}");
    assert!(s.contains(&missing.display().to_string()), "{s}");
    assert!(s.contains("No such file or directory"), "{s}");
}

#[test]
fn unknown_option_error_carries_the_kernel_message() {
    let Some(_g) = setup("mount errors") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    mkdirs(td.path(), &["l1", "l2", "m"]);
    let spec = OverlaySpec {
        lowers: vec![td.path().join("l1"), td.path().join("l2")],
        readonly: true,
        extra: vec![("no_such_option".into(), "1".into())],
        api: MountApi::New,
        ..OverlaySpec::default()
    };
    let s = mount_overlay(&spec, &td.path().join("m"))
        .expect_err("unknown option")
        .to_string();
    assert!(s.contains("fsconfig no_such_option=\"1\""), "{s}");
    assert!(
        s.contains("[kernel: e overlay: Unknown parameter 'no_such_option']"),
        "{s}"
    );
}

/// Three layers with an overriding file, a whiteout and an opaque dir.
fn rich_layers(base: &Path) -> Vec<PathBuf> {
    let p = |s: &str| base.join(s);
    mkdirs(base, &["top/opq", "mid/opq", "mid/keep", "bottom/gone"]);
    fs::write(p("top/t"), "top").expect("write");
    fs::write(p("mid/t"), "mid").expect("write");
    fs::write(p("mid/m"), "mid-only").expect("write");
    fs::write(p("mid/opq/hidden"), "hidden").expect("write");
    fs::write(p("mid/keep/k"), "k").expect("write");
    fs::write(p("bottom/b"), "bottom").expect("write");
    fs::write(p("bottom/gone/g"), "g").expect("write");
    std::os::unix::fs::symlink("t", p("bottom/link")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("top/gone").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mknod whiteout");
    rustix::fs::lsetxattr(
        p("top/opq").as_path(),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("opaque");
    vec![p("top"), p("mid"), p("bottom")]
}

#[test]
fn legacy_and_new_api_mount_the_same_tree() {
    let Some(_g) = setup("legacy vs new mount API") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    let lowers = rich_layers(td.path());
    mkdirs(td.path(), &["m1", "m2", "u1", "w1", "u2", "w2", "m3", "m4"]);
    let want = [
        "/b = bottom",
        "/keep dir",
        "/keep/k = k",
        "/link -> \"t\"",
        "/m = mid-only",
        "/opq dir",
        "/t = top",
    ];

    let ro = |api| OverlaySpec {
        lowers: lowers.clone(),
        readonly: true,
        api,
        ..OverlaySpec::default()
    };
    let new = mount(&ro(MountApi::New), &p("m1"));
    let old = mount(&ro(MountApi::Legacy), &p("m2"));
    assert_eq!(tree(&p("m1")), want);
    assert_eq!(tree(&p("m2")), want);
    let (e1, e2) = (entry(&p("m1")), entry(&p("m2")));
    assert!(e1.super_option("lowerdir").is_none(), "new API: lowerdir+");
    assert!(e2.super_option("lowerdir").is_some(), "legacy: lowerdir");
    assert_eq!(lowers_of(&e1), lowers_of(&e2));
    assert_eq!(
        lowers_of(&e1),
        lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
    );
    for e in [&e1, &e2] {
        assert_eq!(
            (e.fstype.as_str(), e.source.as_str()),
            ("overlay", "overlay")
        );
        assert_eq!(e.super_option("ro"), Some(""));
        assert!(e.options.split(',').any(|o| o == "ro"));
    }
    drop((new, old));

    let rw = |api, u: &str, w: &str| OverlaySpec {
        lowers: lowers.clone(),
        upper: Some(p(u)),
        work: Some(p(w)),
        api,
        ..OverlaySpec::default()
    };
    let new = mount(&rw(MountApi::New, "u1", "w1"), &p("m3"));
    let old = mount(&rw(MountApi::Legacy, "u2", "w2"), &p("m4"));
    for m in ["m3", "m4"] {
        assert_eq!(tree(&p(m)), want);
        fs::write(p(m).join("t"), "written").expect("write");
    }
    let (e3, e4) = (entry(&p("m3")), entry(&p("m4")));
    assert_eq!(lowers_of(&e3), lowers_of(&e4));
    for (e, u) in [(&e3, "u1"), (&e4, "u2")] {
        assert_eq!(e.super_option("upperdir"), p(u).to_str());
        assert!(e.options.split(',').any(|o| o == "rw"));
    }
    unmount(&p("m3"), false).expect("unmount new");
    unmount(&p("m4"), false).expect("unmount legacy");
    drop((new, old));
    assert_eq!(tree(&p("u1")), ["/t = written"]);
    assert_eq!(tree(&p("u2")), ["/t = written"]);
}

#[test]
fn legacy_long_options_go_through_short_links() {
    let Some(_g) = setup("legacy mounts with short links") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    // ~75-byte paths: 150 of them need ~11 KiB of options, far beyond a
    // page; as 26-character names they fit.
    let long = "x".repeat(60);
    let lowers = layer_chain(td.path(), &long, 160);
    mkdirs(td.path(), &["links", "m", "u", "w"]);
    let cwd = std::env::current_dir().expect("cwd");
    let spec = |n: usize, link_dir: Option<PathBuf>| OverlaySpec {
        lowers: lowers[..n].to_vec(),
        readonly: true,
        api: MountApi::Legacy,
        link_dir,
        ..OverlaySpec::default()
    };

    let e = mount_overlay(&spec(150, None), &p("m")).expect_err("too long");
    assert!(
        matches!(
            e,
            MountError::DataTooLong {
                shortened: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("give a short-link directory"), "{e}");

    let mounted = mount(&spec(150, Some(p("links"))), &p("m"));
    for i in 0..150 {
        assert_eq!(read(&p("m").join(format!("f{i:03}"))), i.to_string());
    }
    assert_eq!(read(&p("m").join("same")), "0");
    let e = entry(&p("m"));
    let names = lowers_of(&e);
    assert_eq!(names.len(), 150);
    assert!(
        names
            .iter()
            .all(|n| n.len() == strata_fs::mount::SHORT_NAME_LEN && !n.contains('/')),
        "{names:?}"
    );
    // The links were only needed while mounting, and the process's
    // working directory never moved.
    assert_eq!(fs::read_dir(p("links")).expect("readdir").count(), 0);
    assert_eq!(std::env::current_dir().expect("cwd"), cwd);
    unmount(&p("m"), false).expect("unmount");
    drop(mounted);

    // 160 short names are still more than a page.
    let e = mount_overlay(&spec(160, Some(p("links"))), &p("m")).expect_err("too long");
    assert!(
        matches!(
            e,
            MountError::DataTooLong {
                shortened: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fs::read_dir(p("links")).expect("readdir").count(), 0);

    // Read-write: upper and work go through links too.
    let rw = OverlaySpec {
        upper: Some(p("u")),
        work: Some(p("w")),
        readonly: false,
        ..spec(120, Some(p("links")))
    };
    let mounted = mount(&rw, &p("m"));
    fs::write(p("m/new"), "n").expect("write");
    assert_eq!(read(&p("m/same")), "0");
    unmount(&p("m"), false).expect("unmount");
    drop(mounted);
    assert_eq!(tree(&p("u")), ["/new = n"]);
    assert_eq!(fs::read_dir(p("links")).expect("readdir").count(), 0);
}

#[test]
fn new_api_long_path_goes_through_a_short_link() {
    let Some(_g) = setup("new-API mounts with short links") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    let deep = p(&format!(
        "{}/{}/{}",
        "a".repeat(100),
        "b".repeat(100),
        "c".repeat(100)
    ));
    fs::create_dir_all(&deep).expect("mkdir");
    fs::write(deep.join("deep"), "deep").expect("write");
    mkdirs(td.path(), &["near", "links", "m"]);
    fs::write(p("near/near"), "near").expect("write");
    let spec = |link_dir| OverlaySpec {
        lowers: vec![p("near"), deep.clone()],
        readonly: true,
        api: MountApi::New,
        link_dir,
        ..OverlaySpec::default()
    };
    let e = mount_overlay(&spec(None), &p("m")).expect_err("path too long for fsconfig");
    assert!(
        matches!(&e, MountError::ValueTooLong { path, .. } if *path == deep),
        "{e:?}"
    );
    let mounted = mount(&spec(Some(p("links"))), &p("m"));
    assert_eq!(tree(&p("m")), ["/deep = deep", "/near = near"]);
    assert_eq!(fs::read_dir(p("links")).expect("readdir").count(), 0);
    unmount(&p("m"), false).expect("unmount");
    drop(mounted);
    // Auto without a link dir: mount(2) takes the long path as it is.
    let auto = OverlaySpec {
        api: MountApi::Auto,
        ..spec(None)
    };
    let mounted = mount(&auto, &p("m"));
    assert_eq!(tree(&p("m")), ["/deep = deep", "/near = near"]);
    assert_eq!(lowers_of(&entry(&p("m")))[1], deep.display().to_string());
    unmount(&p("m"), false).expect("unmount");
    drop(mounted);
}

#[test]
fn unmount_and_is_overlay_mount() {
    let Some(_g) = setup("unmount") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    mkdirs(td.path(), &["l1/sub", "l2", "m", "plain"]);
    let spec = OverlaySpec {
        lowers: vec![p("l1"), p("l2")],
        readonly: true,
        ..OverlaySpec::default()
    };
    let mounted = mount(&spec, &p("m"));
    assert!(is_overlay_mount(&p("m")).expect("mount root"));
    assert!(!is_overlay_mount(&p("m/sub")).expect("dir inside"));
    assert!(!is_overlay_mount(&p("plain")).expect("plain dir"));
    assert!(!is_overlay_mount(td.path()).expect("parent"));
    unmount(&p("m"), true).expect("detach");
    drop(mounted);
    assert!(!is_overlay_mount(&p("m")).expect("after unmount"));
    let e = unmount(&p("m"), false).expect_err("not mounted");
    assert!(e.is_not_mounted(), "{e:?}");
    assert!(e.to_string().contains("not a mount point"), "{e}");
    let e = unmount(&p("missing"), false).expect_err("missing");
    assert!(!e.is_not_mounted());
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::NOENT.raw_os_error())
    );
    assert!(is_overlay_mount(&p("missing")).is_err());
}

#[test]
fn mounts_under_lists_nested_overlays_deepest_first() {
    let Some(_g) = setup("nested mounts") else {
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| td.path().join(s);
    mkdirs(td.path(), &["l1", "l2", "u", "w", "m", "i1", "i2"]);
    let outer = mount(
        &OverlaySpec {
            lowers: vec![p("l1"), p("l2")],
            upper: Some(p("u")),
            work: Some(p("w")),
            ..OverlaySpec::default()
        },
        &p("m"),
    );
    fs::create_dir(p("m/inner")).expect("mkdir inside the overlay");
    let inner = mount(
        &OverlaySpec {
            lowers: vec![p("i1"), p("i2")],
            readonly: true,
            ..OverlaySpec::default()
        },
        &p("m/inner"),
    );
    let all = mountinfo::read_self().expect("mountinfo");
    let base = td.path().canonicalize().expect("canonicalize");
    let under: Vec<PathBuf> = mountinfo::mounts_under(&all, &base)
        .iter()
        .map(|e| e.mount_point.clone())
        .collect();
    assert_eq!(under, [base.join("m/inner"), base.join("m")]);
    for m in &under {
        unmount(m, false).expect("unmount in order");
    }
    drop((inner, outer));
    let all = mountinfo::read_self().expect("mountinfo");
    assert!(mountinfo::mounts_under(&all, &base).is_empty());
}
