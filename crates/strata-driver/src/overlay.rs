//! The `overlay` driver: each layer keeps only its own changes in `diff/`,
//! and `get` stacks the chain with one overlayfs mount at `merged/`.
//!
//! Imports write straight into the new layer's `diff/` with overlay's own
//! whiteout forms (a 0/0 character device for a deleted path, the
//! `opaque` xattr for an opaque directory), so nothing is copied from the
//! parent. `diff`, `changes` and `diff_size` read that directory directly
//! (native diff), so their cost grows with the change, not with the image;
//! when the kernel's overlay makes native diff unreliable (redirect_dir or
//! metacopy on) they fall back to comparing the mounted views, and
//! `status` says so. A layer that has children is always mounted read-only
//! (overlay2's `committed` rule), and `index=off` is always set.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rustix::fs::FileType;
use strata_fs::Root;
use strata_fs::mount::OverlaySpec;
use strata_fs::overlay::{OverlayFeatures, is_opaque_dir, is_whiteout, native_diff_ok};
use strata_fs::{Visitor, WalkControl, WalkEntry};
use strata_layer::{CompareOptions, ExportItem, WhiteoutMode};

use crate::driver::{
    ApplyResult, Capabilities, Change, ChangeKind, Driver, FileGetter, RootGetter, replay_import,
    status,
};
use crate::options::rw_size_limit;
use crate::pipeline::apply_stream;
use crate::refs::{MountRefs, check_unheld, mount_view, release_leftover_mounts};
use crate::sandbox::{self, WORK_DIR};
use crate::store::{CleanupReport, ImportInfo, LayerKind, LayerMeta, Store};
use crate::{CreateOpts, DriverError, ImportOptions, LayerId, Result, backing};

#[path = "snapshot_support.rs"]
pub mod snapshot_support;

/// The overlay driver's registered name.
pub const NAME: &str = "overlay";

/// Most layers one overlay mount can stack (the kernel's limit on lower
/// layers); a chain deeper than this could never be mounted, so it is
/// refused when the layer is created.
pub const MAX_DEPTH: usize = 500;

/// Name of a layer's mount point.
const MERGED_DIR: &str = "merged";
/// Directory of short links that stand in for layer paths when a legacy
/// `mount(2)` option string would not fit in a page (overlay2's `l/`; a dot name, so no layer id can clash).
const LINK_DIR: &str = ".links";

/// The `overlay` driver over a [`Store`].
#[derive(Debug)]
pub struct OverlayDriver {
    store: Store,
    refs: MountRefs,
    backing: String,
    features: OverlayFeatures,
    native_diff: bool,
    native_reason: String,
    /// Next xfs project id to hand out, when the home is on xfs with
    /// project quotas enforced (then size limits use them, as overlay2
    /// does, instead of a loop-mounted image).
    project_ids: Option<Mutex<u32>>,
}

