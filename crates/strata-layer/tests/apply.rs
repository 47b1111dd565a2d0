//! The applier on well-formed layers: every entry kind with its metadata,
//! replacement and merge rules, whiteouts in both modes, hard links, exact
//! special modes, xattrs, deferred directory times, sparse files, and the
//! `apply_tar` glue over bytes made by `TarWriter`.
// A failed setup step is a failed test; unwrapping says so with the error.
#![allow(clippy::unwrap_used)]

mod apply_support;

use std::os::unix::fs::MetadataExt;

use apply_support::*;
use rustix::fs::FileType;
use strata_fs::Root;
use strata_layer::{Applier, ApplyOptions, Problem, WhiteoutMode, apply_tar};
use strata_tar::{Header, Sparse, SparseChunk, TarReader, TarWriter, Timestamp};

fn fresh() -> (tempfile::TempDir, Root) {
    let t = tempfile::tempdir().unwrap();
    let r = Root::open(t.path()).unwrap();
    (t, r)
}

fn owned(mut e: (Header, Vec<u8>), mode: u32, uid: u64, gid: u64) -> (Header, Vec<u8>) {
    e.0.mode = mode;
    e.0.uid = uid;
    e.0.gid = gid;
    e
}

fn meta(t: &tempfile::TempDir, rel: &str) -> std::fs::Metadata {
    std::fs::symlink_metadata(t.path().join(rel)).unwrap()
}

