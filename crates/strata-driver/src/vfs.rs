//! The `vfs` driver: every layer is a full copy of its parent plus its own
//! changes, so it works on any filesystem and needs no mounts. Copies use
//! reflinks where the filesystem has them and `copy_file_range` otherwise,
//! keep hard links and all xattrs (Docker's vfs keeps only
//! `security.capability`). `diff` and `changes` compare a layer with its
//! parent's tree; `get` hands out the content directory.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use strata_fs::Root;
use strata_layer::{CompareOptions, WhiteoutMode};

use crate::driver::{
    ApplyResult, Capabilities, Change, Driver, FileGetter, RootGetter, replay_import, status,
};
use crate::options::parse_storage_opts;
use crate::pipeline::apply_stream;
use crate::refs::check_unheld;
use crate::store::{CleanupReport, ImportInfo, LayerKind, LayerMeta, Staging, Store};
use crate::{CreateOpts, DriverError, ImportOptions, LayerId, Result, backing};

/// The vfs driver's registered name.
pub const NAME: &str = "vfs";

/// A layer and the layer it is compared with, resolved and opened once.
struct Comparison {
    meta: LayerMeta,
    parent: Option<LayerId>,
    layer: Root,
    parent_root: Option<Root>,
    opts: CompareOptions,
}

/// The `vfs` driver over a [`Store`].
#[derive(Debug)]
pub struct VfsDriver {
    store: Store,
    refs: Mutex<HashMap<String, u32>>,
    backing: String,
    d_type: bool,
    /// Why the overlay driver was not used, when vfs was chosen for that.
    overlay_failed: Option<String>,
}

impl VfsDriver {
    /// Opens the driver on `home` (created 0700 if missing). vfs works on
    /// any filesystem; the backing one is reported in `status`.
    pub fn open(home: &Path, options: &[String]) -> Result<VfsDriver> {
        if let Some(o) = options.first() {
            return Err(DriverError::Unusable {
                driver: NAME,
                home: home.display().to_string(),
                reason: format!("unknown driver option {o:?} (vfs takes none)"),
            });
        }
        let store = Store::open(home)?;
        let (backing, _) = backing::fs_name(store.home_fd())
            .map_err(|e| DriverError::io(format!("statfs {}", home.display()), e))?;
        let d_type = backing::supports_d_type(store.home_fd())
            .map_err(|e| DriverError::io(format!("probe d_type in {}", home.display()), e))?;
        Ok(VfsDriver {
            store,
            refs: Mutex::new(HashMap::new()),
            backing,
            d_type,
            overlay_failed: None,
        })
    }

    /// Records why automatic choice fell back to vfs, for `status`.
    pub fn because_overlay_failed(mut self, reason: String) -> Self {
        self.overlay_failed = Some(reason);
        self
    }

    fn refcount(&self, id: &LayerId) -> u32 {
        let refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        refs.get(id.as_str()).copied().unwrap_or(0)
    }

    /// A staging dir holding a copy of `from`'s content (or empty).
    fn stage_copy(
        &self,
        id: &LayerId,
        from: Option<&LayerId>,
    ) -> Result<(Staging, Option<(i64, u32)>)> {
        let staging = self.store.begin()?;
        let Some(from) = from else {
            return Ok((staging, None));
        };
        let src = self.store.content_root(from)?;
        let dst = Root::open(staging.content_path()).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })?;
        strata_fs::copy_tree(&src, &dst).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })?;
        let at = staging.fs_now()?;
        Ok((staging, Some(at)))
    }

    /// The comparison base for `id` against `parent`: its real parent lets
    /// change detection use the copy instant.
    fn compare(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Comparison> {
        let id = self.store.resolve(id)?;
        let meta = self.store.meta(&id)?;
        let layer = self.store.content_root(&id)?;
        let Some(parent) = parent else {
            let opts = CompareOptions {
                touched_after: None,
            };
            return Ok(Comparison {
                meta,
                parent: None,
                layer,
                parent_root: None,
                opts,
            });
        };
        let parent = self.store.resolve(parent)?;
        self.store.meta(&parent)?;
        let touched_after = if meta.parent.as_deref() == Some(parent.as_str()) {
            meta.copied_at()
        } else {
            None
        };
        Ok(Comparison {
            meta,
            parent_root: Some(self.store.content_root(&parent)?),
            parent: Some(parent),
            layer,
            opts: CompareOptions { touched_after },
        })
    }
}

