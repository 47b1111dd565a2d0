//! The windowsfilter driver on realistic Windows layers written by two
//! independent writers (Python's tarfile and Go's archive/tar): exact
//! round trips, the index keeping every record, the BCD backups, the
//! browsable view, changes and sizes, generated exports that an
//! independent reader accepts and that keep every record, sandboxes, the
//! seed's chain file, and hostile tars refused with nothing written
//! outside.
#![allow(clippy::unwrap_used)]

mod windows_support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use strata_driver::{Change, ChangeKind, CreateOpts, Driver, LayerId};
use strata_windows::{INDEX_FILE, LayerIndex, Role};
use windows_support::*;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn open(home: &Path) -> Box<dyn Driver> {
    strata_driver::open(Some("windowsfilter"), home, &[]).unwrap()
}

fn export(d: &dyn Driver, l: &str, parent: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    d.diff(&id(l), parent.map(id).as_ref(), &mut out).unwrap();
    out
}

fn index(home: &Path, l: &str) -> LayerIndex {
    LayerIndex::from_reader(fs::File::open(home.join(l).join(INDEX_FILE)).unwrap()).unwrap()
}

fn import(d: &dyn Driver, l: &str, parent: Option<&str>, tar: &Path) -> strata_driver::ApplyResult {
    d.import(
        &id(l),
        parent.map(id).as_ref(),
        &mut fs::File::open(tar).unwrap(),
    )
    .unwrap()
}

/// The first of the writers present, for cases one writer covers.
fn first_writer(case: &str) -> Option<Writer> {
    writers(case).into_iter().next()
}

/// [`first_writer`], for cases that also need root (mounts).
fn root_and_writer(case: &str) -> Option<Writer> {
    if !root(case) {
        return None;
    }
    first_writer(case)
}

/// A windowsfilter store in a private temp dir, with its tars beside it.
struct Store {
    tmp: tempfile::TempDir,
    home: PathBuf,
    d: Box<dyn Driver>,
}

impl Store {
    fn new() -> Store {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let d = open(&home);
        Store { tmp, home, d }
    }

    /// `layer` written by `w` as `<name>.tar` beside the home.
    fn tar(&self, name: &str, layer: &Layer, w: Writer) -> PathBuf {
        let t = self.tmp.path().join(format!("{name}.tar"));
        write(layer, w, self.tmp.path(), &t);
        t
    }

    /// A store holding `base` and `delta` on it, both written by `w`.
    fn with_chain(w: Writer) -> Store {
        let s = Store::new();
        let (bt, dt) = (s.tar("base", &base(), w), s.tar("delta", &delta(), w));
        import(s.d.as_ref(), "base", None, &bt);
        import(s.d.as_ref(), "delta", Some("base"), &dt);
        s
    }
}

/// The kind of the change to `path`, if there is one.
fn kind_of(changes: &[Change], path: &str) -> Option<ChangeKind> {
    changes
        .iter()
        .find(|c| c.path == path.as_bytes())
        .map(|c| c.kind)
}

/// The layer in `dir` chains to the base layer of `home` alone.
fn assert_chain_is_base(dir: &Path, home: &Path) {
    let chain: Vec<String> =
        serde_json::from_slice(&fs::read(dir.join("layerchain.json")).unwrap()).unwrap();
    let base = home.join("base").canonicalize().unwrap();
    assert_eq!(chain, [base.display().to_string()]);
}

/// `tar` written to `<name>.tar` in `dir` and read by the independent
/// reader: its report and the entry names in it.
fn check_tar(tar: &[u8], name: &str, dir: &Path) -> (PathBuf, serde_json::Value, Vec<String>) {
    let path = dir.join(format!("{name}.tar"));
    fs::write(&path, tar).unwrap();
    let check = py_check(&path, dir);
    let names = serde_json::from_value(check["names"].clone()).unwrap();
    (path, check, names)
}

