//! What a client that mounts layers itself needs from the overlay driver:
//! containerd's snapshotter protocol hands out mount specs (lower dirs,
//! upper dir, work dir) instead of mounted paths, and turns a writable
//! snapshot into a read-only one in place when it commits it.
//!
//! This module is a child of `overlay` (declared there) so it can use the
//! driver's own helpers (sandbox mounting, overlay features) without
//! widening their visibility; the `impl Store` part adds the one store
//! operation such a client needs, rewriting a layer's metadata in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{NAME, OverlayDriver, WORK_DIR};
use crate::store::{FileSync, META_FILE, open_dir_at, write_file_at};
use crate::{Driver, DriverError, LayerId, LayerKind, LayerMeta, Result, Store};

/// Prefix of the layer ids a snapshotting client (containerd's
/// snapshotter) owns in a shared home: `ctrd-<n>` layers are its
/// snapshots. The driver's own `cleanup` (Docker's, at daemon shutdown)
/// leaves their mounts alone, as they back another engine's running
/// containers.
pub const SNAPSHOT_LAYER_PREFIX: &str = "ctrd-";

/// The directories of one layer as an overlay mount uses them, every
/// size-limited layer's sandbox mounted so the paths resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDirs {
    /// The layer's kind as recorded.
    pub kind: LayerKind,
    /// The layer's own content dir (the upper dir of a writable mount).
    /// For a size-limited layer this is the real directory inside its
    /// sandbox, not the `diff` link to it, so that a client can also bind
    /// mount it or write into it directly.
    pub own: PathBuf,
    /// The overlay work dir, for a read-write layer.
    pub work: Option<PathBuf>,
    /// The content dirs of its ancestors, nearest first.
    pub lowers: Vec<PathBuf>,
    /// Whether overlay must be told `userxattr` (it keeps its whiteout
    /// and opaque markers in `user.overlay.*`).
    pub userxattr: bool,
}

impl OverlayDriver {
    /// Opens the overlay driver on `home` as [`crate::open`] does (a home
    /// another driver owns is refused, and ownership is recorded), keeping
    /// the concrete type, so that one instance can serve the Docker plugin
    /// (as an `Arc<dyn Driver>`) and the containerd snapshotter at once,
    /// with one set of layer locks and reference counts.
    pub fn open_shared(home: &Path, options: &[String]) -> Result<Arc<OverlayDriver>> {
        let owner = crate::home_owner(home)?;
        if let Some(o) = owner.as_deref().filter(|o| *o != NAME) {
            return Err(DriverError::Unusable {
                driver: NAME,
                home: home.display().to_string(),
                reason: format!("the home belongs to the {o} driver"),
            });
        }
        let driver = OverlayDriver::open(home, options)?;
        if owner.is_none() {
            driver
                .store()
                .write_home_file(crate::DRIVER_MARKER, NAME.as_bytes())?;
        }
        Ok(Arc::new(driver))
    }

    /// The directories of layer `id` and of its chain, for a client that
    /// mounts the layer itself. Sandboxes of size-limited layers in the
    /// chain are mounted first (after a reboot they are not).
    pub fn layer_dirs(&self, id: &LayerId) -> Result<LayerDirs> {
        let id = self.store.resolve(id)?;
        let meta = self.store.meta(&id)?;
        let own = self.real_dir(&id, &meta)?;
        let mut lowers = Vec::new();
        for l in self.store.chain(&id)? {
            let m = self.store.meta(&l)?;
            lowers.push(self.real_dir(&l, &m)?);
        }
        let work = match meta.kind {
            LayerKind::Rw => Some(match meta.size_limit {
                Some(_)
                    if self
                        .store
                        .layer_dir(&id)
                        .join(strata_fs::SANDBOX_IMAGE)
                        .exists() =>
                {
                    self.store
                        .layer_dir(&id)
                        .join(strata_fs::SANDBOX_MOUNT)
                        .join(strata_fs::SANDBOX_WORK)
                }
                _ => self.store.layer_dir(&id).join(WORK_DIR),
            }),
            LayerKind::Ro => None,
        };
        Ok(LayerDirs {
            kind: meta.kind,
            own,
            work,
            lowers,
            userxattr: self.features.userxattr_needed,
        })
    }

    /// The real content directory of `id`: its sandbox mounted and the
    /// `diff` link resolved for a size-limited layer kept in an image.
    fn real_dir(&self, id: &LayerId, meta: &LayerMeta) -> Result<PathBuf> {
        let dir = self.store.layer_dir(id);
        if meta.size_limit.is_some() && dir.join(strata_fs::SANDBOX_IMAGE).exists() {
            // Under the layer's lock, so two callers cannot both find the
            // sandbox unmounted and mount it twice.
            let _lock = self.store.lock(id);
            self.ensure_sandbox(id, meta)?;
            return Ok(dir
                .join(strata_fs::SANDBOX_MOUNT)
                .join(strata_fs::SANDBOX_UPPER));
        }
        Ok(self.store.content_dir(id))
    }

    /// Sets the kind of layer `id` in place, keeping its content where it
    /// is: `Ro` seals a read-write layer that will not be written again
    /// (containerd's commit), `Rw` undoes that. A layer made read-write
    /// gets a work dir if it has none. The change is one atomic rewrite of
    /// `layer.json`.
    pub fn set_kind(&self, id: &LayerId, kind: LayerKind) -> Result<()> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        let mut meta = self.store.meta(&id)?;
        if meta.kind == kind {
            return Ok(());
        }
        if kind == LayerKind::Rw {
            let work = self.store.layer_dir(&id).join(WORK_DIR);
            match std::fs::symlink_metadata(&work) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&work).map_err(|e| {
                        DriverError::io(format!("layer {id}: create {}", work.display()), e)
                    })?;
                    std::fs::set_permissions(
                        &work,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )
                    .map_err(|e| {
                        DriverError::io(format!("layer {id}: chmod {}", work.display()), e)
                    })?;
                }
                Err(e) => {
                    return Err(DriverError::io(
                        format!("layer {id}: stat {}", work.display()),
                        e,
                    ));
                }
            }
        }
        meta.kind = kind;
        self.store.rewrite_meta(&meta)
    }
}

impl Store {
    /// Replaces the `layer.json` of the existing layer `meta.id` with
    /// `meta`, atomically (a synced temp file renamed over it), for a
    /// change that leaves the layer's content alone.
    pub fn rewrite_meta(&self, meta: &LayerMeta) -> Result<()> {
        let id = LayerId::new(&meta.id)?;
        if !self.exists(&id) {
            return Err(DriverError::NotFound { id: id.to_string() });
        }
        let json = serde_json::to_vec_pretty(meta).map_err(|e| DriverError::Corrupt {
            id: id.to_string(),
            file: META_FILE,
            reason: e.to_string(),
        })?;
        let dir = open_dir_at(self.home_fd(), id.as_str())
            .map_err(|e| DriverError::io(format!("layer {id}: open"), e))?;
        write_file_at(&dir, META_FILE, &json, FileSync::FileAndDir)
            .map_err(|e| DriverError::io(format!("layer {id}: write {META_FILE}"), e))
    }
}