/// (mode & 07777, uid, gid, mtime, mtime_nsec)
fn facts(m: &std::fs::Metadata) -> (u32, u32, u32, i64, i64) {
    (
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

const CAP: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn every_entry_kind_with_its_metadata() {
    if !need_root("chown, mknod and trusted.* xattrs") {
        return;
    }
    let (t, root) = fresh();
    let mut f = owned(file(b"dir/file", b"hello"), 0o640, 1000, 1001);
    f.0.xattrs = vec![
        (b"security.capability".to_vec(), CAP.to_vec()),
        (b"user.a".to_vec(), b"\x00\xff".to_vec()),
    ];
    f.0.atime = Some(Timestamp {
        secs: 1_400_000_000,
        nanos: 7,
    });
    let mut blk = chr(b"dir/blk", 7, 9);
    blk.0.kind = strata_tar::EntryKind::BlockDevice;
    let entries = vec![
        owned(dir(b"dir"), 0o750, 5, 6),
        f,
        owned(sym(b"dir/abs", b"/etc/passwd"), 0o777, 7, 8),
        owned(sym(b"dir/rel", b"../dir/file"), 0o777, 0, 0),
        hard(b"dir/hl", b"dir/file"),
        owned(chr(b"dir/null", 1, 3), 0o666, 9, 10),
        blk,
        owned(fifo(b"dir/fifo"), 0o604, 11, 12),
    ];
    let stats = apply_all(&root, DELETE, &entries).unwrap();
    assert_eq!(stats.entries, 8);
    // Regular content once (the hard link adds nothing) plus symlink targets.
    assert_eq!(stats.size, 5 + 11 + 11);
    assert_eq!(stats.xattrs_skipped, 0);

    let (s, ns) = (MTIME.secs, i64::from(MTIME.nanos));
    assert_eq!(facts(&meta(&t, "dir")), (0o750, 5, 6, s, ns));
    // The hard link entry (mode 0644, 0:0) adds a name and leaves the
    // inode's metadata and capability alone.
    let file = meta(&t, "dir/file");
    assert_eq!(facts(&file), (0o640, 1000, 1001, s, ns));
    assert_eq!(
        xattrs(&t.path().join("dir/file"))[0],
        (b"security.capability".to_vec(), CAP.to_vec())
    );
    assert_eq!(file.atime(), 1_400_000_000);
    assert_eq!(std::fs::read(t.path().join("dir/file")).unwrap(), b"hello");
    assert_eq!(file.nlink(), 2);
    assert_eq!(meta(&t, "dir/hl").ino(), file.ino());
    let abs = meta(&t, "dir/abs");
    assert!(abs.file_type().is_symlink());
    assert_eq!(
        (abs.uid(), abs.gid(), abs.mtime(), abs.mtime_nsec()),
        (7, 8, s, ns)
    );
    assert_eq!(
        std::fs::read_link(t.path().join("dir/abs"))
            .unwrap()
            .as_os_str(),
        "/etc/passwd"
    );
    assert_eq!(
        std::fs::read_link(t.path().join("dir/rel"))
            .unwrap()
            .as_os_str(),
        "../dir/file"
    );
    let null = lstat(&t.path().join("dir/null")).unwrap();
    assert_eq!(
        FileType::from_raw_mode(null.st_mode),
        FileType::CharacterDevice
    );
    assert_eq!(
        (null.st_rdev, null.st_mode & 0o7777, null.st_uid),
        (rustix::fs::makedev(1, 3), 0o666, 9)
    );
    let b = lstat(&t.path().join("dir/blk")).unwrap();
    assert_eq!(FileType::from_raw_mode(b.st_mode), FileType::BlockDevice);
    assert_eq!(b.st_rdev, rustix::fs::makedev(7, 9));
    assert_eq!(facts(&meta(&t, "dir/fifo")), (0o604, 11, 12, s, ns));
    assert_eq!(kind(&t.path().join("dir/fifo")), Some(FileType::Fifo));
}

#[test]
fn xattrs_including_binary_capability_survive_chown() {
    if !need_root("chown and security.capability") {
        return;
    }
    let (t, root) = fresh();
    let mut f = owned(file(b"ping", b"\x7fELF"), 0o755, 1000, 1000);
    f.0.xattrs = vec![
        (b"security.capability".to_vec(), CAP.to_vec()),
        (b"trusted.t".to_vec(), vec![0, 1, 2, 255]),
        (b"user.u".to_vec(), b"v".to_vec()),
    ];
    let mut d = dir(b"d");
    d.0.xattrs = vec![(b"user.dir".to_vec(), b"1".to_vec())];
    apply_all(&root, DELETE, &[f, d]).unwrap();
    assert_eq!(
        xattrs(&t.path().join("ping")),
        [
            (b"security.capability".to_vec(), CAP.to_vec()),
            (b"trusted.t".to_vec(), vec![0, 1, 2, 255]),
            (b"user.u".to_vec(), b"v".to_vec()),
        ]
    );
    assert_eq!(facts(&meta(&t, "ping")).1, 1000);
    assert_eq!(
        xattrs(&t.path().join("d")),
        [(b"user.dir".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn special_modes_are_exact() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let entries = vec![
        owned(dir(b"tmp"), 0o1777, 0, 0),
        owned(dir(b"sg"), 0o2775, 0, 50),
        // chown clears setuid/setgid: they must be set after the owner.
        owned(file(b"sg/suid", b"x"), 0o4755, 1000, 1000),
        owned(file(b"sg/sgid", b"x"), 0o2711, 1000, 60),
        owned(file(b"sg/all", b"x"), 0o7777, 3, 3),
        owned(file(b"sg/none", b"x"), 0o000, 0, 0),
        owned(dir(b"sg/sub"), 0o700, 0, 0),
        owned(chr(b"sg/dev", 1, 5), 0o4660, 2, 2),
    ];
    apply_all(&root, DELETE, &entries).unwrap();
    let m = |p| facts(&meta(&t, p));
    assert_eq!(m("tmp").0, 0o1777);
    assert_eq!(m("sg").0, 0o2775);
    assert_eq!(m("sg/suid").0, 0o4755);
    assert_eq!((m("sg/sgid").0, m("sg/sgid").2), (0o2711, 60));
    assert_eq!(m("sg/all").0, 0o7777);
    // The root-owned file in a setgid dir of group 50 still gets group 0.
    assert_eq!((m("sg/none").0, m("sg/none").2), (0o000, 0));
    // A new dir in a setgid dir inherits setgid unless the mode says not.
    assert_eq!((m("sg/sub").0, m("sg/sub").2), (0o700, 0));
    assert_eq!(m("sg/dev").0, 0o4660);
}

#[test]
fn replacement_and_merge_rules() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let entries = vec![
        file(b"f2d", b"was a file"),
        dir(b"d2f"),
        file(b"d2f/child", b"c"),
        dir(b"d2f/sub"),
        owned(dir(b"merge"), 0o700, 1, 1),
        file(b"merge/old", b"o"),
        sym(b"s2f", b"/"),
        file(b"same", b"first"),
        // Now the replacements.
        dir(b"f2d"),
        file(b"f2d/in", b"i"),
        file(b"d2f", b"now a file"),
        owned(dir(b"merge/"), 0o751, 2, 3),
        file(b"merge/new", b"n"),
        file(b"s2f", b"real"),
        file(b"same", b"second"),
    ];
    apply_all(&root, DELETE, &entries).unwrap();
    assert!(meta(&t, "f2d").is_dir());
    assert_eq!(std::fs::read(t.path().join("f2d/in")).unwrap(), b"i");
    assert_eq!(std::fs::read(t.path().join("d2f")).unwrap(), b"now a file");
    let m = facts(&meta(&t, "merge"));
    assert_eq!((m.0, m.1, m.2), (0o751, 2, 3));
    assert_eq!(std::fs::read(t.path().join("merge/old")).unwrap(), b"o");
    assert_eq!(std::fs::read(t.path().join("merge/new")).unwrap(), b"n");
    assert!(meta(&t, "s2f").is_file());
    assert_eq!(std::fs::read(t.path().join("same")).unwrap(), b"second");
}

#[test]
fn missing_parents_are_created_0755_root_owned() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    apply_all(&root, DELETE, &[owned(file(b"a/b/c/f", b"x"), 0o600, 5, 5)]).unwrap();
    for d in ["a", "a/b", "a/b/c"] {
        let m = facts(&meta(&t, d));
        assert_eq!((m.0, m.1, m.2), (0o755, 0, 0), "{d}");
    }
    assert_eq!(facts(&meta(&t, "a/b/c/f")).1, 5);
}

#[test]
fn root_entry_sets_root_metadata() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let mut r = owned(dir(b"./"), 0o711, 4, 4);
    r.0.xattrs = vec![(b"user.root".to_vec(), b"r".to_vec())];
    apply_all(&root, DELETE, &[r, file(b"f", b"x")]).unwrap();
    let m = std::fs::metadata(t.path()).unwrap();
    assert_eq!(facts(&m), (0o711, 4, 4, MTIME.secs, i64::from(MTIME.nanos)));
    assert_eq!(xattrs(t.path()), [(b"user.root".to_vec(), b"r".to_vec())]);
}

#[test]
fn directory_times_are_set_after_children() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let mut d = dir(b"d");
    d.0.mtime = Timestamp {
        secs: 1_000_000_000,
        nanos: 42,
    };
    let mut sub = dir(b"d/sub");
    sub.0.mtime = Timestamp {
        secs: 1_000_000_001,
        nanos: 43,
    };
    let entries = vec![
        d,
        sub,
        file(b"d/sub/f", b"x"),
        file(b"d/g", b"x"),
        file(b"d/.wh.g", b""),
        file(b"d/sub/h", b"x"),
    ];
    apply_all(&root, DELETE, &entries).unwrap();
    let m = meta(&t, "d");
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 42));
    let m = meta(&t, "d/sub");
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_001, 43));
    // A directory replaced later by a file keeps the file's own time.
    let (t, root) = fresh();
    let mut f = file(b"x", b"f");
    f.0.mtime = Timestamp::from_secs(5);
    apply_all(&root, DELETE, &[dir(b"x"), f]).unwrap();
    assert_eq!(meta(&t, "x").mtime(), 5);
}

