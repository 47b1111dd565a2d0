//! The conformance cases, one function per point of
//! ../shared/docs/conformance.md (the `pNN_` prefix is the point number).
//! Each opens its driver on a fresh temporary home through the factory and
//! talks to it only through the `Driver` trait.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use strata_driver::{ChangeKind, CreateOpts, Driver, DriverError, LayerId};
use strata_tar::{EntryKind, Header, TarReader};

use crate::manifest::{ManifestOptions, manifest};
use crate::tarbuild::{EPOCH, TarBuilder};
use crate::{Factory, require_root};

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn opts() -> CreateOpts {
    CreateOpts::default()
}

/// A temp dir that unmounts whatever is still mounted below it before it
/// is removed (a test may end with a layer mounted, or with a size-limited
/// layer's sandbox, which would otherwise outlive the test).
pub struct TmpHome(tempfile::TempDir);

impl TmpHome {
    /// A fresh temp dir on /var/tmp (a disk filesystem, where /tmp may be
    /// a tmpfs).
    pub fn new() -> TmpHome {
        TmpHome(
            tempfile::Builder::new()
                .prefix("strata-conf")
                .tempdir_in("/var/tmp")
                .unwrap(),
        )
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for TmpHome {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TmpHome {
    fn drop(&mut self) {
        if let Ok(mounts) = strata_fs::mountinfo::read_self() {
            for m in strata_fs::mountinfo::mounts_under(&mounts, self.0.path()) {
                let _ = strata_fs::mount::unmount(&m.mount_point, true);
            }
        }
    }
}

/// A fresh home (and the temp dir that holds it, with room for sentinels
/// beside it).
fn setup(factory: Factory) -> (TmpHome, Box<dyn Driver>) {
    let tmp = TmpHome::new();
    let d = factory(&tmp.path().join("home"));
    (tmp, d)
}

/// Imports `tar` as layer `name` the way Docker does: Create, then ApplyDiff.
fn layer(d: &dyn Driver, name: &str, parent: Option<&str>, tar: &[u8]) -> LayerId {
    let i = id(name);
    let p = parent.map(id);
    d.create(&i, p.as_ref(), &opts()).unwrap();
    d.apply_diff(&i, p.as_ref(), &mut &tar[..]).unwrap();
    i
}

/// The manifest of a layer's merged view.
fn view(d: &dyn Driver, i: &LayerId, o: &ManifestOptions) -> String {
    let p = d.get(i, "").unwrap();
    let m = manifest(&p, o);
    d.put(i).unwrap();
    m
}

fn no_dir_mtime() -> ManifestOptions {
    ManifestOptions {
        no_dir_mtime: true,
        ..Default::default()
    }
}

/// The entries of a tar: (header, data).
pub fn tar_entries(tar: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = r.read_data(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        out.push((h, data));
    }
    out
}

fn names(entries: &[(Header, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(h, _)| String::from_utf8_lossy(&h.path).into_owned())
        .collect()
}

/// A rich base layer: odd modes and owners, every file type, xattrs.
fn rich_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("a subdir", 0o1705)
        .owned(1, 2)
        .file("a file", 0o4222, b"setuid file")
        .file("a subdir/data", 0o640, b"some data")
        .owned(1000, 1000)
        .xattr("user.note", b"hello")
        .xattr(
            "security.capability",
            &[
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
        .hardlink("a subdir/link", "a subdir/data")
        .symlink("abs", "/a subdir/data")
        .symlink("rel", "a subdir")
        .node("null", EntryKind::CharDevice, 0o666, 1, 3)
        .node("loop9", EntryKind::BlockDevice, 0o660, 7, 9)
        .node("fifo", EntryKind::Fifo, 0o600, 0, 0)
        .dir("gs", 0o2775)
        .build()
}

pub fn p01_create_empty(factory: Factory) {
    let (_t, d) = setup(factory);
    let base = id("base");
    assert!(!d.exists(&base));
    d.create(&base, None, &opts()).unwrap();
    assert!(d.exists(&base));
    let p = d.get(&base, "").unwrap();
    assert!(p.is_absolute(), "{}", p.display());
    let md = fs::metadata(&p).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o755);
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    assert_eq!(
        (md.uid(), md.gid()),
        me,
        "owned by the driver's user (root: 0:0)"
    );
    assert_eq!(fs::read_dir(&p).unwrap().count(), 0, "a new layer is empty");
    d.put(&base).unwrap();
    d.remove(&base).unwrap();
    assert!(!d.exists(&base));
}

pub fn p02_create_snapshot_shows_parent(factory: Factory) {
    if !require_root("p02_create_snapshot_shows_parent") {
        return;
    }
    let (_t, d) = setup(factory);
    let base = layer(d.as_ref(), "base", None, &rich_tar());
    let child = id("child");
    d.create(&child, Some(&base), &opts()).unwrap();
    let full = ManifestOptions::default();
    let want = view(d.as_ref(), &base, &full);
    assert!(want.contains("a file type=f mode=4222"), "{want}");
    assert!(
        want.contains("a subdir type=d mode=1705 uid=1 gid=2"),
        "{want}"
    );
    assert!(want.contains("hardlink=a subdir/data"), "{want}");
    assert!(want.contains("xattr.security.capability="), "{want}");
    assert!(
        want.contains("null type=c mode=666 uid=0 gid=0 rdev=1,3"),
        "{want}"
    );
    assert_eq!(view(d.as_ref(), &child, &full), want);
    let rw = id("rw");
    d.create_read_write(&rw, Some(&child), &opts()).unwrap();
    assert_eq!(view(d.as_ref(), &rw, &full), want);
}

pub fn p03_missing_parent_and_duplicate(factory: Factory) {
    let (_t, d) = setup(factory);
    let e = d
        .create(&id("orphan"), Some(&id("nope")), &opts())
        .unwrap_err();
    assert!(matches!(e, DriverError::MissingParent { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(!d.exists(&id("orphan")));
    assert!(d.list().unwrap().is_empty(), "nothing left behind");
    let e = d
        .import(
            &id("orphan"),
            Some(&id("nope")),
            &mut &TarBuilder::new().build()[..],
        )
        .unwrap_err();
    assert!(matches!(e, DriverError::MissingParent { .. }), "{e}");

    let a = layer(
        d.as_ref(),
        "a",
        None,
        &TarBuilder::new().file("keep", 0o644, b"1").build(),
    );
    let e = d.create(&a, None, &opts()).unwrap_err();
    assert!(matches!(e, DriverError::AlreadyExists { .. }), "{e}");
    let e = d
        .import(&a, None, &mut &TarBuilder::new().build()[..])
        .unwrap_err();
    assert!(matches!(e, DriverError::AlreadyExists { .. }), "{e}");
    let p = d.get(&a, "").unwrap();
    assert_eq!(
        fs::read(p.join("keep")).unwrap(),
        b"1",
        "the existing layer is untouched"
    );
    d.put(&a).unwrap();
}

pub fn p04_storage_options(factory: Factory) {
    let (_t, d) = setup(factory);
    let mut sized = opts();
    sized.storage_opt.insert("size".into(), "20M".into());
    let e = d.create(&id("ro"), None, &sized).unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
    assert!(!d.exists(&id("ro")));
    match d.create_read_write(&id("rw"), None, &sized) {
        Ok(()) => assert!(d.exists(&id("rw"))),
        Err(e) => {
            assert!(e.to_string().contains("not supported"), "{e}");
            assert!(!d.exists(&id("rw")));
        }
    }
    let mut bad = opts();
    bad.storage_opt.insert("frobnicate".into(), "1".into());
    let e = d.create_read_write(&id("rw2"), None, &bad).unwrap_err();
    assert!(e.to_string().contains("frobnicate"), "{e}");
    let mut bad = opts();
    bad.storage_opt.insert("size".into(), "lots".into());
    let e = d.create_read_write(&id("rw3"), None, &bad).unwrap_err();
    assert!(e.to_string().contains("lots"), "{e}");
    assert!(!d.exists(&id("rw2")) && !d.exists(&id("rw3")));
}

pub fn p05_remove_semantics(factory: Factory) {
    let (_t, d) = setup(factory);
    d.remove(&id("never-existed")).unwrap();
    assert!(
        LayerId::new("").is_err(),
        "an empty id is refused at the edge"
    );
    assert!(LayerId::new("../x").is_err());
    let base = layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new().file("f", 0o644, b"x").build(),
    );
    d.create(&id("child"), Some(&base), &opts()).unwrap();
    let e = d.remove(&base).unwrap_err();
    assert!(matches!(e, DriverError::HasChildren { .. }), "{e}");
    assert!(e.to_string().contains("child"), "{e}");
    assert!(d.exists(&base));
    d.remove(&id("child")).unwrap();
    d.remove(&base).unwrap();
    assert!(!d.exists(&base));
    assert!(d.list().unwrap().is_empty());
}

/// Imports a chain of `n` layers, layer `i` (id `lNNN`) adding the file
/// `fNNN` holding `layer i`; returns the top.
pub fn import_chain(d: &dyn Driver, n: usize) -> LayerId {
    let mut parent: Option<LayerId> = None;
    for i in 0..n {
        let tar = TarBuilder::new()
            .file(&format!("f{i:03}"), 0o644, format!("layer {i}").as_bytes())
            .build();
        let l = id(&format!("l{i:03}"));
        d.import(&l, parent.as_ref(), &mut &tar[..]).unwrap();
        parent = Some(l);
    }
    parent.expect("a chain of at least one layer")
}

pub fn p06_deep_chain_128(factory: Factory) {
    let (_t, d) = setup(factory);
    let top = import_chain(d.as_ref(), 128);
    let p = d.get(&top, "").unwrap();
    for i in 0..128 {
        assert_eq!(
            fs::read(p.join(format!("f{i:03}"))).unwrap(),
            format!("layer {i}").as_bytes()
        );
    }
    d.put(&top).unwrap();
}

pub fn p07_get_put_refcount(factory: Factory) {
    let (_t, d) = setup(factory);
    let base = layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new().file("f", 0o644, b"x").build(),
    );
    let rw = id("rw");
    d.create_read_write(&rw, Some(&base), &opts()).unwrap();
    let p1 = d.get(&rw, "").unwrap();
    let p2 = d.get(&rw, "").unwrap();
    assert_eq!(p1, p2);
    assert!(p1.is_absolute());
    d.put(&rw).unwrap();
    assert_eq!(
        fs::read(p1.join("f")).unwrap(),
        b"x",
        "still usable after one of two puts"
    );
    d.put(&rw).unwrap();
    d.put(&rw).unwrap(); // an extra put is harmless
    assert!(d.exists(&rw));
    let p3 = d.get(&rw, "").unwrap();
    assert_eq!(fs::read(p3.join("f")).unwrap(), b"x");
    d.put(&rw).unwrap();
}

pub fn p08_rw_writes_do_not_leak(factory: Factory) {
    let (_t, d) = setup(factory);
    let base = layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new().file("f", 0o644, b"base").build(),
    );
    let (a, b) = (id("a"), id("b"));
    d.create_read_write(&a, Some(&base), &opts()).unwrap();
    d.create_read_write(&b, Some(&base), &opts()).unwrap();
    let before = view(d.as_ref(), &base, &ManifestOptions::default());
    let pa = d.get(&a, "").unwrap();
    fs::write(pa.join("f"), b"changed in a").unwrap();
    fs::write(pa.join("new"), b"new in a").unwrap();
    d.put(&a).unwrap();
    assert_eq!(view(d.as_ref(), &base, &ManifestOptions::default()), before);
    let pb = d.get(&b, "").unwrap();
    assert_eq!(fs::read(pb.join("f")).unwrap(), b"base");
    assert!(!pb.join("new").exists());
    d.put(&b).unwrap();
}

pub fn p09_recovers_after_crash(factory: Factory) {
    let tmp = TmpHome::new();
    let home = tmp.path().join("home");
    {
        let d = factory(&home);
        layer(
            d.as_ref(),
            "base",
            None,
            &TarBuilder::new().file("f", 0o644, b"x").build(),
        );
        let rw = id("rw");
        d.create_read_write(&rw, Some(&id("base")), &opts())
            .unwrap();
        // A crash: a reference taken and never dropped, an import and a
        // removal interrupted half-way.
        d.get(&rw, "").unwrap();
        fs::create_dir_all(home.join("staging/0123456789abcdef/diff/half")).unwrap();
        fs::create_dir_all(home.join("gone-removing/diff/sub")).unwrap();
        fs::write(home.join("gone-removing/diff/sub/f"), b"x").unwrap();
    }
    let d = factory(&home);
    assert!(
        !home.join("staging/0123456789abcdef").exists(),
        "staging swept at open"
    );
    assert!(
        !home.join("gone-removing").exists(),
        "interrupted removal finished at open"
    );
    let rw = id("rw");
    assert!(d.exists(&rw) && d.exists(&id("base")));
    let p = d.get(&rw, "").unwrap();
    assert_eq!(fs::read(p.join("f")).unwrap(), b"x");
    d.put(&rw).unwrap();
    d.remove(&rw).unwrap();
    assert!(!d.exists(&rw));
}

pub fn p10_cleanup_sweeps(factory: Factory) {
    let (t, d) = setup(factory);
    let home = t.path().join("home");
    layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new().file("f", 0o644, b"x").build(),
    );
    fs::create_dir_all(home.join("old-removing/diff")).unwrap();
    fs::create_dir_all(home.join("staging/feedfacefeedface/diff")).unwrap();
    let r = d.cleanup().unwrap();
    assert!(
        r.removals_finished.contains(&"old-removing".to_string()),
        "{r:?}"
    );
    assert!(
        r.staging_removed
            .contains(&"staging/feedfacefeedface".to_string()),
        "{r:?}"
    );
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(!home.join("old-removing").exists());
    assert!(d.exists(&id("base")), "cleanup keeps complete layers");
}

/// A parent and a child that modifies, adds and deletes.
fn parent_and_child(d: &dyn Driver) -> (LayerId, LayerId) {
    let base = layer(
        d,
        "base",
        None,
        &TarBuilder::new()
            .file("a", 0o644, b"aaaa")
            .file("b", 0o644, b"bbbb")
            .dir("d", 0o755)
            .file("d/e", 0o644, b"eeee")
            .dir("keep", 0o755)
            .file("keep/k", 0o644, b"k")
            .build(),
    );
    let child = layer(
        d,
        "child",
        Some("base"),
        &TarBuilder::new()
            .file("a", 0o644, b"AAAAAAAA")
            .whiteout("b")
            .file("c", 0o600, b"cccc")
            .whiteout("d")
            .build(),
    );
    (base, child)
}

pub fn p11_diff_full_and_changes_only(factory: Factory) {
    let (_t, d) = setup(factory);
    let (base, child) = parent_and_child(d.as_ref());
    let mut full = Vec::new();
    d.diff(&child, None, &mut full).unwrap();
    let mut n = names(&tar_entries(&full));
    n.sort();
    assert_eq!(n, ["a", "c", "keep/", "keep/k"]);

    let mut delta = Vec::new();
    d.diff(&child, Some(&base), &mut delta).unwrap();
    let entries = tar_entries(&delta);
    let mut n = names(&entries);
    n.sort();
    assert_eq!(n, [".wh.b", ".wh.d", "a", "c"]);
    for (h, data) in &entries {
        if h.path.starts_with(b".wh.") {
            assert_eq!(h.kind, EntryKind::Regular);
            assert_eq!(h.mode, 0o600);
            assert!(data.is_empty() && h.size == 0);
        }
        assert!(!h.xattrs.iter().any(|(k, _)| k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.")));
        assert!(
            !(h.kind == EntryKind::CharDevice && h.dev_major == 0 && h.dev_minor == 0),
            "no overlay whiteout devices leak"
        );
    }
    let a = entries.iter().find(|(h, _)| h.path == b"a").unwrap();
    assert_eq!(a.1, b"AAAAAAAA");
    // The layer is still usable afterwards.
    let p = d.get(&child, "").unwrap();
    assert_eq!(fs::read(p.join("a")).unwrap(), b"AAAAAAAA");
    d.put(&child).unwrap();
}

pub fn p12_diff_apply_round_trip(factory: Factory) {
    let (_t, d) = setup(factory);
    let (base, upper) = parent_and_child(d.as_ref());
    // Also change upper through its view, as a container would.
    let rw = id("upper-rw");
    d.create_read_write(&rw, Some(&upper), &opts()).unwrap();
    let mut delta = Vec::new();
    d.diff(&upper, Some(&base), &mut delta).unwrap();
    let want_size = d.diff_size(&upper, Some(&base)).unwrap();
    let applied = id("applied");
    d.create(&applied, Some(&base), &opts()).unwrap();
    let r = d
        .apply_diff(&applied, Some(&base), &mut &delta[..])
        .unwrap();
    assert_eq!(
        r.size, want_size,
        "ApplyDiff size == DiffSize for the same driver"
    );
    assert_eq!(
        view(d.as_ref(), &applied, &no_dir_mtime()),
        view(d.as_ref(), &upper, &no_dir_mtime())
    );
}

pub fn p13_apply_entry_types(factory: Factory) {
    if !require_root("p13_apply_entry_types") {
        return;
    }
    let (t, d) = setup(factory);
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    let tar = TarBuilder::new()
        .file("target", 0o644, b"content")
        .hardlink("hl", "target")
        .symlink("sl", "target")
        .symlink("long-link", &"x/".repeat(90))
        .node("cdev", EntryKind::CharDevice, 0o600, 1, 5)
        .node("bdev", EntryKind::BlockDevice, 0o600, 7, 1)
        .node("fifo", EntryKind::Fifo, 0o644, 0, 0)
        .file("cap", 0o755, b"#!/bin/true")
        .xattr(
            "security.capability",
            &[
                0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
        .file(&long, 0o644, b"long name")
        .file_raw(b"caf\xe9-latin1", 0o644, b"non-utf8")
        .build();
    let mut tar = global_header_prefix(tar);
    let l = id("types");
    d.create(&l, None, &opts()).unwrap();
    d.apply_diff(&l, None, &mut &tar[..]).unwrap();
    let m = view(d.as_ref(), &l, &ManifestOptions::default());
    for want in [
        "hl type=f mode=644 uid=0 gid=0 size=7",
        "hardlink=hl",
        "sl type=l",
        "target=target",
        "cdev type=c mode=600 uid=0 gid=0 rdev=1,5",
        "bdev type=b mode=600 uid=0 gid=0 rdev=7,1",
        "fifo type=p mode=644",
        "xattr.security.capability=0000000200200000",
        "caf\\xe9-latin1 type=f",
        &format!("{long} type=f"),
    ] {
        assert!(m.contains(want), "missing {want:?} in\n{m}");
    }

    // A sparse file written by GNU tar keeps its size, content and holes.
    let work = t.path().join("sparse-src");
    fs::create_dir_all(&work).unwrap();
    let f = fs::File::create(work.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"middle", 32 << 20).unwrap();
    drop(f);
    let sparse_tar = t.path().join("sparse.tar");
    let ok = Command::new("tar")
        .args(["--sparse", "--format=posix", "-C"])
        .arg(&work)
        .arg("-cf")
        .arg(&sparse_tar)
        .arg("sparse")
        .status()
        .unwrap()
        .success();
    assert!(ok, "GNU tar failed to write the sparse fixture");
    tar = fs::read(&sparse_tar).unwrap();
    let s = id("sparse");
    d.import(&s, None, &mut &tar[..]).unwrap();
    let p = d.get(&s, "").unwrap();
    let md = fs::metadata(p.join("sparse")).unwrap();
    assert_eq!(md.len(), 64 << 20);
    assert!(
        md.blocks() * 512 < 8 << 20,
        "holes kept: {} blocks",
        md.blocks()
    );
    let mut buf = [0u8; 6];
    std::os::unix::fs::FileExt::read_exact_at(
        &fs::File::open(p.join("sparse")).unwrap(),
        &mut buf,
        32 << 20,
    )
    .unwrap();
    assert_eq!(&buf, b"middle");
    d.put(&s).unwrap();
}

/// Prefixes a PAX global header ('g') to a tar, by hand: Strata's writer
/// never emits one, but engines must accept them.
fn global_header_prefix(tar: Vec<u8>) -> Vec<u8> {
    let record = b"22 comment=global hdr\n";
    let mut out = raw_header(b"pax_global_header", b'g', record.len() as u64);
    let mut data = record.to_vec();
    data.resize(512, 0);
    out.extend_from_slice(&data);
    out.extend_from_slice(&tar);
    out
}

/// A ustar header block with a valid checksum.
pub fn raw_header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..107].copy_from_slice(b"0000644");
    b[108..115].copy_from_slice(b"0000000");
    b[116..123].copy_from_slice(b"0000000");
    b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    b[136..147].copy_from_slice(format!("{EPOCH:011o}").as_bytes());
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| x as u32).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

pub fn p13_apply_rejects_bad_streams(factory: Factory) {
    let (_t, d) = setup(factory);
    let good = TarBuilder::new().file("keep", 0o644, b"kept").build();
    let l = layer(d.as_ref(), "l", None, &good);
    let before = view(d.as_ref(), &l, &ManifestOptions::default());

    let mut unknown = raw_header(b"weird", b'Z', 0);
    unknown.extend_from_slice(&[0u8; 1024]);
    let mut bad_sum = TarBuilder::new().file("x", 0o644, b"x").build();
    bad_sum[148] ^= 1;
    let truncated = {
        let t = TarBuilder::new().file("big", 0o644, &[7u8; 4096]).build();
        t[..512 + 1000].to_vec()
    };
    let absurd = {
        let mut h = raw_header(b"huge", b'0', 0);
        h[124..135].copy_from_slice(b"77777777777");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&x| x as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h.extend_from_slice(&[1u8; 512]);
        h
    };
    let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3].repeat(60);
    for (what, tar, needle) in [
        ("unknown type", unknown, "weird"),
        ("bad checksum", bad_sum, "checksum"),
        ("truncated data", truncated, "big"),
        ("absurd size", absurd, "huge"),
        ("gzip input", gzip, ""),
    ] {
        let e = d.apply_diff(&l, None, &mut &tar[..]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle) && !msg.contains('\n'), "{what}: {msg}");
        assert!(
            msg.contains("layer l"),
            "{what}: error names the layer: {msg}"
        );
        assert_eq!(
            view(d.as_ref(), &l, &ManifestOptions::default()),
            before,
            "{what}: layer untouched"
        );
        let fresh = id("fresh");
        assert!(d.import(&fresh, None, &mut &tar[..]).is_err(), "{what}");
        assert!(!d.exists(&fresh), "{what}: no layer created");
    }
}

pub fn p14_opaque_and_whiteouts(factory: Factory) {
    let (_t, d) = setup(factory);
    layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new()
            .dir("d", 0o755)
            .file("d/x", 0o644, b"x")
            .dir("d/sub", 0o755)
            .file("d/sub/z", 0o644, b"z")
            .dir("gone", 0o755)
            .file("gone/deep", 0o644, b"deep")
            .file("f", 0o644, b"f")
            .dir("e", 0o755)
            .file("e/old", 0o644, b"old")
            .build(),
    );
    let top = layer(
        d.as_ref(),
        "top",
        Some("base"),
        &TarBuilder::new()
            .dir("d", 0o755)
            .opaque("d")
            .file("d/new", 0o644, b"new")
            .whiteout("gone")
            .whiteout("f")
            .dir("e", 0o755)
            .file("e/new2", 0o644, b"new2")
            .opaque("e")
            .build(),
    );
    let p = d.get(&top, "").unwrap();
    let list = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list("d"), ["new"], "opaque hides everything from below");
    assert_eq!(
        list("e"),
        ["new2"],
        "an opaque marker after its siblings keeps them"
    );
    assert!(!p.join("gone").exists() && !p.join("f").exists());
    assert!(
        !p.join("d/.wh..wh..opq").exists() && !p.join(".wh.f").exists(),
        "markers are not stored as files"
    );
    d.put(&top).unwrap();
}

pub fn p15_changes_kinds(factory: Factory) {
    let (_t, d) = setup(factory);
    let (base, child) = parent_and_child(d.as_ref());
    let all = d.changes(&base, None).unwrap();
    assert!(
        !all.is_empty() && all.iter().all(|c| c.kind == ChangeKind::Add),
        "{all:?}"
    );
    let got: Vec<(String, u8)> = d
        .changes(&child, Some(&base))
        .unwrap()
        .iter()
        .map(|c| (String::from_utf8_lossy(&c.path).into_owned(), c.kind as u8))
        .collect();
    let want: Vec<(String, u8)> = [("/a", 0), ("/b", 2), ("/c", 1), ("/d", 2)]
        .iter()
        .map(|(p, k)| (p.to_string(), *k))
        .collect();
    assert_eq!(got, want);

    // Parent directories of a change are reported as modified.
    let rw = id("rw");
    d.create_read_write(&rw, Some(&child), &opts()).unwrap();
    let p = d.get(&rw, "").unwrap();
    fs::write(p.join("keep/added"), b"x").unwrap();
    d.put(&rw).unwrap();
    let got: Vec<(String, u8)> = d
        .changes(&rw, Some(&child))
        .unwrap()
        .iter()
        .map(|c| (String::from_utf8_lossy(&c.path).into_owned(), c.kind as u8))
        .collect();
    assert_eq!(
        got,
        [("/keep".to_string(), 0), ("/keep/added".to_string(), 1)]
    );
}

pub fn p16_same_second_change(factory: Factory) {
    let (_t, d) = setup(factory);
    let base = layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new()
            .file("f", 0o644, b"aaaa")
            .mtime(EPOCH, 0)
            .build(),
    );
    let rw = id("rw");
    d.create_read_write(&rw, Some(&base), &opts()).unwrap();
    let p = d.get(&rw, "").unwrap();
    fs::write(p.join("f"), b"bbbb").unwrap();
    // Same size, and the mtime put back to the parent's exactly: only the
    // content differs.
    let f = fs::File::options().write(true).open(p.join("f")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(EPOCH as u64))
        .unwrap();
    drop(f);
    d.put(&rw).unwrap();
    let changes = d.changes(&rw, Some(&base)).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].path.as_slice(), changes[0].kind),
        (&b"/f"[..], ChangeKind::Modify)
    );
    let mut delta = Vec::new();
    d.diff(&rw, Some(&base), &mut delta).unwrap();
    let e = tar_entries(&delta);
    assert_eq!(names(&e), ["f"]);
    assert_eq!(e[0].1, b"bbbb");
}

