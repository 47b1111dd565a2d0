//! Reads archives made by real tar implementations — GNU tar in every
//! format it writes, bsdtar (libarchive), Python's tarfile — from a tree
//! with the awkward cases (long and non-UTF-8 names, links, fifo, xattrs,
//! a sparse file) and checks every entry against the tree, and that raw
//! framing plus data rebuilds each archive byte for byte.
//!
//! Needs `tar`, `bsdtar` (Debian: libarchive-tools), `python3`, `setfattr`
//! (attr) and `mkfifo`; a missing tool fails the test rather than skipping
//! it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{expand_sparse, read_all_checked};
use strata_tar::EntryKind;

/// Which awkward cases a tree contains; older formats cannot hold some.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Profile {
    /// Everything.
    Full,
    /// ustar limits: no path over 255 bytes, no link target over 100.
    Ustar,
    /// V7 limits: names under 100 bytes, no fifo.
    V7,
}

const SPARSE_SIZE: u64 = 4 << 20;
const XATTR_BIN: &[u8] = b"\x00\x01\nx=\xff";

fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "interop test needs `{tool}` (apt-get install tar libarchive-tools attr python3)"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn long_component(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Builds `<base>/tree` for a profile. Returns the base directory.
fn make_tree(base: &Path, profile: Profile) -> PathBuf {
    let tree = base.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("a"), b"hello\n").unwrap();
    fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(tree.join("sub/inner"), b"inner data").unwrap();
    fs::write(tree.join("empty"), b"").unwrap();
    fs::hard_link(tree.join("a"), tree.join("hl")).unwrap();
    std::os::unix::fs::symlink("a", tree.join("sl")).unwrap();
    // Non-UTF-8 name.
    fs::write(tree.join(OsStr::from_bytes(b"n\xff\xfeme")), b"binary name").unwrap();
    // Data crossing the 128 KiB buffer several times with odd length.
    let big: Vec<u8> = (0..300_001u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(tree.join("big"), &big).unwrap();
    if profile != Profile::V7 {
        run(Command::new("mkfifo").arg(tree.join("ff")));
        // Over 100 bytes, but splits into ustar prefix + name.
        let d = tree.join(long_component('d', 60));
        fs::create_dir(&d).unwrap();
        fs::write(d.join(long_component('f', 80)), b"split name").unwrap();
    }
    if profile == Profile::Full {
        std::os::unix::fs::symlink(long_component('t', 150), tree.join("longlink")).unwrap();
        let deep = tree
            .join(long_component('x', 120))
            .join(long_component('y', 120));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join(long_component('z', 50)), b"very long path").unwrap();
        fs::write(
            tree.join(OsStr::from_bytes(&[b'q'; 101]))
                .with_extension(OsStr::from_bytes(b"\xff")),
            b"long non-utf8",
        )
        .unwrap();
    }
    // Sparse: eight data regions, from the very start to the very end;
    // more than the four an old GNU header holds, so GNU formats need a
    // sparse extension block.
    let mut f = fs::File::create(tree.join("sp")).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    for i in 0..7u64 {
        f.seek(SeekFrom::Start(i * (512 << 10) + i * 1000)).unwrap();
        f.write_all(&vec![b'A' + i as u8; 3000 + i as usize])
            .unwrap();
    }
    f.seek(SeekFrom::Start(SPARSE_SIZE - 10)).unwrap();
    f.write_all(&[b'Z'; 10]).unwrap();
    drop(f);
    run(Command::new("setfattr")
        .args(["-n", "user.k", "-v", "v1"])
        .arg(tree.join("a")));
    let hex: String = XATTR_BIN.iter().map(|b| format!("{b:02x}")).collect();
    run(Command::new("setfattr")
        .args(["-n", "user.bin", "-v", &format!("0x{hex}")])
        .arg(tree.join("a")));
    base.to_path_buf()
}

/// What the tree holds, keyed by path relative to the base (no trailing
/// slash): (kind, content or link target, mode, mtime seconds, inode).
struct Expected {
    kind: EntryKind,
    content: Vec<u8>,
    mode: u32,
    mtime: i64,
    ino: u64,
}