/// A "lower" tree already in the root, as a vfs layer copied from its parent.
fn lower(t: &tempfile::TempDir) {
    let p = t.path();
    std::fs::create_dir_all(p.join("d/sub/deep")).unwrap();
    std::fs::create_dir_all(p.join("tree/a/b")).unwrap();
    for f in [
        "d/old1",
        "d/old2",
        "d/sub/x",
        "d/sub/deep/y",
        "tree/a/b/f",
        "keep",
        "file",
    ] {
        std::fs::write(p.join(f), b"lower").unwrap();
    }
}

fn names(t: &tempfile::TempDir, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.path().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn delete_whiteouts_remove_files_and_trees() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    lower(&t);
    let entries = vec![
        file(b".wh.file", b""),
        file(b".wh.tree", b""),
        file(b".wh.absent", b""),
        file(b"nodir/.wh.x", b""),
    ];
    let stats = apply_all(&root, DELETE, &entries).unwrap();
    assert_eq!(stats.entries, 4);
    assert_eq!(names(&t, ""), ["d", "keep"]);
    // A whiteout in a missing directory deletes nothing and creates nothing.
    assert!(!t.path().join("nodir").exists());
    // AUFS metadata and other .wh..wh. names are ignored.
    let (t, root) = fresh();
    apply_all(
        &root,
        DELETE,
        &[
            file(b".wh..wh.plnk/123", b"x"),
            file(b"d/.wh..wh.aufs", b""),
        ],
    )
    .unwrap();
    assert!(!t.path().join(".wh..wh.plnk").exists());
    assert!(!t.path().join("d/.wh..wh.aufs").exists());
}