fn tool(name: &str, case: &str) -> bool {
    if Command::new(name).arg("--help").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{case}: {name} is not installed, and CI must not skip");
    }
    eprintln!("SKIP: {case}: {name} is not installed");
    false
}

pub fn p17_exact_reexport_with_tar_split(factory: Factory) {
    if !tool("tar-split", "p17_exact_reexport_with_tar_split") {
        return;
    }
    let (t, d) = setup(factory);
    let tar = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", 0o644, b"NAME=strata\n")
        .file(&"n".repeat(150), 0o600, &[9u8; 3000])
        .symlink("link", "etc/os-release")
        .hardlink("hard", "etc/os-release")
        .build();
    let tar_path = t.path().join("layer.tar");
    fs::write(&tar_path, &tar).unwrap();
    let rec = t.path().join("rec.json.gz");
    let ok = Command::new("tar-split")
        .args(["disasm", "--output"])
        .arg(&rec)
        .arg(&tar_path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let l = id("l");
    let r = d.import(&l, None, &mut &tar[..]).unwrap();
    assert_eq!(r.tar_bytes, tar.len() as u64);

    // Docker's path for drivers without exact export: reassemble from the
    // record with file contents read from the layer.
    let rebuilt = t.path().join("rebuilt.tar");
    let dir = d.get(&l, "").unwrap();
    let asm = |out: &Path| {
        Command::new("tar-split")
            .args(["asm", "--input"])
            .arg(&rec)
            .arg("--path")
            .arg(&dir)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap()
    };
    assert!(asm(&rebuilt).status.success());
    assert_eq!(fs::read(&rebuilt).unwrap(), tar, "byte-identical re-export");
    // The getter serves the same bytes by tar path.
    let getter = d.diff_getter(&l).unwrap();
    let mut s = Vec::new();
    getter
        .get(b"etc/os-release")
        .unwrap()
        .read_to_end(&mut s)
        .unwrap();
    assert_eq!(s, b"NAME=strata\n");
    assert!(
        getter.get(b"../../etc/passwd").is_err(),
        "the getter stays inside the layer"
    );
    // A changed file breaks the checksum: a hard error.
    fs::write(dir.join("etc/os-release"), b"NAME=tamper\n").unwrap();
    let out = asm(&t.path().join("bad.tar"));
    assert!(!out.status.success(), "CRC mismatch must fail");
    d.put(&l).unwrap();
}

pub fn p17_exact_reexport_by_replay(factory: Factory) {
    let (t, d) = setup(factory);
    assert!(d.capabilities().reproduces_exact_diffs);
    // A real writer's bytes: PAX headers, GNU tar's padding to 10240.
    let src = t.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/motd"), b"exact\n").unwrap();
    fs::write(
        src.join(format!("{}.bin", "n".repeat(120))),
        vec![5u8; 70_001],
    )
    .unwrap();
    std::os::unix::fs::symlink("etc/motd", src.join("link")).unwrap();
    let tar_path = t.path().join("base.tar");
    let ok = Command::new("tar")
        .args(["--format=posix", "--sort=name", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "GNU tar failed");
    let base_tar = fs::read(&tar_path).unwrap();
    assert_eq!(base_tar.len() % 10240, 0);
    let base = id("base");
    let r = d.import(&base, None, &mut &base_tar[..]).unwrap();
    let mut out = Vec::new();
    let n = d.diff(&base, None, &mut out).unwrap();
    assert_eq!(n, base_tar.len() as u64);
    assert!(
        out == base_tar,
        "diff of an imported layer replays its bytes"
    );
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&out)));
    assert_eq!(digest, r.digest, "the export's digest is the import's");

    // Docker's flow (create, then apply_diff), with whiteouts, on a parent.
    let child_tar = TarBuilder::new()
        .whiteout("link")
        .file("etc/new", 0o600, b"n")
        .build();
    let child = layer(d.as_ref(), "child", Some("base"), &child_tar);
    let mut out = Vec::new();
    d.diff(&child, Some(&base), &mut out).unwrap();
    assert!(
        out == child_tar,
        "a child's diff against its parent replays too"
    );

    // A tar naming a path twice cannot be rebuilt from the layer's files:
    // the layer says so and its diff is generated instead.
    let dup = TarBuilder::new()
        .file("x", 0o644, b"first")
        .file("x", 0o644, b"second")
        .build();
    let r = d.import(&id("dup"), None, &mut &dup[..]).unwrap();
    assert!(
        r.export_fallback
            .as_deref()
            .is_some_and(|w| w.contains('x')),
        "{r:?}"
    );
    let info = d.info(&id("dup")).unwrap();
    assert!(info.import.unwrap().export_fallback.is_some());
    let mut out = Vec::new();
    d.diff(&id("dup"), None, &mut out).unwrap();
    let e = tar_entries(&out);
    assert_eq!(names(&e), ["x"]);
    assert_eq!(e[0].1, b"second");

    // A file changed on disk makes the export fail, naming the file.
    let p = d.get(&base, "").unwrap();
    fs::write(p.join("etc/motd"), b"EXACT\n").unwrap();
    d.put(&base).unwrap();
    let err = d
        .diff(&base, None, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etc/motd") && err.contains("layer base"),
        "{err}"
    );
}

