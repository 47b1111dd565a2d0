//! Store behaviours below the driver contract: the seed's `layerID` alias
//! and the on-disk files a layer carries.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fs;

use strata_driver::{CreateOpts, LayerId};

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

#[test]
fn layer_id_alias_resolves_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let d = strata_driver::open(Some("vfs"), &tmp.path().join("home"), &[]).unwrap();
    let real = id("real");
    let tar = {
        // A one-file layer, written by hand so this test needs no tar crate.
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"file");
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(b"00000000002");
        h[136..147].copy_from_slice(b"14524214400");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut data = b"ok".to_vec();
        data.resize(512, 0);
        [h, data, vec![0u8; 1024]].concat()
    };
    d.import(&real, None, &mut &tar[..]).unwrap();
    let alias = id("alias");
    d.create(&alias, None, &CreateOpts::default()).unwrap();
    d.store().set_alias(&alias, &real).unwrap();
    assert_eq!(
        fs::read_to_string(d.home().join("alias/layerID")).unwrap(),
        "real"
    );

    let p = d.get(&alias, "").unwrap();
    assert_eq!(p, d.get(&real, "").unwrap(), "get resolves through layerID");
    assert_eq!(fs::read(p.join("file")).unwrap(), b"ok");
    d.put(&alias).unwrap();
    d.put(&real).unwrap();
    assert_eq!(d.info(&alias).unwrap().id, "real");
    assert_eq!(d.changes(&alias, None).unwrap().len(), 1);
    assert_eq!(d.metadata(&alias).unwrap(), d.metadata(&real).unwrap());
    let child = id("child");
    d.create(&child, Some(&alias), &CreateOpts::default())
        .unwrap();
    assert_eq!(
        d.info(&child).unwrap().parent.as_deref(),
        Some("real"),
        "parents resolve too"
    );
    let chain: Vec<String> =
        serde_json::from_slice(&fs::read(d.home().join("child/layerchain.json")).unwrap()).unwrap();
    assert_eq!(
        chain,
        [d.home().join("real").display().to_string()],
        "seed chain: parent dirs, nearest first"
    );

    // An alias naming something that is not an id is corrupt, and says so.
    fs::write(d.home().join("alias/layerID"), "../etc").unwrap();
    let e = d.get(&alias, "").unwrap_err().to_string();
    assert!(e.contains("layerID") && e.contains("alias"), "{e}");
}

/// On ext4, `staging/` carries the top-directory flag (`lsattr` shows `T`),
/// so each layer built in it is placed in a block group of its own.
#[test]
fn staging_spreads_layers_on_ext4() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let fs = String::from_utf8_lossy(&fs.stdout).trim().to_string();
    if fs != "ext2/ext3" {
        // ext4 reports itself as ext2/ext3 to stat(1).
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test on ext4; the temp dir is on {fs}"
        );
        eprintln!("SKIP: staging_spreads_layers_on_ext4: the temp dir is on {fs}, not ext4");
        return;
    }
    let home = tmp.path().join("home");
    strata_driver::open(Some("vfs"), &home, &[]).unwrap();
    let out = std::process::Command::new("lsattr")
        .arg("-d")
        .arg(home.join("staging"))
        .output()
        .unwrap();
    assert!(out.status.success(), "lsattr: {out:?}");
    let flags = String::from_utf8_lossy(&out.stdout);
    let flags = flags.split_whitespace().next().unwrap_or("");
    assert!(flags.contains('T'), "staging/ flags {flags:?}, want T");
}
