//! Oracle test: the 4-layer image applied by each Strata driver gives the
//! same tree as `umoci unpack` of the same layers (for overlay: through its
//! merged view).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use strata_conformance::manifest::{ManifestOptions, manifest};
use strata_conformance::{oracle, require_root};
use strata_driver::LayerId;

fn matches_umoci(driver: &str) {
    if !require_root(&format!("{driver}_matches_umoci")) {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("strata-oracle")
        .tempdir_in("/var/tmp")
        .unwrap();
    let layers = oracle::layers();
    let rootfs = oracle::umoci_unpack(work.path(), &layers);
    let d = strata_driver::open(Some(driver), &work.path().join("home"), &[]).unwrap();
    let mut parent: Option<LayerId> = None;
    for (i, tar) in layers.iter().enumerate() {
        let id = LayerId::new(&format!("l{i}")).unwrap();
        d.import(&id, parent.as_ref(), &mut &tar[..]).unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    let merged = d.get(&top, "").unwrap();
    // Directory mtimes are left out: umoci and Strata both restore them,
    // but a whiteout applied later legitimately bumps a parent's mtime in
    // one implementation's order and not the other's.
    let opts = ManifestOptions {
        no_dir_mtime: true,
        ..Default::default()
    };
    let ours = manifest(&merged, &opts);
    let theirs = manifest(&rootfs, &opts);
    d.put(&top).unwrap();
    assert!(ours.contains("var/lib/new/deep"), "{ours}");
    assert_eq!(ours, theirs, "strata {driver} (left) vs umoci (right)");
}

#[test]
fn vfs_matches_umoci() {
    matches_umoci("vfs");
}

#[test]
fn overlay_matches_umoci() {
    matches_umoci("overlay");
}
