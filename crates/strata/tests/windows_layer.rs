//! `strata windows-layer build|inspect`: layers built from a directory
//! and from a Linux layer tar are read by an independent reader (Python's
//! tarfile) that checks the spec's structural rules and parses every
//! security descriptor; inspect shows SDDL decoded in Rust.
#![allow(clippy::unwrap_used)]

#[path = "../../strata-driver/tests/windows_support/mod.rs"]
mod windows_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use windows_support::{have, py_check, root};

fn strata(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn build_from_a_directory() {
    if !have("python3", "build_from_a_directory") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("app/bin/deep")).unwrap();
    fs::write(src.join("app/bin/tool.exe"), b"MZ tool").unwrap();
    fs::write(src.join("app/bin/deep/ünïcødé.txt"), b"u").unwrap();
    fs::hard_link(src.join("app/bin/tool.exe"), src.join("app/tool-link.exe")).unwrap();
    std::os::unix::fs::symlink("bin/deep", src.join("app/deep-link")).unwrap();
    std::os::unix::fs::symlink("/app/bin/tool.exe", src.join("abs")).unwrap();
    let home = tmp.path().join("home");
    let out = tmp.path().join("layer.tar");
    let o = out.to_str().unwrap();

    // Absolute symlinks are refused by default, naming the link.
    let r = strata(
        &home,
        &["windows-layer", "build", src.to_str().unwrap(), "-o", o],
    );
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("abs") && e.contains("--dereference"), "{e}");
    assert!(!out.exists(), "no partial output is left");

    let r = ok(&strata(
        &home,
        &[
            "--json",
            "windows-layer",
            "build",
            src.to_str().unwrap(),
            "-o",
            o,
            "--dereference",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["entries"], 10);
    let check = py_check(&out, tmp.path());
    let names: Vec<String> = serde_json::from_value(check["names"].clone()).unwrap();
    assert_eq!(
        names,
        [
            "Files",
            "Hives",
            "Files/abs",
            "Files/app",
            "Files/app/bin",
            "Files/app/bin/deep",
            "Files/app/bin/deep/ünïcødé.txt",
            "Files/app/bin/tool.exe",
            "Files/app/deep-link",
            "Files/app/tool-link.exe"
        ]
    );
    assert!(names.contains(&"Files/app/tool-link.exe".to_string()));
    // BuildKit's default descriptors, parsed by the independent reader.
    assert_eq!(
        check["sds"]["Files/app/bin/tool.exe"]["owner"],
        "S-1-5-32-544"
    );
    assert_eq!(check["sds"]["Files/app/bin/tool.exe"]["group"], "S-1-5-18");

    // inspect shows the descriptor as SDDL, the link and the attributes.
    let r = ok(&strata(&home, &["--json", "windows-layer", "inspect", o]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r).unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(
        row("Files/app/bin/tool.exe")["sd"],
        strata_windows::DEFAULT_FILE_SDDL
    );
    assert_eq!(row("Files/app/deep-link")["link"], "bin\\deep");
    assert_eq!(
        row("Files/app/deep-link")["attributes"],
        serde_json::json!(["DIRECTORY", "REPARSE_POINT"])
    );
    assert_eq!(
        row("Files/app/tool-link.exe")["link"],
        "Files/app/bin/tool.exe"
    );
    assert_eq!(row("Files/abs")["type"], "file");

    // --sddl sets one descriptor for everything.
    let sddl = "O:BUG:BUD:(A;;FA;;;WD)";
    ok(&strata(
        &home,
        &[
            "windows-layer",
            "build",
            src.join("app").to_str().unwrap(),
            "-o",
            o,
            "--sddl",
            sddl,
        ],
    ));
    let check = py_check(&out, tmp.path());
    assert_eq!(check["sds"]["Files/bin/tool.exe"]["owner"], "S-1-5-32-545");
    let r = ok(&strata(&home, &["--json", "windows-layer", "inspect", o]));
    assert!(r.contains(sddl), "{r}");
    let r = strata(
        &home,
        &[
            "windows-layer",
            "build",
            src.to_str().unwrap(),
            "-o",
            o,
            "--sddl",
            "O:XX",
        ],
    );
    assert!(!r.status.success());
}

/// Runs a Python script with one argument; it must succeed.
fn python(script: &str, arg: &Path) {
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Asserts that a build failed with a message holding every one of
/// `needles` and left no output at `out`.
fn refused(r: &std::process::Output, needles: &[&str], out: &Path) {
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(needles.iter().all(|n| e.contains(n)), "{e}");
    assert!(!out.exists(), "no partial output is left");
}

/// Runs strata as an unprivileged user when the tests run as root (a tar
/// source must need no privileges), as the caller otherwise.
fn strata_unprivileged(home: &Path, args: &[&str]) -> std::process::Output {
    if !rustix::process::geteuid().is_root() {
        return strata(home, args);
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn build_from_a_linux_layer_tar_expands_deletions() {
    if !have("python3", "build_from_a_linux_layer_tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The unprivileged builds read the tar and write their output here.
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let tar = tmp.path().join("linux.tar");
    let py = r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tf:
    def add(name, kind=tarfile.REGTYPE, data=b"", link="", uid=0):
        ti = tarfile.TarInfo(name); ti.type = kind; ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.linkname = link; ti.size = len(data); ti.mtime = 1700000000; ti.uid = uid
        tf.addfile(ti, io.BytesIO(data) if data else None)
    add("./", tarfile.DIRTYPE)
    add("./app/", tarfile.DIRTYPE); add("./app/x.exe", data=b"MZ", uid=1000); add("app/.wh.old.dll")
    add("app/cur", tarfile.SYMTYPE, link="bin"); add("app/sub/", tarfile.DIRTYPE)
    add("app/sub/up", tarfile.SYMTYPE, link="../x.exe")
    add("app/bin/", tarfile.DIRTYPE, uid=1000)
    add("opq/", tarfile.DIRTYPE); add("opq/.wh..wh..opq"); add("opq/keep", data=b"k")
    add("app/y.exe", tarfile.LNKTYPE, link="app/x.exe")
"#;
    python(py, &tar);
    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("opq")).unwrap();
    for n in ["old1", "old2", "keep"] {
        fs::write(lower.join("opq").join(n), b"l").unwrap();
    }
    let home = tmp.path().join("home");
    let out = tmp.path().join("win.tar");
    let (t, o) = (tar.to_str().unwrap(), out.to_str().unwrap());
    let build = |src: &str, out: &str| {
        strata_unprivileged(
            &home,
            &[
                "windows-layer",
                "build",
                src,
                "-o",
                out,
                "--lower",
                lower.to_str().unwrap(),
            ],
        )
    };
    let r = strata_unprivileged(&home, &["windows-layer", "build", t, "-o", o]);
    refused(&r, &["opq", "--lower"], &out);
    ok(&build(t, o));
    // The same layer gzip'd builds the same Windows layer.
    let gz = tmp.path().join("linux.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {t} > {}", gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let out_gz = tmp.path().join("win-from-gz.tar");
    ok(&build(gz.to_str().unwrap(), out_gz.to_str().unwrap()));
    assert!(fs::read(&out_gz).unwrap() == fs::read(&out).unwrap());
    let check = py_check(&out, tmp.path());
    let names: Vec<String> = serde_json::from_value(check["names"].clone()).unwrap();
    for n in [
        "Files/app/.wh.old.dll",
        "Files/opq/.wh.old1",
        "Files/opq/.wh.old2",
        "Files/opq/keep",
        "Files/app/y.exe",
        "Files/app/cur",
        "Files/app/sub/up",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".wh..wh..opq") || n == "Files/opq/.wh.keep" || n.contains("./")),
        "{names:?}"
    );
    // A link to a directory that comes later in the tar is a directory
    // link; a link to a file is not.
    let r = ok(&strata(&home, &["--json", "windows-layer", "inspect", o]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r).unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(row("Files/app/cur")["link"], "bin");
    assert_eq!(
        row("Files/app/cur")["attributes"],
        serde_json::json!(["DIRECTORY", "REPARSE_POINT"])
    );
    assert_eq!(row("Files/app/sub/up")["link"], "..\\x.exe");
    assert_eq!(
        row("Files/app/sub/up")["attributes"],
        serde_json::json!(["REPARSE_POINT"])
    );
    assert_eq!(row("Files/app/y.exe")["link"], "Files/app/x.exe");

    // What a Windows layer cannot hold is refused, naming the entry.
    let bad = tmp.path().join("bad.tar");
    let py_bad = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tf:
    ti = tarfile.TarInfo("dev/null"); ti.type = tarfile.CHRTYPE; ti.devmajor = 1; ti.devminor = 3
    tf.addfile(ti)
"#;
    python(py_bad, &bad);
    refused(
        &build(bad.to_str().unwrap(), o),
        &["dev/null", "CharDevice"],
        &out,
    );
    ok(&build(t, o));

    if !root("build_from_a_linux_layer_tar_expands_deletions: import") {
        return;
    }
    // The built layer imports into the windowsfilter driver and inspect
    // reads it back by id.
    let bt = tmp.path().join("base.tar");
    ok(&strata(
        &home,
        &[
            "windows-layer",
            "build",
            lower.to_str().unwrap(),
            "-o",
            bt.to_str().unwrap(),
        ],
    ));
    ok(&strata(
        &home,
        &[
            "--driver",
            "windowsfilter",
            "import",
            "base",
            bt.to_str().unwrap(),
        ],
    ));
    ok(&strata(
        &home,
        &[
            "--driver",
            "windowsfilter",
            "import",
            "built",
            "--parent",
            "base",
            o,
        ],
    ));
    let view = ok(&strata(
        &home,
        &["--driver", "windowsfilter", "mount", "built"],
    ));
    let view = Path::new(view.trim());
    assert!(view.join("opq/keep").exists() && view.join("app/x.exe").exists());
    ok(&strata(
        &home,
        &["--driver", "windowsfilter", "unmount", "built"],
    ));
    let r = ok(&strata(
        &home,
        &[
            "--driver",
            "windowsfilter",
            "--json",
            "windows-layer",
            "inspect",
            "built",
        ],
    ));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r).unwrap();
    assert!(
        rows.iter()
            .any(|r| r["name"] == "Files/opq/.wh.old1" && r["type"] == "tombstone")
    );
    let again = tmp.path().join("again.tar");
    ok(&strata(
        &home,
        &[
            "--driver",
            "windowsfilter",
            "export",
            "built",
            "--parent",
            "base",
            "-o",
            again.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        fs::read(tmp.path().join("again.tar")).unwrap(),
        fs::read(&out).unwrap()
    );
}
