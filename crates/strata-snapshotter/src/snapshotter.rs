//! containerd's snapshot semantics over the overlay driver's layers.
//!
//! Each snapshot is one layer of the store, `ctrd-<id>`, where `<id>` is
//! the snapshot's row id in the metadata database; the containerd key is
//! only ever a database value. An active snapshot is a read-write layer
//! (its `diff/` is the overlay upper dir, `work/` the work dir); a view is
//! a read-only layer with an empty `diff/`; committing seals the active
//! layer read-only in place (one rewrite of its `layer.json`, no copy).
//! Parents are layer parents, so the chain of lower dirs is the store's
//! chain, and the Docker plugin and `strata ls` see the same layers.
//!
//! A snapshot's layer and its row change together:
//!
//! * create: row inserted, layer built in staging and renamed into
//!   place, then the transaction commits; on failure the layer goes.
//! * commit: row rewritten, layer sealed, then the transaction commits;
//!   on failure the seal is undone.
//! * remove: row deleted and committed first, then the layer removed.
//!
//! A crash between the two steps leaves a layer no row names (swept when
//! the snapshotter opens and on `Cleanup`) or, for a commit, a sealed
//! layer of a still-active row (made writable again when it opens). Every
//! change goes through one connection behind a mutex, held from the first
//! read of a transaction to its commit, so a sweep never sees a layer
//! whose row is not yet committed; lookups and listings use a second,
//! read-only connection and never wait for a change in progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_driver::overlay::OverlayDriver;
use strata_driver::overlay::snapshot_support::LayerDirs;
use strata_driver::{CreateOpts, Driver, DriverError, LayerId, LayerKind};

use crate::db::{Db, Record};
use crate::error::{Result, SnapshotError};
use crate::filter::FilterSet;
use crate::model::{Info, Kind, Labels, MAX_LABEL_SIZE, Mount, SIZE_LABEL, Usage};
use crate::usage::disk_usage;

/// Prefix of the layer ids the snapshotter owns: `ctrd-<n>` layers are
/// snapshots, and one that no snapshot row names is garbage (swept).
pub const LAYER_PREFIX: &str = strata_driver::overlay::snapshot_support::SNAPSHOT_LAYER_PREFIX;

/// How many child keys a removal refused for children names.
const CHILDREN_SHOWN: usize = 5;

/// Strata's store as a containerd snapshotter. Every method is blocking
/// (filesystem and database work); the gRPC service runs them on tokio's
/// blocking pool.
#[derive(Debug)]
pub struct Snapshotter {
    driver: Arc<OverlayDriver>,
    /// The connection that writes (and reads what a write depends on).
    db: Mutex<Db>,
    /// A read-only connection for lookups and listings: with the
    /// write-ahead log they see every committed change and never wait for
    /// a writer, however long its transaction.
    reader: Mutex<Db>,
    home: PathBuf,
}

/// What [`Snapshotter::cleanup`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Layers of snapshots that no longer exist, removed.
    pub layers_removed: Vec<String>,
    /// The store's own sweep (interrupted builds and removals).
    pub store: strata_driver::CleanupReport,
    /// What could not be removed, with the reason.
    pub errors: Vec<String>,
}

/// The layer of a removed snapshot, still to be deleted (see
/// [`Snapshotter::remove_later`]).
#[derive(Debug)]
#[must_use = "the layer stays on disk until run (or the next cleanup)"]
pub struct PendingRemoval {
    driver: Arc<OverlayDriver>,
    key: String,
    layer: LayerId,
}

impl PendingRemoval {
    /// Deletes the layer. A failure is logged, not returned: the snapshot
    /// is gone already, and the next cleanup sweeps what is left, as
    /// containerd's own snapshotter does with its directories.
    pub fn run(self) {
        if let Err(e) = self.driver.remove(&self.layer) {
            tracing::warn!(key = %self.key, layer = %self.layer, error = %e, "cannot remove the layer of a removed snapshot; cleanup will");
        }
    }
}