/// Where the caller deals with whiteouts (Windows tombstones), one that
/// reaches the applier is refused, naming the entry, and removes nothing.
#[test]
fn refused_whiteouts_name_the_entry_and_remove_nothing() {
    if !need_root("chown") {
        return;
    }
    let refuse = ApplyOptions {
        whiteouts: WhiteoutMode::Refuse,
        writeback: false,
    };
    for entry in [&b".wh.file"[..], b"d/.wh..wh..opq"] {
        let (t, root) = fresh();
        lower(&t);
        let before = manifest(t.path());
        let e = apply_all(&root, refuse, &[file(entry, b"")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "tar entry {:?}: a whiteout cannot be applied here",
                String::from_utf8_lossy(entry)
            )
        );
        assert_eq!(manifest(t.path()), before, "{e}");
    }
}

#[test]
fn delete_opaque_keeps_only_this_layer_marker_first_or_last() {
    if !need_root("chown") {
        return;
    }
    // Marker before the layer's own entries of d.
    let (t, root) = fresh();
    lower(&t);
    let before = vec![
        dir(b"d"),
        file(b"d/.wh..wh..opq", b""),
        file(b"d/new", b"n"),
        dir(b"d/sub"),
        file(b"d/sub/z", b"z"),
    ];
    apply_all(&root, DELETE, &before).unwrap();
    assert_eq!(names(&t, "d"), ["new", "sub"]);
    assert_eq!(names(&t, "d/sub"), ["z"]);
    assert_eq!(names(&t, ""), ["d", "file", "keep", "tree"]);
    // Marker after them: what this layer wrote in d (also inside a merged
    // subdirectory) stays, the lower rest goes.
    let (t, root) = fresh();
    lower(&t);
    let after = vec![
        dir(b"d"),
        file(b"d/new", b"n"),
        dir(b"d/sub"),
        file(b"d/sub/z", b"z"),
        file(b"d/made/parent/f", b"p"),
        file(b"d/.wh..wh..opq", b""),
    ];
    apply_all(&root, DELETE, &after).unwrap();
    assert_eq!(names(&t, "d"), ["made", "new", "sub"]);
    assert_eq!(names(&t, "d/sub"), ["z"]);
    assert_eq!(names(&t, "d/made/parent"), ["f"]);
}

