//! Overlay-specific behaviour beyond the shared suite: the kernel's stack
//! limit, the read-only rule for parents, whiteouts kept in overlay form,
//! and native diff reading only the layer's own changes.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::FileTypeExt;

use strata_conformance::cases::TmpHome;
use strata_conformance::require_root;
use strata_conformance::tarbuild::TarBuilder;
use strata_driver::{CreateOpts, Driver, LayerId};

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn open() -> (TmpHome, Box<dyn Driver>) {
    let t = TmpHome::new();
    let d = strata_driver::open(Some("overlay"), &t.path().join("home"), &[]).unwrap();
    (t, d)
}

#[test]
fn chain_of_500_mounts_and_501_is_refused() {
    if !require_root("chain_of_500_mounts_and_501_is_refused") {
        return;
    }
    let (_t, d) = open();
    let top = strata_conformance::cases::import_chain(d.as_ref(), 500);
    let p = d.get(&top, "").unwrap();
    for i in [0, 1, 250, 498, 499] {
        assert_eq!(
            fs::read(p.join(format!("f{i:03}"))).unwrap(),
            format!("layer {i}").as_bytes()
        );
    }
    assert_eq!(fs::read_dir(&p).unwrap().count(), 500);
    d.put(&top).unwrap();
    let e = d
        .create(&id("too-deep"), Some(&top), &CreateOpts::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("500") && e.contains("too-deep"), "{e}");
    assert!(!d.exists(&id("too-deep")));
}

#[test]
fn whiteouts_are_stored_in_overlay_form_and_parents_mount_read_only() {
    if !require_root("whiteouts_are_stored_in_overlay_form_and_parents_mount_read_only") {
        return;
    }
    let (_t, d) = open();
    let base = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/x", 0o644, b"x")
        .file("gone", 0o644, b"g")
        .build();
    d.import(&id("base"), None, &mut &base[..]).unwrap();
    let top = TarBuilder::new()
        .whiteout("gone")
        .dir("d", 0o755)
        .opaque("d")
        .file("d/y", 0o644, b"y")
        .build();
    d.import(&id("top"), Some(&id("base")), &mut &top[..])
        .unwrap();
    let own = d.home().join("top/diff");
    let wh = fs::symlink_metadata(own.join("gone")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "a deletion is a 0/0 char device in diff/"
    );
    assert_eq!(
        strata_conformance::manifest::xattrs(&own.join("d")),
        [("trusted.overlay.opaque".to_string(), b"y".to_vec())]
    );

    // An -init style read-write layer that got a child mounts read-only.
    d.create_read_write(&id("init"), Some(&id("top")), &CreateOpts::default())
        .unwrap();
    d.create_read_write(&id("ctr"), Some(&id("init")), &CreateOpts::default())
        .unwrap();
    let p = d.get(&id("init"), "").unwrap();
    assert!(
        fs::write(p.join("new"), b"x").is_err(),
        "a parent is never writable"
    );
    d.put(&id("init")).unwrap();
    let p = d.get(&id("ctr"), "").unwrap();
    fs::write(p.join("new"), b"x").unwrap();
    assert!(!p.join("gone").exists());
    assert_eq!(fs::read_dir(p.join("d")).unwrap().count(), 1);
    d.put(&id("ctr")).unwrap();
    assert!(
        d.home().join("ctr/diff/new").exists(),
        "writes land in the layer's own diff/"
    );
    let changes: Vec<String> = d
        .changes(&id("ctr"), Some(&id("init")))
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind as u8, String::from_utf8_lossy(&c.path)))
        .collect();
    assert_eq!(changes, ["1 /new"]);
}

/// Loop devices whose backing file lies under `dir` (sysfs).
fn loops_backed_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file"))
            && b.trim().starts_with(&*dir.to_string_lossy())
        {
            out.push(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                b.trim()
            ));
        }
    }
    out
}

