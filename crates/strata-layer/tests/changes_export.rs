//! Change detection and tar export against real trees: a "parent" layer is
//! built on disk, copied to a "child" the way vfs creates a layer, the child
//! is mutated, and `changes` / `export_diff` / `export_items` are checked
//! against what was done — including the exported tar parsed back with
//! `TarReader`, and round trips through `apply_tar`.
// A failed setup step is a failed test; unwrapping says so with the error.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};
use strata_fs::Root;
use strata_layer::{
    ApplyOptions, ApplyStats, Change, ChangeKind, CompareOptions, ExportItem, ExportStats,
    WhiteoutMode, apply_tar, changes, changes_size, export_diff, export_items,
};
use strata_tar::{EntryKind, Header, TarReader, Timestamp};

// ---------------------------------------------------------------------
// Helpers.

/// True when running as root; otherwise prints a loud SKIP (or fails under
/// CI, where every test must really run).
fn need_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI=true"
    );
    eprintln!("SKIP: {what} needs root");
    false
}

/// True when GNU tar is installed; otherwise prints a loud SKIP (or fails
/// under CI, which installs it).
fn have_gnu_tar() -> bool {
    let found = Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"tar (GNU tar)"));
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "GNU tar missing, and CI=true"
    );
    if !found {
        eprintln!("SKIP: GNU tar is not installed");
    }
    found
}

fn p(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

fn write(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let f = root.join(rel);
    fs::write(&f, content).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let d = root.join(rel);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(f: &Path, secs: i64, nanos: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, f, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn mtime(f: &Path) -> (i64, i64) {
    let md = fs::symlink_metadata(f).unwrap();
    (md.mtime(), md.mtime_nsec())
}

fn set_xattr(f: &Path, k: &str, v: &[u8]) {
    rustix::fs::lsetxattr(f, k, v, XattrFlags::empty()).unwrap();
}

/// All xattrs of `f` (not followed), sorted.
fn xattrs(f: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(f, &mut buf[..]).unwrap();
    let names: Vec<Vec<u8>> = buf[..n]
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut out = Vec::new();
    for k in names {
        let mut v = vec![0u8; 64 * 1024];
        let n = rustix::fs::lgetxattr(f, k.as_slice(), &mut v[..]).unwrap();
        v.truncate(n);
        out.push((k, v));
    }
    out.sort();
    out
}

fn is_overlay_xattr(k: &[u8]) -> bool {
    k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.")
}

/// Gives every object a distinct mtime with nanoseconds, children before
/// their directory (creating children moves a directory's mtime).
fn stamp_tree(dir: &Path, n: &mut i64) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let f = dir.join(name);
        if fs::symlink_metadata(&f).unwrap().is_dir() {
            stamp_tree(&f, n);
        }
        *n += 1;
        set_mtime(&f, 1_600_000_000 + *n, *n * 1_000_003 % 1_000_000_000);
    }
}

/// A timestamp every later change of a file's ctime reaches: the ctime of
/// a freshly created file, from the same coarse clock as file times.
fn fs_now(scratch: &Path) -> Timestamp {
    let f = scratch.join("now");
    fs::write(&f, b"").unwrap();
    let md = fs::symlink_metadata(&f).unwrap();
    Timestamp {
        secs: md.ctime(),
        nanos: md.ctime_nsec() as u32,
    }
}

/// A parsed tar entry.
struct Ent {
    h: Header,
    data: Vec<u8>,
}

fn parse(tar: &[u8]) -> Vec<Ent> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        out.push(Ent { h, data });
    }
    out
}

fn names(ents: &[Ent]) -> Vec<Vec<u8>> {
    ents.iter().map(|e| e.h.path.clone()).collect()
}

fn entry<'a>(ents: &'a [Ent], name: &[u8]) -> &'a Ent {
    ents.iter()
        .find(|e| e.h.path == name)
        .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(name)))
}

fn export(layer: &Path, parent: Option<&Path>, opts: &CompareOptions) -> (Vec<u8>, ExportStats) {
    let layer = Root::open(layer).unwrap();
    let parent = parent.map(|p| Root::open(p).unwrap());
    let mut out = Vec::new();
    let stats = export_diff(&layer, parent.as_ref(), opts, &mut out).unwrap();
    (out, stats)
}