impl OverlayDriver {
    /// Opens the driver on `home`: refuses a backing filesystem that cannot
    /// carry an overlay upper dir (overlayfs itself, no d_type), naming it,
    /// and probes the kernel's overlay for what native diff needs.
    pub fn open(home: &Path, options: &[String]) -> Result<OverlayDriver> {
        let unusable = |reason: String| DriverError::Unusable {
            driver: NAME,
            home: home.display().to_string(),
            reason,
        };
        let mut force_naive = false;
        for o in options {
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            match (k.trim_start_matches("overlay."), v) {
                // Benchmarks and tests use this to run the naive path on a
                // kernel where native diff would be chosen.
                ("native_diff", "false") => force_naive = true,
                ("native_diff", "true" | "") => {}
                _ => {
                    return Err(unusable(format!(
                        "unknown driver option {o:?} (overlay takes native_diff=true|false)"
                    )));
                }
            }
        }
        release_leftover_mounts(home)?;
        let store = Store::open(home)?;
        let (backing, magic) = backing::fs_name(store.home_fd())
            .map_err(|e| DriverError::io(format!("statfs {}", home.display()), e))?;
        if magic == backing::OVERLAYFS_MAGIC {
            return Err(unusable(
                "the backing filesystem is overlayfs, which cannot hold an overlay upper dir"
                    .into(),
            ));
        }
        let d_type = backing::supports_d_type(store.home_fd())
            .map_err(|e| DriverError::io(format!("probe d_type in {}", home.display()), e))?;
        if !d_type {
            return Err(unusable(format!(
                "the backing {backing} filesystem is formatted without d_type support; \
                 overlay needs it (reformat with ftype=1 for xfs)"
            )));
        }
        // The probes mount test overlays on the backing filesystem itself;
        // if that fails, overlay cannot work here at all.
        let scratch = store.begin()?;
        let features = OverlayFeatures::probe(scratch.path())
            .map_err(|e| unusable(format!("overlay probe failed: {e}")))?;
        let (mut native_diff, mut native_reason) = native_diff_ok(&features, scratch.path())
            .map_err(|e| unusable(format!("overlay test mount failed: {e}")))?;
        if force_naive && native_diff {
            (native_diff, native_reason) =
                (false, "turned off by the native_diff=false option".into());
        }
        drop(scratch);
        let project_ids =
            if strata_fs::xfs_project_quota_supported(store.home()).map_err(|source| {
                DriverError::Quota {
                    id: "(open)".into(),
                    source,
                }
            })? {
                Some(Mutex::new(next_project_id(&store)?))
            } else {
                None
            };
        Ok(OverlayDriver {
            project_ids,
            store,
            refs: MountRefs::default(),
            backing,
            features,
            native_diff,
            native_reason,
        })
    }

    fn merged(&self, id: &LayerId) -> PathBuf {
        self.store.layer_dir(id).join(MERGED_DIR)
    }

    fn whiteouts(&self) -> WhiteoutMode {
        WhiteoutMode::Overlay {
            xattr_prefix: if self.features.userxattr_needed {
                "user.overlay."
            } else {
                "trusted.overlay."
            },
        }
    }

    /// The content dirs of `id`'s ancestors, nearest first.
    fn lower_dirs(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        Ok(self
            .store
            .chain(id)?
            .iter()
            .map(|l| self.store.content_dir(l))
            .collect())
    }

    /// Refuses a new layer on `parent` whose chain could not be mounted.
    fn check_depth(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        let Some(p) = parent else { return Ok(()) };
        let depth = self.store.chain(p)?.len() + 2;
        if depth > MAX_DEPTH {
            return Err(DriverError::InvalidOption {
                id: id.to_string(),
                option: format!("parent={p}"),
                reason: format!(
                    "the chain would be {depth} layers deep; overlay mounts at most {MAX_DEPTH}"
                ),
            });
        }
        Ok(())
    }

    /// Mounts a size-limited layer's sandbox if it is not (after a restart
    /// or `cleanup`), so its `diff` and `work` links resolve.
    fn ensure_sandbox(&self, id: &LayerId, meta: &LayerMeta) -> Result<()> {
        sandbox::ensure(&self.store, id, meta)
    }

    /// The content dir of `id`, its sandbox mounted if it has one.
    fn own_dir(&self, id: &LayerId) -> Result<PathBuf> {
        self.ensure_sandbox(id, &self.store.meta(id)?)?;
        Ok(self.store.content_dir(id))
    }

    /// The content of `id` as a root, its sandbox mounted if it has one.
    fn own_root(&self, id: &LayerId) -> Result<Root> {
        self.own_dir(id)?;
        self.store.content_root(id)
    }