#[test]
fn overlay_whiteouts_become_devices_and_xattrs() {
    if !need_root("mknod and trusted.* xattrs") {
        return;
    }
    let (t, root) = fresh();
    std::fs::write(t.path().join("existing"), b"lower copy").unwrap();
    let mut wh = file(b"d/.wh.gone", b"");
    wh.0.uid = 3;
    wh.0.gid = 4;
    let entries = vec![
        dir(b"d"),
        wh,
        file(b".wh.existing", b""),
        file(b"o/.wh..wh..opq", b""),
        file(b"o/f", b"f"),
    ];
    apply_all(&root, OVERLAY, &entries).unwrap();
    for p in ["d/gone", "existing"] {
        let st = lstat(&t.path().join(p)).unwrap();
        assert_eq!(
            FileType::from_raw_mode(st.st_mode),
            FileType::CharacterDevice,
            "{p}"
        );
        assert_eq!(st.st_rdev, 0, "{p}");
    }
    assert_eq!(lstat(&t.path().join("d/gone")).unwrap().st_uid, 3);
    assert_eq!(
        xattrs(&t.path().join("o")),
        [(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())]
    );
    assert_eq!(names(&t, "o"), ["f"]);
    // The user.overlay. flavour.
    let (t, root) = fresh();
    let user = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay {
            xattr_prefix: "user.overlay.",
        },
        writeback: true,
    };
    apply_all(&root, user, &[file(b"u/.wh..wh..opq", b"")]).unwrap();
    assert_eq!(
        xattrs(&t.path().join("u")),
        [(b"user.overlay.opaque".to_vec(), b"y".to_vec())]
    );
}

#[test]
fn hard_links_share_inodes_and_replace() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let entries = vec![
        file(b"a", b"data"),
        hard(b"b", b"a"),
        hard(b"dir/c", b"/a"),
        file(b"d", b"other"),
        hard(b"d", b"a"),
        // Linking a name to what it already is changes nothing.
        hard(b"b", b"a"),
        sym(b"s", b"a"),
        hard(b"s2", b"s"),
    ];
    let stats = apply_all(&root, DELETE, &entries).unwrap();
    assert_eq!(stats.size, 4 + 5 + 1);
    let ino = meta(&t, "a").ino();
    for p in ["b", "dir/c", "d"] {
        assert_eq!(meta(&t, p).ino(), ino, "{p}");
    }
    assert_eq!(meta(&t, "a").nlink(), 4);
    assert_eq!(meta(&t, "s2").ino(), meta(&t, "s").ino());
    // Missing target: rejected, naming the entry.
    let (_t, root) = fresh();
    let e = apply_all(&root, DELETE, &[hard(b"x", b"nope")]).unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::LinkTarget { .. })),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "tar entry \"x\": hard link target \"nope\" does not exist in the layer"
    );
}

#[test]
fn sparse_file_gets_holes_and_size() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    let (mut h, _) = file(b"sparse", b"");
    h.size = 8;
    h.sparse = Some(Sparse {
        real_size: 64 << 20,
        chunks: vec![
            SparseChunk {
                offset: 0,
                length: 4,
            },
            SparseChunk {
                offset: 32 << 20,
                length: 4,
            },
            SparseChunk {
                offset: 64 << 20,
                length: 0,
            },
        ],
    });
    let stats = apply_all(&root, DELETE, &[(h, b"headtail".to_vec())]).unwrap();
    assert_eq!(stats.size, 64 << 20);
    let m = meta(&t, "sparse");
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        m.blocks()
    );
    let data = std::fs::read(t.path().join("sparse")).unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[32 << 20..(32 << 20) + 4], b"tail");
    assert!(data[4..32 << 20].iter().all(|&b| b == 0));
    // A sparse map that lies about the data is refused.
    let (mut h, _) = file(b"bad", b"");
    h.size = 4;
    h.sparse = Some(Sparse {
        real_size: 10,
        chunks: vec![SparseChunk {
            offset: 8,
            length: 4,
        }],
    });
    let e = apply_all(&root, DELETE, &[(h, b"abcd".to_vec())]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tar entry \"bad\": bad sparse map"),
        "{e}"
    );
}

