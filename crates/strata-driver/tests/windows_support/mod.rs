//! Realistic Windows layer fixtures, written at run time by two
//! independent tar writers: Python's `tarfile` (PAX) and Go's
//! `archive/tar` (what go-winio, hcsshim and moby use). The layers are
//! described once here (entries with their PAX records) and handed to both
//! writers as JSON, so every test runs against both encodings.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One tar entry of a fixture.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ent {
    pub name: String,
    /// Tar type flag: "0", "1", "2", "5".
    pub kind: String,
    pub mode: u32,
    /// Hex of the data.
    pub data: String,
    pub link: String,
    pub mtime: (i64, u32),
    pub records: Vec<(String, String)>,
}

/// A fixture layer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Layer {
    pub entries: Vec<Ent>,
    /// Write the end-of-archive marker (imgutil's base layers have none).
    pub trailer: bool,
}

pub const GGCR_SD: &str =
    "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";
const T: i64 = 1_700_000_000;

fn sd_b64(sddl: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(strata_windows::sddl_to_binary(sddl).unwrap())
}

fn recs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// go-winio's records for an entry: creation time, attributes, SD, times.
pub fn winio(attr: u32, sddl: Option<&str>, t: i64) -> Vec<(String, String)> {
    let mut r = vec![
        (
            "LIBARCHIVE.creationtime".to_string(),
            format!("{t}.1234567"),
        ),
        ("MSWINDOWS.fileattr".to_string(), attr.to_string()),
    ];
    if let Some(s) = sddl {
        r.push(("MSWINDOWS.rawsd".to_string(), sd_b64(s)));
    }
    r.push(("atime".to_string(), format!("{}.5", t + 1)));
    r.push(("ctime".to_string(), format!("{}.25", t + 2)));
    r
}

pub fn dir(name: &str, records: Vec<(String, String)>) -> Ent {
    Ent {
        name: name.into(),
        kind: "5".into(),
        mode: 0o40000,
        data: String::new(),
        link: String::new(),
        mtime: (T, 123_456_700),
        records,
    }
}

pub fn file(name: &str, data: &[u8], records: Vec<(String, String)>) -> Ent {
    Ent {
        name: name.into(),
        kind: "0".into(),
        mode: 0o100000,
        data: hex::encode(data),
        link: String::new(),
        mtime: (T, 123_456_700),
        records,
    }
}

pub fn link(kind: &str, name: &str, target: &str, records: Vec<(String, String)>) -> Ent {
    Ent {
        name: name.into(),
        kind: kind.into(),
        mode: if kind == "2" { 0o120000 } else { 0o100644 },
        data: String::new(),
        link: target.into(),
        mtime: (T, 0),
        records,
    }
}

/// A whiteout as moby and hcsshim export it: everything zero.
pub fn whiteout(name: &str) -> Ent {
    Ent {
        name: name.into(),
        kind: "0".into(),
        mode: 0,
        data: String::new(),
        link: String::new(),
        mtime: (0, 0),
        records: Vec::new(),
    }
}

/// An 8192-byte registry hive stub: a `regf` header, zeros after.
pub fn hive(tag: u8) -> Vec<u8> {
    let mut h = vec![0u8; 8192];
    h[..4].copy_from_slice(b"regf");
    h[4] = tag;
    h[8191] = tag;
    h
}

pub const FILE_SD: &str = "O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)";
pub const DIR_SD: &str = "O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;OICI;0x1200a9;;;BU)";
pub const BCD: &str = "UtilityVM/Files/EFI/Microsoft/Boot/BCD";

