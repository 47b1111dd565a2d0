//! The driver conformance suite (../shared/docs/conformance.md, points 1-18
//! and 21): every case takes a factory that opens a driver on a fresh home,
//! so each driver runs the same cases unchanged through [`suite!`]:
//!
//! ```text
//! strata_conformance::suite!(|home| strata_driver::open(Some("vfs"), home, &[]).unwrap());
//! ```
//!
//! The cases need root (device nodes, ownership, trusted xattrs). Without
//! it they say `SKIP` loudly and pass, except under `CI=true`, where a
//! skip is a failure: CI must run them.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::unwrap_used)]

pub mod cases;
pub mod images;
pub mod manifest;
pub mod oracle;
pub mod tarbuild;

use std::path::Path;

use strata_driver::Driver;

/// Opens a driver on a home directory.
pub type Factory = fn(&Path) -> Box<dyn Driver>;

/// True when the process may run privileged cases; prints a loud SKIP
/// otherwise, and panics under `CI=true` so CI cannot skip silently.
pub fn require_root(case: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{case}: needs root, and CI must not skip it");
    }
    eprintln!("SKIP: {case}: needs root (device nodes, chown, trusted xattrs)");
    false
}

/// Expands to one `#[test]` per conformance case for the driver that
/// `$factory` opens.
#[macro_export]
macro_rules! suite {
    ($factory:expr) => {
        $crate::suite!(@cases $factory;
            p01_create_empty, p02_create_snapshot_shows_parent, p03_missing_parent_and_duplicate,
            p04_storage_options, p05_remove_semantics, p06_deep_chain_128, p07_get_put_refcount,
            p08_rw_writes_do_not_leak, p09_recovers_after_crash, p10_cleanup_sweeps,
            p11_diff_full_and_changes_only, p12_diff_apply_round_trip, p13_apply_entry_types,
            p13_apply_rejects_bad_streams, p14_opaque_and_whiteouts, p15_changes_kinds,
            p16_same_second_change, p17_exact_reexport_with_tar_split, p18_hostile_tar_contained,
            p17_exact_reexport_by_replay, p21_home_private, apply_diff_failure_keeps_layer,
            concurrent_layers
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory: $crate::Factory = $factory;
                $crate::cases::$case(factory);
            }
        )*
    };
}