fn scan(base: &Path) -> BTreeMap<Vec<u8>, Expected> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from("tree")];
    while let Some(rel) = stack.pop() {
        let full = base.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            for e in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            (EntryKind::Directory, Vec::new())
        } else if ft.is_symlink() {
            let t = fs::read_link(&full).unwrap();
            (EntryKind::Symlink, t.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            (EntryKind::Regular, fs::read(&full).unwrap())
        } else {
            (EntryKind::Fifo, Vec::new())
        };
        out.insert(
            rel.as_os_str().as_bytes().to_vec(),
            Expected {
                kind,
                content,
                mode: md.mode() & 0o7777,
                mtime: md.mtime(),
                ino: md.ino(),
            },
        );
    }
    out
}

fn normalize(p: &[u8]) -> Vec<u8> {
    let p = p.strip_prefix(b"./").unwrap_or(p);
    let p = p.strip_suffix(b"/").unwrap_or(p);
    p.to_vec()
}

/// What a particular archive is expected to carry.
struct Check {
    xattrs: bool,
    sparse: bool,
}

fn verify(label: &str, archive: &[u8], base: &Path, check: Check) {
    let entries = read_all_checked(archive);
    let expected = scan(base);
    let mut seen = BTreeSet::new();
    let mut regular_seen: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut xattrs_found = false;
    let mut sparse_found = false;
    for e in &entries {
        let h = &e.header;
        let key = normalize(&h.path);
        let show = String::from_utf8_lossy(&key).into_owned();
        let exp = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{label}: unexpected entry {show:?}"));
        assert!(seen.insert(key.clone()), "{label}: {show:?} twice");
        match h.kind {
            EntryKind::HardLink => {
                let target = normalize(&h.link_name);
                let ino = regular_seen
                    .get(&target)
                    .unwrap_or_else(|| panic!("{label}: {show:?} links to unseen {target:?}"));
                assert_eq!(*ino, exp.ino, "{label}: {show:?} links to another inode");
                assert_eq!(h.size, 0, "{label}: {show:?}");
            }
            kind => {
                assert_eq!(kind, exp.kind, "{label}: kind of {show:?}");
            }
        }
        match h.kind {
            EntryKind::Regular => {
                let content = expand_sparse(h, &e.data);
                assert_eq!(
                    content.len(),
                    exp.content.len(),
                    "{label}: size of {show:?}"
                );
                assert!(content == exp.content, "{label}: content of {show:?}");
                assert_eq!(h.file_size(), exp.content.len() as u64, "{label}: {show:?}");
                regular_seen.insert(key.clone(), exp.ino);
                if let Some(sp) = &h.sparse {
                    assert_eq!(key, b"tree/sp", "{label}: only sp is sparse");
                    assert_eq!(sp.real_size, SPARSE_SIZE, "{label}");
                    assert!(
                        h.size < 128 * 1024 && sp.chunks.len() >= 8,
                        "{label}: sparse map {:?} size {}",
                        sp.chunks,
                        h.size
                    );
                    sparse_found = true;
                }
                if key == b"tree/a" || key == b"tree/hl" {
                    let xa: BTreeMap<_, _> = h.xattrs.iter().cloned().collect();
                    if check.xattrs {
                        assert_eq!(
                            xa.get(&b"user.k"[..]).map(Vec::as_slice),
                            Some(&b"v1"[..]),
                            "{label}: xattrs {:?}",
                            h.xattrs
                        );
                        assert_eq!(
                            xa.get(&b"user.bin"[..]).map(Vec::as_slice),
                            Some(XATTR_BIN),
                            "{label}"
                        );
                        xattrs_found = true;
                    } else {
                        assert!(h.xattrs.is_empty(), "{label}: {:?}", h.xattrs);
                    }
                }
            }
            EntryKind::Symlink => {
                assert_eq!(h.link_name, exp.content, "{label}: target of {show:?}");
            }
            _ => {}
        }
        if h.kind != EntryKind::Symlink {
            assert_eq!(h.mode, exp.mode, "{label}: mode of {show:?}");
        }
        assert_eq!(h.mtime.secs, exp.mtime, "{label}: mtime of {show:?}");
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(missing.is_empty(), "{label}: missing {missing:?}");
    assert_eq!(xattrs_found, check.xattrs, "{label}: xattrs");
    assert_eq!(sparse_found, check.sparse, "{label}: sparse");
}

fn gnu_tar(base: &Path, out: &Path, args: &[&str]) -> Vec<u8> {
    run(Command::new("tar")
        .current_dir(base)
        .args(args)
        .arg("-cf")
        .arg(out)
        .arg("tree"));
    fs::read(out).unwrap()
}

#[test]
fn gnu_tar_all_formats() {
    require("tar");
    require("setfattr");
    require("mkfifo");
    let cases: &[(&str, Profile, &[&str], Check)] = &[
        (
            "gnu",
            Profile::Full,
            &["--format=gnu"],
            Check {
                xattrs: false,
                sparse: false,
            },
        ),
        (
            "gnu-sparse",
            Profile::Full,
            &["--format=gnu", "--sparse"],
            Check {
                xattrs: false,
                sparse: true,
            },
        ),
        (
            "oldgnu",
            Profile::Full,
            &["--format=oldgnu"],
            Check {
                xattrs: false,
                sparse: false,
            },
        ),
        (
            "oldgnu-sparse",
            Profile::Full,
            &["--format=oldgnu", "--sparse"],
            Check {
                xattrs: false,
                sparse: true,
            },
        ),
        (
            "posix-xattrs",
            Profile::Full,
            &["--format=posix", "--xattrs"],
            Check {
                xattrs: true,
                sparse: false,
            },
        ),
        (
            "posix-sparse-0.0",
            Profile::Full,
            &["--format=posix", "--sparse", "--sparse-version=0.0"],
            Check {
                xattrs: false,
                sparse: true,
            },
        ),
        (
            "posix-sparse-0.1",
            Profile::Full,
            &["--format=posix", "--sparse", "--sparse-version=0.1"],
            Check {
                xattrs: false,
                sparse: true,
            },
        ),
        (
            "posix-sparse-1.0",
            Profile::Full,
            &[
                "--format=posix",
                "--sparse",
                "--sparse-version=1.0",
                "--xattrs",
            ],
            Check {
                xattrs: true,
                sparse: true,
            },
        ),
        (
            "ustar",
            Profile::Ustar,
            &["--format=ustar"],
            Check {
                xattrs: false,
                sparse: false,
            },
        ),
        (
            "v7",
            Profile::V7,
            &["--format=v7"],
            Check {
                xattrs: false,
                sparse: false,
            },
        ),
    ];
    for (label, profile, args, check) in cases {
        let dir = tempfile::tempdir().unwrap();
        let base = make_tree(dir.path(), *profile);
        let archive = gnu_tar(&base, &dir.path().join("out.tar"), args);
        // GNU tar pads to a 10 KiB record: trailing zeros past the two
        // end blocks must also come back through raw framing.
        assert_eq!(archive.len() % 10240, 0, "{label}");
        verify(
            label,
            &archive,
            &base,
            Check {
                xattrs: check.xattrs,
                sparse: check.sparse,
            },
        );
    }
}

#[test]
fn bsdtar_default_and_pax() {
    require("bsdtar");
    require("setfattr");
    require("mkfifo");
    for (label, args) in [
        ("bsdtar", &[][..]),
        ("bsdtar-pax", &["--format", "pax"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let base = make_tree(dir.path(), Profile::Full);
        let out = dir.path().join("out.tar");
        run(Command::new("bsdtar")
            .current_dir(&base)
            .args(args)
            .arg("-cf")
            .arg(&out)
            .arg("tree"));
        let archive = fs::read(&out).unwrap();
        verify(
            label,
            &archive,
            &base,
            Check {
                xattrs: true,
                sparse: true,
            },
        );
    }
}

#[test]
fn python_tarfile_formats() {
    require("python3");
    require("setfattr");
    require("mkfifo");
    for (label, format, profile) in [
        ("python-gnu", "GNU_FORMAT", Profile::Full),
        ("python-pax", "PAX_FORMAT", Profile::Full),
        ("python-ustar", "USTAR_FORMAT", Profile::Ustar),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let base = make_tree(dir.path(), profile);
        let out = dir.path().join("out.tar");
        let script = format!(
            "import tarfile, sys\n\
             with tarfile.open(sys.argv[1], 'w', format=tarfile.{format}) as t:\n\
             \x20   t.add('tree')\n"
        );
        run(Command::new("python3")
            .current_dir(&base)
            .arg("-c")
            .arg(script)
            .arg(&out));
        let archive = fs::read(&out).unwrap();
        verify(
            label,
            &archive,
            &base,
            Check {
                xattrs: false,
                sparse: false,
            },
        );
    }
}

/// The writer's output as real readers see it: GNU tar and bsdtar extract
/// it (names, data, links, fifo, sub-second mtime, xattrs) and Python's
/// tarfile lists the same names.
#[test]
fn writer_output_is_read_by_gnu_tar_bsdtar_and_python() {
    use strata_tar::{Header, TarWriter, Timestamp};
    require("tar");
    require("bsdtar");
    require("python3");
    require("getfattr");
    let long_dir = long_component('d', 120);
    let deep = format!(
        "{long_dir}/{}/{}",
        long_component('e', 120),
        long_component('f', 90)
    );
    let non_utf8: Vec<u8> = b"w/n\xff\xfeme".to_vec();
    let mut entries: Vec<(Header, Vec<u8>)> = Vec::new();
    let dir = |p: &str| {
        let mut h = Header::new(EntryKind::Directory, format!("{p}/"));
        h.mode = 0o755;
        h.mtime = Timestamp::from_secs(1_600_000_000);
        (h, Vec::new())
    };
    entries.push(dir("w"));
    entries.push(dir(&long_dir));
    entries.push(dir(&format!("{long_dir}/{}", long_component('e', 120))));
    let mut f = Header::new(EntryKind::Regular, deep.as_bytes());
    f.mode = 0o640;
    f.size = 5;
    f.uid = 1000;
    f.gid = 1000;
    f.mtime = Timestamp {
        secs: 1_600_000_000,
        nanos: 123_456_789,
    };
    f.xattrs = vec![(b"user.k".to_vec(), b"v\x00\nbin".to_vec())];
    f.pax = vec![(b"MSWINDOWS.fileattr".to_vec(), b"32".to_vec())];
    entries.push((f, b"deep\n".to_vec()));
    let mut n = Header::new(EntryKind::Regular, non_utf8.clone());
    n.mode = 0o644;
    n.size = 3;
    entries.push((n, b"raw".to_vec()));
    let mut s = Header::new(EntryKind::Symlink, "w/sl");
    s.link_name = long_component('t', 150).into_bytes();
    entries.push((s, Vec::new()));
    let mut l = Header::new(EntryKind::HardLink, "w/hl");
    l.link_name = deep.clone().into_bytes();
    entries.push((l, Vec::new()));
    let mut p = Header::new(EntryKind::Fifo, "w/fifo");
    p.mode = 0o600;
    entries.push((p, Vec::new()));

    let mut w = TarWriter::new(Vec::new());
    for (h, d) in &entries {
        w.append_data(h, d).unwrap();
    }
    let archive = w.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tar_path = tmp.path().join("ours.tar");
    fs::write(&tar_path, &archive).unwrap();

    let check_tree = |root: &Path, label: &str, xattrs: bool| {
        let deep_p = root.join(&deep);
        assert_eq!(fs::read(&deep_p).unwrap(), b"deep\n", "{label}");
        let md = fs::metadata(&deep_p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640, "{label}");
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_600_000_000, 123_456_789),
            "{label}"
        );
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{label}");
        assert_eq!(md.nlink(), 2, "{label}: hard link");
        assert_eq!(
            fs::read(root.join(OsStr::from_bytes(&non_utf8))).unwrap(),
            b"raw",
            "{label}"
        );
        assert_eq!(
            fs::read_link(root.join("w/sl")).unwrap().as_os_str().len(),
            150,
            "{label}"
        );
        assert!(
            fs::symlink_metadata(root.join("w/fifo"))
                .unwrap()
                .file_type()
                .is_fifo_like(),
            "{label}"
        );
        if xattrs {
            let out = Command::new("getfattr")
                .args(["--only-values", "-n", "user.k"])
                .arg(&deep_p)
                .output()
                .unwrap();
            assert_eq!(out.stdout, b"v\x00\nbin", "{label}: xattr");
        }
    };

    let gnu_out = tmp.path().join("gnu");
    fs::create_dir(&gnu_out).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--same-owner", "-xf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&gnu_out));
    check_tree(&gnu_out, "GNU tar", true);

    let bsd_out = tmp.path().join("bsd");
    fs::create_dir(&bsd_out).unwrap();
    run(Command::new("bsdtar")
        .args(["--xattrs", "-xpf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&bsd_out));
    check_tree(&bsd_out, "bsdtar", true);

    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, tarfile\n\
             for m in tarfile.open(sys.argv[1]):\n\
             \x20   sys.stdout.buffer.write(m.name.encode('utf-8', 'surrogateescape') + b'\\0')\n",
        )
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    // tarfile strips trailing slashes from directory names.
    let ours: Vec<Vec<u8>> = entries.iter().map(|(h, _)| normalize(&h.path)).collect();
    assert_eq!(listed, ours.iter().map(Vec::as_slice).collect::<Vec<_>>());
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}
