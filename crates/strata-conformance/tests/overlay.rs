//! The conformance suite for the overlay driver: the very cases the vfs
//! driver runs.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

strata_conformance::suite!(|home| strata_driver::open(Some("overlay"), home, &[]).unwrap());