fn list_changes(layer: &Path, parent: Option<&Path>, opts: &CompareOptions) -> Vec<Change> {
    let layer = Root::open(layer).unwrap();
    let parent = parent.map(|p| Root::open(p).unwrap());
    changes(&layer, parent.as_ref(), opts).unwrap()
}

fn ch(path: &[u8], kind: ChangeKind) -> Change {
    Change {
        path: path.to_vec(),
        kind,
    }
}

fn show(cs: &[Change]) -> Vec<(String, ChangeKind)> {
    cs.iter()
        .map(|c| (String::from_utf8_lossy(&c.path).into_owned(), c.kind))
        .collect()
}

// ---------------------------------------------------------------------
// The main fixture.

/// Work area: `parent/` and `child/` (a copy of parent, then mutated).
struct Fixture {
    tmp: tempfile::TempDir,
    parent: PathBuf,
    child: PathBuf,
    /// Recorded right after the copy, as vfs does at create time.
    touched_after: Timestamp,
}

impl Fixture {
    fn opts(&self) -> CompareOptions {
        CompareOptions {
            touched_after: Some(self.touched_after),
        }
    }
}

/// A parent with one of everything a layer holds, and its copy.
fn fixture(build: impl FnOnce(&Path)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent");
    let child = tmp.path().join("child");
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&parent).unwrap();
    fs::create_dir(&scratch).unwrap();
    build(&parent);
    stamp_tree(&parent, &mut 0);
    fs::create_dir(&child).unwrap();
    // What vfs does to create a child layer.
    strata_fs::copy_tree(&Root::open(&parent).unwrap(), &Root::open(&child).unwrap()).unwrap();
    let touched_after = fs_now(&scratch);
    Fixture {
        tmp,
        parent,
        child,
        touched_after,
    }
}

