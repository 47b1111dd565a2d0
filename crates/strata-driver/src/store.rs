//! The layer store: one directory per layer under a home, made visible only
//! when complete, removed crash-safely, and swept of leftovers at open.
//!
//! ```text
//! <home>/                 mode 0700
//!   <id>/                 a complete layer (appears by one rename)
//!     diff/               its content (vfs: the full tree)
//!     layer.json          Strata's metadata (parent, kind, import facts)
//!     layerchain.json     parent layer dirs, nearest first (seed format)
//!     layerID             optional alias to another layer (seed behaviour)
//!   staging/<random>/     a layer being built; flock-held by its builder
//!   <id>-removing/        a removal in progress (seed convention)
//! ```
//!
//! Every new layer is built in `staging/`, synced with one `syncfs`, and
//! renamed into place with `RENAME_NOREPLACE`, so `exists` is true only for
//! complete layers and a crash leaves staging garbage, never a half layer.
//! Replacing a layer's content (Docker's Create-then-ApplyDiff) builds the
//! new version in staging too and swaps the two directories with one
//! `RENAME_EXCHANGE`. A staging or `-removing` directory is flock-held by the
//! process working on it, so the sweep at open leaves another live
//! process's work alone.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use strata_tar::Timestamp;

use crate::id::REMOVING_SUFFIX;
use crate::{DriverError, LayerId, Result};

/// Name of a layer's content directory.
pub const CONTENT_DIR: &str = "diff";
/// Name of Strata's per-layer metadata file.
pub const META_FILE: &str = "layer.json";
/// The seed's chain file: parent layer directories, nearest first.
pub const CHAIN_FILE: &str = "layerchain.json";
/// The seed's alias file: names the layer this one stands for.
pub const ALIAS_FILE: &str = "layerID";
/// Directory of layers under construction.
pub const STAGING_DIR: &str = "staging";

/// Whether a layer holds an image layer or a container's writable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A read-only image layer.
    Ro,
    /// A read-write container layer (Windows: sandbox).
    Rw,
}

/// What an import recorded about the stream it applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInfo {
    /// Layer size as `apply_diff` returned it.
    pub size: u64,
    /// Number of tar entries applied.
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream (the diffID).
    pub digest: String,
    /// The compression of the imported blob (`gzip`, `zstd`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// `sha256:<hex>` of the compressed blob, if the import was compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_digest: Option<String>,
    /// Why `diff` generates this layer's tar instead of replaying the
    /// imported bytes; absent when the bytes can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_fallback: Option<String>,
}

/// Strata's metadata for one layer (`layer.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The layer's id.
    pub id: String,
    /// Its parent, if any.
    pub parent: Option<String>,
    /// Read-only or read-write.
    pub kind: LayerKind,
    /// The driver that made it.
    pub driver: String,
    /// When the layer was created (seconds, nanoseconds).
    pub created: (i64, u32),
    /// Kernel ctime right after the layer's content was copied from its
    /// parent: anything with a later-or-equal ctime was touched since, so
    /// change detection compares its content instead of trusting metadata.
    pub copied_at: Option<(i64, u32)>,
    /// Size limit for a read-write layer, in bytes.
    pub size_limit: Option<u64>,
    /// Facts about the tar stream this layer was imported from.
    pub import: Option<ImportInfo>,
}

impl LayerMeta {
    /// Metadata for a layer being created now by `driver`.
    pub fn new(
        driver: &str,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
        copied_at: Option<(i64, u32)>,
        import: Option<ImportInfo>,
    ) -> LayerMeta {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        LayerMeta {
            id: id.to_string(),
            parent: parent.map(|p| p.to_string()),
            kind,
            driver: driver.to_string(),
            created: (now.as_secs() as i64, now.subsec_nanos()),
            copied_at,
            size_limit: None,
            import,
        }
    }

    /// `copied_at` as a tar timestamp.
    pub fn copied_at(&self) -> Option<Timestamp> {
        self.copied_at
            .map(|(secs, nanos)| Timestamp { secs, nanos })
    }
}

