//! The `windowsfilter` driver: Windows container layers kept losslessly
//! on Linux, in the seed's layout.
//!
//! ```text
//! <home>/<id>/            a read-only (image) layer
//!   Files/ Hives/ UtilityVM/Files/   the content, as the tar names it
//!   streams/<tar name>    alternate data streams (kept out of the view)
//!   whiteouts/            the layer's Files/ tombstones as overlay
//!                         whiteouts, for the view (only if it has any)
//!   bcd.bak ...           original bytes of the utility VM's boot files
//!   wcow-index.json.gz    every entry with all its records (the truth)
//!   tar-split.json.gz     the import's framing, for exact re-export
//!   layer.json layerchain.json [layerID]
//!   merged/               mount point of the read-only Files/ view
//! <home>/<id>/            a read-write layer (the seed's sandbox)
//!   diff/ work/ merged/   overlay upper and work dirs, view mount point
//!   sandbox.img sandbox/  with `size=`: an ext4 image holding diff/work
//! ```
//!
//! `get` mounts the chain's `Files/` trees as one read-only overlay (a
//! layer's `whiteouts/` above its `Files/`, so its tombstones apply to
//! everything below, as on Windows, where tombstoned paths are removed
//! after import); a read-write layer gets its upper and work dirs on top.
//! `diff` replays the imported bytes of an unchanged read-only layer
//! (serving the BCD files from their backups and streams from `streams/`)
//! and otherwise generates a Windows layer tar by the spec's rules, reusing
//! the records the chain's indexes keep. `layerchain.json` leaves out a
//! parent without `Files/` (the empty "-init"-style layer), as the seed.
//!
//! What needs a Windows host (the wcifs filter, HCS, VHDs, hive merging,
//! BCD processing) is not done here; see the README.

mod export;
mod import;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use strata_fs::Root;
use strata_fs::mount::OverlaySpec;
use strata_fs::overlay::OverlayFeatures;
use strata_windows::{INDEX_FILE, LayerIndex, WinName, classify, fold_case, mutated_backup};

use crate::driver::{ApplyResult, Capabilities, Change, Driver, FileGetter, ImportRecord, status};
use crate::options::rw_size_limit;
use crate::refs::{MountRefs, check_unheld, mount_view, release_leftover_mounts};
use crate::sandbox::{self, WORK_DIR};
use crate::store::{CHAIN_FILE, CleanupReport, ImportInfo, LayerKind, LayerMeta, Staging, Store};
use crate::{CreateOpts, DriverError, ImportOptions, LayerId, Result, backing};

/// The windowsfilter driver's registered name.
pub const NAME: &str = "windowsfilter";

/// A read-only layer's container files (C:\).
pub(crate) const FILES_DIR: &str = "Files";
/// Where a layer keeps its alternate data streams.
pub(crate) const STREAMS_DIR: &str = strata_windows::STREAMS_DIR;
/// A layer's tombstones as overlay whiteouts.
pub(crate) const WHITEOUTS_DIR: &str = "whiteouts";
/// Mount point of a layer's view.
const MERGED_DIR: &str = "merged";
/// An empty directory in the home: the bottom lower of a view that has
/// one tree only (overlay needs two lowers without an upper).
const EMPTY_DIR: &str = ".empty";
/// Short links for long mount option strings.
const LINK_DIR: &str = ".links";

/// The `windowsfilter` driver over a [`Store`].
#[derive(Debug)]
pub struct WindowsDriver {
    store: Store,
    refs: MountRefs,
    backing: String,
    /// Overlay as the kernel offers it; `Err` says why views cannot be
    /// mounted here (everything else still works).
    overlay: std::result::Result<OverlayFeatures, String>,
}