/// The minimal base layer: config dirs, five 8192-byte hives, a licence,
/// a file later deleted, and a utility VM with its BCD and logs (one
/// UtilityVM file a hard link to Files/, as real base layers have).
pub fn base() -> Layer {
    let d = |n: &str| dir(n, winio(0x10, Some(DIR_SD), T));
    let mut e = vec![
        d("Files"),
        d("Files/Windows"),
        d("Files/Windows/System32"),
        d("Files/Windows/System32/config"),
    ];
    for (i, h) in ["DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"]
        .iter()
        .enumerate()
    {
        e.push(file(
            &format!("Files/Windows/System32/config/{h}"),
            &hive(i as u8 + 1),
            winio(0x20, Some(FILE_SD), T),
        ));
    }
    let mut lic = winio(0x21, Some(FILE_SD), T);
    lic.push(("VENDOR.note".into(), "kept verbatim".into()));
    e.push(file("Files/License.txt", b"MIT or so\r\n", lic));
    e.push(file(
        "Files/ToDelete.txt",
        b"soon gone",
        winio(0x20, Some(FILE_SD), T),
    ));
    for n in [
        "UtilityVM",
        "UtilityVM/Files",
        "UtilityVM/Files/EFI",
        "UtilityVM/Files/EFI/Microsoft",
        "UtilityVM/Files/EFI/Microsoft/Boot",
    ] {
        e.push(dir(n, winio(0x10, None, T)));
    }
    let mut bcd = hive(9);
    bcd.resize(12288, 7);
    e.push(file(BCD, &bcd, winio(0x26, None, T)));
    for (i, log) in ["BCD.LOG", "BCD.LOG1", "BCD.LOG2"].iter().enumerate() {
        e.push(file(
            &format!("UtilityVM/Files/EFI/Microsoft/Boot/{log}"),
            &vec![b'L' + i as u8; 1024 + i],
            winio(0x26, None, T),
        ));
    }
    e.push(link(
        "1",
        "UtilityVM/Files/SYSTEM",
        "Files/Windows/System32/config/SYSTEM",
        Vec::new(),
    ));
    Layer {
        entries: e,
        trailer: true,
    }
}

/// A delta layer with everything a Windows layer can say: EAs, two
/// streams (both naming forms), a symlink, a junction, in-layer and
/// cross-layer hard links (one without the Files/ prefix, as ggcr writes),
/// a tombstone, an opaque marker, a hive delta, a legacy SDDL record,
/// BuildKit's unpadded creation time, a long non-ASCII name and an
/// unknown record.
pub fn delta() -> Layer {
    let mut a = winio(0x20, Some(FILE_SD), T);
    a.push((
        "MSWINDOWS.xattr.$KERNEL.PURGE.ESBCACHE".into(),
        "AQIDBA==".into(),
    ));
    a.push(("VENDOR.unknown".into(), "x=y z".into()));
    let mut legacy = vec![("MSWINDOWS.fileattr".to_string(), "32".to_string())];
    legacy.push(("MSWINDOWS.sd".into(), "O:BAG:SYD:(A;;FA;;;WD)".into()));
    let mut bk = recs(&[
        ("MSWINDOWS.fileattr", "32"),
        ("LIBARCHIVE.creationtime", "1700000000.5"),
    ]);
    bk.push(("MSWINDOWS.rawsd".into(), GGCR_SD.into()));
    let mut junction = winio(0x410, Some(DIR_SD), T);
    junction.push(("MSWINDOWS.mountpoint".into(), "1".into()));
    let long = format!("Files/dir/{}-ünïcødé.txt", "long".repeat(30));
    let e = vec![
        dir("Files", recs(&[("MSWINDOWS.fileattr", "16")])),
        dir("Hives", recs(&[("MSWINDOWS.fileattr", "16")])),
        dir("Files/dir", winio(0x10, Some(DIR_SD), T)),
        file("Files/dir/a.txt", b"hello windows\r\n", a),
        file(
            "Files/dir/a.txt:Zone.Identifier",
            b"[ZoneTransfer]\r\nZoneId=3\r\n",
            recs(&[("atime", "1700000001.5")]),
        ),
        file("Files/dir/a.txt:second:$DATA", b"2nd", Vec::new()),
        link(
            "2",
            "Files/dir/l",
            "..\\License.txt",
            winio(0x420, Some(FILE_SD), T),
        ),
        link("2", "Files/j", "C:\\Windows", junction),
        link("1", "Files/dir/h", "Files/dir/a.txt", Vec::new()),
        link("1", "Files/lic2", "Files/License.txt", Vec::new()),
        link("1", "Files/lic3", "License.txt", Vec::new()),
        whiteout("Files/.wh.ToDelete.txt"),
        whiteout("Files/dir/.wh..wh..opq"),
        file("Files/legacy.txt", b"legacy sd", legacy),
        file("Files/buildkit.txt", b"bk", bk),
        file(&long, b"long name", winio(0x20, Some(FILE_SD), T)),
        file(
            "Hives/Software_Delta",
            &hive(0x42),
            recs(&[("MSWINDOWS.fileattr", "32")]),
        ),
    ];
    Layer {
        entries: e,
        trailer: true,
    }
}

/// Whether a command exists; under CI=true a missing one panics.
pub fn have(tool: &str, case: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{case}: {tool} is not installed, and CI must not skip");
        }
        eprintln!("SKIP: {case}: {tool} is not installed");
    }
    ok
}

/// True when running as root; under CI=true not being root panics.
pub fn root(case: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{case}: needs root, and CI must not skip it");
    }
    eprintln!("SKIP: {case}: needs root (mounts, device nodes)");
    false
}