/// A snapshot's containerd identity, for listings of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotName {
    /// Its key (active, view) or name (committed), e.g.
    /// `default/12/sha256:…`.
    pub key: String,
    /// Its kind.
    pub kind: Kind,
    /// The parent's name; empty without one.
    pub parent: String,
}

/// The containerd names of the snapshots in the store at `home`, by layer
/// id (`ctrd-<n>`). Reads the metadata database without locking it, so it
/// works while a server is running; a home without one gives an empty map.
pub fn names(home: &Path) -> Result<BTreeMap<String, SnapshotName>> {
    let Some(mut db) = Db::open_read_only(home)? else {
        return Ok(BTreeMap::new());
    };
    let tx = db.read()?;
    Ok(tx
        .all()?
        .into_iter()
        .map(|r| {
            (
                format!("{LAYER_PREFIX}{}", r.id),
                SnapshotName {
                    key: r.key,
                    kind: r.kind,
                    parent: r.parent_key,
                },
            )
        })
        .collect())
}

impl Snapshotter {
    /// Serves snapshots from `driver`'s store: opens (or creates) the
    /// metadata database in its home, makes every layer's kind agree with
    /// its row (finishing or undoing a commit a crash interrupted) and
    /// removes layers no row names.
    pub fn open(driver: Arc<OverlayDriver>) -> Result<Snapshotter> {
        let home = driver.home().to_path_buf();
        check_home(&home)?;
        let db = Db::open(&home)?;
        let reader = Db::open_read_only(&home)?.ok_or_else(|| SnapshotError::Corrupt {
            path: home.join(crate::db::DB_DIR).display().to_string(),
            reason: "the database vanished right after it was created".into(),
        })?;
        let s = Snapshotter {
            driver,
            db: Mutex::new(db),
            reader: Mutex::new(reader),
            home,
        };
        s.reconcile()?;
        let report = s.cleanup()?;
        for l in &report.layers_removed {
            tracing::info!(layer = %l, "removed the layer of a snapshot that no longer exists");
        }
        for e in &report.errors {
            tracing::warn!(error = %e, "sweep at open");
        }
        Ok(s)
    }

    /// The store's home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The driver whose layers hold the snapshots.
    pub fn driver(&self) -> &Arc<OverlayDriver> {
        &self.driver
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reader(&self) -> MutexGuard<'_, Db> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an active snapshot `key` on the committed snapshot `parent`
    /// (`""`: an empty tree); returns the mounts that give its tree.
    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    /// Creates a read-only view `key` of the committed snapshot `parent`.
    pub fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let labels = check_labels(key, labels)?;
        let size = size_limit(kind, key, &labels)?;
        let mut db = self.db();
        let tx = db.write()?;
        let parent_rec = match parent {
            "" => None,
            p => Some(tx.get(p)?.ok_or_else(|| SnapshotError::ParentNotFound {
                key: key.to_string(),
                parent: p.to_string(),
            })?),
        };
        if parent_rec
            .as_ref()
            .is_some_and(|p| p.kind != Kind::Committed)
        {
            return Err(SnapshotError::ParentNotCommitted {
                key: key.to_string(),
                parent: parent.to_string(),
            });
        }
        if tx.get(key)?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let parent_id = parent_rec.as_ref().map(|p| p.id);
        let id = tx.insert(key, kind, parent_id, now_ns(), &labels)?;
        let layer = layer_of(key, id)?;
        let parent_layer = parent_id.map(|p| layer_of(key, p)).transpose()?;
        self.make_layer(kind, key, &layer, parent_layer.as_ref(), size)?;
        let done = (|| {
            let dirs = self.dirs(key, &layer)?;
            if let (Kind::Active, Some(p)) = (kind, dirs.lowers.first()) {
                same_owner(key, &dirs.own, p)?;
            }
            let mounts = mounts_for(key, kind, &dirs)?;
            tx.commit()?;
            Ok(mounts)
        })();
        if done.is_err() {
            self.discard(key, &layer);
        }
        done
    }