/// A layer directory under construction in `staging/`. Dropping it without
/// committing removes it.
#[derive(Debug)]
pub struct Staging {
    name: String,
    path: PathBuf,
    fd: OwnedFd,
    home_fd: Arc<OwnedFd>,
    committed: bool,
    /// The chain file's content, when the driver decides it (see
    /// [`Staging::set_chain`]).
    chain: Option<Vec<String>>,
    /// Holds only empty dirs and synced metadata files (see
    /// [`Staging::metadata_only`]).
    metadata_only: bool,
}

impl Staging {
    /// Makes the commit write `dirs` as `layerchain.json` instead of every
    /// ancestor's directory (windowsfilter leaves out a parent without
    /// `Files/`, as the seed does).
    pub fn set_chain(&mut self, dirs: Vec<String>) {
        self.chain = Some(dirs);
    }

    /// The staging directory (host path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content directory inside it (created by [`Store::begin`]).
    pub fn content_path(&self) -> PathBuf {
        self.path.join(CONTENT_DIR)
    }

    /// The kernel's current coarse time as seen on this filesystem: the
    /// ctime of a file created now. Used as `copied_at`, because ctimes
    /// come from the same clock, so "ctime >= this" is exact.
    pub fn fs_now(&self) -> Result<(i64, u32)> {
        let name = ".clock";
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::TRUNC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| DriverError::io(format!("staging {}: clock file", self.name), e))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| DriverError::io(format!("staging {}: clock file", self.name), e))?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| DriverError::io(format!("staging {}: clock file", self.name), e))?;
        Ok((st.st_ctime, st.st_ctime_nsec as u32))
    }

    /// Writes a metadata file into the staging dir: synced with the rest
    /// by the commit's `syncfs`, or at once in a metadata-only staging
    /// dir, whose commit syncs only directories.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let sync = if self.metadata_only {
            FileSync::File
        } else {
            FileSync::Later
        };
        write_file_at(&self.fd, name, bytes, sync)
            .map_err(|e| DriverError::io(format!("staging {}: write {name}", self.name), e))
    }

    /// Marks the staging dir as holding nothing but empty directories and
    /// metadata files written with [`Staging::write_file`] (each synced as
    /// it is written). Its commit then syncs those directories rather than
    /// the whole filesystem, so making an empty layer (a container's
    /// writable layer) does not wait for unrelated dirty data. A layer
    /// with imported or copied content must not be marked.
    pub fn metadata_only(&mut self) {
        self.metadata_only = true;
    }

    /// Flushes everything in the staging dir to stable storage.
    fn sync(&self) -> Result<()> {
        if !self.metadata_only {
            return rustix::fs::syncfs(&self.fd)
                .map_err(|e| DriverError::io(format!("staging {}: syncfs", self.name), e));
        }
        let io = |what: &str, e| DriverError::io(format!("staging {}: {what}", self.name), e);
        let mut d = rustix::fs::Dir::read_from(&self.fd).map_err(|e| io("list", e))?;
        let names = strata_fs::dir_names(&mut d, b"").map_err(|source| DriverError::Fs {
            id: format!("staging/{}", self.name),
            source,
        })?;
        for name in names {
            match open_dir_at(&self.fd, OsStr::from_bytes(&name)) {
                Ok(dir) => rustix::fs::fsync(&dir).map_err(|e| io("fsync", e))?,
                // metadata files are synced when written
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {}
                Err(e) => return Err(io("open", e)),
            }
        }
        rustix::fs::fsync(&self.fd).map_err(|e| io("fsync", e))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let staging = match open_dir_at(&self.home_fd, STAGING_DIR) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(staging = %self.name, error = %e, "cannot open staging to discard");
                return;
            }
        };
        if let Err(e) = strata_fs::remove_all_at(staging.as_fd(), self.name.as_bytes(), b"") {
            tracing::warn!(staging = %self.name, error = %e, "cannot discard staging dir; cleanup will");
        }
    }
}