#[test]
fn size_limited_layer_refuses_writes_past_its_limit() {
    if !require_root("size_limited_layer_refuses_writes_past_its_limit") {
        return;
    }
    let (t, d) = open();
    let base = TarBuilder::new()
        .file("etc/os-release", 0o644, b"ID=strata\n")
        .build();
    d.import(&id("base"), None, &mut &base[..]).unwrap();
    let mut opts = CreateOpts::default();
    opts.storage_opt.insert("size".into(), "50M".into());
    let e = d
        .create(&id("ro-sized"), Some(&id("base")), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("size") && e.contains("read-write"), "{e}");
    d.create_read_write(&id("ctr"), Some(&id("base")), &opts)
        .unwrap();
    let p = d.get(&id("ctr"), "").unwrap();
    assert_eq!(fs::read(p.join("etc/os-release")).unwrap(), b"ID=strata\n");
    // moby's DriverTestSetQuota: 25M fits, 50M more does not.
    let chunk = vec![7u8; 1 << 20];
    let write = |name: &str, mib: usize| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(p.join(name))?;
        for _ in 0..mib {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    };
    write("25m", 25).unwrap();
    let err = write("50m", 50).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(28) | Some(122)),
        "ENOSPC or EDQUOT, got {err}"
    );
    d.put(&id("ctr")).unwrap();
    let meta = d.metadata(&id("ctr")).unwrap();
    assert!(meta["UpperDir"].ends_with("ctr/diff"), "{meta:?}");
    assert!(
        !loops_backed_under(t.path()).is_empty(),
        "the sandbox stays mounted while the layer exists"
    );
    // A cleanup (daemon shutdown) releases it; the next get brings it back.
    d.cleanup().unwrap();
    assert!(
        loops_backed_under(t.path()).is_empty(),
        "{:?}",
        loops_backed_under(t.path())
    );
    let p = d.get(&id("ctr"), "").unwrap();
    assert_eq!(fs::metadata(p.join("25m")).unwrap().len(), 25 << 20);
    d.put(&id("ctr")).unwrap();
    d.remove(&id("ctr")).unwrap();
    assert!(!d.exists(&id("ctr")));
    assert!(
        loops_backed_under(t.path()).is_empty(),
        "{:?}",
        loops_backed_under(t.path())
    );
}

/// True when something is mounted exactly at `p`.
fn mounted_at(p: &std::path::Path) -> bool {
    let mounts = strata_fs::mountinfo::read_self().unwrap();
    mounts.iter().any(|m| m.mount_point == p)
}

#[test]
fn concurrent_get_put_keep_the_count_exact() {
    if !require_root("concurrent_get_put_keep_the_count_exact") {
        return;
    }
    let (_t, d) = open();
    let base = TarBuilder::new().file("f", 0o644, b"x").build();
    d.import(&id("base"), None, &mut &base[..]).unwrap();
    d.create_read_write(&id("ctr"), Some(&id("base")), &CreateOpts::default())
        .unwrap();
    let merged = d.home().join("ctr/merged");
    let d: &dyn Driver = d.as_ref();
    // One reference held throughout, so the view must never go away while
    // the threads come and go.
    let held = d.get(&id("ctr"), "").unwrap();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                for _ in 0..40 {
                    let p = d.get(&id("ctr"), "").unwrap();
                    assert_eq!(fs::read(p.join("f")).unwrap(), b"x");
                    d.put(&id("ctr")).unwrap();
                }
            });
        }
    });
    assert!(mounted_at(&merged), "still held once");
    assert_eq!(fs::read(held.join("f")).unwrap(), b"x");
    d.put(&id("ctr")).unwrap();
    assert!(!mounted_at(&merged), "the last put unmounts");
    d.put(&id("ctr")).unwrap();
    assert!(!mounted_at(&merged));
}

#[test]
fn overlayfs_as_backing_filesystem_is_refused_by_name() {
    if !require_root("overlayfs_as_backing_filesystem_is_refused_by_name") {
        return;
    }
    let t = TmpHome::new();
    for d in ["lower", "upper", "work", "merged"] {
        fs::create_dir(t.path().join(d)).unwrap();
    }
    let spec = strata_fs::mount::OverlaySpec {
        lowers: vec![t.path().join("lower")],
        upper: Some(t.path().join("upper")),
        work: Some(t.path().join("work")),
        ..Default::default()
    };
    strata_fs::mount::mount_overlay(&spec, &t.path().join("merged")).unwrap();
    let home = t.path().join("merged/home");
    let Err(e) = strata_driver::open(Some("overlay"), &home, &[]) else {
        panic!("overlay opened on an overlayfs home");
    };
    let e = e.to_string();
    assert!(e.contains("overlayfs") && e.contains("overlay"), "{e}");
    // Left to choose, Strata falls back to vfs and says why.
    let d = strata_driver::open(None, &home, &[]).unwrap();
    assert_eq!(d.name(), "vfs");
    let status = d.status();
    let why = status
        .iter()
        .find(|(k, _)| k == "Overlay Unavailable")
        .map(|(_, v)| v.clone());
    assert!(why.is_some_and(|w| w.contains("overlayfs")), "{status:?}");
    assert!(
        status.contains(&("Backing Filesystem".to_string(), "overlayfs".to_string())),
        "{status:?}"
    );
}
