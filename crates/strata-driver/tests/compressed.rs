//! Compressed imports: gzip (single and multi-member) and zstd blobs are
//! detected by magic bytes, decompressed, and give the same layer and the
//! same diffID as the plain tar; `expect_digest` matches either digest and
//! a mismatch leaves nothing behind. Runs as root (overlay needs it).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use strata_driver::{Driver, DriverError, ImportOptions, LayerId};

const DRIVERS: [&str; 2] = ["vfs", "overlay"];

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A layer tar made by GNU tar: a few small files, a symlink and a file of
/// several MiB (so the stream spans many read-ahead chunks).
fn layer_tar() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    let p = src.path();
    std::fs::create_dir_all(p.join("etc/deep")).unwrap();
    std::fs::write(p.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(p.join("etc/deep/empty"), b"").unwrap();
    std::os::unix::fs::symlink("hosts", p.join("etc/link")).unwrap();
    // Incompressible-ish so the compressed blob is multi-chunk too.
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u32 = 12345;
    while big.len() < 3 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.push((x >> 16) as u8);
    }
    std::fs::write(p.join("big"), &big).unwrap();
    let out = Command::new("tar")
        .args(["--format=posix", "--sort=name", "--mtime=@1700000000", "-C"])
        .arg(p)
        .args(["-cf", "-", "etc", "big"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {:?}", out);
    out.stdout
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// pigz-style multi-member gzip: each piece its own member, concatenated.
fn gzip_multi(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in b.chunks(700_000) {
        out.extend(gzip(piece));
    }
    out
}

fn zstd_blob(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

/// Compresses with an external tool, if installed (CI installs them).
fn cli(tool: &str, args: &[&str], b: &[u8]) -> Option<Vec<u8>> {
    if Command::new(tool).arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "{tool} missing under CI");
        return None;
    }
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = b.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool} failed");
    Some(out.stdout)
}

/// Path -> content (or `-> target` for symlinks, `dir` for directories).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if ft.is_dir() {
                out.insert(rel, b"dir".to_vec());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn open(driver: &str, home: &Path) -> Box<dyn Driver> {
    strata_driver::open(Some(driver), home, &[]).unwrap()
}

fn staging_empty(home: &Path) -> bool {
    match std::fs::read_dir(home.join("staging")) {
        Ok(mut d) => d.next().is_none(),
        Err(_) => true,
    }
}

#[test]
fn every_compression_gives_the_same_layer() {
    let plain = layer_tar();
    let diff_id = sha(&plain);
    let mut blobs: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("plain", None, plain.clone()),
        ("gzip", Some("gzip"), gzip(&plain)),
        ("gzip-multi", Some("gzip"), gzip_multi(&plain)),
        ("zstd", Some("zstd"), zstd_blob(&plain)),
    ];
    for (name, tool, args, kind) in [
        ("gzip-cli", "gzip", &["-c", "-n"][..], "gzip"),
        ("pigz-cli", "pigz", &["-c", "-n", "-b", "128"][..], "gzip"),
        ("zstd-cli", "zstd", &["-c", "-q"][..], "zstd"),
    ] {
        if let Some(b) = cli(tool, args, &plain) {
            blobs.push((name, Some(kind), b));
        }
    }
    // Two pigz outputs concatenated: what `cat a.gz b.gz` gives.
    if let Some(b) = cli("pigz", &["-c", "-n"], &plain[..plain.len() / 2]) {
        let rest = cli("pigz", &["-c", "-n"], &plain[plain.len() / 2..]).unwrap();
        blobs.push(("pigz-concat", Some("gzip"), [b, rest].concat()));
    }
    for driver in DRIVERS {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let d = open(driver, &home);
        let mut want_tree = None;
        for (name, kind, blob) in &blobs {
            let l = id(&format!("l-{name}"));
            let r = d
                .import(&l, None, &mut &blob[..])
                .unwrap_or_else(|e| panic!("{driver} {name}: {e}"));
            assert_eq!(r.digest, diff_id, "{driver} {name}: diffID");
            assert_eq!(r.tar_bytes, plain.len() as u64, "{driver} {name}");
            assert_eq!(r.compression.as_deref(), *kind, "{driver} {name}");
            let want_cd = kind.map(|_| sha(blob));
            assert_eq!(r.compressed_digest, want_cd, "{driver} {name}");
            let info = d.info(&l).unwrap().import.unwrap();
            assert_eq!(info.digest, diff_id);
            assert_eq!(info.compression.as_deref(), *kind);
            assert_eq!(info.compressed_digest, want_cd);

            let dir = d.get(&l, "").unwrap();
            let got = tree(&dir);
            d.put(&l).unwrap();
            match &want_tree {
                None => want_tree = Some(got),
                Some(w) => assert_eq!(&got, w, "{driver} {name}: tree"),
            }

            // The exact re-export is the uncompressed tar, not the blob.
            let mut out = Vec::new();
            d.diff(&l, None, &mut out).unwrap();
            assert!(out == plain, "{driver} {name}: export differs from the tar");
        }
        assert!(staging_empty(&home));
    }
}