    /// Builds the layer of a new snapshot. The id is fresh (ids are never
    /// reused once committed), so a layer already there was left by a
    /// create whose transaction did not commit: it is removed first.
    fn make_layer(
        &self,
        kind: Kind,
        key: &str,
        layer: &LayerId,
        parent: Option<&LayerId>,
        size: Option<u64>,
    ) -> Result<()> {
        let mut opts = CreateOpts::default();
        if let Some(s) = size {
            opts.storage_opt.insert("size".into(), s.to_string());
        }
        let make = || {
            match kind {
                Kind::Active => self.driver.create_read_write(layer, parent, &opts),
                _ => self.driver.create(layer, parent, &opts),
            }
            .map_err(|e| SnapshotError::layer(key, layer, e))
        };
        match make() {
            Err(SnapshotError::Layer { source, .. })
                if matches!(*source, DriverError::AlreadyExists { .. }) =>
            {
                tracing::warn!(layer = %layer, "removing a leftover layer of an uncommitted snapshot");
                self.driver
                    .remove(layer)
                    .map_err(|e| SnapshotError::layer(key, layer, e))?;
                make()
            }
            r => r,
        }
    }

    /// Removes the layer of a create that failed; what cannot be removed
    /// now is swept later.
    fn discard(&self, key: &str, layer: &LayerId) {
        if let Err(e) = self.driver.remove(layer) {
            tracing::warn!(key, layer = %layer, error = %e, "cannot remove the layer of a failed create; cleanup will");
        }
    }

    fn dirs(&self, key: &str, layer: &LayerId) -> Result<LayerDirs> {
        self.driver
            .layer_dirs(layer)
            .map_err(|e| SnapshotError::layer(key, layer, e))
    }

    fn get(&self, key: &str) -> Result<Record> {
        let mut db = self.reader();
        let tx = db.read()?;
        tx.get(key)?.ok_or_else(|| SnapshotError::NotFound {
            key: key.to_string(),
        })
    }