/// Builds the main parent tree (needs root: devices, owners, trusted.*).
fn main_parent(r: &Path) {
    mkdir(r, "bin", 0o755);
    write(r, "bin/sh", b"#!shell\n", 0o755);
    write(r, "bin/su", b"setuid binary", 0o4755);
    mkdir(r, "data", 0o755);
    write(r, "data/chmod.txt", b"chmod me", 0o644);
    write(r, "data/chown.txt", b"chown me", 0o644);
    write(r, "data/same.txt", b"same", 0o644);
    write(r, "data/xattr.txt", b"xattr", 0o644);
    set_xattr(&r.join("data/xattr.txt"), "user.note", b"one");
    set_xattr(&r.join("data/xattr.txt"), "trusted.t", b"\x00\x01bin");
    mkdir(r, "dev", 0o755);
    rustix::fs::mknodat(
        CWD,
        r.join("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        r.join("dev/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::set_permissions(r.join("dev/fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    mkdir(r, "etc", 0o755);
    write(r, "etc/hosts", b"127.0.0.1 localhost\n", 0o644);
    write(r, "etc/passwd", b"root:x:0:0\n", 0o644);
    write(r, "etc/shadow", b"root:*:1::\n", 0o640);
    lchown(r.join("etc/shadow"), Some(0), Some(42)).unwrap();
    write(r, "gone.txt", b"to be deleted", 0o644);
    write(r, "hl1", b"linked", 0o644);
    fs::hard_link(r.join("hl1"), r.join("hl2")).unwrap();
    symlink("etc/passwd", r.join("link")).unwrap();
    write(r, "swap", b"a file, later a dir", 0o644);
    mkdir(r, "tmp", 0o1777);
    mkdir(r, "tree/a/b", 0o755);
    write(r, "tree/a/b/c.txt", b"deep", 0o644);
    write(r, "tree/d.txt", b"stays", 0o644);
    mkdir(r, "untouched", 0o700);
    write(r, "untouched/f", b"never changed", 0o600);
    lchown(r.join("untouched"), Some(1234), Some(5678)).unwrap();
}

/// The child's mutations; returns the expected change list.
fn mutate_main(f: &Fixture) -> Vec<Change> {
    let c = &f.child;
    write(c, "data/new.txt", b"added", 0o644);
    set_xattr(&c.join("data/new.txt"), "user.keep", b"1");
    set_xattr(&c.join("data/new.txt"), "trusted.overlay.origin", b"x");
    set_xattr(&c.join("data/new.txt"), "user.overlay.redirect", b"y");
    fs::write(
        c.join(OsStr::from_bytes(b"data/\xff.bin")),
        b"non-utf8 name",
    )
    .unwrap();
    // Same size, same second: only content and ctime tell.
    let (s, ns) = mtime(&f.parent.join("etc/passwd"));
    fs::write(c.join("etc/passwd"), b"root:y:0:0\n").unwrap();
    set_mtime(&c.join("etc/passwd"), s, ns);
    fs::set_permissions(c.join("data/chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    lchown(c.join("data/chown.txt"), Some(1000), Some(1000)).unwrap();
    set_xattr(&c.join("data/xattr.txt"), "user.note", b"two");
    // Overlay's private attributes are not content: no change.
    set_xattr(&c.join("untouched/f"), "trusted.overlay.opaque", b"y");
    fs::remove_file(c.join("gone.txt")).unwrap();
    fs::remove_dir_all(c.join("tree/a")).unwrap();
    fs::remove_file(c.join("swap")).unwrap();
    mkdir(c, "swap", 0o755);
    write(c, "swap/inner", b"inside the new dir", 0o644);
    // Same length target, same mtime: only the target tells.
    let (s, ns) = mtime(&f.parent.join("link"));
    fs::remove_file(c.join("link")).unwrap();
    symlink("etc/shadow", c.join("link")).unwrap();
    set_mtime(&c.join("link"), s, ns);
    use ChangeKind::*;
    vec![
        ch(b"/data", Modify),
        ch(b"/data/chmod.txt", Modify),
        ch(b"/data/chown.txt", Modify),
        ch(b"/data/new.txt", Add),
        ch(b"/data/xattr.txt", Modify),
        ch(b"/data/\xff.bin", Add),
        ch(b"/etc", Modify),
        ch(b"/etc/passwd", Modify),
        ch(b"/gone.txt", Delete),
        ch(b"/link", Modify),
        ch(b"/swap", Modify),
        ch(b"/swap/inner", Add),
        ch(b"/tree", Modify),
        ch(b"/tree/a", Delete),
    ]
}

// ---------------------------------------------------------------------
// Changes.

#[test]
fn changes_report_every_kind_of_change() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    assert!(
        list_changes(&f.child, Some(&f.parent), &f.opts()).is_empty(),
        "a fresh copy has no changes"
    );
    let want = mutate_main(&f);
    let got = list_changes(&f.child, Some(&f.parent), &f.opts());
    assert_eq!(show(&got), show(&want));

    // Without `touched_after` the same-second rewrite is invisible, which
    // is why moby sleeps and why vfs records the instant.
    let blind = list_changes(&f.child, Some(&f.parent), &CompareOptions::default());
    let mut expect_blind = want.clone();
    expect_blind.retain(|c| c.path != b"/etc/passwd" && c.path != b"/etc");
    assert_eq!(show(&blind), show(&expect_blind));

    // Kinds carry Docker's integers.
    assert_eq!(ChangeKind::Modify as u8, 0);
    assert_eq!(ChangeKind::Add as u8, 1);
    assert_eq!(ChangeKind::Delete as u8, 2);
}

#[test]
fn changes_without_parent_are_all_additions_in_walk_order() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(r, "a/b", 0o755);
    write(r, "a/b/c", b"c", 0o644);
    write(r, "a-b", b"sorted after a's contents", 0o644);
    write(r, "a.txt", b"", 0o644);
    symlink("a", r.join("z")).unwrap();
    let got = list_changes(r, None, &CompareOptions::default());
    use ChangeKind::Add;
    let want = vec![
        ch(b"/a", Add),
        ch(b"/a/b", Add),
        ch(b"/a/b/c", Add),
        ch(b"/a-b", Add),
        ch(b"/a.txt", Add),
        ch(b"/z", Add),
    ];
    assert_eq!(show(&got), show(&want));
}

#[test]
fn changes_size_counts_hard_links_once() {
    let f = fixture(|r| {
        mkdir(r, "d", 0o755);
        write(r, "d/e", &[7u8; 10], 0o644);
        write(r, "keep", &[1u8; 3], 0o644);
    });
    let c = &f.child;
    write(c, "a", &[0u8; 1000], 0o644);
    fs::hard_link(c.join("a"), c.join("b")).unwrap();
    fs::hard_link(c.join("a"), c.join("d/c")).unwrap();
    symlink("a", c.join("l")).unwrap();
    write(c, "d/e", &[8u8; 25], 0o644);
    mkdir(c, "newdir", 0o755);
    let layer = Root::open(c).unwrap();

    let all = list_changes(c, None, &f.opts());
    // 1000 once for a/b/d/c, 1 for the symlink, 25 for d/e, 3 for keep.
    assert_eq!(changes_size(&layer, &all).unwrap(), 1000 + 1 + 25 + 3);

    let diff = list_changes(c, Some(&f.parent), &f.opts());
    use ChangeKind::*;
    let want = vec![
        ch(b"/a", Add),
        ch(b"/b", Add),
        ch(b"/d", Modify),
        ch(b"/d/c", Add),
        ch(b"/d/e", Modify),
        ch(b"/l", Add),
        ch(b"/newdir", Add),
    ];
    assert_eq!(show(&diff), show(&want));
    // The parent's content (keep) is excluded; deletions and dirs count 0.
    assert_eq!(changes_size(&layer, &diff).unwrap(), 1000 + 1 + 25);
    let gone = vec![ch(b"/vanished", Add), ch(b"/keep", Delete)];
    assert_eq!(changes_size(&layer, &gone).unwrap(), 0);
}

// ---------------------------------------------------------------------
// Export.

#[test]
fn full_export_describes_every_object() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    let (tar, stats) = export(&f.parent, None, &CompareOptions::default());
    assert_eq!(stats.bytes, tar.len() as u64);
    let ents = parse(&tar);
    assert_eq!(stats.entries, ents.len() as u64);
    let want: Vec<&[u8]> = vec![
        b"bin/",
        b"bin/sh",
        b"bin/su",
        b"data/",
        b"data/chmod.txt",
        b"data/chown.txt",
        b"data/same.txt",
        b"data/xattr.txt",
        b"dev/",
        b"dev/fifo",
        b"dev/null",
        b"etc/",
        b"etc/hosts",
        b"etc/passwd",
        b"etc/shadow",
        b"gone.txt",
        b"hl1",
        b"hl2",
        b"link",
        b"swap",
        b"tmp/",
        b"tree/",
        b"tree/a/",
        b"tree/a/b/",
        b"tree/a/b/c.txt",
        b"tree/d.txt",
        b"untouched/",
        b"untouched/f",
    ];
    assert_eq!(
        names(&ents),
        want.iter().map(|n| n.to_vec()).collect::<Vec<_>>()
    );
    for e in &ents {
        let path = f
            .parent
            .join(p(e.h.path.strip_suffix(b"/").unwrap_or(&e.h.path)));
        let md = fs::symlink_metadata(&path).unwrap();
        assert_eq!(e.h.mode, md.mode() & 0o7777, "{path:?}");
        assert_eq!(
            (e.h.uid, e.h.gid),
            (u64::from(md.uid()), u64::from(md.gid())),
            "{path:?}"
        );
        assert!(e.h.uname.is_empty() && e.h.gname.is_empty());
        assert_eq!(
            e.h.mtime,
            Timestamp {
                secs: md.mtime(),
                nanos: md.mtime_nsec() as u32
            }
        );
        assert_eq!((e.h.atime, e.h.ctime), (None, None));
        if e.h.kind == EntryKind::Regular {
            assert_eq!(e.data, fs::read(&path).unwrap(), "{path:?}");
        }
    }
    assert_eq!(entry(&ents, b"bin/su").h.mode, 0o4755);
    assert_eq!(entry(&ents, b"tmp/").h.mode, 0o1777);
    assert_eq!(entry(&ents, b"tmp/").h.kind, EntryKind::Directory);
    assert_eq!(entry(&ents, b"etc/shadow").h.gid, 42);
    assert_eq!(entry(&ents, b"untouched/").h.uid, 1234);
    let null = &entry(&ents, b"dev/null").h;
    assert_eq!(
        (null.kind, null.dev_major, null.dev_minor),
        (EntryKind::CharDevice, 1, 3)
    );
    assert_eq!(entry(&ents, b"dev/fifo").h.kind, EntryKind::Fifo);
    let link = &entry(&ents, b"link").h;
    assert_eq!(
        (link.kind, link.link_name.as_slice()),
        (EntryKind::Symlink, &b"etc/passwd"[..])
    );
    let hl1 = entry(&ents, b"hl1");
    assert_eq!(
        (hl1.h.kind, hl1.data.as_slice()),
        (EntryKind::Regular, &b"linked"[..])
    );
    let hl2 = &entry(&ents, b"hl2").h;
    assert_eq!(
        (hl2.kind, hl2.link_name.as_slice(), hl2.size),
        (EntryKind::HardLink, &b"hl1"[..], 0)
    );
    assert_eq!(
        entry(&ents, b"data/xattr.txt").h.xattrs,
        vec![
            (b"trusted.t".to_vec(), b"\x00\x01bin".to_vec()),
            (b"user.note".to_vec(), b"one".to_vec())
        ]
    );
}

#[test]
fn diff_export_writes_changes_and_whiteouts() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    mutate_main(&f);
    let (tar, stats) = export(&f.child, Some(&f.parent), &f.opts());
    let ents = parse(&tar);
    assert_eq!(
        (stats.entries, stats.bytes),
        (ents.len() as u64, tar.len() as u64)
    );
    let want: Vec<&[u8]> = vec![
        b".wh.gone.txt",
        b"data/",
        b"data/chmod.txt",
        b"data/chown.txt",
        b"data/new.txt",
        b"data/xattr.txt",
        b"data/\xff.bin",
        b"etc/",
        b"etc/passwd",
        b"link",
        b"swap/",
        b"swap/inner",
        b"tree/",
        b"tree/.wh.a",
    ];
    assert_eq!(
        names(&ents),
        want.iter().map(|n| n.to_vec()).collect::<Vec<_>>()
    );

    for (wh, dir) in [
        (&b".wh.gone.txt"[..], f.child.clone()),
        (b"tree/.wh.a", f.child.join("tree")),
    ] {
        let h = &entry(&ents, wh).h;
        let (s, ns) = mtime(&dir);
        assert_eq!(
            (h.kind, h.mode, h.size, h.uid, h.gid),
            (EntryKind::Regular, 0o600, 0, 0, 0)
        );
        assert_eq!(
            h.mtime,
            Timestamp {
                secs: s,
                nanos: ns as u32
            },
            "whiteouts carry their dir's mtime"
        );
    }
    assert_eq!(entry(&ents, b"etc/passwd").data, b"root:y:0:0\n");
    assert_eq!(entry(&ents, b"data/chmod.txt").h.mode, 0o600);
    assert_eq!(entry(&ents, b"data/chown.txt").h.uid, 1000);
    assert_eq!(entry(&ents, b"link").h.link_name, b"etc/shadow");
    assert_eq!(entry(&ents, b"swap/").h.kind, EntryKind::Directory);
    // Overlay's private xattrs never leak; the others all travel.
    assert_eq!(
        entry(&ents, b"data/new.txt").h.xattrs,
        vec![(b"user.keep".to_vec(), b"1".to_vec())]
    );
    assert_eq!(
        entry(&ents, b"data/xattr.txt").h.xattrs,
        vec![
            (b"trusted.t".to_vec(), b"\x00\x01bin".to_vec()),
            (b"user.note".to_vec(), b"two".to_vec())
        ]
    );
    assert!(
        ents.iter()
            .all(|e| e.h.xattrs.iter().all(|(k, _)| !is_overlay_xattr(k)))
    );
}

#[test]
fn exports_are_deterministic() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    mutate_main(&f);
    for parent in [None, Some(f.parent.as_path())] {
        let (a, sa) = export(&f.child, parent, &f.opts());
        let (b, sb) = export(&f.child, parent, &f.opts());
        assert!(a == b, "two exports differ (parent {parent:?})");
        assert_eq!(sa, sb);
    }
}

/// Parent directories each losing `x`, with different siblings.
fn opaque_parent(r: &Path) {
    for d in ["e", "f", "g", "h", "i", "j", "k"] {
        mkdir(r, d, 0o755);
        write(r, &format!("{d}/x"), b"deleted in every dir", 0o644);
    }
    write(r, "e/y", b"modified", 0o644);
    write(r, "f/y", b"unchanged", 0o644);
    mkdir(r, "g/s", 0o755);
    write(r, "g/s/k", b"deleted with its dir", 0o644);
    mkdir(r, "h/sub", 0o755);
    write(r, "h/sub/k", b"unchanged, below", 0o644);
    mkdir(r, "i/t", 0o755);
    write(r, "i/t/k", b"dir replaced by a file", 0o644);
    write(r, "j/u", b"file replaced by a dir", 0o644);
    mkdir(r, "k/m", 0o755);
    write(r, "k/m/q", b"unchanged below a chmodded dir", 0o644);
}

fn opaque_mutate(c: &Path) {
    for d in ["e", "f", "g", "h", "i", "j", "k"] {
        fs::remove_file(c.join(d).join("x")).unwrap();
    }
    write(c, "e/y", b"modified!", 0o644);
    write(c, "e/new", b"added beside", 0o644);
    fs::remove_dir_all(c.join("g/s")).unwrap();
    fs::remove_dir_all(c.join("i/t")).unwrap();
    write(c, "i/t", b"now a file", 0o644);
    fs::remove_file(c.join("j/u")).unwrap();
    mkdir(c, "j/u", 0o755);
    write(c, "j/u/n", b"in the new dir", 0o644);
    fs::set_permissions(c.join("k/m"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn opaque_marker_only_when_nothing_below_would_be_hidden() {
    let f = fixture(opaque_parent);
    opaque_mutate(&f.child);
    let (tar, _) = export(&f.child, Some(&f.parent), &f.opts());
    let want: Vec<&[u8]> = vec![
        // e: x deleted, y re-emitted, new added: opaque.
        b"e/",
        b"e/.wh..wh..opq",
        b"e/new",
        b"e/y",
        // f: y unchanged would be hidden: a whiteout.
        b"f/",
        b"f/.wh.x",
        // g: everything deleted: opaque.
        b"g/",
        b"g/.wh..wh..opq",
        // h: sub/ unchanged below: a whiteout.
        b"h/",
        b"h/.wh.x",
        // i: the dir t became a file, written in full: opaque.
        b"i/",
        b"i/.wh..wh..opq",
        b"i/t",
        // j: the file u became a dir, written with all its contents: opaque.
        b"j/",
        b"j/.wh..wh..opq",
        b"j/u/",
        b"j/u/n",
        // k: m/ changed but only its own entry is written: a whiteout.
        b"k/",
        b"k/.wh.x",
        b"k/m/",
    ];
    assert_eq!(
        names(&parse(&tar))
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect::<Vec<_>>(),
        want.iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect::<Vec<_>>()
    );
    let ents = parse(&tar);
    let m = &entry(&ents, b"e/.wh..wh..opq").h;
    let (s, ns) = mtime(&f.child.join("e"));
    assert_eq!((m.kind, m.mode, m.size), (EntryKind::Regular, 0o600, 0));
    assert_eq!(
        m.mtime,
        Timestamp {
            secs: s,
            nanos: ns as u32
        }
    );

    // The change list still names every deletion.
    let cs = list_changes(&f.child, Some(&f.parent), &f.opts());
    for d in ["e", "f", "g", "h", "i", "j", "k"] {
        let x = format!("/{d}/x").into_bytes();
        assert!(cs.contains(&ch(&x, ChangeKind::Delete)), "{d}/x");
    }
    assert!(cs.contains(&ch(b"/g/s", ChangeKind::Delete)));
    assert!(!cs.iter().any(|c| c.path == b"/g/s/k"));
}

#[test]
fn hard_links_point_to_the_first_path_written() {
    let f = fixture(|r| {
        write(r, "a", b"one inode", 0o644);
        fs::hard_link(r.join("a"), r.join("b")).unwrap();
        mkdir(r, "d", 0o755);
        fs::hard_link(r.join("a"), r.join("d/c")).unwrap();
    });
    let (tar, _) = export(&f.parent, None, &CompareOptions::default());
    let ents = parse(&tar);
    let summary: Vec<(Vec<u8>, EntryKind, Vec<u8>, u64)> = ents
        .iter()
        .map(|e| (e.h.path.clone(), e.h.kind, e.h.link_name.clone(), e.h.size))
        .collect();
    assert_eq!(
        summary,
        vec![
            (b"a".to_vec(), EntryKind::Regular, vec![], 9),
            (b"b".to_vec(), EntryKind::HardLink, b"a".to_vec(), 0),
            (b"d/".to_vec(), EntryKind::Directory, vec![], 0),
            (b"d/c".to_vec(), EntryKind::HardLink, b"a".to_vec(), 0),
        ]
    );

    // Rewriting the inode changes every path; the diff links to the first
    // path of the diff.
    let c = &f.child;
    fs::write(c.join("b"), b"rewritten inode").unwrap();
    let (tar, _) = export(c, Some(&f.parent), &f.opts());
    let ents = parse(&tar);
    let summary: Vec<(Vec<u8>, EntryKind, Vec<u8>)> = ents
        .iter()
        .map(|e| (e.h.path.clone(), e.h.kind, e.h.link_name.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (b"a".to_vec(), EntryKind::Regular, vec![]),
            (b"b".to_vec(), EntryKind::HardLink, b"a".to_vec()),
            (b"d/".to_vec(), EntryKind::Directory, vec![]),
            (b"d/c".to_vec(), EntryKind::HardLink, b"a".to_vec()),
        ]
    );
    assert_eq!(entry(&ents, b"a").data, b"rewritten inode");
}

#[test]
fn export_items_writes_exactly_the_listed_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(r, "d/sub", 0o755);
    write(r, "d/sub/deep", b"not listed", 0o644);
    write(r, "d/f", b"listed", 0o644);
    write(r, "top", b"t", 0o644);
    let items = vec![
        ExportItem::Object(b"/top".to_vec()),
        ExportItem::Whiteout(b"d/gone".to_vec()),
        ExportItem::Object(b"d/f".to_vec()),
        ExportItem::Opaque(b"d/sub".to_vec()),
        ExportItem::Object(b"/d".to_vec()),
        ExportItem::Object(b"d/sub".to_vec()),
        ExportItem::Object(b"d/f".to_vec()),
        ExportItem::Object(b"/".to_vec()),
        ExportItem::from(&ch(b"/zz", ChangeKind::Delete)),
    ];
    let layer = Root::open(r).unwrap();
    let mut out = Vec::new();
    let stats = export_items(&layer, &items, &mut out).unwrap();
    let ents = parse(&out);
    // `.wh.zz` sorts before `d` at the top level.
    let want: Vec<&[u8]> = vec![
        b".wh.zz",
        b"d/",
        b"d/.wh.gone",
        b"d/f",
        b"d/sub/",
        b"d/sub/.wh..wh..opq",
        b"top",
    ];
    assert_eq!(
        names(&ents),
        want.iter().map(|n| n.to_vec()).collect::<Vec<_>>()
    );
    assert_eq!(stats.entries, 7);

    // A whiteout in a directory the layer lacks cannot be dated: an error
    // naming the path.
    let bad = vec![ExportItem::Whiteout(b"missing/x".to_vec())];
    let err = export_items(&layer, &bad, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // So is an object that is not there.
    let bad = vec![ExportItem::Object(b"d/nope".to_vec())];
    let err = export_items(&layer, &bad, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("d/nope"), "{err}");
}

// ---------------------------------------------------------------------
// Round trips.

/// What a layer tree holds, path by path (the root itself excluded; overlay
/// xattrs excluded since exports drop them).
#[derive(Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Vec<u8>,
    target: PathBuf,
    rdev: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mtime: Option<(i64, i64)>,
    /// For a multiply-linked inode: the first path (in sorted order) of it.
    link_group: Option<PathBuf>,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    let mut inodes = HashMap::new();
    snap_dir(root, Path::new(""), &mut out, &mut inodes);
    out
}

fn snap_dir(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<PathBuf, Meta>,
    inodes: &mut HashMap<u64, PathBuf>,
) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let f = root.join(&r);
        let md = fs::symlink_metadata(&f).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "special"
        };
        let link_group = (!ft.is_dir() && md.nlink() > 1)
            .then(|| inodes.entry(md.ino()).or_insert_with(|| r.clone()).clone());
        let mut xa = xattrs(&f);
        xa.retain(|(k, _)| !is_overlay_xattr(k));
        out.insert(
            r.clone(),
            Meta {
                kind,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_dir() { 0 } else { md.size() },
                content: if ft.is_file() {
                    fs::read(&f).unwrap()
                } else {
                    Vec::new()
                },
                target: if ft.is_symlink() {
                    fs::read_link(&f).unwrap()
                } else {
                    PathBuf::new()
                },
                rdev: md.rdev(),
                xattrs: xa,
                mtime: (!ft.is_dir()).then(|| (md.mtime(), md.mtime_nsec())),
                link_group,
            },
        );
        if ft.is_dir() {
            snap_dir(root, &r, out, inodes);
        }
    }
}

