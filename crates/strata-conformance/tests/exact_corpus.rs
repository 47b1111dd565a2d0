//! Exact re-export against real writers: tars made here by GNU tar in each
//! format, bsdtar, Python's tarfile and Go's archive/tar (a layer written
//! by `umoci repack`), plus extra trailing zero blocks, are imported and
//! exported again by each driver, byte for byte; GNU sparse files are the
//! documented fallback (generated, not replayed).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_conformance::cases::TmpHome;
use strata_conformance::require_root;
use strata_driver::LayerId;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with what writers encode differently: long names, a long link,
/// a non-UTF-8 name, a hard link, sizes around block boundaries.
fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("d/sub")).unwrap();
    for (name, size) in [
        ("empty", 0),
        ("one", 1),
        ("b511", 511),
        ("b512", 512),
        ("b513", 513),
        ("big", 70_001),
    ] {
        fs::write(dir.join("d").join(name), vec![b'x'; size]).unwrap();
    }
    let long = format!("d/sub/{}", "l".repeat(140));
    fs::write(dir.join(&long), b"long name").unwrap();
    symlink("x/".repeat(70), dir.join("d/longlink")).unwrap();
    fs::hard_link(dir.join("d/one"), dir.join("d/one-again")).unwrap();
    // `caf\xe9`: a name that is not UTF-8.
    let odd = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9");
    fs::write(dir.join("d").join(odd), b"latin1").unwrap();
}

/// The corpus: (what, tar path, replayable).
fn corpus(work: &Path) -> Vec<(String, PathBuf, bool)> {
    let src = work.join("src");
    tree(&src);
    let mut out = Vec::new();
    for format in ["gnu", "oldgnu", "posix", "ustar"] {
        let t = work.join(format!("gnu-{format}.tar"));
        // ustar cannot hold the 140-byte name split-free or the non-UTF-8
        // name in all cases; GNU tar warns and still writes what it can.
        let mut c = Command::new("tar");
        c.args([&format!("--format={format}"), "--sort=name", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&t)
            .arg(".");
        let _ = c.output().unwrap();
        if t.exists() && fs::metadata(&t).unwrap().len() > 0 {
            out.push((format!("GNU tar --format={format}"), t, true));
        }
    }
    for (what, args) in [
        ("bsdtar", vec![]),
        ("bsdtar --format pax", vec!["--format", "pax"]),
    ] {
        let t = work.join(format!("{}.tar", what.replace([' ', '-'], "_")));
        run(Command::new("bsdtar")
            .args(&args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&t)
            .arg("."));
        out.push((what.to_string(), t, true));
    }
    for fmt in ["GNU_FORMAT", "PAX_FORMAT", "USTAR_FORMAT"] {
        let t = work.join(format!("py-{fmt}.tar"));
        let script = format!(
            "import tarfile,os,sys\nsrc=sys.argv[1]\nwith tarfile.open(sys.argv[2],'w',format=tarfile.{fmt}) as t:\n  for n in sorted(os.listdir(src+'/d')):\n    try: t.add(os.path.join(src,'d',n), arcname='d/'+n, recursive=False)\n    except (ValueError, UnicodeError): pass\n"
        );
        run(Command::new("python3")
            .arg("-c")
            .arg(&script)
            .arg(&src)
            .arg(&t));
        out.push((format!("Python tarfile {fmt}"), t, true));
    }
    // Go's archive/tar, as umoci writes image layers.
    let img = work.join("oci");
    let bundle = work.join("bundle");
    run(Command::new("umoci").args(["init", "--layout"]).arg(&img));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:t", img.display())));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", img.display()))
        .arg(&bundle));
    run(Command::new("cp")
        .arg("-a")
        .arg(src.join("d"))
        .arg(bundle.join("rootfs/d")));
    run(Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:t", img.display()))
        .arg(&bundle));
    let mut blobs: Vec<PathBuf> = fs::read_dir(img.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    let go = work.join("go.tar");
    let out_file = fs::File::create(&go).unwrap();
    run(Command::new("gzip")
        .arg("-dc")
        .arg(&blobs[0])
        .stdout(out_file));
    out.push(("Go archive/tar (umoci repack)".into(), go, true));
    // Trailing zero blocks beyond the two required.
    let padded = work.join("padded.tar");
    let mut bytes = fs::read(work.join("gnu-posix.tar")).unwrap();
    bytes.extend_from_slice(&[0u8; 512 * 7]);
    fs::write(&padded, bytes).unwrap();
    out.push(("GNU tar + 7 extra zero blocks".into(), padded, true));
    // GNU sparse: recorded, but not replayable from an extracted file.
    let sp = work.join("sparse-src");
    fs::create_dir_all(&sp).unwrap();
    let f = fs::File::create(sp.join("holes")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"data", 4 << 20).unwrap();
    let t = work.join("sparse.tar");
    run(Command::new("tar")
        .args(["--sparse", "--format=posix", "-C"])
        .arg(&sp)
        .arg("-cf")
        .arg(&t)
        .arg("holes"));
    out.push(("GNU tar --sparse".into(), t, false));
    out
}

fn exact_for(driver: &str) {
    if !require_root(&format!("exact_corpus_{driver}")) {
        return;
    }
    let work = TmpHome::new();
    let d = strata_driver::open(Some(driver), &work.path().join("home"), &[]).unwrap();
    let corpus = corpus(work.path());
    // 4 GNU formats, 2 bsdtar, 3 Python, Go, padded, sparse.
    assert_eq!(
        corpus.len(),
        12,
        "{:?}",
        corpus.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for (i, (what, path, replayable)) in corpus.into_iter().enumerate() {
        let original = fs::read(&path).unwrap();
        let id = LayerId::new(&format!("c{i}")).unwrap();
        let r = d
            .import(&id, None, &mut &original[..])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut out = Vec::new();
        d.diff(&id, None, &mut out)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if replayable {
            assert!(
                r.export_fallback.is_none(),
                "{what}: {:?}",
                r.export_fallback
            );
            assert!(
                out == original,
                "{what}: export differs from the import ({} vs {} bytes)",
                out.len(),
                original.len()
            );
        } else {
            assert!(
                r.export_fallback
                    .as_deref()
                    .is_some_and(|w| w.contains("sparse")),
                "{what}: {r:?}"
            );
            assert!(
                !out.is_empty(),
                "{what}: the fallback still exports the layer"
            );
        }
    }
}

#[test]
fn exact_corpus_vfs() {
    exact_for("vfs");
}

#[test]
fn exact_corpus_overlay() {
    exact_for("overlay");
}