/// Outcome of [`Store::cleanup`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Staging directories removed.
    pub staging_removed: Vec<String>,
    /// Interrupted removals finished.
    pub removals_finished: Vec<String>,
    /// Leftovers that could not be removed, with the reason.
    pub errors: Vec<String>,
}

/// The on-disk layer store shared by the drivers.
#[derive(Debug)]
pub struct Store {
    home: PathBuf,
    home_fd: Arc<OwnedFd>,
    locks: Arc<LockSet>,
}

/// Ids currently locked, and a condition variable to wait for release.
#[derive(Debug, Default)]
struct LockSet {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

/// Holds a layer's lock; work on one layer is serialized by it. Released
/// on drop.
#[derive(Debug)]
pub struct LayerLock {
    set: Arc<LockSet>,
    id: String,
}

impl Drop for LayerLock {
    fn drop(&mut self) {
        let mut held = self.set.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.id);
        self.set.released.notify_all();
    }
}

/// Marks `staging/` as a top of independent directory trees (ext4's
/// `FS_TOPDIR_FL`, what `chattr +T` sets on `/home`), so that the block
/// allocator places each layer built in it in a block group of its own
/// instead of next to the layers before it. Layers are exactly such trees:
/// written whole, read whole, removed whole. Where layers come and go, it
/// also keeps a new layer out of the groups that a removed one has just
/// emptied: without a journal, ext4 will not reuse an inode number freed in
/// the last few minutes, and scans past every such inode for each file it
/// creates (on the benchmark host that scan was a third of the applier's
/// time). Only advice to the allocator: filesystems without the flag
/// refuse it, and nothing depends on it.
fn spread_layers(home: &OwnedFd) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    let Ok(staging) = open_dir_at(home, STAGING_DIR) else {
        return;
    };
    let set = ioctl_getflags(&staging).and_then(|f| {
        if f.contains(IFlags::TOPDIR) {
            Ok(())
        } else {
            ioctl_setflags(&staging, f | IFlags::TOPDIR)
        }
    });
    if let Err(e) = set {
        tracing::debug!(error = %e, "staging/ cannot be marked as a top directory");
    }
}

impl Store {
    /// Opens (creating if needed) the store at `home`, makes the home
    /// private (0700, CVE-2021-41091) and sweeps leftovers of crashed work.
    pub fn open(home: &Path) -> Result<Store> {
        std::fs::create_dir_all(home)
            .map_err(|e| DriverError::io(format!("create home {}", home.display()), e))?;
        let home = home
            .canonicalize()
            .map_err(|e| DriverError::io(format!("resolve home {}", home.display()), e))?;
        let home_fd = rustix::fs::open(
            &home,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DriverError::io(format!("open home {}", home.display()), e))?;
        rustix::fs::fchmod(&home_fd, Mode::from_raw_mode(0o700))
            .map_err(|e| DriverError::io(format!("chmod home {}", home.display()), e))?;
        match rustix::fs::mkdirat(&home_fd, STAGING_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(DriverError::io(
                    format!("create {}/staging", home.display()),
                    e,
                ));
            }
        }
        spread_layers(&home_fd);
        let store = Store {
            home,
            home_fd: Arc::new(home_fd),
            locks: Arc::default(),
        };
        let report = store.cleanup()?;
        for e in &report.errors {
            tracing::warn!(error = %e, "cleanup at open");
        }
        Ok(store)
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The home directory's handle.
    pub fn home_fd(&self) -> &OwnedFd {
        &self.home_fd
    }

    /// Host path of a layer's directory.
    pub fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// Host path of a layer's content directory.
    pub fn content_dir(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join(CONTENT_DIR)
    }

