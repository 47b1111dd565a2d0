//! Hostile layer tars against the applier. Each case runs on a fresh layer
//! root inside a temp dir that also holds a sentinel tree outside the root
//! (files, directories, symlinks, a hard link, an xattr); the sentinel's
//! full manifest — including ctimes, which any chmod/chown/xattr change
//! moves, and atimes, which any read moves — is taken before the case and
//! must be identical after it. Each case then asserts either the specific
//! rejection (one line naming the entry) or containment (the object landed
//! inside the root), per the contract's "Contain or reject" table.
//!
//! Absolute paths in these entries always name the sentinel (the temp
//! dir's own absolute path), never real host files, so a regression fails
//! the test instead of damaging the machine.
// A failed setup step is a failed test; unwrapping says so with the error.
#![allow(clippy::unwrap_used)]

mod apply_support;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use apply_support::*;
use rustix::fs::FileType;
use strata_layer::{ApplyError, ApplyOptions, ApplyStats, apply_tar};
use strata_tar::{Header, TarReader, TarWriter};

type Entries = Vec<(Header, Vec<u8>)>;

/// Runs one case: builds its entries with the arena (for absolute sentinel
/// paths), applies them, lets `check` judge the outcome, and asserts the
/// sentinel is untouched.
fn case(
    name: &str,
    opts: ApplyOptions,
    build: impl FnOnce(&Arena) -> Entries,
    check: impl FnOnce(&Arena, Result<ApplyStats, ApplyError>),
) {
    // The sentinel has foreign owners and trusted.* xattrs; the applier
    // chowns and makes devices.
    if !need_root(name) {
        return;
    }
    let a = Arena::new();
    let entries = build(&a);
    let r = apply_all(&a.root, opts, &entries);
    check(&a, r);
    a.assert_untouched(name);
}

/// Asserts a rejection naming `entry` (as Debug-quoted in the message) for
/// the given reason.
fn rejected(r: Result<ApplyStats, ApplyError>, entry: &str, reason: &str) {
    let e = r.expect_err("hostile entry was accepted");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.starts_with(&format!("tar entry {entry:?}")),
        "does not name {entry:?}: {msg}"
    );
    assert!(msg.contains(reason), "expected {reason:?} in: {msg}");
}

/// `prefix` + the temp dir's absolute path + `suffix`, as bytes.
fn host(a: &Arena, prefix: &str, suffix: &str) -> Vec<u8> {
    let mut v = prefix.as_bytes().to_vec();
    v.extend_from_slice(&a.tmp_bytes());
    v.extend_from_slice(suffix.as_bytes());
    v
}

/// The temp dir's absolute path without its leading slash: where an
/// absolute sentinel path lands inside the root.
fn inside(a: &Arena, suffix: &str) -> Vec<u8> {
    host(a, "", suffix)[1..].to_vec()
}

fn with_mode(mut e: (Header, Vec<u8>), mode: u32, uid: u64) -> (Header, Vec<u8>) {
    e.0.mode = mode;
    e.0.uid = uid;
    e.0.gid = uid;
    e
}

#[test]
fn absolute_name_is_taken_inside_the_root() {
    case(
        "absolute name",
        DELETE,
        |a| vec![file(&host(a, "", "/outside/passwd"), b"pwned")],
        |a, r| {
            r.unwrap();
            assert_eq!(
                std::fs::read(a.at(&inside(a, "/outside/passwd"))).unwrap(),
                b"pwned"
            );
        },
    );
}

#[test]
fn dotdot_name_is_rejected() {
    case(
        "../x",
        DELETE,
        |_| vec![file(b"../x", b"pwned")],
        |_, r| rejected(r, "../x", "path climbs out of the layer root"),
    );
}

#[test]
fn inner_dotdot_climbing_out_is_rejected() {
    case(
        "a/../../x",
        DELETE,
        |_| vec![dir(b"a"), file(b"a/../../x", b"pwned")],
        |_, r| rejected(r, "a/../../x", "path climbs out of the layer root"),
    );
}