#[test]
fn large_file_streams_through_the_buffer() {
    if !need_root("chown") {
        return;
    }
    let (t, root) = fresh();
    // 5 MiB + 3 bytes from a reader that hands out odd-sized pieces.
    struct Odd(u64, u64);
    impl std::io::Read for Odd {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7919).min((self.1 - self.0) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.0 + i as u64) % 251) as u8;
            }
            self.0 += n as u64;
            Ok(n)
        }
    }
    impl strata_tar::EntryData for Odd {}
    let size = (5 << 20) + 3;
    let (mut h, _) = file(b"big", b"");
    h.size = size;
    let mut a = Applier::new(
        &root,
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            writeback: true,
        },
    );
    a.apply(&h, &mut Odd(0, size)).unwrap();
    assert_eq!(a.finish().unwrap().size, size);
    let data = std::fs::read(t.path().join("big")).unwrap();
    assert_eq!(data.len() as u64, size);
    assert!(
        data.iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u64 % 251) as u8)
    );
}

#[test]
fn apply_tar_over_writer_bytes() {
    if !need_root("chown and mknod") {
        return;
    }
    let mut w = TarWriter::new(Vec::new());
    let mut f = owned(file(b"etc/app.conf", b"key=value\n"), 0o4750, 10, 20);
    f.0.xattrs = vec![(b"security.capability".to_vec(), CAP.to_vec())];
    let entries = vec![
        owned(dir(b"./"), 0o755, 0, 0),
        owned(dir(b"etc"), 0o755, 0, 0),
        f,
        sym(b"etc/link", b"/etc/app.conf"),
        hard(b"etc/hard", b"etc/app.conf"),
        chr(b"dev-null", 1, 3),
        fifo(b"pipe"),
        file(b"etc/.wh.gone", b""),
    ];
    for (h, d) in &entries {
        w.append_data(h, d).unwrap();
    }
    let bytes = w.finish().unwrap();
    let (t, root) = fresh();
    std::fs::create_dir(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/gone"), b"lower").unwrap();
    let mut rd = TarReader::new(bytes.as_slice());
    let stats = apply_tar(&root, &mut rd, DELETE).unwrap();
    assert_eq!(stats.entries, entries.len() as u64);
    assert_eq!(stats.size, 10 + 13);
    let m = meta(&t, "etc/app.conf");
    assert_eq!(
        facts(&m),
        (0o4750, 10, 20, MTIME.secs, i64::from(MTIME.nanos))
    );
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        xattrs(&t.path().join("etc/app.conf")),
        [(b"security.capability".to_vec(), CAP.to_vec())]
    );
    // The absolute link resolves inside the root.
    let fd = root
        .resolve(
            b"etc/link",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
    assert_eq!(s, "key=value\n");
    assert!(!t.path().join("etc/gone").exists());
    assert_eq!(kind(&t.path().join("pipe")), Some(FileType::Fifo));
    assert_eq!(
        kind(&t.path().join("dev-null")),
        Some(FileType::CharacterDevice)
    );
}

/// A stream handed out in chunks of the sizes given (cycled), each chunk
/// counted while alive, as the import's read-ahead thread hands it out.
struct Chunks {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    next: usize,
    alive: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Counted(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("a chunk source is not read"))
    }
}

impl strata_tar::ChunkSource for Chunks {
    fn next_chunk(&mut self) -> std::io::Result<Option<strata_tar::SharedChunk>> {
        let n = self.sizes[self.next % self.sizes.len()].min(self.data.len() - self.at);
        self.next += 1;
        let chunk = self.data[self.at..self.at + n].to_vec();
        self.at += n;
        let now = self.alive.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        // The reader's chunk, three batches' worth held by the writer
        // (three chunks each), and one just let go of but not yet dropped.
        assert!(now <= 11, "{now} chunks in memory at once");
        Ok((n > 0).then(|| {
            std::sync::Arc::new(Counted(chunk, self.alive.clone())) as strata_tar::SharedChunk
        }))
    }
}

