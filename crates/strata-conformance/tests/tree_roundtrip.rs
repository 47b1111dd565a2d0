//! Property test of the applier and the exporter together: a generated
//! tree (long and non-UTF-8 names, PAX-only fields, hard links, devices,
//! fifos, symlinks, xattrs with binary values, odd modes and owners,
//! sub-second times) written as a tar and applied gives root A; exporting A
//! as a full tar and applying that gives root B; A and B are the same tree,
//! and exporting B gives the very bytes exported from A.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use strata_conformance::manifest::{ManifestOptions, manifest};
use strata_conformance::require_root;
use strata_fs::Root;
use strata_layer::{ApplyOptions, CompareOptions, WhiteoutMode, apply_tar, export_diff};
use strata_tar::{EntryKind, Header, TarReader, TarWriter, Timestamp};

/// One generated object; `parent` picks an earlier directory (or the root).
#[derive(Clone, Debug)]
enum Obj {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    HardLink(usize),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct Spec {
    parent: usize,
    name: Vec<u8>,
    obj: Obj,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,12}".prop_map(|s| s.into_bytes()),
        // Non-UTF-8 bytes (no '/' and no NUL).
        prop::collection::vec(prop_oneof![0x80u8..=0xff, b'a'..=b'z'], 1..20),
        // Long names that need PAX or GNU records.
        (100usize..250).prop_map(|n| vec![b'L'; n]),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn obj() -> impl Strategy<Value = Obj> {
    prop_oneof![
        3 => Just(Obj::Dir),
        4 => prop::collection::vec(any::<u8>(), 0..3000).prop_map(Obj::File),
        1 => prop_oneof!["[a-z/]{1,30}".prop_map(|s| s.into_bytes()), Just(vec![b'/'; 1]), (100usize..300).prop_map(|n| vec![b't'; n])]
            .prop_map(Obj::Symlink),
        1 => any::<usize>().prop_map(Obj::HardLink),
        1 => (0u32..300, 0u32..70000).prop_map(|(a, b)| Obj::Char(a, b)),
        1 => (0u32..300, 0u32..300).prop_map(|(a, b)| Obj::Block(a, b)),
        1 => Just(Obj::Fifo),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<usize>(),
        name(),
        obj(),
        prop_oneof![
            Just(0o755u32),
            Just(0o644),
            Just(0o4755),
            Just(0o2750),
            Just(0o1777),
            0u32..0o7777
        ],
        prop_oneof![Just(0u64), 1u64..70000, Just(3_000_000u64)],
        prop_oneof![Just(0u64), 1u64..70000],
        (
            0i64..4_000_000_000,
            prop_oneof![Just(0u32), 0u32..1_000_000_000],
        ),
        prop::collection::vec(
            prop_oneof![
                (
                    prop_oneof![Just(b"trusted.a".to_vec()), Just(b"trusted.bb".to_vec())],
                    prop::collection::vec(any::<u8>(), 0..40)
                ),
                // The kernel checks a capability's structure: a v2 header
                // (revision 2, effective bit) and any permitted set.
                any::<[u8; 4]>().prop_map(|p| {
                    let mut v = vec![1, 0, 0, 2, p[0], p[1], p[2], p[3]];
                    v.resize(20, 0);
                    (b"security.capability".to_vec(), v)
                }),
            ],
            0..3,
        ),
    )
        .prop_map(|(parent, name, obj, mode, uid, gid, mtime, xattrs)| Spec {
            parent,
            name,
            obj,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
}

/// Turns specs into tar entries with unique paths under earlier dirs.
fn entries(specs: &[Spec]) -> Vec<(Header, Vec<u8>)> {
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for s in specs {
        let parent = dirs[s.parent % dirs.len()].clone();
        let path = if parent.is_empty() {
            s.name.clone()
        } else {
            [&parent[..], b"/", &s.name].concat()
        };
        if path.len() > 3000 || !seen.insert(path.clone()) {
            continue;
        }
        let (kind, data) = match &s.obj {
            Obj::Dir => (EntryKind::Directory, Vec::new()),
            Obj::File(d) => (EntryKind::Regular, d.clone()),
            Obj::Symlink(_) => (EntryKind::Symlink, Vec::new()),
            Obj::HardLink(_) if files.is_empty() => (EntryKind::Fifo, Vec::new()),
            Obj::HardLink(_) => (EntryKind::HardLink, Vec::new()),
            Obj::Char(..) => (EntryKind::CharDevice, Vec::new()),
            Obj::Block(..) => (EntryKind::BlockDevice, Vec::new()),
            Obj::Fifo => (EntryKind::Fifo, Vec::new()),
        };
        let mut h = Header::new(kind, path.clone());
        h.mode = s.mode;
        h.uid = s.uid;
        h.gid = s.gid;
        h.mtime = Timestamp {
            secs: s.mtime.0,
            nanos: s.mtime.1,
        };
        h.size = data.len() as u64;
        match &s.obj {
            Obj::Symlink(t) => h.link_name = t.clone(),
            Obj::HardLink(i) if !files.is_empty() => h.link_name = files[i % files.len()].clone(),
            Obj::Char(a, b) | Obj::Block(a, b) => (h.dev_major, h.dev_minor) = (*a, *b),
            _ => {}
        }
        if kind != EntryKind::Symlink && kind != EntryKind::HardLink {
            // security.capability only means something on regular files.
            h.xattrs = s
                .xattrs
                .iter()
                .filter(|(k, _)| kind == EntryKind::Regular || !k.starts_with(b"security."))
                .cloned()
                .collect();
            h.xattrs.sort();
            h.xattrs.dedup_by(|a, b| a.0 == b.0);
        }
        match kind {
            EntryKind::Directory => {
                let mut p = path.clone();
                p.push(b'/');
                h.path = p;
                dirs.push(path);
            }
            EntryKind::Regular => files.push(path),
            _ => {}
        }
        out.push((h, data));
    }
    out
}

fn write_tar(entries: &[(Header, Vec<u8>)]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (h, d) in entries {
        w.append(h, &mut &d[..]).unwrap();
    }
    w.finish().unwrap()
}

fn apply(root: &Root, tar: &[u8]) {
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        writeback: false,
    };
    apply_tar(root, &mut TarReader::new(tar), opts).unwrap();
}

fn export(root: &Root) -> Vec<u8> {
    let mut out = Vec::new();
    export_diff(root, None, &CompareOptions::default(), &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn export_then_import_gives_the_same_tree(specs in prop::collection::vec(spec(), 1..40)) {
        if !require_root("export_then_import_gives_the_same_tree") {
            return Ok(());
        }
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (ra, rb) = (Root::open(&a).unwrap(), Root::open(&b).unwrap());
        apply(&ra, &write_tar(&entries(&specs)));
        let exported = export(&ra);
        apply(&rb, &exported);
        let opts = ManifestOptions::default();
        prop_assert_eq!(manifest(&a, &opts), manifest(&b, &opts));
        prop_assert_eq!(export(&rb), exported, "export is a function of the tree");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// export(import(t)) == t byte for byte, through each driver: the
    /// import records the tar's framing and the export replays it.
    #[test]
    fn driver_export_of_an_import_is_the_same_bytes(specs in prop::collection::vec(spec(), 1..30)) {
        if !require_root("driver_export_of_an_import_is_the_same_bytes") {
            return Ok(());
        }
        let tar = write_tar(&entries(&specs));
        for driver in ["vfs", "overlay"] {
            let tmp = strata_conformance::cases::TmpHome::new();
            let d = strata_driver::open(Some(driver), &tmp.path().join("home"), &[]).unwrap();
            let id = strata_driver::LayerId::new("t").unwrap();
            let r = d.import(&id, None, &mut &tar[..]).unwrap();
            prop_assert!(r.export_fallback.is_none(), "{:?}", r.export_fallback);
            let mut out = Vec::new();
            d.diff(&id, None, &mut out).unwrap();
            prop_assert!(out == tar, "{driver}: {} bytes exported, {} imported", out.len(), tar.len());
        }
    }
}