#[test]
fn write_through_symlink_to_slash_is_contained() {
    case(
        "symlink to / then write",
        DELETE,
        |a| {
            let mut through = b"l".to_vec();
            through.extend_from_slice(&host(a, "", "/outside/passwd"));
            vec![
                sym(b"l", b"/"),
                file(&through, b"pwned"),
                file(b"l/x", b"pwned too"),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(
                std::fs::read(a.at(&inside(a, "/outside/passwd"))).unwrap(),
                b"pwned"
            );
            assert_eq!(std::fs::read(a.at(b"x")).unwrap(), b"pwned too");
            assert_eq!(kind(&a.at(b"l")), Some(FileType::Symlink));
        },
    );
}

#[test]
fn dotdot_symlink_chain_is_clamped_at_the_root() {
    // Each target stays inside lexically, but resolving l2 climbs three
    // levels above `a`: in-root resolution stops at the root.
    case(
        "../.. chain then write",
        DELETE,
        |_| {
            vec![
                dir(b"a"),
                dir(b"a/b"),
                dir(b"a/b/c"),
                sym(b"a/b/c/l1", b"../.."),
                sym(b"a/l2", b"b/c/l1/../../.."),
                file(b"a/l2/pwned", b"p"),
                file(b"a/l2/x", b"p"),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(std::fs::read(a.at(b"pwned")).unwrap(), b"p");
            assert_eq!(std::fs::read(a.at(b"x")).unwrap(), b"p");
        },
    );
}

#[test]
fn relative_symlink_climbing_out_is_rejected() {
    case(
        "relative symlink out",
        DELETE,
        |_| vec![dir(b"d"), sym(b"d/l", b"../../x")],
        |_, r| {
            rejected(
                r,
                "d/l",
                "symlink target \"../../x\" climbs out of the layer root",
            )
        },
    );
}

#[test]
fn symlink_chain_to_absolute_dotdot_is_contained() {
    case(
        "a->b, b->/../../outside then write",
        DELETE,
        |_| {
            vec![
                dir(b"outside"),
                sym(b"a", b"b"),
                sym(b"b", b"/../../outside"),
                file(b"a/passwd", b"pwned"),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(std::fs::read(a.at(b"outside/passwd")).unwrap(), b"pwned");
        },
    );
}

#[test]
fn hard_link_to_absolute_host_path_is_rejected() {
    case(
        "hard link to host path",
        DELETE,
        |a| vec![hard(b"h", &host(a, "", "/outside/passwd"))],
        |a, r| {
            let target = String::from_utf8(host(a, "", "/outside/passwd")).unwrap();
            rejected(
                r,
                "h",
                &format!("hard link target {target:?} does not exist in the layer"),
            );
        },
    );
}

#[test]
fn hard_link_to_absolute_name_links_inside() {
    case(
        "hard link /etc/passwd inside",
        DELETE,
        |_| {
            vec![
                dir(b"etc"),
                file(b"etc/passwd", b"inside"),
                hard(b"h", b"/etc/passwd"),
            ]
        },
        |a, r| {
            r.unwrap();
            let m = std::fs::metadata(a.at(b"h")).unwrap();
            assert_eq!(
                m.ino(),
                std::fs::metadata(a.at(b"etc/passwd")).unwrap().ino()
            );
            assert_eq!(m.nlink(), 2);
        },
    );
}

#[test]
fn hard_link_with_dotdot_target_is_rejected() {
    case(
        "hard link ../x",
        DELETE,
        |_| vec![hard(b"h", b"../x")],
        |_, r| {
            rejected(
                r,
                "h",
                "hard link target \"../x\" climbs out of the layer root",
            )
        },
    );
}

#[test]
fn hard_link_through_symlinked_dir_to_outside_is_rejected() {
    case(
        "hard link via symlinked dir",
        DELETE,
        |a| vec![sym(b"l", &host(a, "", "/outside")), hard(b"h", b"l/passwd")],
        |_, r| {
            rejected(
                r,
                "h",
                "hard link target \"l/passwd\" does not exist in the layer",
            )
        },
    );
    case(
        "hard link via symlink to /",
        DELETE,
        |a| {
            vec![
                sym(b"r", b"/"),
                hard(b"h2", &host(a, "r", "/outside/passwd")),
            ]
        },
        |a, r| {
            let target = String::from_utf8(host(a, "r", "/outside/passwd")).unwrap();
            rejected(
                r,
                "h2",
                &format!("hard link target {target:?} does not exist in the layer"),
            );
        },
    );
}

#[test]
fn hard_link_to_directory_is_rejected() {
    case(
        "hard link to dir",
        DELETE,
        |_| vec![dir(b"d"), hard(b"h", b"d")],
        |_, r| rejected(r, "h", "hard link target \"d\" is a directory"),
    );
}

#[test]
fn device_fifo_and_link_replace_symlinks_to_outside() {
    case(
        "device over symlink",
        DELETE,
        |a| {
            vec![
                sym(b"s", &host(a, "", "/outside/passwd")),
                chr(b"s", 1, 3),
                sym(b"p", &host(a, "", "/outside/secret")),
                fifo(b"p"),
                file(b"t", b"t"),
                sym(b"h", &host(a, "", "/outside/passwd")),
                hard(b"h", b"t"),
            ]
        },
        |a, r| {
            r.unwrap();
            let s = lstat(&a.at(b"s")).unwrap();
            assert_eq!(
                FileType::from_raw_mode(s.st_mode),
                FileType::CharacterDevice
            );
            assert_eq!(s.st_rdev, rustix::fs::makedev(1, 3));
            assert_eq!(kind(&a.at(b"p")), Some(FileType::Fifo));
            assert_eq!(std::fs::read(a.at(b"h")).unwrap(), b"t");
        },
    );
}

#[test]
fn whiteout_climbing_out_is_rejected() {
    case(
        "../.wh.x",
        DELETE,
        |_| vec![file(b"../.wh.x", b"")],
        |_, r| rejected(r, "../.wh.x", "path climbs out of the layer root"),
    );
    case(
        "a/../../.wh.x",
        OVERLAY,
        |_| vec![file(b"a/../../.wh.x", b"")],
        |_, r| rejected(r, "a/../../.wh.x", "path climbs out of the layer root"),
    );
}

#[test]
fn whiteout_through_symlinked_dir_deletes_only_inside() {
    case(
        "whiteout via lnk",
        DELETE,
        |a| {
            vec![
                dir(&inside(a, "")),
                dir(&inside(a, "/outside")),
                file(&inside(a, "/outside/passwd"), b"inside copy"),
                sym(b"lnk", &host(a, "", "/outside")),
                file(b"lnk/.wh.passwd", b""),
                // The whiteout of a symlink removes the link, not its target.
                sym(b"lnk2", &host(a, "", "/outside")),
                file(b".wh.lnk2", b""),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(kind(&a.at(&inside(a, "/outside/passwd"))), None);
            assert_eq!(
                kind(&a.at(&inside(a, "/outside"))),
                Some(FileType::Directory)
            );
            assert_eq!(kind(&a.at(b"lnk2")), None);
        },
    );
}

#[test]
fn opaque_marker_in_symlinked_dir_stays_inside() {
    // Delete mode: the "lower" content sits in the root beforehand.
    let prepare = |a: &Arena| {
        let d = a.at(&inside(a, "/outside"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("passwd"), b"lower").unwrap();
        std::fs::write(d.join("secret"), b"lower").unwrap();
        // A lower symlink to the sentinel dir: removing it must not follow.
        std::os::unix::fs::symlink(a.tmp.path().join("outside"), d.join("link")).unwrap();
    };
    case(
        "opaque via lnk (delete)",
        DELETE,
        |a| {
            prepare(a);
            vec![
                sym(b"lnk", &host(a, "", "/outside")),
                file(b"lnk/.wh..wh..opq", b""),
                file(b"lnk/new", b"n"),
            ]
        },
        |a, r| {
            r.unwrap();
            let d = a.at(&inside(a, "/outside"));
            let names: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["new"]);
        },
    );
    case(
        "opaque via lnk (overlay)",
        OVERLAY,
        |a| {
            prepare(a);
            vec![
                sym(b"lnk", &host(a, "", "/outside")),
                file(b"lnk/.wh..wh..opq", b""),
            ]
        },
        |a, r| {
            r.unwrap();
            let x = xattrs(&a.at(&inside(a, "/outside")));
            assert_eq!(x, [(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())]);
        },
    );
}

#[test]
fn opaque_root_does_not_follow_lower_symlinks() {
    case(
        "opaque root with symlink to outside",
        DELETE,
        |a| {
            std::os::unix::fs::symlink(a.tmp.path().join("outside"), a.at(b"link")).unwrap();
            std::fs::create_dir(a.at(b"lowerdir")).unwrap();
            std::os::unix::fs::symlink(a.tmp.path().join("outside/sub"), a.at(b"lowerdir/l"))
                .unwrap();
            vec![file(b".wh..wh..opq", b"")]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(std::fs::read_dir(&a.layer).unwrap().count(), 0);
        },
    );
}

#[test]
fn bad_whiteout_names_are_rejected() {
    case(
        ".wh.",
        DELETE,
        |_| vec![dir(b"d"), file(b"d/.wh.", b"")],
        |_, r| rejected(r, "d/.wh.", "whiteout names no file"),
    );
    case(
        ".wh..",
        DELETE,
        |_| vec![file(b".wh..", b"")],
        |_, r| rejected(r, ".wh..", "whiteout names . or .."),
    );
    case(
        ".wh...",
        OVERLAY,
        |_| vec![file(b"d/.wh...", b"")],
        |_, r| rejected(r, "d/.wh...", "whiteout names . or .."),
    );
}

#[test]
fn nul_in_names_is_rejected() {
    case(
        "NUL",
        DELETE,
        |_| vec![file(b"a\0b", b"x")],
        |_, r| rejected(r, "a\0b", "NUL byte in name"),
    );
    case(
        "NUL link",
        DELETE,
        |_| vec![hard(b"h", b"x\0y")],
        |_, r| rejected(r, "h", "NUL byte in name"),
    );
    case(
        "NUL symlink",
        DELETE,
        |_| vec![sym(b"s", b"/x\0y")],
        |_, r| rejected(r, "s", "NUL byte in name"),
    );
}

#[test]
fn dir_entry_replaces_symlink_to_outside_dir() {
    case(
        "dir over symlink",
        DELETE,
        |a| {
            vec![
                sym(b"d", &host(a, "", "/outside")),
                dir(b"d"),
                file(b"d/passwd", b"inside"),
                sym(b"e", b"/"),
                dir(b"e/"),
                file(b"e/secret", b"inside"),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(kind(&a.at(b"d")), Some(FileType::Directory));
            assert_eq!(std::fs::read(a.at(b"d/passwd")).unwrap(), b"inside");
            assert_eq!(kind(&a.at(b"e")), Some(FileType::Directory));
            assert_eq!(std::fs::read(a.at(b"e/secret")).unwrap(), b"inside");
        },
    );
}

#[test]
fn chmod_and_chown_never_reach_a_symlink_target() {
    case(
        "setuid file over symlink, hard link to symlink",
        DELETE,
        |a| {
            vec![
                sym(b"x", &host(a, "", "/outside/passwd")),
                with_mode(file(b"x", b"mine"), 0o4755, 0),
                sym(b"s", &host(a, "", "/outside/secret")),
                // A hard link to a symlink links the symlink itself, and
                // no mode or owner is applied through it.
                with_mode(hard(b"h", b"s"), 0o6777, 0),
                with_mode(hard(b"h2", b"s"), 0o777, 4321),
            ]
        },
        |a, r| {
            r.unwrap();
            let m = std::fs::symlink_metadata(a.at(b"x")).unwrap();
            assert!(m.file_type().is_file());
            assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
            let h = std::fs::symlink_metadata(a.at(b"h")).unwrap();
            assert!(h.file_type().is_symlink());
            assert_eq!(
                h.ino(),
                std::fs::symlink_metadata(a.at(b"s")).unwrap().ino()
            );
            assert_eq!(h.uid(), 0);
        },
    );
}

#[test]
fn xattrs_on_symlink_pointing_outside_stay_on_the_link() {
    case(
        "xattr on symlink",
        DELETE,
        |a| {
            let (mut h, d) = sym(b"s", &host(a, "", "/outside/passwd"));
            h.xattrs = vec![
                (b"trusted.evil".to_vec(), b"1".to_vec()),
                // Not allowed on symlinks: skipped, like moby.
                (b"user.evil".to_vec(), b"2".to_vec()),
            ];
            vec![(h, d)]
        },
        |a, r| {
            let stats = r.unwrap();
            assert_eq!(
                xattrs(&a.at(b"s")),
                [(b"trusted.evil".to_vec(), b"1".to_vec())]
            );
            assert_eq!(stats.xattrs_skipped, 1);
        },
    );
}

#[test]
fn proc_magic_link_targets_lead_nowhere() {
    case(
        "/proc/self/root",
        DELETE,
        |a| {
            let mut through = b"l".to_vec();
            through.extend_from_slice(&host(a, "", "/outside/pwned"));
            vec![sym(b"l", b"/proc/self/root"), file(&through, b"pwned")]
        },
        |a, r| {
            let entry = String::from_utf8(host(a, "l", "/outside/pwned")).unwrap();
            rejected(r, &entry, "exists but does not resolve to a directory");
        },
    );
    // With a real-looking /proc in the layer, the link still resolves
    // inside it (it is a plain directory there, not procfs).
    case(
        "/proc/self/cwd with proc dir",
        DELETE,
        |_| {
            vec![
                dir(b"proc"),
                dir(b"proc/self"),
                sym(b"c", b"/proc/self/cwd"),
                dir(b"proc/self/cwd"),
                file(b"c/pwned", b"p"),
            ]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(std::fs::read(a.at(b"proc/self/cwd/pwned")).unwrap(), b"p");
        },
    );
}

#[test]
fn long_dotdot_paths() {
    case(
        "many a/../ inside",
        DELETE,
        |_| {
            let mut n = b"a/".to_vec();
            for _ in 0..3000 {
                n.extend_from_slice(b"b/../");
            }
            n.extend_from_slice(b"x");
            vec![file(&n, b"deep")]
        },
        |a, r| {
            r.unwrap();
            assert_eq!(std::fs::read(a.at(b"a/x")).unwrap(), b"deep");
        },
    );
    case(
        "many a/../ then one more",
        DELETE,
        |_| {
            let mut n = Vec::new();
            for _ in 0..3000 {
                n.extend_from_slice(b"a/../");
            }
            n.extend_from_slice(b"../y");
            vec![file(&n, b"out")]
        },
        |_, r| {
            let e = r.unwrap_err().to_string();
            assert!(
                e.ends_with(": path climbs out of the layer root"),
                "{}",
                &e[e.len() - 60..]
            );
        },
    );
}

#[test]
fn truncated_entry_data_is_rejected() {
    case(
        "short data",
        DELETE,
        |_| {
            let (mut h, d) = file(b"f", b"only ten b");
            h.size = 100;
            vec![(h, d)]
        },
        |_, r| rejected(r, "f", "data ended after 10 of 100 bytes"),
    );
}

#[test]
fn non_directories_cannot_replace_the_root() {
    case(
        "./ symlink",
        DELETE,
        |_| vec![sym(b"./", b"/")],
        |_, r| rejected(r, "./", "a symlink cannot replace the layer root directory"),
    );
    case(
        "/ file",
        DELETE,
        |_| vec![file(b"/", b"x")],
        |_, r| {
            rejected(
                r,
                "/",
                "a regular file cannot replace the layer root directory",
            )
        },
    );
}

#[test]
fn overlay_xattrs_from_the_archive_are_dropped() {
    case(
        "forged overlay xattrs",
        OVERLAY,
        |_| {
            let forged = vec![
                (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
                (b"trusted.overlay.redirect".to_vec(), b"/etc".to_vec()),
                (b"user.overlay.whiteout".to_vec(), b"y".to_vec()),
                (b"trusted.ok".to_vec(), b"1".to_vec()),
            ];
            let (mut d, dd) = dir(b"d");
            d.xattrs = forged.clone();
            let (mut f, fd) = file(b"d/f", b"x");
            f.xattrs = forged;
            vec![(d, dd), (f, fd)]
        },
        |a, r| {
            r.unwrap();
            let ok = vec![(b"trusted.ok".to_vec(), b"1".to_vec())];
            assert_eq!(xattrs(&a.at(b"d")), ok);
            assert_eq!(xattrs(&a.at(b"d/f")), ok);
        },
    );
}

#[test]
fn overlay_whiteout_through_symlink_is_contained() {
    case(
        "overlay whiteout via lnk",
        OVERLAY,
        |_| vec![sym(b"lnk", b"/"), file(b"lnk/.wh.x", b"")],
        |a, r| {
            r.unwrap();
            let st = lstat(&a.at(b"x")).unwrap();
            assert_eq!(
                FileType::from_raw_mode(st.st_mode),
                FileType::CharacterDevice
            );
            assert_eq!(st.st_rdev, 0);
        },
    );
}

/// Plain ustar bytes for `entries` (whole-second times, so no PAX header
/// shifts the offsets the raw cases patch).
fn ustar(entries: Entries) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (mut h, d) in entries {
        h.mtime.nanos = 0;
        w.append_data(&h, &d).unwrap();
    }
    let t = w.finish().unwrap();
    // Every entry is one header block: check where they start.
    let mut rd = TarReader::new(t.as_slice());
    let mut at = 0;
    while let Some(h) = rd.next_entry().unwrap() {
        assert_eq!(rd.entry_offset(), at);
        at += 512 + h.size.next_multiple_of(512);
    }
    t
}

/// A valid archive of a directory and two files, for the raw-byte cases:
/// headers at 0, 512 and 4096.
fn valid_tar() -> Vec<u8> {
    ustar(vec![
        dir(b"d"),
        file(b"d/a", &[b'a'; 3000]),
        file(b"d/b", b"bbbb"),
    ])
}

/// Recomputes the checksum of the ustar header block at `off`.
fn fix_checksum(t: &mut [u8], off: usize) {
    let blk = &mut t[off..off + 512];
    blk[148..156].copy_from_slice(b"        ");
    let sum: u32 = blk.iter().map(|&b| u32::from(b)).sum();
    let mut field = Vec::new();
    write!(field, "{sum:06o}\0 ").unwrap();
    blk[148..156].copy_from_slice(&field);
}

fn raw_case(
    name: &str,
    bytes: Vec<u8>,
    check: impl FnOnce(&Arena, Result<ApplyStats, ApplyError>),
) {
    if !need_root(name) {
        return;
    }
    let a = Arena::new();
    let mut rd = TarReader::new(bytes.as_slice());
    let r = apply_tar(&a.root, &mut rd, DELETE);
    check(&a, r);
    a.assert_untouched(name);
}

#[test]
fn raw_streams_truncated_corrupt_or_absurd_are_rejected() {
    let good = valid_tar();
    // Sanity: the untouched stream applies.
    raw_case("valid", good.clone(), |a, r| {
        assert_eq!(r.unwrap().entries, 3);
        assert_eq!(std::fs::read(a.at(b"d/b")).unwrap(), b"bbbb");
    });
    // Header of d/a is the second block; its data follows.
    let a_hdr = 512;
    raw_case(
        "truncated data",
        good[..a_hdr + 512 + 1000].to_vec(),
        |_, r| {
            let e = r.unwrap_err();
            assert!(matches!(e, ApplyError::Tar(_)), "{e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with("tar entry \"d/a\" at offset 512"), "{msg}");
            assert!(msg.contains("truncated"), "{msg}");
        },
    );
    raw_case("truncated header", good[..a_hdr + 100].to_vec(), |_, r| {
        assert!(r.unwrap_err().to_string().contains("truncated"));
    });
    let mut bad = good.clone();
    bad[a_hdr + 10] ^= 0x55;
    raw_case("bad checksum", bad, |_, r| {
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("at offset 512") && msg.contains("checksum"),
            "{msg}"
        );
    });
    // A size of 64 GiB - 1 with the stream ending after 3000 bytes: the
    // applier streams through its fixed buffer and fails at the end of the
    // stream, without allocating by the header's size.
    let mut absurd = good.clone();
    absurd[a_hdr + 124..a_hdr + 136].copy_from_slice(b"777777777777");
    fix_checksum(&mut absurd, a_hdr);
    raw_case("absurd size", absurd, |_, r| {
        let msg = r.unwrap_err().to_string();
        assert!(msg.starts_with("tar entry \"d/a\""), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    });
    // A name climbing out, as raw bytes through the reader: the error
    // carries the entry's offset.
    raw_case(
        "raw ../",
        ustar(vec![dir(b"ok"), file(b"../evil", b"e")]),
        |_, r| {
            assert_eq!(
                r.unwrap_err().to_string(),
                "tar entry \"../evil\" at offset 512: path climbs out of the layer root"
            );
        },
    );
}
