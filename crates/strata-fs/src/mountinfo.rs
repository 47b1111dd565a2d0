//! Reading `/proc/self/mountinfo`: a pure line parser ([`parse`]), the
//! reader for this process's table ([`read_self`]), and the selection of
//! the mounts below a directory in the order they must be unmounted
//! ([`mounts_under`]).
//!
//! A line reads (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//!
//! with zero or more optional fields (7) ended by a lone `-`. The kernel
//! escapes space, tab, newline and backslash in paths as `\ooo` octal, so
//! fields split on single spaces; [`MountEntry`] holds the paths and the
//! source unescaped. The two option fields are kept as the kernel wrote
//! them, escapes and all, so that splitting them on `,` stays unambiguous
//! (overlayfs escapes a `,` inside a value the same way).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::mount::MountError;

/// One mount of a mountinfo table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount (may be reused after unmount).
    pub mount_id: u64,
    /// Id of the parent mount (itself for the namespace root).
    pub parent_id: u64,
    /// Major device number of the filesystem (`st_dev`).
    pub major: u32,
    /// Minor device number of the filesystem.
    pub minor: u32,
    /// The directory of the filesystem that forms the mount's root.
    pub root: PathBuf,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`), as written.
    pub options: String,
    /// Optional fields (`shared:1`, `master:2`, `propagate_from:3`,
    /// `unbindable`).
    pub optional: Vec<String>,
    /// Filesystem type (`overlay`, `ext4`, `fuse.sshfs`).
    pub fstype: String,
    /// Filesystem-specific source (`/dev/vda`, `overlay`, `none`).
    pub source: String,
    /// Per-superblock options (for overlay: `lowerdir=...,upperdir=...`),
    /// as written.
    pub super_options: String,
}

impl MountEntry {
    /// The value of superblock option `key`: `Some("")` for a flag,
    /// `Some(value)` for `key=value` (the first one if repeated, as for
    /// overlay's `lowerdir+`), `None` when absent.
    pub fn super_option(&self, key: &str) -> Option<&str> {
        self.super_options
            .split(',')
            .find_map(|o| match o.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if o == key => Some(""),
                _ => None,
            })
    }

    /// Every value of superblock option `key`, in order (overlay writes
    /// one `lowerdir+=` per lower).
    pub fn super_option_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.super_options
            .split(',')
            .filter_map(move |o| o.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
}

/// Parses a whole mountinfo table. Empty lines are skipped; any other
/// malformed line is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, MountError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_line(l).map_err(|reason| bad(i + 1, l, reason)))
        .collect()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_self() -> Result<Vec<MountEntry>, MountError> {
    let p = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(p).map_err(|e| MountError::io("read", p, e))?;
    parse(&text)
}

/// The mounts at or below `prefix` (compared by whole components), deepest
/// first, and among mounts on the same point the later (upper) one first:
/// the order in which they can be unmounted one by one.
pub fn mounts_under<'a>(entries: &'a [MountEntry], prefix: &Path) -> Vec<&'a MountEntry> {
    let mut found: Vec<(usize, &MountEntry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.mount_point.starts_with(prefix))
        .collect();
    found.sort_by_key(|&(i, e)| std::cmp::Reverse((e.mount_point.components().count(), i)));
    found.into_iter().map(|(_, e)| e).collect()
}

/// A parse error for line `line`.
fn bad(line: usize, text: &str, reason: &'static str) -> MountError {
    MountError::Mountinfo {
        line,
        text: text.to_owned(),
        reason,
    }
}

/// Parses one line.
fn parse_line(line: &str) -> Result<MountEntry, &'static str> {
    let mut f = line.split(' ');
    let mut next = |what: &'static str| f.next().filter(|s| !s.is_empty()).ok_or(what);
    let mount_id = next("no mount id")?.parse().map_err(|_| "bad mount id")?;
    let parent_id = next("no parent id")?.parse().map_err(|_| "bad parent id")?;
    let (major, minor) = next("no device")?
        .split_once(':')
        .ok_or("device is not major:minor")?;
    let major = major.parse().map_err(|_| "bad major device number")?;
    let minor = minor.parse().map_err(|_| "bad minor device number")?;
    let root = PathBuf::from(OsString::from_vec(unescape(next("no root")?)));
    let mount_point = PathBuf::from(OsString::from_vec(unescape(next("no mount point")?)));
    let options = next("no mount options")?.to_owned();
    let mut optional = Vec::new();
    loop {
        match next("no '-' separator")? {
            "-" => break,
            o => optional.push(o.to_owned()),
        }
    }
    let fstype = String::from_utf8_lossy(&unescape(next("no filesystem type")?)).into_owned();
    // The source may be empty on some filesystems, which shows as two
    // spaces in a row; take it raw rather than through `next`.
    let source = String::from_utf8_lossy(&unescape(f.next().ok_or("no source")?)).into_owned();
    // Superblock options are absent on some very old kernels.
    let super_options = f.next().unwrap_or_default().to_owned();
    if f.next().is_some() {
        return Err("extra fields after the superblock options");
    }
    Ok(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype,
        source,
        super_options,
    })
}

/// Undoes the kernel's `\ooo` octal escapes (`mangle()` in
/// fs/proc_namespace.c); a backslash not followed by three octal digits
/// is kept as it is.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 27 0:45 / /var/lib/my\\040dir/merged rw,relatime shared:7 master:2 - overlay overlay rw,lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w,index=off
41 27 0:46 / /tmp/tab\\011and\\012nl\\134bs rw - tmpfs  rw,size=4k
47 27 0:40 / /m ro,relatime - overlay none ro,lowerdir+=/l/0,lowerdir+=/l/1,redirect_dir=on
";

    #[test]
    fn parses_real_lines() {
        let e = parse(SAMPLE).expect("parse");
        assert_eq!(e.len(), 6);
        assert_eq!(
            e[0],
            MountEntry {
                mount_id: 22,
                parent_id: 27,
                major: 0,
                minor: 21,
                root: "/".into(),
                mount_point: "/proc".into(),
                options: "rw,relatime".into(),
                optional: vec![],
                fstype: "proc".into(),
                source: "proc".into(),
                super_options: "rw".into(),
            }
        );
        assert_eq!(e[1].optional, ["shared:1"]);
        assert_eq!((e[1].major, e[1].minor), (254, 0));
        assert_eq!(e[2].root, Path::new("/mnt1"));
        assert_eq!(e[2].optional, ["master:1"]);
        assert_eq!(e[2].super_options, "rw,errors=continue");
        assert_eq!(e[3].mount_point, Path::new("/var/lib/my dir/merged"));
        assert_eq!(e[3].optional, ["shared:7", "master:2"]);
        assert_eq!(e[3].fstype, "overlay");
        assert_eq!(e[3].super_option("index"), Some("off"));
        assert_eq!(e[3].super_option("lowerdir"), Some("/l/a:/l/b"));
        assert_eq!(e[3].super_option("rw"), Some(""));
        assert_eq!(e[3].super_option("userxattr"), None);
        assert_eq!(e[4].mount_point, Path::new("/tmp/tab\tand\nnl\\bs"));
        assert_eq!(e[4].source, "");
        assert_eq!(e[4].super_options, "rw,size=4k");
        assert_eq!(
            e[5].super_option_values("lowerdir+").collect::<Vec<_>>(),
            ["/l/0", "/l/1"]
        );
    }

    #[test]
    fn unescapes_only_octal_triples() {
        assert_eq!(unescape(r"a\040b"), b"a b");
        assert_eq!(unescape(r"\134"), b"\\");
        assert_eq!(unescape(r"a\04"), b"a\\04");
        assert_eq!(unescape(r"a\x41"), b"a\\x41");
        assert_eq!(unescape(r"\777"), b"\\777");
        assert_eq!(unescape(r"end\"), b"end\\");
    }

    #[test]
    fn malformed_lines_name_their_number() {
        for (text, reason) in [
            ("x 1 0:1 / / rw - t s o", "bad mount id"),
            ("1 1 01 / / rw - t s o", "major:minor"),
            ("1 1 0:1 / / rw shared:1 t s o", "'-'"),
            ("1 1 0:1 / / rw -", "no filesystem type"),
            ("1 1 0:1 / / rw - t s o extra", "extra fields"),
        ] {
            let e = parse(&format!("\n{text}\n")).expect_err(text).to_string();
            assert!(e.starts_with("mountinfo line 2: "), "{e}");
            assert!(e.contains(reason), "{e} should say {reason}");
        }
    }

    #[test]
    fn mounts_under_deepest_first_upper_first() {
        let t = "\
1 0 0:1 / / rw - ext4 /dev/a rw
2 1 0:2 / /h/m rw - overlay overlay rw
3 2 0:3 / /h/m/a/b rw - tmpfs t rw
4 1 0:4 / /h/m2 rw - tmpfs t rw
5 2 0:5 / /h/m/a rw - tmpfs t rw
6 2 0:6 / /h/m rw - tmpfs t rw
7 1 0:7 / /hx rw - tmpfs t rw
";
        let e = parse(t).expect("parse");
        let ids: Vec<u64> = mounts_under(&e, Path::new("/h/m"))
            .iter()
            .map(|e| e.mount_id)
            .collect();
        assert_eq!(ids, [3, 5, 6, 2]);
        let ids: Vec<u64> = mounts_under(&e, Path::new("/h/"))
            .iter()
            .map(|e| e.mount_id)
            .collect();
        assert_eq!(ids, [3, 5, 6, 4, 2]);
        assert!(mounts_under(&e, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn reads_own_table() {
        let e = read_self().expect("mountinfo");
        assert!(e.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