    /// The mounts of active snapshot or view `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.get(key)?;
        if rec.kind == Kind::Committed {
            return Err(SnapshotError::NoMounts {
                key: key.to_string(),
            });
        }
        let layer = layer_of(key, rec.id)?;
        mounts_for(key, rec.kind, &self.dirs(key, &layer)?)
    }

    /// Commits active snapshot `key` as `name` with `labels` (its own
    /// labels are not kept): `key` disappears, `name` can be a parent.
    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key("name", name)?;
        let labels = check_labels(name, labels)?;
        let rec = self.get(key)?;
        let layer = layer_of(key, rec.id)?;
        // Counted before the transaction, as containerd does; the layer
        // is not written once its client commits it.
        let usage = match rec.kind {
            Kind::Active => {
                let own = self.dirs(key, &layer)?.own;
                disk_usage(&own).map_err(|source| {
                    SnapshotError::layer(
                        key,
                        &layer,
                        DriverError::Fs {
                            id: layer.to_string(),
                            source,
                        },
                    )
                })?
            }
            _ => Usage::default(),
        };
        let mut db = self.db();
        let tx = db.write()?;
        if tx.get(name)?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: name.to_string(),
            });
        }
        let cur =
            tx.get(key)?
                .filter(|r| r.id == rec.id)
                .ok_or_else(|| SnapshotError::NotFound {
                    key: key.to_string(),
                })?;
        if cur.kind != Kind::Active {
            return Err(SnapshotError::NotActive {
                key: key.to_string(),
                kind: cur.kind.as_str(),
            });
        }
        tx.commit_active(cur.id, name, now_ns(), &labels, usage)?;
        self.driver
            .set_kind(&layer, LayerKind::Ro)
            .map_err(|e| SnapshotError::layer(key, &layer, e))?;
        if let Err(e) = tx.commit() {
            if let Err(u) = self.driver.set_kind(&layer, LayerKind::Rw) {
                tracing::warn!(key, layer = %layer, error = %u, "cannot unseal the layer of a failed commit; the next open will");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes snapshot `key` (any kind) unless it has children, and its
    /// layer.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.remove_later(key)?.run();
        Ok(())
    }

    /// Removes snapshot `key` (any kind) unless it has children, leaving
    /// its layer to the returned [`PendingRemoval`]: the snapshot is gone
    /// once this returns, and the caller decides when the disk is freed
    /// (containerd's collector holds its snapshotter lock across `Remove`
    /// calls, so the gRPC service frees it after answering). A layer whose
    /// removal is never run, or fails, is swept by [`Snapshotter::cleanup`]
    /// (which containerd calls after collecting) or at the next open.
    pub fn remove_later(&self, key: &str) -> Result<PendingRemoval> {
        let mut db = self.db();
        let tx = db.write()?;
        let rec = tx.get(key)?.ok_or_else(|| SnapshotError::NotFound {
            key: key.to_string(),
        })?;
        let children = tx.children(rec.id, CHILDREN_SHOWN)?;
        if !children.is_empty() {
            return Err(SnapshotError::HasChildren {
                key: key.to_string(),
                children: children.join(", "),
            });
        }
        let layer = layer_of(key, rec.id)?;
        tx.delete(rec.id, key)?;
        tx.commit()?;
        Ok(PendingRemoval {
            driver: Arc::clone(&self.driver),
            key: key.to_string(),
            layer,
        })
    }

    /// Facts about snapshot `key`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(info(self.get(key)?))
    }

    /// Changes the labels of snapshot `info.name`, the only mutable field:
    /// no `paths` replaces all labels with `info.labels`; `labels` does the
    /// same; `labels.<k>` sets (or, absent or empty in `info`, deletes)
    /// one label. Any other path is refused and nothing changes.
    pub fn update(&self, info_in: Info, paths: &[String]) -> Result<Info> {
        let name = info_in.name.clone();
        let given = check_labels(&name, info_in.labels)?;
        let mut db = self.db();
        let tx = db.write()?;
        let mut rec = tx
            .get(&name)?
            .ok_or_else(|| SnapshotError::NotFound { key: name.clone() })?;
        let mut labels = if paths.is_empty() {
            given.clone()
        } else {
            rec.labels.clone()
        };
        for p in paths {
            if let Some(k) = p.strip_prefix("labels.") {
                match given.get(k) {
                    Some(v) => labels.insert(k.to_string(), v.clone()),
                    None => labels.remove(k),
                };
            } else if p == "labels" {
                labels = given.clone();
            } else {
                return Err(SnapshotError::invalid(
                    format!("update of snapshot {name:?}: field {p:?}"),
                    "cannot be changed (only labels and labels.<key> can)",
                ));
            }
        }
        let now = now_ns();
        tx.set_labels(rec.id, &rec.key, &labels, now)?;
        tx.commit()?;
        rec.labels = labels;
        rec.updated = now;
        Ok(info(rec))
    }

    /// Every snapshot matching any of `filters` (containerd's filter
    /// syntax; none: all), sorted by name.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let set =
            FilterSet::parse(filters).map_err(|e| SnapshotError::invalid("list", e.to_string()))?;
        let all = {
            let mut db = self.reader();
            let tx = db.read()?;
            tx.all()?
        };
        Ok(all
            .into_iter()
            .map(info)
            .filter(|i| set.matches(i))
            .collect())
    }

    /// The disk used by snapshot `key`'s own content: counted now for an
    /// active snapshot, as recorded at commit for a committed one, nothing
    /// for a view.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.get(key)?;
        match rec.kind {
            Kind::Committed => Ok(rec.usage),
            Kind::View => Ok(Usage::default()),
            Kind::Active => {
                let layer = layer_of(key, rec.id)?;
                let own = self.dirs(key, &layer)?.own;
                disk_usage(&own).map_err(|source| {
                    SnapshotError::layer(
                        key,
                        &layer,
                        DriverError::Fs {
                            id: layer.to_string(),
                            source,
                        },
                    )
                })
            }
        }
    }

    /// Removes the layers of snapshots that no longer exist (children
    /// first), then the store's leftovers of interrupted builds and
    /// removals. Mounts are left alone: the Docker plugin may be serving
    /// the same store.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let mut report = CleanupReport::default();
        {
            // Held throughout: no create can be between its layer and its
            // commit while the sweep decides what is garbage.
            let mut db = self.db();
            let ids = db.read()?.ids()?;
            let layers = self
                .driver
                .list()
                .map_err(|e| SnapshotError::layer("(cleanup)", "(all)", e))?;
            let mut orphans: Vec<(i64, LayerId)> = layers
                .iter()
                .filter_map(|m| {
                    let n: i64 = m.id.strip_prefix(LAYER_PREFIX)?.parse().ok()?;
                    // Only the canonical spelling is ours (not ctrd-007).
                    (m.id == format!("{LAYER_PREFIX}{n}") && !ids.contains(&n))
                        .then(|| LayerId::new(&m.id).ok().map(|l| (n, l)))
                        .flatten()
                })
                .collect();
            // A child always has a larger id than its parent.
            orphans.sort_by_key(|o| std::cmp::Reverse(o.0));
            for (_, layer) in orphans {
                match self.driver.remove(&layer) {
                    Ok(()) => report.layers_removed.push(layer.to_string()),
                    Err(e) => report.errors.push(format!("remove layer {layer}: {e}")),
                }
            }
        }
        report.store = self
            .driver
            .store()
            .cleanup()
            .map_err(|e| SnapshotError::layer("(cleanup)", "(store)", e))?;
        report.errors.extend(report.store.errors.iter().cloned());
        Ok(report)
    }

    /// Makes each layer's kind agree with its snapshot's: read-write for
    /// an active snapshot, read-only for the others.
    fn reconcile(&self) -> Result<()> {
        let all = {
            let mut db = self.db();
            let tx = db.read()?;
            tx.all()?
        };
        for rec in all {
            let layer = layer_of(&rec.key, rec.id)?;
            let want = match rec.kind {
                Kind::Active => LayerKind::Rw,
                Kind::View | Kind::Committed => LayerKind::Ro,
            };
            match self.driver.info(&layer) {
                Ok(meta) if meta.kind != want => {
                    tracing::info!(key = %rec.key, layer = %layer, "finishing an interrupted commit");
                    self.driver
                        .set_kind(&layer, want)
                        .map_err(|e| SnapshotError::layer(&rec.key, &layer, e))?;
                }
                Ok(_) => {}
                Err(DriverError::NotFound { .. }) => {
                    tracing::warn!(key = %rec.key, layer = %layer, "the layer of this snapshot is missing from the store");
                }
                Err(e) => return Err(SnapshotError::layer(&rec.key, &layer, e)),
            }
        }
        Ok(())
    }
}