fn assert_same_tree(got: &Path, want: &Path) {
    let (g, w) = (snapshot(got), snapshot(want));
    assert!(!w.is_empty(), "nothing to compare");
    let gk: Vec<_> = g.keys().collect();
    let wk: Vec<_> = w.keys().collect();
    assert_eq!(gk, wk, "paths differ");
    for (k, wm) in &w {
        assert_eq!(&g[k], wm, "{k:?} differs");
    }
}

#[test]
fn full_export_extracts_with_gnu_tar() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") || !have_gnu_tar() {
        return;
    }
    let f = fixture(main_parent);
    mutate_main(&f);
    let (tar, _) = export(&f.child, None, &CompareOptions::default());
    let dst = f.tmp.path().join("gnu");
    fs::create_dir(&dst).unwrap();
    let mut cmd = Command::new("tar")
        .args([
            "-x",
            "-f",
            "-",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
        ])
        .args(["--same-owner", "--same-permissions", "-C"])
        .arg(&dst)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cmd.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(cmd.wait().unwrap().success(), "GNU tar refused the export");
    assert_same_tree(&dst, &f.child);
}

/// Applies a layer tar the naive way (whiteouts delete).
fn apply(tar: &[u8], onto: &Path) -> ApplyStats {
    let root = Root::open(onto).unwrap();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        writeback: false,
    };
    apply_tar(&root, &mut TarReader::new(tar), opts).unwrap()
}