    /// Adds the driver's own dirs to a layer being built.
    fn add_dirs(&self, staging: &crate::Staging, kind: LayerKind) -> Result<()> {
        let mut dirs = vec![MERGED_DIR];
        if kind == LayerKind::Rw {
            dirs.push(WORK_DIR);
        }
        for d in dirs {
            std::fs::create_dir(staging.path().join(d)).map_err(|e| {
                DriverError::io(format!("create {}/{d}", staging.path().display()), e)
            })?;
            std::fs::set_permissions(
                staging.path().join(d),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(|e| DriverError::io(format!("chmod {}/{d}", staging.path().display()), e))?;
        }
        Ok(())
    }

    /// Applies `tar` into `staging` for layer `id` on `parent`, with the
    /// parent's merged view at hand for hard links into lower layers.
    fn apply_on(
        &self,
        id: &LayerId,
        parent: Option<&str>,
        staging: &crate::Staging,
        tar: &mut (dyn Read + Send),
        decompress: bool,
    ) -> Result<ApplyResult> {
        let Some(parent) = parent else {
            return apply_stream(id, staging, tar, self.whiteouts(), None, decompress);
        };
        let parent = LayerId::new(parent)?;
        let view = self.get(&parent, "")?;
        let result = Root::open(&view)
            .map_err(|source| DriverError::Fs {
                id: parent.to_string(),
                source,
            })
            .and_then(|lower| {
                apply_stream(id, staging, tar, self.whiteouts(), Some(&lower), decompress)
            });
        self.put(&parent)?;
        result
    }

    /// Mounts `id`'s merged view (or returns its content dir when it has
    /// no parents) with the reference already counted by the caller.
    fn mount(&self, id: &LayerId, meta: &LayerMeta) -> Result<PathBuf> {
        let lowers = self.lower_dirs(id)?;
        if lowers.is_empty() {
            return Ok(self.store.content_dir(id));
        }
        let merged = self.merged(id);
        let writable = meta.kind == LayerKind::Rw && self.store.children(id)?.is_empty();
        let own = self.own_dir(id)?;
        let base = OverlaySpec {
            userxattr: self.features.userxattr_needed,
            link_dir: Some(self.store.home().join(LINK_DIR)),
            ..OverlaySpec::default()
        };
        let spec = if writable {
            OverlaySpec {
                lowers,
                upper: Some(own),
                work: Some(self.store.layer_dir(id).join(WORK_DIR)),
                ..base
            }
        } else {
            let mut all = vec![own];
            all.extend(lowers);
            OverlaySpec {
                lowers: all,
                readonly: true,
                ..base
            }
        };
        mount_view(id, &spec, merged, |p| std::fs::create_dir(p))
    }

    /// How read-write layers' size limits are kept.
    fn size_limits(&self) -> &'static str {
        if self.project_ids.is_some() {
            "xfs project quota"
        } else {
            "ext4 image on a loop device"
        }
    }

    /// True when `parent` is `id`'s own parent and the kernel's overlay
    /// keeps upper dirs faithful: then `id`'s `diff/` is exactly its change.
    fn native_for(&self, meta: &LayerMeta, parent: Option<&LayerId>) -> bool {
        self.native_diff && meta.parent.as_deref() == parent.map(LayerId::as_str)
    }

    /// How to compare `id`'s view with `parent`'s: against its own parent,
    /// objects touched since the layer was made have their content checked.
    fn compare_opts(&self, meta: &LayerMeta, parent: Option<&LayerId>) -> CompareOptions {
        let own = meta.parent.as_deref() == parent.map(LayerId::as_str);
        CompareOptions {
            touched_after: if own { meta.copied_at() } else { None },
        }
    }

    /// Runs `f` on the merged views of `id` and `parent`, taking and
    /// dropping their references.
    fn with_views<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce(&Root, Option<&Root>) -> Result<T>,
    ) -> Result<T> {
        let layer = self.get(id, "")?;
        let result = (|| {
            let layer_root = Root::open(&layer).map_err(|source| DriverError::Fs {
                id: id.to_string(),
                source,
            })?;
            match parent {
                None => f(&layer_root, None),
                Some(p) => {
                    let pv = self.get(p, "")?;
                    let r = Root::open(&pv)
                        .map_err(|source| DriverError::Fs {
                            id: p.to_string(),
                            source,
                        })
                        .and_then(|pr| f(&layer_root, Some(&pr)));
                    self.put(p)?;
                    r
                }
            }
        })();
        self.put(id)?;
        result
    }

    /// What `id`'s own `diff/` holds, as export items: objects, whiteouts
    /// (0/0 devices) and opaque markers (the opaque xattr).
    fn native_items(&self, id: &LayerId) -> Result<(Root, Vec<ExportItem>)> {
        let root = self.own_root(id)?;
        struct Collect<'a> {
            items: Vec<ExportItem>,
            userxattr: bool,
            root: &'a Root,
        }
        impl Visitor for Collect<'_> {
            fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
                if is_whiteout(e.stat) {
                    self.items.push(ExportItem::Whiteout(e.path.to_vec()));
                    return Ok(WalkControl::Continue);
                }
                self.items.push(ExportItem::Object(e.path.to_vec()));
                if FileType::from_raw_mode(e.stat.st_mode) == FileType::Directory {
                    let fd = self.root.open_dir(e.path)?;
                    if is_opaque_dir(&fd, self.userxattr)? {
                        self.items.push(ExportItem::Opaque(e.path.to_vec()));
                    }
                }
                Ok(WalkControl::Continue)
            }
        }
        let mut c = Collect {
            items: Vec::new(),
            userxattr: self.features.userxattr_needed,
            root: &root,
        };
        strata_fs::walk(&root, b"", &mut c).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })?;
        let items = c.items;
        Ok((root, items))
    }
}