/// Every record of the fixture's entries is in the index, verbatim.
fn assert_index_keeps(layer: &Layer, idx: &LayerIndex, writer: Writer) {
    assert_eq!(idx.entries.len(), layer.entries.len(), "{writer:?}");
    for (spec, got) in layer.entries.iter().zip(&idx.entries) {
        assert_eq!(
            String::from_utf8_lossy(&got.name).trim_end_matches('/'),
            spec.name,
            "{writer:?}"
        );
        let have: HashMap<_, _> = got
            .records
            .iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(&r.k).into_owned(),
                    String::from_utf8_lossy(&r.v).into_owned(),
                )
            })
            .collect();
        for (k, v) in &spec.records {
            assert_eq!(have.get(k), Some(v), "{writer:?} {}: record {k}", spec.name);
        }
    }
}

#[test]
fn exact_round_trip_from_both_writers() {
    for w in writers("exact_round_trip_from_both_writers") {
        for trailer in [true, false] {
            let store = Store::new();
            let (home, d) = (&store.home, &store.d);
            let mut b = base();
            b.trailer = trailer;
            let (bt, dt) = (store.tar("base", &b, w), store.tar("delta", &delta(), w));
            let rb = import(d.as_ref(), "base", None, &bt);
            let rd = import(d.as_ref(), "delta", Some("base"), &dt);
            assert!(rb.export_fallback.is_none() && rd.export_fallback.is_none());
            assert_eq!(
                export(d.as_ref(), "base", None),
                fs::read(&bt).unwrap(),
                "{w:?} trailer={trailer}"
            );
            assert_eq!(
                export(d.as_ref(), "delta", Some("base")),
                fs::read(&dt).unwrap(),
                "{w:?}"
            );

            // The index keeps every record of every entry.
            assert_index_keeps(&b, &index(home, "base"), w);
            let di = index(home, "delta");
            assert_index_keeps(&delta(), &di, w);
            let roles: Vec<Role> = di.entries.iter().map(|e| e.role).collect();
            assert_eq!(roles.iter().filter(|r| **r == Role::Stream).count(), 2);
            assert_eq!(roles.iter().filter(|r| **r == Role::Tombstone).count(), 1);
            let cross: Vec<_> = di
                .entries
                .iter()
                .filter(|e| e.cross_layer)
                .map(|e| e.target.clone())
                .collect();
            assert_eq!(
                cross,
                [b"Files/License.txt".to_vec(), b"Files/License.txt".to_vec()]
            );

            // The seed's layout.
            let dd = home.join("delta");
            assert_eq!(
                fs::read(dd.join("Files/dir/a.txt")).unwrap(),
                b"hello windows\r\n"
            );
            assert_eq!(
                fs::read(dd.join("streams/Files/dir/a.txt:Zone.Identifier")).unwrap(),
                b"[ZoneTransfer]\r\nZoneId=3\r\n"
            );
            assert!(!dd.join("Files/dir/a.txt:Zone.Identifier").exists());
            assert!(
                fs::symlink_metadata(dd.join("whiteouts/ToDelete.txt"))
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
            assert!(!dd.join("Files/ToDelete.txt").exists());
            assert_eq!(
                fs::read_link(dd.join("Files/dir/l")).unwrap(),
                Path::new("../License.txt")
            );
            assert_eq!(
                fs::read_link(dd.join("Files/j")).unwrap(),
                Path::new("/Windows")
            );
            assert_eq!(fs::read(dd.join("Files/lic3")).unwrap(), b"MIT or so\r\n");
            assert_eq!(
                fs::read(home.join("base/bcd.bak")).unwrap(),
                fs::read(home.join("base").join(BCD)).unwrap()
            );
            assert_eq!(
                fs::read(home.join("base/bcd.log2.bak")).unwrap().len(),
                1026
            );
            assert_chain_is_base(&dd, home);

            // Size: the regular files, streams and links not counted.
            let want: u64 = delta()
                .entries
                .iter()
                .filter(|e| e.kind == "0" && !e.name.contains(':') && !e.name.contains(".wh."))
                .map(|e| e.data.len() as u64 / 2)
                .sum();
            assert_eq!(rd.size, want);
            assert_eq!(d.diff_size(&id("delta"), Some(&id("base"))).unwrap(), want);
        }
    }
}

#[test]
fn bcd_changes_never_change_the_export() {
    let Some(w) = first_writer("bcd_changes_never_change_the_export") else {
        return;
    };
    let store = Store::new();
    let (home, d) = (&store.home, &store.d);
    let bt = store.tar("base", &base(), w);
    import(d.as_ref(), "base", None, &bt);
    let original = fs::read(home.join("base").join(BCD)).unwrap();
    // What a Windows host's import does to the boot files.
    fs::write(
        home.join("base").join(BCD),
        b"rewritten for boot from the UVM VHD",
    )
    .unwrap();
    fs::write(
        home.join("base/UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG1"),
        b"",
    )
    .unwrap();
    assert_eq!(export(d.as_ref(), "base", None), fs::read(&bt).unwrap());
    let mut got = Vec::new();
    d.diff_getter(&id("base"))
        .unwrap()
        .get(BCD.as_bytes())
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, original);
    // Any other change is caught, naming the file, not exported wrong.
    fs::write(home.join("base/Files/License.txt"), b"changed").unwrap();
    let mut out = Vec::new();
    let e = d.diff(&id("base"), None, &mut out).unwrap_err().to_string();
    assert!(e.contains("Files/License.txt"), "{e}");
}