/// A fresh copy of `src` at `dst`, as vfs makes a child layer.
fn copy_of(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    strata_fs::copy_tree(&Root::open(src).unwrap(), &Root::open(dst).unwrap()).unwrap();
}

#[test]
fn diff_applied_onto_the_parent_reproduces_the_child() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    mutate_main(&f);
    let (tar, _) = export(&f.child, Some(&f.parent), &f.opts());
    let target = f.tmp.path().join("target");
    copy_of(&f.parent, &target);
    apply(&tar, &target);
    assert_same_tree(&target, &f.child);
}

#[test]
fn full_export_applied_onto_nothing_reproduces_the_layer() {
    if !need_root("devices, chown and trusted.* xattrs in the fixture") {
        return;
    }
    let f = fixture(main_parent);
    mutate_main(&f);
    let (tar, _) = export(&f.child, None, &CompareOptions::default());
    let target = f.tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    let stats = apply(&tar, &target);
    assert_same_tree(&target, &f.child);
    // The conformance rule: ApplyDiff's size equals DiffSize(layer, "").
    let layer = Root::open(&f.child).unwrap();
    let all = changes(&layer, None, &CompareOptions::default()).unwrap();
    assert_eq!(stats.size, changes_size(&layer, &all).unwrap());
}

#[test]
fn opaque_and_hard_link_diffs_round_trip() {
    let f = fixture(|r| {
        opaque_parent(r);
        mkdir(r, "l", 0o755);
        write(r, "l/a", b"one inode", 0o644);
        fs::hard_link(r.join("l/a"), r.join("l/b")).unwrap();
    });
    opaque_mutate(&f.child);
    fs::write(f.child.join("l/b"), b"rewritten through b").unwrap();
    let (tar, _) = export(&f.child, Some(&f.parent), &f.opts());
    let target = f.tmp.path().join("target");
    copy_of(&f.parent, &target);
    apply(&tar, &target);
    assert_same_tree(&target, &f.child);
}
