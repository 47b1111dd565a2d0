//! Reference counts on the merged views that `get` mounts, and the
//! unmounts around them, for the drivers that mount a layer's view
//! (`overlay`, `windowsfilter`).
//!
//! A view found mounted at first touch was left by an earlier process
//! (a daemon restarted under running containers); it is adopted as one
//! reference, as moby's RefCounter does, so the next `put` does not pull
//! it from under a container, and `remove` releases it as stale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use strata_fs::mount::{MountError, OverlaySpec, is_overlay_mount, mount_overlay, unmount};

use crate::store::{CleanupReport, Store};
use crate::{DriverError, LayerId, Result};

/// References on one layer's view.
#[derive(Clone, Copy, Debug, Default)]
struct Refs {
    /// References counted, the adopted one included.
    count: u32,
    /// The view was found mounted (left by an earlier process) and
    /// counted once for that.
    adopted: bool,
}

impl Refs {
    /// References taken by `get` calls of this process.
    fn taken(&self) -> u32 {
        self.count - u32::from(self.adopted)
    }
}

/// Per-layer reference counts on mounted views, by layer id.
#[derive(Debug, Default)]
pub(crate) struct MountRefs(Mutex<HashMap<String, Refs>>);

impl MountRefs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Refs>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// References on `id`, an adopted mount included.
    pub(crate) fn count(&self, id: &LayerId) -> u32 {
        self.lock().get(id.as_str()).map_or(0, |r| r.count)
    }

    /// References on `id` taken by this process's `get` calls.
    pub(crate) fn taken(&self, id: &LayerId) -> u32 {
        self.lock().get(id.as_str()).map_or(0, Refs::taken)
    }

    /// Takes a reference on `id`'s view at `merged`: `held` gives the path
    /// when the view is already counted, else `mount` makes the view. The
    /// counts stay locked meanwhile, so two first `get`s mount once.
    pub(crate) fn get(
        &self,
        id: &LayerId,
        merged: &Path,
        held: impl FnOnce() -> PathBuf,
        mount: impl FnOnce() -> Result<PathBuf>,
    ) -> Result<PathBuf> {
        let mut refs = self.lock();
        let r = entry(&mut refs, id, merged);
        if r.count > 0 {
            r.count += 1;
            return Ok(held());
        }
        let path = mount()?;
        r.count = 1;
        Ok(path)
    }

    /// Drops a reference on `id`, unmounting its view at `merged` with the
    /// last one; without a reference it does nothing.
    pub(crate) fn put(&self, id: &LayerId, merged: &Path) -> Result<()> {
        let mut refs = self.lock();
        let r = entry(&mut refs, id, merged);
        if r.count == 0 {
            return Ok(());
        }
        r.count -= 1;
        if r.count > 0 {
            return Ok(());
        }
        refs.remove(id.as_str());
        unmount_view(id, merged)
    }

    /// Lets go of `id` before it is removed: refuses while this process
    /// holds references, and unmounts a view nobody here holds (left by a
    /// process that died, as the seed detaches a stale VHD).
    pub(crate) fn forget(&self, id: &LayerId, merged: &Path) -> Result<()> {
        let mut refs = self.lock();
        check_unheld(id, refs.get(id.as_str()).map_or(0, Refs::taken))?;
        unmount_view(id, merged)?;
        refs.remove(id.as_str());
        Ok(())
    }

    /// The driver's `cleanup`: unmounts every mount under the home (deepest
    /// first), forgets all counts, and finishes the store's interrupted
    /// work; failed unmounts are reported, not fatal.
    pub(crate) fn cleanup(&self, store: &Store) -> Result<CleanupReport> {
        let mut errors = Vec::new();
        let mounts = strata_fs::mountinfo::read_self().map_err(|source| DriverError::Mount {
            id: "(cleanup)".into(),
            source,
        })?;
        for m in strata_fs::mountinfo::mounts_under(&mounts, store.home()) {
            let layer = m.mount_point.strip_prefix(store.home()).ok();
            let first = layer.and_then(|p| p.components().next());
            if first.is_some_and(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .starts_with(crate::overlay::snapshot_support::SNAPSHOT_LAYER_PREFIX)
            }) {
                continue;
            }
            if let Err(e) = unmount(&m.mount_point, true) {
                errors.push(format!("unmount {}: {e}", m.mount_point.display()));
            }
        }
        self.lock().clear();
        let mut report = store.cleanup()?;
        report.errors.extend(errors);
        Ok(report)
    }
}

/// The counts of `id`, adopting a view an earlier process left mounted:
/// a mounted view that nobody here counted starts at one.
fn entry<'a>(refs: &'a mut HashMap<String, Refs>, id: &LayerId, merged: &Path) -> &'a mut Refs {
    refs.entry(id.to_string()).or_insert_with(|| {
        let adopted = is_overlay_mount(merged).unwrap_or(false);
        Refs {
            count: u32::from(adopted),
            adopted,
        }
    })
}

/// Refuses work that needs `id` unreferenced while `refs` references from
/// `get` are held.
pub(crate) fn check_unheld(id: &LayerId, refs: u32) -> Result<()> {
    if refs > 0 {
        return Err(DriverError::Busy {
            id: id.to_string(),
            reason: format!("{refs} reference(s) from get"),
        });
    }
    Ok(())
}

/// Mounts `spec` as `id`'s view at `merged`, making the mount point with
/// `mkdir` if it is missing; returns `merged`.
pub(crate) fn mount_view(
    id: &LayerId,
    spec: &OverlaySpec,
    merged: PathBuf,
    mkdir: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<PathBuf> {
    if !merged.exists() {
        mkdir(&merged)
            .map_err(|e| DriverError::io(format!("layer {id}: create {}", merged.display()), e))?;
    }
    mount_overlay(spec, &merged).map_err(|source| DriverError::Mount {
        id: id.to_string(),
        source,
    })?;
    Ok(merged)
}

/// Unmounts `id`'s view at `merged` if it is mounted (detached, so holders
/// in other mount namespaces do not keep it busy).
pub(crate) fn unmount_view(id: &LayerId, merged: &Path) -> Result<()> {
    if is_overlay_mount(merged).unwrap_or(false) {
        unmount(merged, true).map_err(|source| DriverError::Mount {
            id: id.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Unmounts what a killed process left mounted inside leftovers that the
/// store's sweep at open is about to delete (views and sandboxes in a
/// staging dir or in a `-removing` dir), so the sweep does not stop at a
/// mount point. Loop devices go with their mounts (autoclear).
pub(crate) fn release_leftover_mounts(home: &Path) -> Result<()> {
    let release = || -> std::result::Result<(), MountError> {
        let mounts = strata_fs::mountinfo::read_self()?;
        let staging = home.join(crate::store::STAGING_DIR);
        for m in strata_fs::mountinfo::mounts_under(&mounts, home) {
            let Ok(rel) = m.mount_point.strip_prefix(home) else {
                continue;
            };
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            if m.mount_point.starts_with(&staging)
                || top.is_some_and(|t| t.ends_with(crate::id::REMOVING_SUFFIX))
            {
                unmount(&m.mount_point, true)?;
            }
        }
        Ok(())
    };
    release().map_err(|source| DriverError::Mount {
        id: "(open)".into(),
        source,
    })
}