pub fn p18_hostile_tar_contained(factory: Factory) {
    let (t, d) = setup(factory);
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"do not touch").unwrap();
    let sentinel = || manifest(&outside, &ManifestOptions::default());
    let before = sentinel();
    let out = outside.to_string_lossy().into_owned();
    let rejected = [
        (
            "dotdot",
            TarBuilder::new()
                .file("../outside/secret", 0o644, b"pwned")
                .build(),
        ),
        (
            "climb",
            TarBuilder::new()
                .file("a/../../../outside/x", 0o644, b"x")
                .build(),
        ),
        (
            "rel symlink out",
            TarBuilder::new().symlink("l", "../../outside").build(),
        ),
        (
            "hardlink out",
            TarBuilder::new().hardlink("h", "../outside/secret").build(),
        ),
        // The symlink's target does not exist inside the layer; moby's
        // chroot fails here too. Refusing is safe; following it out is not.
        (
            "write through dangling abs symlink",
            TarBuilder::new()
                .symlink("l", &out)
                .file("l/secret", 0o644, b"pwned")
                .build(),
        ),
    ];
    for (what, tar) in rejected {
        let l = id("evil");
        let e = d.import(&l, None, &mut &tar[..]).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{what}: one line: {e}");
        assert!(!d.exists(&l), "{what}: no layer");
        assert_eq!(sentinel(), before, "{what}");
    }
    let contained = [
        (
            "absolute",
            TarBuilder::new()
                .file(&format!("{out}/secret"), 0o644, b"pwned")
                .build(),
        ),
        (
            "abs symlink then write",
            TarBuilder::new()
                .dir(&out, 0o755)
                .symlink("l", &out)
                .file("l/secret", 0o644, b"pwned")
                .build(),
        ),
        (
            "root symlink then write",
            TarBuilder::new()
                .symlink("r", "/")
                .file(&format!("r{out}/new"), 0o644, b"x")
                .build(),
        ),
    ];
    for (i, (what, tar)) in contained.into_iter().enumerate() {
        let l = id(&format!("ok{i}"));
        d.import(&l, None, &mut &tar[..])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(sentinel(), before, "{what}");
    }
    for i in 0..2 {
        let l = id(&format!("ok{i}"));
        let p = d.get(&l, "").unwrap();
        let inside = PathBuf::from(format!("{}{out}/secret", p.display()));
        assert_eq!(
            fs::read(inside).unwrap(),
            b"pwned",
            "case {i}: the write lands inside the layer"
        );
        d.put(&l).unwrap();
    }
}

