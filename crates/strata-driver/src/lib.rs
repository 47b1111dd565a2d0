//! Strata's layer store and graph drivers.
//!
//! A [`Store`] keeps one directory per layer under a private home and makes
//! a layer visible only once it is complete (built in `staging/`, synced,
//! renamed into place); removals rename to `<id>-removing` first and
//! [`Store::cleanup`] finishes whatever a crash interrupted. Drivers
//! implement the [`Driver`] trait (the graph-driver contract) over it and
//! register by name; [`open`] picks one by name or by priority.
//!
//! ```no_run
//! use strata_driver::{LayerId, CreateOpts};
//! let driver = strata_driver::open(Some("vfs"), "/tmp/strata-home".as_ref(), &[])?;
//! let base = LayerId::new("base")?;
//! driver.create(&base, None, &CreateOpts::default())?;
//! let dir = driver.get(&base, "")?;
//! println!("layer is at {}", dir.display());
//! driver.put(&base)?;
//! # Ok::<(), strata_driver::DriverError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backing;
mod decompress;
mod digest;
mod driver;
mod error;
mod id;
mod options;
pub mod overlay;
mod pipeline;
mod refs;
mod sandbox;
mod store;
pub mod vfs;
pub mod windowsfilter;

use std::path::Path;

pub use decompress::plain_tar;
pub use driver::{
    ApplyResult, Capabilities, Change, ChangeKind, Driver, FileGetter, ImportOptions, check_digest,
};
pub use error::{DriverError, Result};
pub use id::{LayerId, MAX_ID_LEN};
pub use options::{CreateOpts, StorageOpts, parse_size, parse_storage_opts};
pub use store::{CleanupReport, ImportInfo, LayerKind, LayerLock, LayerMeta, Staging, Store};

/// Registered drivers, in priority order for automatic choice.
pub const DRIVERS: &[&str] = &[overlay::NAME, vfs::NAME];

/// Drivers chosen only by name: `windowsfilter` keeps Windows layers,
/// which no engine on Linux asks for without saying so.
pub const NAMED_DRIVERS: &[&str] = &[windowsfilter::NAME];

/// File in a home naming the driver that owns it: layers of one driver
/// mean nothing to another, so a home is never opened with a second one.
const DRIVER_MARKER: &str = ".strata-driver";

/// The driver recorded as the owner of `home`, if any.
fn home_owner(home: &Path) -> Result<Option<String>> {
    let marker = home.join(DRIVER_MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::io(format!("read {}", marker.display()), e)),
    }
}

/// Opens the driver `name` on `home`. With no name: the driver that
/// already owns the home, else the first driver in priority order that can
/// work there (`vfs` works anywhere, and its `status` then says why
/// `overlay` could not be used).
pub fn open(name: Option<&str>, home: &Path, options: &[String]) -> Result<Box<dyn Driver>> {
    let owner = home_owner(home)?;
    let unusable = |driver: &'static str, reason: String| DriverError::Unusable {
        driver,
        home: home.display().to_string(),
        reason,
    };
    let driver: Box<dyn Driver> = match (name.or(owner.as_deref()), owner.as_deref()) {
        (Some(n), Some(o)) if n != o => {
            let n = DRIVERS
                .iter()
                .chain(NAMED_DRIVERS)
                .find(|d| **d == n)
                .copied()
                .unwrap_or("strata");
            return Err(unusable(n, format!("the home belongs to the {o} driver")));
        }
        (Some(overlay::NAME), _) => Box::new(overlay::OverlayDriver::open(home, options)?),
        (Some(vfs::NAME), _) => Box::new(vfs::VfsDriver::open(home, options)?),
        (Some(windowsfilter::NAME), _) => {
            Box::new(windowsfilter::WindowsDriver::open(home, options)?)
        }
        (Some(other), _) => {
            return Err(unusable(
                "strata",
                format!(
                    "unknown driver {other:?} (available: {}, {})",
                    DRIVERS.join(", "),
                    NAMED_DRIVERS.join(", ")
                ),
            ));
        }
        (None, _) => match overlay::OverlayDriver::open(home, options) {
            Ok(d) => Box::new(d),
            Err(DriverError::Unusable { reason, .. }) => {
                Box::new(vfs::VfsDriver::open(home, options)?.because_overlay_failed(reason))
            }
            Err(e) => return Err(e),
        },
    };
    if owner.is_none() {
        driver
            .store()
            .write_home_file(DRIVER_MARKER, driver.name().as_bytes())?;
    }
    Ok(driver)
}
