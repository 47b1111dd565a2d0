//! The oracle image: four layers that exercise what layer application gets
//! wrong most often (whiteouts, opaque dirs, dir/file swaps, hard links
//! across layers, xattrs, devices, odd modes and owners), and the helpers
//! that unpack it with `umoci`, the reference implementation these tests
//! hold Strata's result against. The containerd end-to-end test imports a
//! variant of the same image ([`containerd_layers`]).

use std::fs;
use std::path::Path;
use std::process::Command;

use strata_tar::EntryKind;

use crate::tarbuild::TarBuilder;

const CAP: &[u8] = &[
    1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The four layer tars, base first.
pub fn layers() -> Vec<Vec<u8>> {
    edge_case_layers(true)
}

/// The variant the containerd end-to-end test imports: no hard link to a
/// lower layer's file (it cannot be written into an upper dir, and
/// containerd fails such a layer with its own overlayfs snapshotter too)
/// but one within a layer; and without the capability, the `trusted.*`
/// xattr, the device's group and `var/lib/keepfile`.
pub fn containerd_layers() -> Vec<Vec<u8>> {
    edge_case_layers(false)
}

/// The image; `full` adds what only the umoci comparison takes (see
/// [`containerd_layers`]).
fn edge_case_layers(full: bool) -> Vec<Vec<u8>> {
    let l1 = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/shadow", 0o640, b"root:*:19000::::::\n")
        .owned(0, 42)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/su", 0o4755, b"\x7fELF su")
        .file("usr/bin/wall", 0o2755, b"\x7fELF wall")
        .owned(0, 5)
        .file("usr/bin/ping", 0o755, b"\x7fELF ping")
        .when(full, |b| b.xattr("security.capability", CAP))
        .hardlink("usr/bin/ping6", "usr/bin/ping")
        .dir("tmp", 0o1777)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/old", 0o700)
        .file("var/lib/old/state", 0o600, b"old state")
        .when(full, |b| b.file("var/lib/keepfile", 0o644, b"keep?"))
        .dir("dev", 0o755)
        .node("dev/null", EntryKind::CharDevice, 0o666, 1, 3)
        .node("dev/sda", EntryKind::BlockDevice, 0o660, 8, 0)
        .when(full, |b| b.owned(0, 6))
        .node("dev/initctl", EntryKind::Fifo, 0o600, 0, 0)
        .file("swap-to-dir", 0o644, b"i was a file")
        .dir("swap-to-file", 0o755)
        .file("swap-to-file/child", 0o644, b"child")
        .symlink("bin", "usr/bin")
        .symlink("abs-link", "/etc/passwd")
        .file("home-file", 0o600, b"user data")
        .owned(1000, 1000)
        .xattr("user.comment", b"first")
        .when(full, |b| b.xattr("trusted.strata", b"\x00\x01binary\xff"))
        .build();
    let l2 = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n",
        )
        .whiteout("etc/shadow")
        .dir("var", 0o755)
        .dir("var/lib", 0o751)
        .opaque("var/lib")
        .file("var/lib/new", 0o644, b"fresh")
        .dir("swap-to-dir", 0o750)
        .file("swap-to-dir/inside", 0o644, b"now a dir")
        .whiteout("swap-to-file")
        .file("swap-to-file", 0o600, b"now a file")
        .when(full, |b| b.hardlink("usr/bin/su-again", "usr/bin/su"))
        .build();
    let l3 = TarBuilder::new()
        .file("home-file", 0o640, b"user data")
        .owned(1001, 100)
        .xattr("user.comment", b"second")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .whiteout("usr/bin/wall")
        .when(!full, |b| {
            b.file("usr/bin/newtool", 0o755, b"\x7fELF new")
                .hardlink("usr/bin/newtool-link", "usr/bin/newtool")
        })
        .node("dev-on-file", EntryKind::CharDevice, 0o600, 10, 200)
        .whiteout("abs-link")
        .dir("abs-link", 0o700)
        .file("abs-link/f", 0o644, b"dir replaced a symlink")
        .build();
    let l4 = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/shadow", 0o600, b"root:!:19500::::::\n")
        .dir("var", 0o755)
        .dir("var/lib", 0o751)
        .whiteout("var/lib/new")
        .dir("var/lib/new", 0o3777)
        .file("var/lib/new/deep", 0o644, b"deep")
        .whiteout("dev-on-file")
        .file("dev-on-file", 0o644, b"a file again")
        .build();
    vec![l1, l2, l3, l4]
}

/// Builds an OCI image of `layers` with umoci and unpacks it; returns the
/// rootfs path (inside `work`).
pub fn umoci_unpack(work: &Path, layers: &[Vec<u8>]) -> std::path::PathBuf {
    let image = work.join("image");
    let run = |args: &[&str]| {
        let out = Command::new("umoci")
            .args(args)
            .output()
            .expect("run umoci");
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let img = image.to_string_lossy().into_owned();
    run(&["init", "--layout", &img]);
    run(&["new", "--image", &format!("{img}:t")]);
    for (i, tar) in layers.iter().enumerate() {
        let p = work.join(format!("layer{i}.tar"));
        fs::write(&p, tar).expect("write layer tar");
        run(&[
            "raw",
            "add-layer",
            "--image",
            &format!("{img}:t"),
            &p.to_string_lossy(),
        ]);
    }
    let bundle = work.join("bundle");
    run(&[
        "unpack",
        "--image",
        &format!("{img}:t"),
        &bundle.to_string_lossy(),
    ]);
    bundle.join("rootfs")
}