impl Driver for OverlayDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
        opts: &CreateOpts,
    ) -> Result<()> {
        let size = rw_size_limit(id, kind, opts)?;
        let (_lock, parent) = self.store.claim_new(id, parent)?;
        self.check_depth(id, parent.as_ref())?;
        let mut staging = self.store.begin()?;
        let result = (|| {
            match (size, &self.project_ids) {
                (None, _) => {
                    self.add_dirs(&staging, kind)?;
                    staging.metadata_only();
                }
                (Some(size), Some(ids)) => {
                    self.add_dirs(&staging, kind)?;
                    let mut next = ids.lock().unwrap_or_else(PoisonError::into_inner);
                    strata_fs::set_project_quota(&staging.content_path(), *next, size).map_err(
                        |source| DriverError::Quota {
                            id: id.to_string(),
                            source,
                        },
                    )?;
                    *next += 1;
                }
                (Some(size), None) => {
                    sandbox::add(id, &staging, size)?;
                    std::fs::create_dir(staging.path().join(MERGED_DIR))
                        .map_err(|e| DriverError::io(format!("layer {id}: create merged"), e))?;
                }
            }
            // Anything in the merged view with a ctime from now on was
            // copied up or written in this layer: the naive comparison
            // checks content for those (ARCHITECTURE.md, change detection).
            let since = Some(staging.fs_now()?);
            let mut meta = LayerMeta::new(NAME, id, parent.as_ref(), kind, since, None);
            meta.size_limit = size;
            self.store.commit_new(&mut staging, &meta)
        })();
        if result.is_err() && size.is_some() {
            sandbox::release_failed(id, &staging);
        }
        result
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        self.refs.forget(&id, &self.merged(&id))?;
        sandbox::release(&id, &self.store.layer_dir(&id))?;
        self.store.remove(&id)
    }

    fn get(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        let meta = self.store.meta(&id)?;
        // A layer without parents is handed out unmounted (see `mount`).
        let held = || {
            if meta.parent.is_none() {
                self.store.content_dir(&id)
            } else {
                self.merged(&id)
            }
        };
        self.refs
            .get(&id, &self.merged(&id), held, || self.mount(&id, &meta))
    }

    fn put(&self, id: &LayerId) -> Result<()> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        self.refs.put(&id, &self.merged(&id))
    }

    fn status(&self) -> Vec<(String, String)> {
        let own = vec![
            ("Supports d_type".into(), "true".into()),
            ("Native Overlay Diff".into(), self.native_diff.to_string()),
            (
                "userxattr".into(),
                self.features.userxattr_needed.to_string(),
            ),
            ("Size Limits".into(), self.size_limits().into()),
        ];
        let mut s = status(NAME, &self.store, &self.backing, own);
        if !self.native_diff {
            s.push((
                "Native Overlay Diff Reason".into(),
                self.native_reason.clone(),
            ));
        }
        s
    }

    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = self.store.resolve(id)?;
        let meta = self.store.meta(&id)?;
        let mut m = BTreeMap::new();
        let lowers = self.lower_dirs(&id)?;
        if !lowers.is_empty() {
            let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
            m.insert("LowerDir".into(), joined.join(":"));
        }
        m.insert(
            "UpperDir".into(),
            self.store.content_dir(&id).display().to_string(),
        );
        if meta.kind == LayerKind::Rw {
            let work = self.store.layer_dir(&id).join(WORK_DIR);
            m.insert("WorkDir".into(), work.display().to_string());
        }
        m.insert("MergedDir".into(), self.merged(&id).display().to_string());
        Ok(m)
    }

    fn cleanup(&self) -> Result<CleanupReport> {
        self.refs.cleanup(&self.store)
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<u64> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        if let Some(n) = replay_import(
            &self.store,
            &meta,
            parent.as_ref(),
            &self.own_root(&id)?,
            out,
        )? {
            return Ok(n);
        }
        let export = |source| DriverError::Export {
            id: id.to_string(),
            source,
        };
        if self.native_for(&meta, parent.as_ref()) {
            let (root, items) = self.native_items(&id)?;
            return strata_layer::export_items(&root, &items, out)
                .map(|s| s.bytes)
                .map_err(export);
        }
        let opts = self.compare_opts(&meta, parent.as_ref());
        self.with_views(&id, parent.as_ref(), |layer, base| {
            strata_layer::export_diff(layer, base, &opts, out)
                .map(|s| s.bytes)
                .map_err(export)
        })
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        let export = |source| DriverError::Export {
            id: id.to_string(),
            source,
        };
        if !self.native_for(&meta, parent.as_ref()) {
            let opts = self.compare_opts(&meta, parent.as_ref());
            return self.with_views(&id, parent.as_ref(), |layer, base| {
                strata_layer::changes(layer, base, &opts).map_err(export)
            });
        }
        let (_, items) = self.native_items(&id)?;
        let Some(parent) = parent else {
            let mut out: Vec<Change> = items
                .iter()
                .filter_map(|i| match i {
                    ExportItem::Object(p) => Some(change(p, ChangeKind::Add)),
                    _ => None,
                })
                .collect();
            sort_changes(&mut out);
            return Ok(out);
        };
        // Add or Modify is decided by looking the path up in the parent's
        // merged view: the kernel applies the lower chain's whiteouts and
        // opaque dirs for us.
        let view = self.get(&parent, "")?;
        let result = (|| {
            let base = Root::open(&view).map_err(|source| DriverError::Fs {
                id: parent.to_string(),
                source,
            })?;
            let in_base = |p: &[u8]| -> Result<bool> {
                base.lstat(p)
                    .map(|s| s.is_some())
                    .map_err(|source| DriverError::Fs {
                        id: parent.to_string(),
                        source,
                    })
            };
            let own = self.own_root(&id)?;
            let mut out = Vec::new();
            for item in &items {
                match item {
                    ExportItem::Whiteout(p) => out.push(change(p, ChangeKind::Delete)),
                    ExportItem::Object(p) => {
                        let kind = if in_base(p)? {
                            ChangeKind::Modify
                        } else {
                            ChangeKind::Add
                        };
                        out.push(change(p, kind));
                    }
                    ExportItem::Opaque(dir) => {
                        // Everything the parent had below an opaque dir is
                        // gone unless this layer has it again.
                        let names = list_names(&base, dir).map_err(|source| DriverError::Fs {
                            id: parent.to_string(),
                            source,
                        })?;
                        for n in names {
                            let p = strata_fs::join_path(dir, &n);
                            let here = own.lstat(&p).map_err(|source| DriverError::Fs {
                                id: id.to_string(),
                                source,
                            })?;
                            if here.is_none() {
                                out.push(change(&p, ChangeKind::Delete));
                            }
                        }
                    }
                }
            }
            // overlay copies parent dirs up whenever something below them
            // changes, so they are objects of the diff already: Modify.
            sort_changes(&mut out);
            out.dedup_by(|a, b| a.path == b.path);
            Ok(out)
        })();
        self.put(&parent)?;
        result
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut (dyn Read + Send),
    ) -> Result<ApplyResult> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        let mut meta = self.store.meta(&id)?;
        self.store.check_own_parent(&meta, parent)?;
        if meta.size_limit.is_some() {
            // Rebuilding the content in staging would leave the sandbox
            // (and so the limit) behind; engines apply diffs to image
            // layers, never to size-limited container layers.
            return Err(DriverError::NotSupported {
                id: id.to_string(),
                driver: NAME,
                what: "apply_diff into a size-limited read-write layer".into(),
            });
        }
        check_unheld(&id, self.refs.count(&id))?;
        // The new content is built beside the old (a copy of the layer's
        // own changes, usually none yet) and swapped in with one exchange.
        let mut staging = self.store.begin()?;
        let dst = Root::open(staging.content_path()).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })?;
        strata_fs::copy_tree(&self.own_root(&id)?, &dst).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })?;
        self.add_dirs(&staging, meta.kind)?;
        let result = self.apply_on(&id, meta.parent.as_deref(), &staging, tar, false)?;
        meta.import = Some(ImportInfo::from(&result));
        self.store.commit_replace(&mut staging, &meta)?;
        Ok(result)
    }

    fn import_with(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut (dyn Read + Send),
        opts: &ImportOptions,
    ) -> Result<ApplyResult> {
        opts.validate(id)?;
        let (_lock, parent) = self.store.claim_new(id, parent)?;
        self.check_depth(id, parent.as_ref())?;
        let mut staging = self.store.begin()?;
        self.add_dirs(&staging, LayerKind::Ro)?;
        let since = Some(staging.fs_now()?);
        let result = self.apply_on(
            id,
            parent.as_ref().map(LayerId::as_str),
            &staging,
            tar,
            true,
        )?;
        // Checked before the commit: on a mismatch the staging is dropped.
        opts.verify(id, &result)?;
        let meta = LayerMeta::new(
            NAME,
            id,
            parent.as_ref(),
            LayerKind::Ro,
            since,
            Some(ImportInfo::from(&result)),
        );
        self.store.commit_new(&mut staging, &meta)?;
        Ok(result)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        let export = |source| DriverError::Export {
            id: id.to_string(),
            source,
        };
        if self.native_for(&meta, parent.as_ref()) {
            // Sum of the layer's own objects: what overlay2 reports too.
            let root = self.own_root(&id)?;
            let all =
                strata_layer::changes(&root, None, &CompareOptions::default()).map_err(export)?;
            return strata_layer::changes_size(&root, &all).map_err(export);
        }
        let opts = self.compare_opts(&meta, parent.as_ref());
        self.with_views(&id, parent.as_ref(), |layer, base| {
            let changes = strata_layer::changes(layer, base, &opts).map_err(export)?;
            strata_layer::changes_size(layer, &changes).map_err(export)
        })
    }

    fn diff_getter(&self, id: &LayerId) -> Result<Box<dyn FileGetter>> {
        let id = self.store.resolve(id)?;
        self.store.meta(&id)?;
        Ok(Box::new(RootGetter::new(&id, self.own_root(&id)?)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reproduces_exact_diffs: true,
        }
    }
}