    /// The content directory of layer `id` as a [`Root`](strata_fs::Root).
    pub fn content_root(&self, id: &LayerId) -> Result<strata_fs::Root> {
        strata_fs::Root::open(self.content_dir(id)).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })
    }

    /// Starts making layer `id` on `parent`: takes the layer's lock and
    /// refuses an id that exists and a parent that does not.
    pub fn claim_new(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<(LayerLock, Option<LayerId>)> {
        let lock = self.lock(id);
        if self.exists(id) {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        Ok((lock, self.check_parent(id, parent)?))
    }

    /// Resolves the parent named for a new layer `id`: it must exist.
    pub fn check_parent(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Option<LayerId>> {
        let Some(p) = parent else { return Ok(None) };
        let p = self.resolve(p)?;
        if !self.exists(&p) {
            return Err(DriverError::MissingParent {
                id: id.to_string(),
                parent: p.to_string(),
            });
        }
        Ok(Some(p))
    }

    /// Checks that `parent`, when an engine names one for an existing layer
    /// (Docker's `ApplyDiff(id, parent)`), is that layer's own parent.
    pub fn check_own_parent(&self, meta: &LayerMeta, parent: Option<&LayerId>) -> Result<()> {
        let Some(p) = parent else { return Ok(()) };
        let p = self.resolve(p)?;
        if meta.parent.as_deref() == Some(p.as_str()) {
            return Ok(());
        }
        Err(DriverError::InvalidOption {
            id: meta.id.clone(),
            option: format!("parent={p}"),
            reason: format!(
                "the layer's parent is {}",
                meta.parent.as_deref().unwrap_or("none")
            ),
        })
    }

    /// Takes the lock of layer `id` (in-process; one daemon owns a home).
    pub fn lock(&self, id: &LayerId) -> LayerLock {
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while held.contains(id.as_str()) {
            held = self
                .locks
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.insert(id.as_str().to_string());
        LayerLock {
            set: Arc::clone(&self.locks),
            id: id.as_str().to_string(),
        }
    }

    /// Resolves an id through the layer's `layerID` alias file, as the
    /// seed does; an id without one stands for itself.
    pub fn resolve(&self, id: &LayerId) -> Result<LayerId> {
        match read_file_at(&self.home_fd, &format!("{}/{ALIAS_FILE}", id.as_str())) {
            Ok(bytes) => {
                let s = String::from_utf8_lossy(&bytes);
                LayerId::new(s.trim()).map_err(|e| DriverError::Corrupt {
                    id: id.to_string(),
                    file: ALIAS_FILE,
                    reason: e.to_string(),
                })
            }
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(id.clone()),
            Err(e) => Err(DriverError::io(format!("layer {id}: read {ALIAS_FILE}"), e)),
        }
    }

    /// Resolves `id` (with its metadata) and `parent` through aliases, for
    /// an operation comparing the two.
    pub(crate) fn resolve_pair(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<(LayerId, LayerMeta, Option<LayerId>)> {
        let id = self.resolve(id)?;
        let meta = self.meta(&id)?;
        let parent = parent.map(|p| self.resolve(p)).transpose()?;
        Ok((id, meta, parent))
    }

    /// Writes a file of the store's own into the home, atomically.
    pub fn write_home_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_file_at(&self.home_fd, name, bytes, FileSync::FileAndDir)
            .map_err(|e| DriverError::io(format!("write {}/{name}", self.home.display()), e))
    }

    /// Makes layer `id` an alias of `target` (both must exist).
    pub fn set_alias(&self, id: &LayerId, target: &LayerId) -> Result<()> {
        self.meta(target)?;
        self.meta(id)?;
        let dir = open_dir_at(&self.home_fd, id.as_str())
            .map_err(|e| DriverError::io(format!("layer {id}: open"), e))?;
        write_file_at(
            &dir,
            ALIAS_FILE,
            target.as_str().as_bytes(),
            FileSync::FileAndDir,
        )
        .map_err(|e| DriverError::io(format!("layer {id}: write {ALIAS_FILE}"), e))
    }

    /// True when `id` names a complete layer.
    pub fn exists(&self, id: &LayerId) -> bool {
        rustix::fs::statat(
            &*self.home_fd,
            format!("{}/{META_FILE}", id.as_str()),
            AtFlags::empty(),
        )
        .is_ok()
    }

    /// Reads a layer's metadata; `NotFound` when there is no such layer.
    pub fn meta(&self, id: &LayerId) -> Result<LayerMeta> {
        let bytes = match read_file_at(&self.home_fd, &format!("{}/{META_FILE}", id.as_str())) {
            Ok(b) => b,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                return Err(DriverError::NotFound { id: id.to_string() });
            }
            Err(e) => return Err(DriverError::io(format!("layer {id}: read {META_FILE}"), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| DriverError::Corrupt {
            id: id.to_string(),
            file: META_FILE,
            reason: e.to_string(),
        })
    }

    /// The chain of `id`: its ancestors, nearest first.
    pub fn chain(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let mut out = Vec::new();
        let mut cur = self.meta(id)?.parent;
        while let Some(p) = cur {
            let pid = LayerId::new(&p)?;
            cur = self.meta(&pid)?.parent;
            out.push(pid);
            if out.len() > 4096 {
                return Err(DriverError::Corrupt {
                    id: id.to_string(),
                    file: META_FILE,
                    reason: "parent chain loops".into(),
                });
            }
        }
        Ok(out)
    }

    /// Every complete layer, sorted by id.
    pub fn list(&self) -> Result<Vec<LayerMeta>> {
        let mut out = Vec::new();
        for name in self.entries()? {
            let Ok(id) = LayerId::new(&name) else {
                continue;
            };
            match self.meta(&id) {
                Ok(m) => out.push(m),
                Err(DriverError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Ids of the layers whose parent is `id`.
    pub fn children(&self, id: &LayerId) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|m| m.parent.as_deref() == Some(id.as_str()))
            .map(|m| m.id)
            .collect())
    }

    /// Starts building a layer: a fresh, flock-held `staging/<random>/`
    /// with an empty content dir (0755, root-owned, as Docker's drivers).
    pub fn begin(&self) -> Result<Staging> {
        let staging = open_dir_at(&self.home_fd, STAGING_DIR)
            .map_err(|e| DriverError::io(format!("open {}/staging", self.home.display()), e))?;
        let name = format!("{:016x}", rand::random::<u64>());
        rustix::fs::mkdirat(&staging, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| DriverError::io(format!("create staging/{name}"), e))?;
        let fd = open_dir_at(&staging, &name)
            .map_err(|e| DriverError::io(format!("open staging/{name}"), e))?;
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)
            .map_err(|e| DriverError::io(format!("lock staging/{name}"), e))?;
        rustix::fs::mkdirat(&fd, CONTENT_DIR, Mode::from_raw_mode(0o755))
            .map_err(|e| DriverError::io(format!("create staging/{name}/diff"), e))?;
        // mkdir is subject to the umask; the contract wants exactly 0755.
        rustix::fs::chmodat(
            &fd,
            CONTENT_DIR,
            Mode::from_raw_mode(0o755),
            AtFlags::empty(),
        )
        .map_err(|e| DriverError::io(format!("chmod staging/{name}/diff"), e))?;
        let path = self.home.join(STAGING_DIR).join(&name);
        Ok(Staging {
            name,
            path,
            fd,
            home_fd: Arc::clone(&self.home_fd),
            committed: false,
            chain: None,
            metadata_only: false,
        })
    }

    /// Writes `meta` and the chain file into `staging`, syncs it, and
    /// renames it into place as layer `id`. Fails with `AlreadyExists`
    /// (leaving the existing layer alone) if `id` appeared meanwhile.
    pub fn commit_new(&self, staging: &mut Staging, meta: &LayerMeta) -> Result<()> {
        let id = LayerId::new(&meta.id)?;
        self.write_meta_files(staging, meta)?;
        staging.sync()?;
        let from = format!("{STAGING_DIR}/{}", staging.name);
        match rustix::fs::renameat_with(
            &*self.home_fd,
            from.as_str(),
            &*self.home_fd,
            id.as_str(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {
                return Err(DriverError::AlreadyExists { id: id.to_string() });
            }
            Err(e) => return Err(DriverError::io(format!("layer {id}: commit rename"), e)),
        }
        staging.committed = true;
        self.sync_home(&id)
    }

    /// Replaces layer `id`'s directory with `staging` in one exchange, then
    /// discards the old version.
    pub fn commit_replace(&self, staging: &mut Staging, meta: &LayerMeta) -> Result<()> {
        let id = LayerId::new(&meta.id)?;
        self.write_meta_files(staging, meta)?;
        staging.sync()?;
        let from = format!("{STAGING_DIR}/{}", staging.name);
        rustix::fs::renameat_with(
            &*self.home_fd,
            from.as_str(),
            &*self.home_fd,
            id.as_str(),
            RenameFlags::EXCHANGE,
        )
        .map_err(|e| DriverError::io(format!("layer {id}: commit exchange"), e))?;
        self.sync_home(&id)?;
        // `staging` now names the old version; dropping it removes it.
        Ok(())
    }

    fn write_meta_files(&self, staging: &Staging, meta: &LayerMeta) -> Result<()> {
        let id = LayerId::new(&meta.id)?;
        let chain: Vec<String> = match (&staging.chain, &meta.parent) {
            (Some(dirs), _) => dirs.clone(),
            (None, None) => Vec::new(),
            (None, Some(p)) => {
                let p = LayerId::new(p)?;
                let mut ids = vec![p.clone()];
                ids.extend(self.chain(&p)?);
                ids.iter()
                    .map(|i| self.layer_dir(i).to_string_lossy().into_owned())
                    .collect()
            }
        };
        let chain_json = serde_json::to_vec(&chain).map_err(|e| DriverError::Corrupt {
            id: id.to_string(),
            file: CHAIN_FILE,
            reason: e.to_string(),
        })?;
        staging.write_file(CHAIN_FILE, &chain_json)?;
        let meta_json = serde_json::to_vec_pretty(meta).map_err(|e| DriverError::Corrupt {
            id: id.to_string(),
            file: META_FILE,
            reason: e.to_string(),
        })?;
        staging.write_file(META_FILE, &meta_json)
    }

    fn sync_home(&self, id: &LayerId) -> Result<()> {
        rustix::fs::fsync(&*self.home_fd)
            .map_err(|e| DriverError::io(format!("layer {id}: sync home"), e))
    }

    /// Removes layer `id`: renames it to `<id>-removing` (atomic, so it
    /// stops existing at once), then deletes that. An unknown id is not an
    /// error (Docker removes partially created layers this way).
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        if !self.exists(id) {
            return Ok(());
        }
        let children = self.children(id)?;
        if !children.is_empty() {
            return Err(DriverError::HasChildren {
                id: id.to_string(),
                children: children.join(", "),
            });
        }
        let removing = format!("{}{REMOVING_SUFFIX}", id.as_str());
        // A leftover of an earlier interrupted removal of the same id.
        if !self.remove_unheld(self.home_fd.as_fd(), removing.as_bytes(), &removing)?
            && self.exists_raw(&removing)
        {
            return Err(DriverError::Busy {
                id: id.to_string(),
                reason: format!("{removing} is held by another process"),
            });
        }
        rustix::fs::renameat(
            &*self.home_fd,
            id.as_str(),
            &*self.home_fd,
            removing.as_str(),
        )
        .map_err(|e| DriverError::io(format!("layer {id}: rename to {removing}"), e))?;
        self.sync_home(id)?;
        self.remove_unheld(self.home_fd.as_fd(), removing.as_bytes(), &removing)?;
        Ok(())
    }

    /// True when the home holds an entry called `name`.
    fn exists_raw(&self, name: &str) -> bool {
        rustix::fs::statat(&*self.home_fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Deletes the leftover directory `name` in `dir` (the home, or
    /// `staging/`) unless a live process holds its flock: `Ok(false)` when
    /// it was held or not there. `shown` names it in errors.
    fn remove_unheld(&self, dir: BorrowedFd<'_>, name: &[u8], shown: &str) -> Result<bool> {
        let fd = match open_dir_at(dir, OsStr::from_bytes(name)) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(DriverError::io(format!("open {shown}"), e)),
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(DriverError::io(format!("lock {shown}"), e)),
        }
        strata_fs::remove_all_at(dir, name, b"").map_err(|source| DriverError::Fs {
            id: shown.to_string(),
            source,
        })
    }

    /// Names in a directory of the store.
    fn names(&self, dir: BorrowedFd<'_>, shown: &str) -> Result<Vec<Vec<u8>>> {
        let mut d = rustix::fs::Dir::read_from(dir)
            .map_err(|e| DriverError::io(format!("list {shown}"), e))?;
        strata_fs::dir_names(&mut d, b"").map_err(|source| DriverError::Fs {
            id: shown.to_string(),
            source,
        })
    }

    /// Names in the home directory.
    fn entries(&self) -> Result<Vec<String>> {
        let names = self.names(self.home_fd.as_fd(), &self.home.display().to_string())?;
        Ok(names
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect())
    }

    /// Finishes interrupted removals and discards abandoned staging dirs
    /// (those no live process holds). Errors are collected, not fatal.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let mut report = CleanupReport::default();
        for name in self.entries()? {
            if name.ends_with(REMOVING_SUFFIX) {
                match self.remove_unheld(self.home_fd.as_fd(), name.as_bytes(), &name) {
                    Ok(true) => report.removals_finished.push(name),
                    Ok(false) => {}
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }
        let staging = open_dir_at(&*self.home_fd, STAGING_DIR)
            .map_err(|e| DriverError::io(format!("open {}/staging", self.home.display()), e))?;
        for name in self.names(staging.as_fd(), "staging")? {
            let shown = format!("staging/{}", String::from_utf8_lossy(&name));
            match self.remove_unheld(staging.as_fd(), &name, &shown) {
                Ok(true) => report.staging_removed.push(shown),
                Ok(false) => {}
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        Ok(report)
    }
}

pub(crate) fn open_dir_at<P: rustix::path::Arg>(
    dir: impl AsFd,
    name: P,
) -> rustix::io::Result<OwnedFd> {
    open_file_at(dir, name, OFlags::DIRECTORY)
}

/// Opens `name` in `dir` for reading, not following a symlink there, with
/// `flags` added.
pub(crate) fn open_file_at<P: rustix::path::Arg>(
    dir: impl AsFd,
    name: P,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )
}

fn read_file_at(dir: impl AsFd, name: &str) -> rustix::io::Result<Vec<u8>> {
    let mut f = std::fs::File::from(open_file_at(dir, name, OFlags::empty())?);
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut buf)
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    Ok(buf)
}

/// How much of a metadata file's write [`write_file_at`] makes durable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileSync {
    /// Nothing: a `syncfs` before the file can be seen (a staging dir's
    /// commit) covers it, and each fsync would cost a device flush.
    Later,
    /// The file's contents, before it takes the name.
    File,
    /// The contents, then the directory holding the new name.
    FileAndDir,
}

/// Writes `name` in `dir` atomically: a temp file, written, synced as
/// `sync` says, then renamed over the name.
pub(crate) fn write_file_at(
    dir: &OwnedFd,
    name: &str,
    bytes: &[u8],
    sync: FileSync,
) -> std::io::Result<()> {
    let tmp = format!(".{name}.tmp");
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    if sync != FileSync::Later {
        f.sync_all()?;
    }
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
    if sync == FileSync::FileAndDir {
        rustix::fs::fsync(dir)?;
    }
    Ok(())
}