/// Over a chunk source, file data goes to the writer as pieces of the
/// chunks (files split across chunks anywhere, many files per chunk), the
/// files come out whole, and the chunks the writer holds stay bounded.
#[test]
fn file_data_as_pieces_of_the_stream_chunks() {
    if !need_root("chown") {
        return;
    }
    let body =
        |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| ((i * 7 + j) % 253) as u8).collect() };
    let mut entries = vec![dir(b"d")];
    let sizes = [0usize, 1, 511, 512, 513, 4096, 70_000, 3 << 20];
    for i in 0..300 {
        let len = sizes[i % sizes.len()] + i;
        entries.push(file(format!("d/f{i}").as_bytes(), &body(i, len)));
    }
    let mut w = TarWriter::new(Vec::new());
    for (h, d) in &entries {
        w.append_data(h, d).unwrap();
    }
    let bytes = w.finish().unwrap();
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let src = Chunks {
        data: bytes,
        at: 0,
        sizes: vec![1 << 20, 999, 65_537, 300_001],
        next: 0,
        alive: alive.clone(),
    };
    let (t, root) = fresh();
    let mut rd = TarReader::over_chunks(src);
    apply_tar(&root, &mut rd, DELETE).unwrap();
    drop(rd);
    assert_eq!(alive.load(std::sync::atomic::Ordering::SeqCst), 0);
    for (h, d) in &entries[1..] {
        let got = std::fs::read(t.path().join(p(&h.path))).unwrap();
        assert!(got == *d, "{:?} differs", String::from_utf8_lossy(&h.path));
    }
}

#[test]
fn errors_carry_the_tar_offset() {
    if !need_root("chown") {
        return;
    }
    let mut w = TarWriter::new(Vec::new());
    let mut d = dir(b"a");
    d.0.mtime.nanos = 0;
    w.append_data(&d.0, b"").unwrap();
    let mut l = sym(b"a/l", b"../../etc");
    l.0.mtime.nanos = 0;
    w.append_data(&l.0, b"").unwrap();
    let bytes = w.finish().unwrap();
    let (_t, root) = fresh();
    let e = apply_tar(&root, &mut TarReader::new(bytes.as_slice()), DELETE).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tar entry \"a/l\" at offset 512: symlink target \"../../etc\" climbs out of the layer root"
    );
}

#[test]
fn file_writer_failures_name_their_entry() {
    if !need_root("security.capability") {
        return;
    }
    // An invalid capability value fails on the writer thread, after
    // `apply` of its entry returned; the failure still names the entry,
    // from a later `apply` or from `finish`.
    let (_t, root) = fresh();
    let mut bad = file(b"usr/bin/bad", b"x");
    bad.0.xattrs = vec![(b"security.capability".to_vec(), b"junk".to_vec())];
    let e = apply_all(&root, DELETE, &[bad.clone()]).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "tar entry \"usr/bin/bad\": setxattr \"usr/bin/bad [security.capability]\""
        ),
        "{e}"
    );
    let mut entries = vec![bad];
    for i in 0..500 {
        entries.push(file(format!("f{i}").as_bytes(), &[7u8; 50_000]));
    }
    let mut a = Applier::new(&root, DELETE);
    let mut failed_at = None;
    for (i, (h, d)) in entries.iter().enumerate() {
        if let Err(e) = a.apply(h, &mut d.as_slice()) {
            assert!(
                e.to_string().starts_with("tar entry \"usr/bin/bad\""),
                "{e}"
            );
            failed_at = Some(i);
            break;
        }
    }
    // Reported well before the end of the stream.
    assert!(failed_at.is_some_and(|i| i < 200), "{failed_at:?}");
}