pub fn p21_home_private(factory: Factory) {
    let (t, d) = setup(factory);
    layer(
        d.as_ref(),
        "base",
        None,
        &TarBuilder::new().file("suid", 0o4755, b"x").build(),
    );
    let mode = fs::metadata(t.path().join("home"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "home is private: {mode:o}");
    assert_eq!(
        fs::metadata(d.home()).unwrap().permissions().mode() & 0o077,
        0
    );
}

pub fn apply_diff_failure_keeps_layer(factory: Factory) {
    let (_t, d) = setup(factory);
    let l = layer(
        d.as_ref(),
        "l",
        None,
        &TarBuilder::new()
            .file("a", 0o644, b"1")
            .dir("dir", 0o755)
            .build(),
    );
    let before = view(d.as_ref(), &l, &ManifestOptions::default());
    // Good entries first, then a bad one: nothing of it may land.
    let bad = TarBuilder::new()
        .file("b", 0o644, b"2")
        .whiteout("a")
        .file("../escape", 0o644, b"x")
        .build();
    let e = d.apply_diff(&l, None, &mut &bad[..]).unwrap_err();
    assert!(e.to_string().contains("../escape"), "{e}");
    assert_eq!(view(d.as_ref(), &l, &ManifestOptions::default()), before);
}

pub fn concurrent_layers(factory: Factory) {
    let (_t, d) = setup(factory);
    let d: &dyn Driver = d.as_ref();
    std::thread::scope(|s| {
        for i in 0..8 {
            s.spawn(move || {
                let tar = TarBuilder::new()
                    .file("f", 0o644, format!("{i}").as_bytes())
                    .build();
                d.import(&id(&format!("c{i}")), None, &mut &tar[..])
                    .unwrap();
            });
        }
    });
    for i in 0..8 {
        let l = id(&format!("c{i}"));
        let p = d.get(&l, "").unwrap();
        assert_eq!(fs::read(p.join("f")).unwrap(), format!("{i}").as_bytes());
        d.put(&l).unwrap();
    }
    // Racing creates of one id: exactly one wins.
    let wins: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| s.spawn(move || d.create(&id("race"), None, &opts()).is_ok()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap() as usize).sum()
    });
    assert_eq!(wins, 1);
}