const PY_WRITER: &str = r#"
import json, sys, tarfile
spec = json.load(open(sys.argv[1]))
out = sys.argv[2]
with open(out, "wb") as f:
    tf = tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT)
    for e in spec["entries"]:
        ti = tarfile.TarInfo(e["name"])
        ti.type = e["kind"].encode()
        ti.mode = e["mode"]
        s, ns = e["mtime"]
        ti.mtime = s + ns / 1e9 if ns else s
        ti.linkname = e["link"]
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.pax_headers = {k: v for k, v in e["records"]}
        data = bytes.fromhex(e["data"])
        if ti.type == tarfile.REGTYPE:
            ti.size = len(data)
            import io
            tf.addfile(ti, io.BytesIO(data))
        else:
            tf.addfile(ti)
    if spec["trailer"]:
        tf.close()
    else:
        # No end-of-archive marker, as imgutil's base layers.
        f.truncate(tf.offset)
"#;

const GO_WRITER: &str = r#"package main

import (
	"archive/tar"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"time"
)

type ent struct {
	Name    string      `json:"name"`
	Kind    string      `json:"kind"`
	Mode    int64       `json:"mode"`
	Data    string      `json:"data"`
	Link    string      `json:"link"`
	Mtime   [2]int64    `json:"mtime"`
	Records [][2]string `json:"records"`
}

type layer struct {
	Entries []ent `json:"entries"`
	Trailer bool  `json:"trailer"`
}

func paxTime(s string) time.Time {
	secs, frac := s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		secs, frac = s[:i], s[i+1:]
	}
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		panic(err)
	}
	frac = (frac + "000000000")[:9]
	nsec, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		panic(err)
	}
	return time.Unix(sec, nsec)
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var l layer
	if err := json.Unmarshal(raw, &l); err != nil {
		panic(err)
	}
	f, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	tw := tar.NewWriter(f)
	for _, e := range l.Entries {
		data, err := hex.DecodeString(e.Data)
		if err != nil {
			panic(err)
		}
		h := &tar.Header{
			Typeflag: e.Kind[0],
			Name:     e.Name,
			Linkname: e.Link,
			Mode:     e.Mode,
			ModTime:  time.Unix(e.Mtime[0], e.Mtime[1]),
			Format:   tar.FormatPAX,
		}
		for _, r := range e.Records {
			// Go writes the standard times from the header's fields (as
			// go-winio sets them), never from PAXRecords.
			switch r[0] {
			case "atime":
				h.AccessTime = paxTime(r[1])
			case "ctime":
				h.ChangeTime = paxTime(r[1])
			default:
				if h.PAXRecords == nil {
					h.PAXRecords = map[string]string{}
				}
				h.PAXRecords[r[0]] = r[1]
			}
		}
		if e.Kind == "0" {
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(data); err != nil {
			panic(err)
		}
	}
	if l.Trailer {
		err = tw.Close()
	} else {
		err = tw.Flush()
	}
	if err != nil {
		panic(err)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
}
"#;

/// The two writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Python,
    Go,
}

/// The Go writer, built once (offline, standard library only) into a
/// cache beside Go's own build cache, keyed by its source, so parallel
/// test binaries share it and nothing is left per run.
fn go_writer(_dir: &Path) -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cache = std::env::temp_dir().join("strata-test-gocache");
        std::fs::create_dir_all(&cache).unwrap();
        let key = GO_WRITER.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let bin = cache.join(format!("winlayer-{key:016x}"));
        if bin.exists() {
            return bin;
        }
        let src = cache.join(format!("src-{key:016x}-{}", std::process::id()));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("main.go"), GO_WRITER).unwrap();
        let out = Command::new("go")
            .args(["build", "-o", "winlayer", "main.go"])
            .current_dir(&src)
            .env("GOPROXY", "off")
            .env("GO111MODULE", "off")
            .env("GOCACHE", &cache)
            .env("GOPATH", src.join("gopath"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(src.join("winlayer"), &bin).unwrap();
        let _ = std::fs::remove_dir_all(&src);
        bin
    })
    .clone()
}