#[test]
fn expect_digest_matches_either_digest_or_leaves_nothing() {
    let plain = layer_tar();
    let blob = gzip_multi(&plain);
    let (diff_id, blob_id) = (sha(&plain), sha(&blob));
    let opts = |d: &str| ImportOptions {
        expect_digest: Some(d.to_string()),
    };
    for driver in DRIVERS {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let d = open(driver, &home);
        d.import_with(&id("by-diffid"), None, &mut &blob[..], &opts(&diff_id))
            .unwrap();
        d.import_with(&id("by-blob"), None, &mut &blob[..], &opts(&blob_id))
            .unwrap();
        d.import_with(&id("plain"), None, &mut &plain[..], &opts(&diff_id))
            .unwrap();

        let wrong = format!("sha256:{}", "0".repeat(64));
        for (name, input) in [("gz", &blob), ("tar", &plain)] {
            let l = id(&format!("bad-{name}"));
            let e = d
                .import_with(&l, None, &mut &input[..], &opts(&wrong))
                .unwrap_err();
            assert!(matches!(e, DriverError::DigestMismatch { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("layer bad-{name}")), "{msg}");
            assert!(msg.contains(&wrong) && msg.contains(&diff_id), "{msg}");
            if name == "gz" {
                assert!(msg.contains(&blob_id), "{msg}");
            }
            assert!(!d.exists(&l), "{driver}: mismatch left a layer");
            assert!(d.info(&l).is_err());
        }
        // A mismatching digest of a parent-child import too.
        let child = id("child");
        assert!(
            d.import_with(&child, Some(&id("plain")), &mut &blob[..], &opts(&wrong))
                .is_err()
        );
        assert!(!d.exists(&child));

        for bad in [
            "sha256:abc",
            "md5:0123",
            &format!("sha256:{}", "A".repeat(64)),
            &diff_id[7..],
        ] {
            let l = id("syntax");
            let e = d
                .import_with(&l, None, &mut &plain[..], &opts(bad))
                .unwrap_err();
            assert!(matches!(e, DriverError::InvalidDigest { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("layer syntax"), "{e}");
            assert!(!d.exists(&l));
        }
        assert!(staging_empty(&home), "{driver}: staging leftovers");
    }
}

#[test]
fn damaged_blobs_fail_naming_the_layer() {
    let plain = layer_tar();
    let gz = gzip(&plain);
    let zst = zstd_blob(&plain);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated gzip", gz[..gz.len() / 2].to_vec()),
        ("gzip without trailer", gz[..gz.len() - 4].to_vec()),
        ("truncated zstd", zst[..zst.len() / 2].to_vec()),
        (
            "gzip headers only",
            [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3].repeat(60),
        ),
        ("corrupt gzip", {
            let mut b = gz.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            b[mid + 1] ^= 0xff;
            b
        }),
    ];
    for driver in DRIVERS {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let d = open(driver, &home);
        for (what, blob) in &cases {
            let l = id("broken");
            let e = d.import(&l, None, &mut &blob[..]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("layer broken") && !msg.contains('\n'),
                "{driver} {what}: {msg}"
            );
            assert!(!d.exists(&l), "{driver} {what}");
        }
        assert!(staging_empty(&home), "{driver}: staging leftovers");

        // apply_diff takes only uncompressed tar (Docker's ApplyDiff).
        let l = id("target");
        d.create(&l, None, &Default::default()).unwrap();
        assert!(d.apply_diff(&l, None, &mut &gz[..]).is_err());
    }
}
