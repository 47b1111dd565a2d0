//! The conformance suite for the vfs driver.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

strata_conformance::suite!(|home| strata_driver::open(Some("vfs"), home, &[]).unwrap());
