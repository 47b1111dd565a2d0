//! Images for the end-to-end tests that drive Docker and containerd: a
//! runnable base layer from the host's busybox-static, `docker save`
//! archives built from layer tars, and the digests (diff ids, chain ids)
//! by which the daemons name what they imported.

use sha2::{Digest, Sha256};

use crate::tarbuild::TarBuilder;

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The busybox applets the images link into `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "rm", "mkdir", "true", "sleep", "touch", "dd", "stat",
];

/// `sha256:<hex>` of `bytes`: a layer's diff id, a blob's digest.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The diff ids of `layers`, base first.
pub fn diff_ids(layers: &[Vec<u8>]) -> Vec<String> {
    layers.iter().map(|l| sha256(l)).collect()
}

/// The chain ids of `diff_ids`, base first: how dockerd names layers in
/// its layerdb and containerd names committed snapshots.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match chain.last() {
            None => d.clone(),
            Some(p) => sha256(format!("{p} {d}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// A docker-archive (`docker save` format) of one image named `tag`, with
/// `layers` (tars, base first) and `cmd` as its command.
pub fn docker_archive(tag: &str, layers: &[Vec<u8>], cmd: &[&str]) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let created = "2023-11-14T22:13:20Z";
    let history: Vec<serde_json::Value> = (0..layers.len())
        .map(|i| serde_json::json!({"created": created, "created_by": format!("strata test layer {i}")}))
        .collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Cmd": cmd, "Env": ["PATH=/bin:/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids(layers)},
        "history": history,
    });
    let config = serde_json::to_vec(&config).expect("a JSON value serializes");
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let dirs: Vec<String> = layers
        .iter()
        .map(|l| hex::encode(Sha256::digest(l)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": dirs.iter().map(|d| format!("{d}/layer.tar")).collect::<Vec<_>>(),
    }]);
    let mut b = TarBuilder::new();
    for (d, l) in dirs.iter().zip(layers) {
        b = b.dir(d, 0o755).file(&format!("{d}/layer.tar"), 0o644, l);
    }
    b.file(&config_name, 0o644, &config)
        .file(
            "manifest.json",
            0o644,
            &serde_json::to_vec(&manifest).expect("a JSON value serializes"),
        )
        .build()
}

/// A base layer that runs without a libc: [`BUSYBOX`] with its applets in
/// `/bin`, root in `/etc/passwd` and `/etc/group`, and `/tmp`. The caller
/// adds its own entries and builds it. `None` when [`BUSYBOX`] is missing
/// or is not a static executable (the plain busybox package needs a libc
/// the image does not have).
pub fn busybox_layer() -> Option<TarBuilder> {
    let bin = std::fs::read(BUSYBOX).ok()?;
    if !static_elf(&bin) {
        return None;
    }
    let mut b = TarBuilder::new()
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, &bin);
    for applet in APPLETS {
        b = b.symlink(&format!("bin/{applet}"), "busybox");
    }
    Some(
        b.dir("etc", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            .file("etc/group", 0o644, b"root:x:0:\n")
            .dir("tmp", 0o1777),
    )
}

/// True for a 64-bit little-endian ELF executable without an interpreter
/// (`PT_INTERP`).
fn static_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| usize::from(u16::from_le_bytes([s[0], s[1]])))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .and_then(|s| usize::try_from(u64::from_le_bytes(s)).ok())
    };
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4).is_some_and(|t| t != 3u32.to_le_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_first_diff_id() {
        let d = vec![sha256(b"a"), sha256(b"b")];
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], sha256(format!("{} {}", d[0], d[1]).as_bytes()));
    }

    #[test]
    fn static_elf_rejects_what_is_not_elf() {
        assert!(!static_elf(b"#!/bin/sh\n"));
        assert!(!static_elf(b"\x7fELF\x02"));
    }
}