use std::io::Read as _;

#[test]
fn view_changes_and_sizes() {
    let Some(w) = root_and_writer("view_changes_and_sizes") else {
        return;
    };
    let store = Store::with_chain(w);
    let d = &store.d;

    let v = d.get(&id("delta"), "").unwrap();
    assert!(!v.join("ToDelete.txt").exists(), "the tombstone applies");
    assert_eq!(fs::read(v.join("License.txt")).unwrap(), b"MIT or so\r\n");
    assert_eq!(fs::read(v.join("lic2")).unwrap(), b"MIT or so\r\n");
    assert_eq!(fs::read(v.join("dir/h")).unwrap(), b"hello windows\r\n");
    assert_eq!(
        fs::read(v.join("dir/l")).unwrap(),
        b"MIT or so\r\n",
        "the symlink resolves in the view"
    );
    assert_eq!(
        fs::read(v.join("Windows/System32/config/SAM")).unwrap(),
        hive(2)
    );
    assert!(
        !v.join("dir/a.txt:Zone.Identifier").exists(),
        "streams stay out of the view"
    );
    assert!(!v.join("Hives").exists() && !v.join("Files").exists());
    let e = fs::write(v.join("new"), b"x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc_erofs()),
        "the view is read-only: {e}"
    );
    let bv = d.get(&id("base"), "").unwrap();
    assert!(bv.join("ToDelete.txt").exists());
    assert!(
        fs::write(bv.join("new"), b"x").is_err(),
        "a base layer's view is read-only too"
    );
    d.put(&id("base")).unwrap();

    let changes = d.changes(&id("delta"), Some(&id("base"))).unwrap();
    let kind = |p: &str| kind_of(&changes, p);
    assert_eq!(kind("/Files/ToDelete.txt"), Some(ChangeKind::Delete));
    assert_eq!(kind("/Files/dir/a.txt"), Some(ChangeKind::Add));
    assert_eq!(kind("/Files"), Some(ChangeKind::Modify));
    assert_eq!(kind("/Hives/Software_Delta"), Some(ChangeKind::Add));
    assert_eq!(kind("/Files/dir/a.txt:Zone.Identifier"), None);
    let all = d.changes(&id("base"), None).unwrap();
    assert!(all.iter().all(|c| c.kind == ChangeKind::Add));
    assert!(all.iter().any(|c| c.path == format!("/{BCD}").as_bytes()));
    d.put(&id("delta")).unwrap();
    assert!(!is_mounted(&v));
}