/// Reads the index of the layer directory `dir`; `None` when it has none
/// (a layer not made by an import).
pub(crate) fn read_index(dir: &Path) -> std::io::Result<Option<LayerIndex>> {
    let f = match std::fs::File::open(dir.join(INDEX_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    LayerIndex::from_reader(f)
        .map(Some)
        .map_err(std::io::Error::other)
}

impl WindowsDriver {
    /// Opens the driver on `home` (no options). Views need overlayfs; if
    /// the kernel's cannot be used, `get` says why and the rest works.
    pub fn open(home: &Path, options: &[String]) -> Result<WindowsDriver> {
        if let Some(o) = options.first() {
            return Err(DriverError::Unusable {
                driver: NAME,
                home: home.display().to_string(),
                reason: format!("unknown driver option {o:?} (windowsfilter takes none)"),
            });
        }
        release_leftover_mounts(home)?;
        let store = Store::open(home)?;
        let (backing, magic) = backing::fs_name(store.home_fd())
            .map_err(|e| DriverError::io(format!("statfs {}", home.display()), e))?;
        let empty = store.home().join(EMPTY_DIR);
        match std::fs::create_dir(&empty) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DriverError::io(format!("create {}", empty.display()), e)),
        }
        let overlay = if magic == backing::OVERLAYFS_MAGIC {
            Err("the home is on overlayfs, which cannot be an overlay's lower layer here".into())
        } else {
            let scratch = store.begin()?;
            OverlayFeatures::probe(scratch.path()).map_err(|e| format!("overlay probe failed: {e}"))
        };
        Ok(WindowsDriver {
            store,
            refs: MountRefs::default(),
            backing,
            overlay,
        })
    }

    fn dir(&self, id: &LayerId) -> PathBuf {
        self.store.layer_dir(id)
    }

    fn merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join(MERGED_DIR)
    }

    fn userxattr(&self) -> bool {
        self.overlay.as_ref().is_ok_and(|f| f.userxattr_needed)
    }

    /// The layer directory of `id` as a root.
    fn layer_root(&self, id: &LayerId) -> Result<Root> {
        Root::open(self.dir(id)).map_err(|source| DriverError::Fs {
            id: id.to_string(),
            source,
        })
    }

    /// `layerchain.json` for a new layer on `parent`: the parent's dir if
    /// it has `Files/`, then the parent's own chain (the seed's rule).
    fn chain_for(&self, parent: Option<&LayerId>) -> Result<Vec<String>> {
        let Some(p) = parent else {
            return Ok(Vec::new());
        };
        let pdir = self.dir(p);
        let mut chain = Vec::new();
        if pdir.join(FILES_DIR).is_dir() {
            chain.push(pdir.to_string_lossy().into_owned());
        }
        let path = pdir.join(CHAIN_FILE);
        let bytes = std::fs::read(&path)
            .map_err(|e| DriverError::io(format!("layer {p}: read {CHAIN_FILE}"), e))?;
        let theirs: Option<Vec<String>> =
            serde_json::from_slice(&bytes).map_err(|e| DriverError::Corrupt {
                id: p.to_string(),
                file: CHAIN_FILE,
                reason: e.to_string(),
            })?;
        chain.extend(theirs.unwrap_or_default());
        Ok(chain)
    }

    /// The read-only layers of `id`'s ancestry that hold a tree (what a
    /// Windows import calls the parent layer paths), nearest first.
    fn parent_layers(&self, parent: Option<&LayerId>) -> Result<Vec<import::ParentLayer>> {
        let Some(p) = parent else {
            return Ok(Vec::new());
        };
        let mut ids = vec![p.clone()];
        ids.extend(self.store.chain(p)?);
        let mut out = Vec::new();
        for l in ids {
            let meta = self.store.meta(&l)?;
            let dir = self.dir(&l);
            if meta.kind == LayerKind::Ro && dir.join(FILES_DIR).is_dir() {
                out.push(import::ParentLayer::new(dir));
            }
        }
        Ok(out)
    }

    /// A fresh staging dir for a read-only layer: no `diff/`, a `merged/`.
    fn begin_ro(&self, id: &LayerId) -> Result<Staging> {
        let staging = self.store.begin()?;
        let io = |what: &str, e| DriverError::io(format!("layer {id}: {what}"), e);
        std::fs::remove_dir(staging.content_path()).map_err(|e| io("remove diff", e))?;
        make_private_dir(&staging.path().join(MERGED_DIR)).map_err(|e| io("create merged", e))?;
        Ok(staging)
    }

    /// Imports `tar` into `staging` for layer `id` on `parent`, with its
    /// index.
    fn import_into(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        staging: &Staging,
        tar: &mut (dyn Read + Send),
        decompress: bool,
    ) -> Result<ApplyResult> {
        let parents = self.parent_layers(parent)?;
        import::import(id, staging.path(), &parents, tar, decompress)
    }

    /// The trees of `layers` for an overlay, topmost first: a read-only
    /// layer's `whiteouts/` then `Files/`; a read-write layer's upper dir.
    fn trees(&self, layers: &[LayerId]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for l in layers {
            let meta = self.store.meta(l)?;
            let dir = self.dir(l);
            match meta.kind {
                LayerKind::Rw => {
                    sandbox::ensure(&self.store, l, &meta)?;
                    out.push(self.store.content_dir(l));
                }
                LayerKind::Ro => {
                    for t in [WHITEOUTS_DIR, FILES_DIR] {
                        if dir.join(t).is_dir() {
                            out.push(dir.join(t));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Mounts `id`'s view at `merged/` (reference counted by the caller).
    fn mount(&self, id: &LayerId, meta: &LayerMeta) -> Result<PathBuf> {
        let features = self
            .overlay
            .as_ref()
            .map_err(|why| DriverError::NotSupported {
                id: id.to_string(),
                driver: NAME,
                what: format!("mounting the Files/ view ({why})"),
            })?;
        let chain = self.store.chain(id)?;
        let mut lowers = self.trees(&chain)?;
        let base = OverlaySpec {
            userxattr: features.userxattr_needed,
            link_dir: Some(self.store.home().join(LINK_DIR)),
            ..OverlaySpec::default()
        };
        let writable = meta.kind == LayerKind::Rw && self.store.children(id)?.is_empty();
        let empty = self.store.home().join(EMPTY_DIR);
        let spec = if writable {
            sandbox::ensure(&self.store, id, meta)?;
            if lowers.is_empty() {
                lowers.push(empty);
            }
            OverlaySpec {
                lowers,
                upper: Some(self.store.content_dir(id)),
                work: Some(self.dir(id).join(WORK_DIR)),
                ..base
            }
        } else {
            let mut all = self.trees(std::slice::from_ref(id))?;
            all.extend(lowers);
            while all.len() < 2 {
                all.push(empty.clone());
            }
            OverlaySpec {
                lowers: all,
                readonly: true,
                ..base
            }
        };
        mount_view(id, &spec, self.merged(id), make_private_dir)
    }

    /// Runs `f` on `id`'s mounted view, taking and dropping a reference.
    fn with_view<T>(&self, id: &LayerId, f: impl FnOnce(&Root) -> Result<T>) -> Result<T> {
        let path = self.get(id, "")?;
        let r = Root::open(&path)
            .map_err(|source| DriverError::Fs {
                id: id.to_string(),
                source,
            })
            .and_then(|root| f(&root));
        self.put(id)?;
        r
    }

    /// Writes the exact imported bytes of `id` when `diff(id, parent)`
    /// asks for them; `None` when the diff must be generated.
    fn replay(
        &self,
        meta: &LayerMeta,
        parent: Option<&LayerId>,
        out: &mut dyn Write,
    ) -> Result<Option<u64>> {
        let Some(record) = ImportRecord::find(&self.store, meta, parent)? else {
            return Ok(None);
        };
        let getter = WinGetter {
            id: record.id().to_string(),
            root: self.layer_root(record.id())?,
        };
        let get = |name: &[u8]| -> std::io::Result<Box<dyn Read>> {
            Ok(Box::new(getter.open(name).map_err(std::io::Error::other)?))
        };
        record.replay(get, out).map(Some)
    }
}

impl Driver for WindowsDriver {
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
        let mut staging = match kind {
            LayerKind::Ro => self.begin_ro(id)?,
            LayerKind::Rw => self.store.begin()?,
        };
        let result = (|| {
            if kind == LayerKind::Rw {
                match size {
                    Some(size) => sandbox::add(id, &staging, size)?,
                    None => make_private_dir(&staging.path().join(WORK_DIR))
                        .map_err(|e| DriverError::io(format!("layer {id}: create work"), e))?,
                }
                make_private_dir(&staging.path().join(MERGED_DIR))
                    .map_err(|e| DriverError::io(format!("layer {id}: create merged"), e))?;
            }
            staging.set_chain(self.chain_for(parent.as_ref())?);
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
        sandbox::release(&id, &self.dir(&id))?;
        self.store.remove(&id)
    }

    fn get(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        let meta = self.store.meta(&id)?;
        let merged = self.merged(&id);
        self.refs
            .get(&id, &merged, || merged.clone(), || self.mount(&id, &meta))
    }

    fn put(&self, id: &LayerId) -> Result<()> {
        let id = self.store.resolve(id)?;
        let _lock = self.store.lock(&id);
        self.refs.put(&id, &self.merged(&id))
    }

    fn status(&self) -> Vec<(String, String)> {
        let own = vec![
            (
                "Files View".into(),
                match &self.overlay {
                    Ok(_) => "read-only overlay of the chain's Files/".into(),
                    Err(why) => format!("unavailable: {why}"),
                },
            ),
            ("userxattr".into(), self.userxattr().to_string()),
            ("Size Limits".into(), "ext4 image on a loop device".into()),
        ];
        status(NAME, &self.store, &self.backing, own)
    }

    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = self.store.resolve(id)?;
        let meta = self.store.meta(&id)?;
        let mut m = BTreeMap::new();
        m.insert("dir".into(), self.dir(&id).display().to_string());
        m.insert("MergedDir".into(), self.merged(&id).display().to_string());
        match meta.kind {
            LayerKind::Ro => {
                m.insert(
                    "FilesDir".into(),
                    self.dir(&id).join(FILES_DIR).display().to_string(),
                );
            }
            LayerKind::Rw => {
                m.insert(
                    "UpperDir".into(),
                    self.store.content_dir(&id).display().to_string(),
                );
                m.insert(
                    "WorkDir".into(),
                    self.dir(&id).join(WORK_DIR).display().to_string(),
                );
            }
        }
        Ok(m)
    }

    fn cleanup(&self) -> Result<CleanupReport> {
        self.refs.cleanup(&self.store)
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<u64> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        if let Some(n) = self.replay(&meta, parent.as_ref(), out)? {
            return Ok(n);
        }
        export::generate(self, &id, &meta, parent.as_ref(), out)
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        export::changes(self, &id, &meta, parent.as_ref())
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
        if meta.kind == LayerKind::Rw {
            return Err(DriverError::NotSupported {
                id: id.to_string(),
                driver: NAME,
                what: "apply_diff into a read-write layer (sandbox)".into(),
            });
        }
        check_unheld(&id, self.refs.taken(&id))?;
        // As the seed, the layer's content becomes the tar's; it is built
        // beside the old one and swapped in with one exchange.
        let parent = meta.parent.as_deref().map(LayerId::new).transpose()?;
        let mut staging = self.begin_ro(&id)?;
        let result = self.import_into(&id, parent.as_ref(), &staging, tar, false)?;
        staging.set_chain(self.chain_for(parent.as_ref())?);
        meta.import = Some(ImportInfo::from(&result));
        crate::refs::unmount_view(&id, &self.merged(&id))?;
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
        let mut staging = self.begin_ro(id)?;
        let result = self.import_into(id, parent.as_ref(), &staging, tar, true)?;
        opts.verify(id, &result)?;
        staging.set_chain(self.chain_for(parent.as_ref())?);
        let meta = LayerMeta::new(
            NAME,
            id,
            parent.as_ref(),
            LayerKind::Ro,
            None,
            Some(ImportInfo::from(&result)),
        );
        self.store.commit_new(&mut staging, &meta)?;
        Ok(result)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let (id, meta, parent) = self.store.resolve_pair(id, parent)?;
        export::diff_size(self, &id, &meta, parent.as_ref())
    }

    fn diff_getter(&self, id: &LayerId) -> Result<Box<dyn FileGetter>> {
        let id = self.store.resolve(id)?;
        self.store.meta(&id)?;
        Ok(Box::new(WinGetter {
            id: id.to_string(),
            root: self.layer_root(&id)?,
        }))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reproduces_exact_diffs: true,
        }
    }
}

/// Serves a Windows layer's files by tar name: the four boot files from
/// their backups, streams from `streams/`, everything else from its path
/// in the layer directory.
struct WinGetter {
    id: String,
    root: Root,
}

impl WinGetter {
    fn open(&self, name: &[u8]) -> Result<std::fs::File> {
        let fs = |source| DriverError::Fs {
            id: self.id.clone(),
            source,
        };
        let rel: Vec<u8> = match classify(name) {
            Ok(WinName::Stream { path, .. }) => {
                let mut p = STREAMS_DIR.as_bytes().to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                p
            }
            Ok(WinName::Object { path, .. }) => match mutated_backup(&path) {
                Some(bak) => bak.as_bytes().to_vec(),
                // The import stores a path spelt differently from one met
                // before under the first spelling (NTFS's rule).
                None => match self.root.open_file(&path) {
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
                        spelt_as_stored(&self.root, &path).unwrap_or(path)
                    }
                    opened => return opened.map_err(fs),
                },
            },
            Ok(other) => other.path().to_vec(),
            Err(e) => {
                return Err(fs(strata_fs::FsError::Invalid {
                    path: strata_fs::display_path(name),
                    reason: e.reason,
                }));
            }
        };
        self.root.open_file(&rel).map_err(fs)
    }
}

/// The path under which `path` is stored in the layer at `root` when its
/// components are spelt in another case there: each missing component is
/// looked up by folded name. `None` when no such path exists.
fn spelt_as_stored(root: &Root, path: &[u8]) -> Option<Vec<u8>> {
    let mut stored: Vec<u8> = Vec::new();
    for comp in strata_fs::components(path) {
        let exact = strata_fs::join_path(&stored, comp);
        if root.lstat(&exact).ok().flatten().is_some() {
            stored = exact;
            continue;
        }
        let fd = root.open_dir(&stored).ok()?;
        let mut d = rustix::fs::Dir::read_from(&fd).ok()?;
        let want = fold_case(comp);
        let found = strata_fs::dir_names(&mut d, &stored)
            .ok()?
            .into_iter()
            .find(|n| fold_case(n) == want)?;
        stored = strata_fs::join_path(&stored, &found);
    }
    Some(stored)
}

impl FileGetter for WinGetter {
    fn get(&self, path: &[u8]) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open(path)?))
    }
}

/// Creates a 0700 directory.
fn make_private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir(p)?;
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}