/// The first xfs project id not used by a layer of `store`: above the
/// home's own project and every size-limited layer's (as overlay2 scans
/// its layers at start).
fn next_project_id(store: &Store) -> Result<u32> {
    let quota = |id: &str, source| DriverError::Quota {
        id: id.to_string(),
        source,
    };
    let mut next = strata_fs::project_id(store.home()).map_err(|e| quota("(home)", e))? + 1;
    for m in store.list()? {
        if m.size_limit.is_some() {
            let id = LayerId::new(&m.id)?;
            let p = strata_fs::project_id(&store.content_dir(&id)).map_err(|e| quota(&m.id, e))?;
            next = next.max(p + 1);
        }
    }
    Ok(next)
}

fn change(path: &[u8], kind: ChangeKind) -> Change {
    let mut p = Vec::with_capacity(path.len() + 1);
    p.push(b'/');
    p.extend_from_slice(path);
    Change { path: p, kind }
}

/// Walk order: by path components, so a directory precedes its contents.
fn sort_changes(c: &mut [Change]) {
    c.sort_by(|a, b| {
        a.path
            .split(|&x| x == b'/')
            .cmp(b.path.split(|&x| x == b'/'))
    });
}

/// The names in directory `dir` of `root` (empty if it is not a directory).
fn list_names(root: &Root, dir: &[u8]) -> strata_fs::Result<Vec<Vec<u8>>> {
    let fd = match root.open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut d =
        rustix::fs::Dir::read_from(&fd).map_err(|e| strata_fs::FsError::io("opendir", dir, e))?;
    strata_fs::dir_names(&mut d, dir)
}
