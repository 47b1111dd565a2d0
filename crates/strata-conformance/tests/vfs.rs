//! The conformance suite for the vfs driver.

strata_conformance::suite!(|home| strata_driver::open(Some("vfs"), home, &[]).unwrap());