/// The layer id of snapshot row `id`.
fn layer_of(key: &str, id: i64) -> Result<LayerId> {
    let s = format!("{LAYER_PREFIX}{id}");
    LayerId::new(&s).map_err(|e| SnapshotError::layer(key, &s, e))
}

fn info(r: Record) -> Info {
    Info {
        name: r.key,
        parent: r.parent_key,
        kind: r.kind,
        created: from_ns(r.created),
        updated: from_ns(r.updated),
        labels: r.labels,
    }
}

/// Now, in nanoseconds since the epoch (fits an i64 until 2262).
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(SnapshotError::invalid(what, "must not be empty"));
    }
    Ok(())
}

/// Refuses labels containerd refuses (key and value over 4096 bytes) and
/// drops empty values, which containerd does not store either.
fn check_labels(key: &str, labels: Labels) -> Result<Labels> {
    if let Some((k, v)) = labels
        .iter()
        .find(|(k, v)| k.len() + v.len() > MAX_LABEL_SIZE)
    {
        return Err(SnapshotError::invalid(
            format!("snapshot {key:?}: label {k:?}"),
            format!(
                "key and value are {} bytes, more than the maximum of {MAX_LABEL_SIZE}",
                k.len() + v.len()
            ),
        ));
    }
    Ok(labels.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

/// The size limit an active snapshot asks for with [`SIZE_LABEL`].
fn size_limit(kind: Kind, key: &str, labels: &Labels) -> Result<Option<u64>> {
    let Some(v) = labels.get(SIZE_LABEL) else {
        return Ok(None);
    };
    let what = || format!("snapshot {key:?}: label {SIZE_LABEL}={v:?}");
    if kind != Kind::Active {
        return Err(SnapshotError::invalid(
            what(),
            "a size limit applies to active snapshots only",
        ));
    }
    let bytes = strata_driver::parse_size(v).map_err(|r| SnapshotError::invalid(what(), r))?;
    if bytes < strata_fs::MIN_SANDBOX_SIZE {
        return Err(SnapshotError::invalid(
            what(),
            format!(
                "{bytes} bytes is below the smallest limit, {} MiB",
                strata_fs::MIN_SANDBOX_SIZE >> 20
            ),
        ));
    }
    Ok(Some(bytes))
}

/// Gives a new upper dir its parent's owner, as containerd's overlay
/// snapshotter does: overlay takes the merged root's owner from the upper
/// dir, and an image whose root is not root-owned must keep it.
fn same_owner(key: &str, dir: &Path, parent: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: &str, p: &Path, e| {
        SnapshotError::io(format!("snapshot {key:?}: {what} {}", p.display()), e)
    };
    let want = std::fs::metadata(parent).map_err(|e| io("stat", parent, e))?;
    let have = std::fs::metadata(dir).map_err(|e| io("stat", dir, e))?;
    if (want.uid(), want.gid()) != (have.uid(), have.gid()) {
        std::os::unix::fs::lchown(dir, Some(want.uid()), Some(want.gid()))
            .map_err(|e| io("chown", dir, e))?;
    }
    Ok(())
}

/// The mounts containerd performs for a snapshot of `kind` with `dirs`:
/// a bind mount of the content for a snapshot without parents (and of
/// the parent for a view of a single layer), otherwise one overlay mount
/// (`index=off`, `workdir` and `upperdir` for an active snapshot, lower
/// dirs nearest first). containerd recognises the single overlay mount
/// with an upper dir and writes a layer's tar straight into the upper dir.
pub fn mounts_for(key: &str, kind: Kind, dirs: &LayerDirs) -> Result<Vec<Mount>> {
    let s = |p: &Path| p.display().to_string();
    let bind = |p: &Path, ro: bool| Mount {
        fstype: "bind".into(),
        source: s(p),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    };
    if kind == Kind::Committed {
        return Err(SnapshotError::NoMounts {
            key: key.to_string(),
        });
    }
    if dirs.lowers.is_empty() {
        return Ok(vec![bind(&dirs.own, kind == Kind::View)]);
    }
    let mut options = vec!["index=off".to_string()];
    if dirs.userxattr {
        options.push("userxattr".into());
    }
    if kind == Kind::Active {
        let work = dirs.work.as_deref().ok_or_else(|| SnapshotError::Corrupt {
            path: s(&dirs.own),
            reason: format!("the layer of active snapshot {key:?} is read-only"),
        })?;
        options.push(format!("workdir={}", s(work)));
        options.push(format!("upperdir={}", s(&dirs.own)));
    } else if let [only] = dirs.lowers.as_slice() {
        return Ok(vec![bind(only, true)]);
    }
    let lowers: Vec<String> = dirs.lowers.iter().map(|p| s(p)).collect();
    options.push(format!("lowerdir={}", lowers.join(":")));
    Ok(vec![Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options,
    }])
}

/// Refuses a home whose path cannot appear in overlay mount options.
fn check_home(home: &Path) -> Result<()> {
    let Some(s) = home.to_str() else {
        return Err(SnapshotError::invalid(
            format!("home {}", home.display()),
            "is not valid UTF-8, so it cannot be named in mount options",
        ));
    };
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, ',' | ':' | '\\' | '\n') || c.is_whitespace())
    {
        return Err(SnapshotError::invalid(
            format!("home {s:?}"),
            format!("contains {c:?}, which overlay mount options cannot carry"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(lowers: &[&str], work: Option<&str>) -> LayerDirs {
        LayerDirs {
            kind: if work.is_some() {
                LayerKind::Rw
            } else {
                LayerKind::Ro
            },
            own: "/h/ctrd-9/diff".into(),
            work: work.map(PathBuf::from),
            lowers: lowers.iter().map(PathBuf::from).collect(),
            userxattr: false,
        }
    }

    fn opts(m: &[Mount]) -> (String, String, Vec<String>) {
        assert_eq!(m.len(), 1);
        (
            m[0].fstype.clone(),
            m[0].source.clone(),
            m[0].options.clone(),
        )
    }

    #[test]
    fn mounts_follow_containerd_overlay() {
        let w = Some("/h/ctrd-9/work");
        let m = mounts_for("k", Kind::Active, &dirs(&[], w)).unwrap();
        assert_eq!(
            opts(&m),
            (
                "bind".into(),
                "/h/ctrd-9/diff".into(),
                vec!["rw".into(), "rbind".into()]
            )
        );
        let m = mounts_for("k", Kind::View, &dirs(&[], None)).unwrap();
        assert_eq!(opts(&m).2, ["ro", "rbind"]);
        let m = mounts_for("k", Kind::View, &dirs(&["/h/ctrd-1/diff"], None)).unwrap();
        assert_eq!(
            opts(&m),
            (
                "bind".into(),
                "/h/ctrd-1/diff".into(),
                vec!["ro".into(), "rbind".into()]
            )
        );
        let m = mounts_for(
            "k",
            Kind::View,
            &dirs(&["/h/ctrd-2/diff", "/h/ctrd-1/diff"], None),
        )
        .unwrap();
        assert_eq!(
            opts(&m),
            (
                "overlay".into(),
                "overlay".into(),
                vec![
                    "index=off".into(),
                    "lowerdir=/h/ctrd-2/diff:/h/ctrd-1/diff".into()
                ]
            )
        );
        let m = mounts_for(
            "k",
            Kind::Active,
            &dirs(&["/h/ctrd-2/diff", "/h/ctrd-1/diff"], w),
        )
        .unwrap();
        assert_eq!(
            opts(&m).2,
            [
                "index=off",
                "workdir=/h/ctrd-9/work",
                "upperdir=/h/ctrd-9/diff",
                "lowerdir=/h/ctrd-2/diff:/h/ctrd-1/diff"
            ]
        );
        let mut d = dirs(&["/h/ctrd-1/diff"], w);
        d.userxattr = true;
        assert_eq!(
            mounts_for("k", Kind::Active, &d).unwrap()[0].options[1],
            "userxattr"
        );
        let e = mounts_for("k", Kind::Committed, &d).unwrap_err();
        assert_eq!(
            e.code(),
            strata_snapshots_api::tonic::Code::FailedPrecondition
        );
        let e = mounts_for("k", Kind::Active, &dirs(&["/h/ctrd-1/diff"], None)).unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
    }

    #[test]
    fn labels_are_checked_and_empty_values_dropped() {
        let mut l = Labels::new();
        l.insert("a".into(), "".into());
        l.insert("b".into(), "1".into());
        let out = check_labels("k", l).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["b"]);
        let mut l = Labels::new();
        l.insert("k".repeat(100), "v".repeat(3997));
        let e = check_labels("snap", l).unwrap_err();
        assert_eq!(e.code(), strata_snapshots_api::tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("4097 bytes"), "{e}");
        let mut l = Labels::new();
        l.insert("k".repeat(96), "v".repeat(4000));
        assert!(check_labels("snap", l).is_ok());
    }

    #[test]
    fn size_label() {
        let mut l = Labels::new();
        assert_eq!(size_limit(Kind::Active, "k", &l).unwrap(), None);
        l.insert(SIZE_LABEL.into(), "1G".into());
        assert_eq!(size_limit(Kind::Active, "k", &l).unwrap(), Some(1 << 30));
        for (kind, v, want) in [
            (Kind::View, "1G", "active snapshots only"),
            (Kind::Active, "lots", "not a size"),
            (Kind::Active, "1m", "below the smallest"),
        ] {
            l.insert(SIZE_LABEL.into(), v.into());
            let e = size_limit(kind, "k", &l).unwrap_err();
            assert!(e.to_string().contains(want), "{v}: {e}");
            assert_eq!(e.code(), strata_snapshots_api::tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn home_paths_that_mount_options_cannot_carry() {
        assert!(check_home(Path::new("/var/lib/strata")).is_ok());
        for bad in ["/a,b", "/a:b", "/a b"] {
            assert!(check_home(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