/// NTFS compares names case-insensitively, so a delta that spells a
/// parent's path in another case means the parent's object: its
/// directories merge in the view, its tombstones and hard links find their
/// targets, and two spellings inside one layer are one object.
#[test]
fn names_resolve_case_insensitively_across_the_chain() {
    let Some(w) = root_and_writer("names_resolve_case_insensitively_across_the_chain") else {
        return;
    };
    let store = Store::new();
    let d = store.d.as_ref();
    let r = |n: &str| vec![("MSWINDOWS.fileattr".to_string(), n.to_string())];
    let delta = Layer {
        entries: vec![
            dir("Files", r("16")),
            dir("Files/WINDOWS", r("16")),
            file("Files/WINDOWS/new.txt", b"new", r("32")),
            file("Files/windows/SYSTEM32/config/sam", b"replaced", r("32")),
            whiteout("Files/.wh.TODELETE.TXT"),
            link("1", "Files/lic", "Files/LICENSE.txt", Vec::new()),
            file("Files/Dir2/a.txt", b"a", r("32")),
            file("Files/DIR2/b.txt", b"b", r("32")),
        ],
        trailer: true,
    };
    let (bt, dt) = (store.tar("base", &base(), w), store.tar("case", &delta, w));
    import(d, "base", None, &bt);
    let imported = import(d, "case", Some("base"), &dt);
    assert_eq!(imported.export_fallback, None);
    assert_eq!(export(d, "case", Some("base")), fs::read(&dt).unwrap());

    let names_in = |p: &Path| {
        let mut n: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let v = d.get(&id("case"), "").unwrap();
    let top = names_in(&v);
    assert!(
        top.contains(&"Windows".to_string()) && !top.contains(&"WINDOWS".to_string()),
        "one Windows directory: {top:?}"
    );
    assert_eq!(fs::read(v.join("Windows/new.txt")).unwrap(), b"new");
    assert_eq!(
        fs::read(v.join("Windows/System32/config/SAM")).unwrap(),
        b"replaced"
    );
    assert_eq!(
        fs::read(v.join("Windows/System32/config/SYSTEM")).unwrap(),
        hive(5),
        "the parent's files stay beside the delta's"
    );
    assert!(!v.join("ToDelete.txt").exists(), "the tombstone applies");
    assert_eq!(fs::read(v.join("lic")).unwrap(), b"MIT or so\r\n");
    assert_eq!(names_in(&v.join("Dir2")), ["a.txt", "b.txt"]);
    assert!(!top.contains(&"DIR2".to_string()), "{top:?}");
    d.put(&id("case")).unwrap();

    let changes = d.changes(&id("case"), Some(&id("base"))).unwrap();
    let kind = |p: &str| kind_of(&changes, p);
    assert_eq!(kind("/Files/Windows/new.txt"), Some(ChangeKind::Add));
    assert_eq!(
        kind("/Files/Windows/System32/config/SAM"),
        Some(ChangeKind::Modify)
    );
    assert_eq!(kind("/Files/ToDelete.txt"), Some(ChangeKind::Delete));

    // Two spellings of one file in one layer are one file, as on NTFS: the
    // first spelling stays, the later entry's content wins, and the
    // record, which the directory can no longer replay, gives way to a
    // generated export.
    let twice = Layer {
        entries: vec![
            dir("Files", winio(0x10, Some(DIR_SD), 1_700_000_000)),
            dir("Hives", winio(0x10, Some(DIR_SD), 1_700_000_000)),
            file(
                "Files/a.txt",
                b"a",
                winio(0x20, Some(FILE_SD), 1_700_000_000),
            ),
            file(
                "Files/A.TXT",
                b"A again",
                winio(0x20, Some(FILE_SD), 1_700_000_000),
            ),
        ],
        trailer: true,
    };
    let tt = store.tar("twice", &twice, w);
    let imported = import(d, "twice", Some("base"), &tt);
    let why = imported.export_fallback.expect("not replayable");
    assert!(why.contains("Files/A.TXT"), "{why}");
    let v = d.get(&id("twice"), "").unwrap();
    assert_eq!(fs::read(v.join("a.txt")).unwrap(), b"A again");
    assert!(!v.join("A.TXT").exists());
    d.put(&id("twice")).unwrap();
    let (_, _, names) = check_tar(
        &export(d, "twice", Some("base")),
        "twice-out",
        store.tmp.path(),
    );
    let files: Vec<_> = names
        .iter()
        .filter(|n| n.eq_ignore_ascii_case("Files/a.txt"))
        .collect();
    assert_eq!(files.len(), 1, "one file in the export: {names:?}");
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

fn is_mounted(p: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!(" {} ", p.display()))
}

#[test]
fn build_from_view_keeps_every_record() {
    if !root("build_from_view_keeps_every_record") {
        return;
    }
    for w in writers("build_from_view_keeps_every_record") {
        let Store { tmp, home, d } = Store::with_chain(w);
        // The whole view of the delta, generated, as a new base layer.
        let whole = export(d.as_ref(), "delta", None);
        let (wt, _, names) = check_tar(&whole, "whole", tmp.path());
        assert!(
            names.contains(&"Files/dir/a.txt:Zone.Identifier".to_string()),
            "{names:?}"
        );
        import(d.as_ref(), "again", None, &wt);
        let again = index(&home, "again");
        // Streams are compared by file and stream name (`:$DATA` or not).
        let key = |p: &[u8]| p.strip_suffix(b":$DATA").unwrap_or(p).to_vec();
        let by_path: HashMap<Vec<u8>, &strata_windows::IndexEntry> =
            again.entries.iter().map(|e| (key(&e.path), e)).collect();
        // Every record of every Files/ object of the chain (nearest first)
        // is kept, but for the ones the tar writer derives from header
        // fields.
        let derived: &[&[u8]] = &[
            b"mtime",
            b"path",
            b"linkpath",
            b"size",
            b"uid",
            b"gid",
            b"uname",
            b"gname",
            b"hdrcharset",
        ];
        let mut seen = std::collections::HashSet::new();
        let mut checked = 0;
        for layer in ["delta", "base"] {
            for e in index(&home, layer).entries {
                if !e.path.starts_with(b"Files/")
                    || !seen.insert(e.path.clone())
                    || e.role == Role::Tombstone
                {
                    continue;
                }
                if e.path == b"Files/ToDelete.txt" || e.role == Role::Opaque {
                    continue;
                }
                let Some(n) = by_path.get(&key(&e.path)) else {
                    panic!(
                        "{w:?}: {} missing from the rebuilt layer",
                        String::from_utf8_lossy(&e.path)
                    );
                };
                for r in &e.records {
                    if derived.contains(&r.k.as_slice()) {
                        continue;
                    }
                    assert!(
                        n.records.contains(r),
                        "{w:?} {}: record {} lost",
                        String::from_utf8_lossy(&e.path),
                        String::from_utf8_lossy(&r.k)
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 15, "{checked}");
        let junction = by_path[&b"Files/j".to_vec()];
        assert_eq!(junction.link, b"C:\\Windows");
        assert_eq!(
            fs::read(home.join("again/streams/Files/dir/a.txt:second")).unwrap(),
            b"2nd"
        );
        // And the rebuilt layer replays exactly.
        assert_eq!(export(d.as_ref(), "again", None), whole);
    }
}

#[test]
fn sandbox_diff_is_a_windows_layer() {
    let Some(w) = root_and_writer("sandbox_diff_is_a_windows_layer") else {
        return;
    };
    for size in [None, Some("64m")] {
        let Store { tmp, home, d } = Store::with_chain(w);
        let mut opts = CreateOpts::default();
        if let Some(s) = size {
            opts.storage_opt.insert("size".into(), s.into());
        }
        d.create_read_write(&id("rw"), Some(&id("delta")), &opts)
            .unwrap();
        let v = d.get(&id("rw"), "").unwrap();
        fs::create_dir(v.join("app")).unwrap();
        fs::write(v.join("app/new.exe"), b"MZ").unwrap();
        fs::write(v.join("dir/a.txt"), b"changed on Linux").unwrap();
        fs::remove_file(v.join("License.txt")).unwrap();
        std::os::unix::fs::symlink("new.exe", v.join("app/alias")).unwrap();
        if size.is_some() {
            let big = vec![0u8; 80 << 20];
            assert!(
                fs::write(v.join("too-big"), big).is_err(),
                "the size limit holds"
            );
            let _ = fs::remove_file(v.join("too-big"));
        }
        let changes = d.changes(&id("rw"), Some(&id("delta"))).unwrap();
        let kind = |p: &str| kind_of(&changes, p);
        assert_eq!(kind("/Files/app/new.exe"), Some(ChangeKind::Add));
        assert_eq!(kind("/Files/dir/a.txt"), Some(ChangeKind::Modify));
        assert_eq!(kind("/Files/License.txt"), Some(ChangeKind::Delete));
        let tar = export(d.as_ref(), "rw", Some("delta"));
        let (tp, check, names) = check_tar(&tar, "rw", tmp.path());
        for n in [
            "Files/app/new.exe",
            "Files/dir/a.txt",
            "Files/.wh.License.txt",
            "Files/app/alias",
        ] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        // The modified file keeps its security descriptor and its streams.
        let sd = &check["sds"]["Files/dir/a.txt"];
        assert_eq!(sd["owner"], "S-1-5-32-544");
        assert!(names.contains(&"Files/dir/a.txt:Zone.Identifier".to_string()));
        d.put(&id("rw")).unwrap();
        // Committed like Docker does: imported as a child of the parent.
        import(d.as_ref(), "committed", Some("delta"), &tp);
        let cv = d.get(&id("committed"), "").unwrap();
        assert_eq!(fs::read(cv.join("dir/a.txt")).unwrap(), b"changed on Linux");
        assert!(!cv.join("License.txt").exists());
        assert_eq!(
            fs::read_link(cv.join("app/alias")).unwrap(),
            Path::new("new.exe")
        );
        d.put(&id("committed")).unwrap();
        d.remove(&id("committed")).unwrap();
        d.remove(&id("rw")).unwrap();
        assert!(!home.join("rw").exists());
    }
}

#[test]
fn empty_init_parent_left_out_of_the_chain() {
    let Some(w) = first_writer("empty_init_parent_left_out_of_the_chain") else {
        return;
    };
    let store = Store::new();
    let (home, d) = (&store.home, &store.d);
    let (bt, dt) = (
        store.tar("base", &base(), w),
        store.tar("delta", &delta(), w),
    );
    import(d.as_ref(), "base", None, &bt);
    d.create(&id("base-init"), Some(&id("base")), &CreateOpts::default())
        .unwrap();
    assert!(!home.join("base-init/Files").exists());
    import(d.as_ref(), "child", Some("base-init"), &dt);
    assert_chain_is_base(&home.join("child"), home);
    // The cross-layer links found the base through the empty layer.
    assert_eq!(
        fs::read(home.join("child/Files/lic2")).unwrap(),
        b"MIT or so\r\n"
    );
    // A tombstone in a base layer is refused.
    let mut bad = base();
    bad.entries.push(whiteout("Files/.wh.x"));
    let t = store.tar("bad", &bad, w);
    let e = d
        .import(&id("bad"), None, &mut fs::File::open(&t).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Files/.wh.x") && e.contains("base layer cannot have tombstones"),
        "{e}"
    );
    assert!(!d.exists(&id("bad")));
}

#[test]
fn registered_by_name_only() {
    assert!(!strata_driver::DRIVERS.contains(&"windowsfilter"));
    assert!(strata_driver::NAMED_DRIVERS.contains(&"windowsfilter"));
    let tmp = tempfile::tempdir().unwrap();
    let d = strata_driver::open(None, &tmp.path().join("h"), &[]).unwrap();
    assert_ne!(d.name(), "windowsfilter");
    let home = tmp.path().join("w");
    drop(open(&home));
    let again = strata_driver::open(None, &home, &[]).unwrap();
    assert_eq!(again.name(), "windowsfilter", "a home keeps its driver");
}

#[test]
fn hostile_windows_tars_are_refused() {
    if !have("python3", "hostile_windows_tars_are_refused") {
        return;
    }
    let dir = |n: &str| dir(n, Vec::new());
    let plain = |n: &str, data: &[u8]| file(n, data, Vec::new());
    // Most cases are one bad entry after a good `Files` directory.
    let in_files = |rest: Vec<Ent>| [dir("Files")].into_iter().chain(rest).collect::<Vec<_>>();
    let with_record =
        |k: &str, v: &str| in_files(vec![file("Files/x", b"x", vec![(k.into(), v.into())])]);
    // A case whose one bad entry is a file, named in the error.
    let one_file =
        |case: &'static str, path: &'static str| (case, in_files(vec![plain(path, b"x")]), path);
    // A case whose one bad entry is the hard link `Files/pw` to `target`.
    let link_out = |case: &'static str, target: &'static str| {
        let pw = link("1", "Files/pw", target, Vec::new());
        (case, in_files(vec![pw]), "Files/pw")
    };
    let cases: Vec<(&str, Vec<Ent>, &str)> = vec![
        one_file("escape", "Files/../../escaped"),
        one_file("escape-into-hives", "Files/../Hives/x"),
        link_out("link-out", "../../../etc/passwd"),
        link_out("link-climb", "Files/../../outside"),
        link_out("link-missing", "Files/nothing"),
        (
            "stream-on-dir",
            in_files(vec![dir("Files/d"), plain("Files/d:evil", b"x")]),
            "Files/d:evil",
        ),
        (
            "stream-orphan",
            in_files(vec![
                plain("Files/a", b"a"),
                dir("Files/b"),
                plain("Files/a:s", b"s"),
            ]),
            "Files/a:s",
        ),
        one_file("unknown-top", "Other/x"),
        one_file("absolute", "/Files/x"),
        one_file("reserved", "Files/CON"),
        one_file("forbidden-char", "Files/a?b"),
        (
            "utilityvm-other",
            vec![dir("UtilityVM"), dir("UtilityVM/Other")],
            "UtilityVM/Other",
        ),
        (
            "through-symlink",
            in_files(vec![
                link("2", "Files/l", "C:\\", Vec::new()),
                plain("Files/l/layer.json", b"{}"),
            ]),
            "Files/l/layer.json",
        ),
        ("bad-sd", with_record("MSWINDOWS.rawsd", "AQID"), "Files/x"),
        (
            "bad-attr",
            with_record("MSWINDOWS.fileattr", "archive"),
            "Files/x",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("deep/home");
    let d = open(&home);
    let before = listing(tmp.path());
    for (name, entries, entry) in cases {
        let t = tmp.path().join(format!("{name}.tar"));
        write(
            &Layer {
                entries,
                trailer: true,
            },
            Writer::Python,
            tmp.path(),
            &t,
        );
        let before_tar = listing(tmp.path());
        let e = d
            .import(&id(name), None, &mut fs::File::open(&t).unwrap())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains(entry), "{name}: the error names the entry: {e}");
        assert!(!d.exists(&id(name)), "{name}");
        assert_eq!(
            listing(tmp.path()),
            before_tar,
            "{name}: something was written outside"
        );
    }
    assert!(!tmp.path().join("escaped").exists() && !tmp.path().join("deep/escaped").exists());
    let _ = before;
}

/// Every path under `dir` except the store's home and the fixtures.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if path.ends_with("home") {
                continue;
            }
            out.push(path.display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}
