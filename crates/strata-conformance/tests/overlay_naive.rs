//! The conformance suite for the overlay driver with native diff turned
//! off: the path taken on kernels whose overlay makes native diff wrong
//! (redirect_dir or metacopy on), which this kernel does not.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

strata_conformance::suite!(|home| {
    let d = strata_driver::open(Some("overlay"), home, &["native_diff=false".to_string()]).unwrap();
    let status = d.status();
    assert!(
        status.contains(&("Native Overlay Diff".to_string(), "false".to_string())),
        "{status:?}"
    );
    d
});