/// Writes `layer` with `writer` to `out`.
pub fn write(layer: &Layer, writer: Writer, dir: &Path, out: &Path) {
    let spec = dir.join(format!("spec-{}.json", rand_name()));
    std::fs::write(&spec, serde_json::to_vec(layer).unwrap()).unwrap();
    let status = match writer {
        Writer::Python => {
            let py = dir.join("writer.py");
            std::fs::write(&py, PY_WRITER).unwrap();
            Command::new("python3")
                .arg(&py)
                .arg(&spec)
                .arg(out)
                .status()
                .unwrap()
        }
        Writer::Go => Command::new(go_writer(dir))
            .arg(&spec)
            .arg(out)
            .status()
            .unwrap(),
    };
    assert!(status.success(), "{writer:?} writer failed");
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which writers this machine has (Go and Python are required under CI).
pub fn writers(case: &str) -> Vec<Writer> {
    let mut w = Vec::new();
    if have("python3", case) {
        w.push(Writer::Python);
    }
    if have("go", case) {
        w.push(Writer::Go);
    }
    w
}

/// An independent reader of Windows layer tars (Python's tarfile) that
/// checks the spec's structural rules and parses every security
/// descriptor by hand; prints the entry names as JSON.
pub const PY_CHECK: &str = r#"
import base64, json, struct, sys, tarfile

def parse_sd(b, name):
    assert len(b) >= 20 and b[0] == 1, f"{name}: bad SD header"
    control, = struct.unpack_from("<H", b, 2)
    assert control & 0x8000, f"{name}: SD not self-relative"
    owner, group, sacl, dacl = struct.unpack_from("<IIII", b, 4)
    def sid(o):
        assert 20 <= o < len(b), f"{name}: SID offset"
        n = b[o + 1]
        assert o + 8 + 4 * n <= len(b), f"{name}: SID runs past the end"
        auth = int.from_bytes(b[o + 2:o + 8], "big")
        subs = struct.unpack_from("<%dI" % n, b, o + 8)
        return "S-%d-%d" % (b[o], auth) + "".join("-%d" % s for s in subs)
    out = {"owner": sid(owner) if owner else None, "group": sid(group) if group else None}
    if dacl:
        size, count = struct.unpack_from("<HH", b, dacl + 2)
        assert dacl + size <= len(b), f"{name}: DACL runs past the end"
        at, aces = dacl + 8, []
        for _ in range(count):
            t, fl, sz = struct.unpack_from("<BBH", b, at)
            mask, = struct.unpack_from("<I", b, at + 4)
            aces.append((t, fl, mask, sid(at + 8)))
            at += sz
        assert at <= dacl + size, f"{name}: ACEs run past the DACL"
        out["aces"] = aces
    return out

tf = tarfile.open(sys.argv[1])
members = tf.getmembers()
names = [m.name.rstrip("/") for m in members]
assert names[:2] == ["Files", "Hives"], names[:2]
seen, last_file, sds = set(), None, {}
for m in members:
    n = m.name.rstrip("/")
    parts = n.split("/")
    assert parts[0] in ("Files", "Hives", "UtilityVM"), n
    assert ".." not in parts and "" not in parts, n
    if len(parts) > 1:
        assert "/".join(parts[:-1]) in seen, f"{n} comes before its parent"
    base = parts[-1]
    if base.startswith(".wh."):
        assert m.isreg() and m.size == 0, n
        continue
    if ":" in base:
        assert m.isreg() and last_file == n.split(":")[0], f"{n} does not follow its file"
        continue
    p = m.pax_headers
    if m.islnk():
        assert m.linkname.startswith("Files/"), f"{n}: link target {m.linkname}"
    else:
        for k in ("MSWINDOWS.fileattr", "MSWINDOWS.rawsd", "LIBARCHIVE.creationtime"):
            assert k in p, f"{n}: no {k}"
        attr = int(p["MSWINDOWS.fileattr"])
        if m.isdir():
            assert attr & 0x10, f"{n}: directory without FILE_ATTRIBUTE_DIRECTORY"
        if m.issym():
            assert attr & 0x400, f"{n}: symlink without FILE_ATTRIBUTE_REPARSE_POINT"
            assert "/" not in m.linkname, f"{n}: link text {m.linkname!r} not in Windows form"
        sds[n] = parse_sd(base64.b64decode(p["MSWINDOWS.rawsd"]), n)
        float(p["LIBARCHIVE.creationtime"])
    seen.add(n)
    last_file = n if m.isreg() else None
print(json.dumps({"names": names, "sds": sds}))
"#;

/// Runs [`PY_CHECK`] on `tar`; returns its JSON output.
pub fn py_check(tar: &Path, dir: &Path) -> serde_json::Value {
    let py = dir.join("check.py");
    std::fs::write(&py, PY_CHECK).unwrap();
    let out = Command::new("python3").arg(&py).arg(tar).output().unwrap();
    assert!(
        out.status.success(),
        "the Python reader refused {}: {}",
        tar.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