impl Driver for VfsDriver {
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
        let storage = parse_storage_opts(id.as_str(), &opts.storage_opt)?;
        if storage.size.is_some() {
            let what = match kind {
                LayerKind::Ro => "a size limit on a read-only layer",
                LayerKind::Rw => "the size storage option",
            };
            return Err(DriverError::NotSupported {
                id: id.to_string(),
                driver: NAME,
                what: what.into(),
            });
        }
        let (_lock, parent) = self.store.claim_new(id, parent)?;
        let (mut staging, copied_at) = self.stage_copy(id, parent.as_ref())?;
        let meta = LayerMeta::new(NAME, id, parent.as_ref(), kind, copied_at, None);
        self.store.commit_new(&mut staging, &meta)
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        check_unheld(&id, self.refcount(&id))?;
        self.store.remove(&id)
    }

    fn get(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        self.store.meta(&id)?;
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        *refs.entry(id.to_string()).or_insert(0) += 1;
        Ok(self.store.content_dir(&id))
    }

    fn put(&self, id: &LayerId) -> Result<()> {
        let id = self.store.resolve(id)?;
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = refs.get_mut(id.as_str()) {
            *n -= 1;
            if *n == 0 {
                refs.remove(id.as_str());
            }
        }
        Ok(())
    }

    fn status(&self) -> Vec<(String, String)> {
        let own = vec![("Supports d_type".into(), self.d_type.to_string())];
        let mut s = status(NAME, &self.store, &self.backing, own);
        if let Some(why) = &self.overlay_failed {
            s.push(("Overlay Unavailable".into(), why.clone()));
        }
        s
    }

    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = self.store.resolve(id)?;
        self.store.meta(&id)?;
        let mut m = BTreeMap::new();
        m.insert(
            "SourceDir".into(),
            self.store.content_dir(&id).display().to_string(),
        );
        m.insert(
            "dir".into(),
            self.store.layer_dir(&id).display().to_string(),
        );
        Ok(m)
    }

    fn cleanup(&self) -> Result<CleanupReport> {
        self.store.cleanup()
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<u64> {
        let Comparison {
            meta,
            parent,
            layer,
            parent_root,
            opts,
        } = self.compare(id, parent)?;
        if let Some(n) = replay_import(&self.store, &meta, parent.as_ref(), &layer, out)? {
            return Ok(n);
        }
        let stats = strata_layer::export_diff(&layer, parent_root.as_ref(), &opts, out).map_err(
            |source| DriverError::Export {
                id: id.to_string(),
                source,
            },
        )?;
        Ok(stats.bytes)
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let Comparison {
            layer,
            parent_root,
            opts,
            ..
        } = self.compare(id, parent)?;
        strata_layer::changes(&layer, parent_root.as_ref(), &opts).map_err(|source| {
            DriverError::Export {
                id: id.to_string(),
                source,
            }
        })
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
        check_unheld(&id, self.refcount(&id))?;
        // Build the new content beside the old and swap them in one step,
        // so a bad stream leaves the layer exactly as it was.
        let (mut staging, _) = self.stage_copy(&id, Some(&id))?;
        let result = apply_stream(&id, &staging, tar, WhiteoutMode::Delete, None, false)?;
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
        let (mut staging, copied_at) = self.stage_copy(id, parent.as_ref())?;
        let result = apply_stream(id, &staging, tar, WhiteoutMode::Delete, None, true)?;
        // Checked before the commit: on a mismatch the staging is dropped.
        opts.verify(id, &result)?;
        let meta = LayerMeta::new(
            NAME,
            id,
            parent.as_ref(),
            LayerKind::Ro,
            copied_at,
            Some(ImportInfo::from(&result)),
        );
        self.store.commit_new(&mut staging, &meta)?;
        Ok(result)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let Comparison {
            layer,
            parent_root,
            opts,
            ..
        } = self.compare(id, parent)?;
        let changes =
            strata_layer::changes(&layer, parent_root.as_ref(), &opts).map_err(|source| {
                DriverError::Export {
                    id: id.to_string(),
                    source,
                }
            })?;
        strata_layer::changes_size(&layer, &changes).map_err(|source| DriverError::Export {
            id: id.to_string(),
            source,
        })
    }

    fn diff_getter(&self, id: &LayerId) -> Result<Box<dyn FileGetter>> {
        let id = self.store.resolve(id)?;
        self.store.meta(&id)?;
        Ok(Box::new(RootGetter::new(
            &id,
            self.store.content_root(&id)?,
        )))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reproduces_exact_diffs: true,
        }
    }
}
