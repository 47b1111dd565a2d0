//! Size limits on read-write layers by a filesystem of their own (the
//! seed's sandbox.vhdx), for the drivers whose writable layers are overlay
//! upper dirs (`overlay`, `windowsfilter`): an ext4 image on a loop device,
//! mounted at `sandbox/` in the layer dir, holding the upper and work dirs
//! that `diff` and `work` link to, so writes past the limit fail with
//! ENOSPC in the merged view.

use std::path::Path;

use crate::store::{LayerMeta, Staging, Store};
use crate::{DriverError, LayerId, Result};

/// Name of a read-write layer's overlay work dir (a link into the sandbox
/// for a size-limited layer).
pub(crate) const WORK_DIR: &str = "work";

/// Gives the read-write layer `id` being built in `staging` a filesystem
/// of `size` usable bytes, with `diff` and `work` pointing into it. The
/// driver adds its own dirs (the mount point of the view) itself.
pub(crate) fn add(id: &LayerId, staging: &Staging, size: u64) -> Result<()> {
    let sandbox = |source| DriverError::Sandbox {
        id: id.to_string(),
        source,
    };
    let dir = staging.path();
    strata_fs::create_image(dir, size).map_err(sandbox)?;
    let mounted =
        strata_fs::mount_image(dir, &dir.join(strata_fs::SANDBOX_MOUNT)).map_err(sandbox)?;
    let io = |what: &str, e| DriverError::io(format!("layer {id}: {what}"), e);
    std::fs::remove_dir(staging.content_path()).map_err(|e| io("replace diff", e))?;
    let rel =
        |p: &Path| Path::new(strata_fs::SANDBOX_MOUNT).join(p.file_name().unwrap_or_default());
    std::os::unix::fs::symlink(rel(&mounted.upper_dir()), staging.content_path())
        .map_err(|e| io("link diff into the sandbox", e))?;
    std::os::unix::fs::symlink(rel(&mounted.work_dir()), dir.join(WORK_DIR))
        .map_err(|e| io("link work into the sandbox", e))?;
    // The image's root dir is the upper dir's parent; the upper dir
    // itself must be the layer's 0755 root.
    std::fs::set_permissions(
        mounted.upper_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| io("chmod diff", e))
}

/// Mounts the sandbox of the size-limited layer `id` if it is not mounted
/// (after a restart or `cleanup`), so its `diff` and `work` links resolve.
pub(crate) fn ensure(store: &Store, id: &LayerId, meta: &LayerMeta) -> Result<()> {
    let dir = store.layer_dir(id);
    // A limit kept by an xfs project quota has no image.
    if meta.size_limit.is_none() || !dir.join(strata_fs::SANDBOX_IMAGE).exists() {
        return Ok(());
    }
    match strata_fs::mount_image(&dir, &dir.join(strata_fs::SANDBOX_MOUNT)) {
        Ok(_) | Err(strata_fs::SandboxError::AlreadyMounted { .. }) => Ok(()),
        Err(source) => Err(DriverError::Sandbox {
            id: id.to_string(),
            source,
        }),
    }
}

/// Releases the sandbox of layer `id` in `layer_dir`, if it has one
/// (unmounted, loop device detached), before the dir is removed, or the
/// removal would stop at its mount point.
pub(crate) fn release(id: &LayerId, layer_dir: &Path) -> Result<()> {
    strata_fs::release_stale(layer_dir)
        .map(drop)
        .map_err(|source| DriverError::Sandbox {
            id: id.to_string(),
            source,
        })
}

/// Releases the sandbox of a create of `id` that failed, before dropping
/// `staging` sweeps the dir; a failure here is only logged, as the next
/// cleanup sweeps it again.
pub(crate) fn release_failed(id: &LayerId, staging: &Staging) {
    if let Err(e) = strata_fs::release_stale(staging.path()) {
        tracing::warn!(layer = %id, error = %e, "releasing the sandbox of a failed create");
    }
}
