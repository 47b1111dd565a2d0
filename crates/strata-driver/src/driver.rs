//! The `Driver` trait: every operation of the graph-driver contract
//! (../shared/docs/contract.md), in the shape Docker's `graphdriver.Driver`
//! has, so the engine front ends are thin adapters over it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
pub use strata_layer::{Change, ChangeKind};

use crate::store::{CleanupReport, LayerKind, LayerMeta, Store};
use crate::{CreateOpts, LayerId, Result};

/// What a driver can promise engines (Docker 20.10's `Capabilities`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `diff` of an imported, unchanged layer gives back the exact bytes
    /// that were imported.
    pub reproduces_exact_diffs: bool,
}

/// What an import recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyResult {
    /// Layer size in bytes (what Docker's `ApplyDiff` returns).
    pub size: u64,
    /// Tar entries applied.
    pub entries: u64,
    /// Bytes of the uncompressed tar stream read.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed stream.
    pub digest: String,
    /// The blob's compression (`gzip`, `zstd`); `None` for a plain tar.
    pub compression: Option<String>,
    /// `sha256:<hex>` of the compressed blob as read (what registries name
    /// a layer blob by); `None` for a plain tar.
    pub compressed_digest: Option<String>,
    /// Why `diff` cannot replay the imported bytes exactly, if it cannot.
    pub export_fallback: Option<String>,
}

impl From<&ApplyResult> for crate::ImportInfo {
    fn from(r: &ApplyResult) -> Self {
        crate::ImportInfo {
            size: r.size,
            entries: r.entries,
            tar_bytes: r.tar_bytes,
            digest: r.digest.clone(),
            compression: r.compression.clone(),
            compressed_digest: r.compressed_digest.clone(),
            export_fallback: r.export_fallback.clone(),
        }
    }
}

/// Options for [`Driver::import_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// `sha256:<64 lowercase hex>` the import must match. It matches the
    /// digest of the uncompressed tar (the diffID) or, for a compressed
    /// blob, the digest of the blob itself (the name registries give it).
    /// On a mismatch the import fails and no layer is left behind.
    pub expect_digest: Option<String>,
}

impl ImportOptions {
    /// Refuses a malformed expected digest before any work is done.
    pub(crate) fn validate(&self, id: &LayerId) -> Result<()> {
        match &self.expect_digest {
            Some(d) => check_digest(d).map_err(|reason| crate::DriverError::InvalidDigest {
                id: id.to_string(),
                digest: d.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Checks an applied stream against the expected digest; called before
    /// the commit, so a mismatch discards the staged layer.
    pub(crate) fn verify(&self, id: &LayerId, r: &ApplyResult) -> Result<()> {
        let Some(expected) = &self.expect_digest else {
            return Ok(());
        };
        if *expected == r.digest || r.compressed_digest.as_ref() == Some(expected) {
            return Ok(());
        }
        let actual = match (&r.compressed_digest, &r.compression) {
            (Some(cd), Some(c)) => format!("tar {} / {c} blob {cd}", r.digest),
            _ => format!("tar {}", r.digest),
        };
        Err(crate::DriverError::DigestMismatch {
            id: id.to_string(),
            expected: expected.clone(),
            actual,
        })
    }
}

/// Checks the syntax of a digest: `sha256:` and 64 lowercase hex digits.
/// The error says what is wrong.
pub fn check_digest(digest: &str) -> std::result::Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err("expected sha256:<64 lowercase hex digits>".into());
    };
    if hex.len() != 64 {
        return Err(format!(
            "expected 64 hex digits after sha256:, got {}",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("expected lowercase hex digits (0-9, a-f) after sha256:".into());
    }
    Ok(())
}

/// Hands out a layer's own files by tar path, so engines can rebuild an
/// original tar (tar-split) without mounting.
pub trait FileGetter: Send {
    /// Opens the file at `path` (a tar entry name) for reading.
    fn get(&self, path: &[u8]) -> Result<Box<dyn Read + Send>>;
}

/// A graph driver. Ids are validated [`LayerId`]s; `parent` arguments are
/// `None` for "no parent" (Docker's empty string).
pub trait Driver: Send + Sync {
    /// The driver's registered name.
    fn name(&self) -> &'static str;
    /// The driver's home directory.
    fn home(&self) -> &Path {
        self.store().home()
    }
    /// The layer store under the driver.
    fn store(&self) -> &Store;
    /// Creates an empty layer of `kind` on `parent`: what `create` and
    /// `create_read_write` share (drivers differ only in what a kind gets).
    fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
        opts: &CreateOpts,
    ) -> Result<()>;
    /// Creates an empty read-only layer on `parent`.
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, LayerKind::Ro, opts)
    }
    /// Creates an empty read-write layer on `parent`.
    fn create_read_write(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        self.create_layer(id, parent, LayerKind::Rw, opts)
    }
    /// Removes a layer (crash-safe). Unknown ids are not an error.
    fn remove(&self, id: &LayerId) -> Result<()>;
    /// Returns the absolute path of the layer's merged view, taking a
    /// reference.
    fn get(&self, id: &LayerId, mount_label: &str) -> Result<PathBuf>;
    /// Drops a reference taken by `get`; extra calls are harmless.
    fn put(&self, id: &LayerId) -> Result<()>;
    /// True only for complete layers (resolving aliases).
    fn exists(&self, id: &LayerId) -> bool {
        self.store()
            .resolve(id)
            .map(|id| self.store().exists(&id))
            .unwrap_or(false)
    }
    /// Key/value facts about the driver, in display order.
    fn status(&self) -> Vec<(String, String)>;
    /// Key/value facts about a layer (`docker inspect`'s GraphDriver.Data).
    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>>;
    /// Finishes interrupted work and releases what the driver holds.
    fn cleanup(&self) -> Result<CleanupReport>;
    /// Writes the tar of `id`'s changes relative to `parent` (`None`: the
    /// whole layer) to `out`; returns the bytes written.
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<u64>;
    /// Lists `id`'s changes relative to `parent` (`None`: all Add).
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;
    /// Applies a layer tar to the existing layer `id` atomically: either the
    /// whole stream lands or the layer is left as it was.
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut (dyn Read + Send),
    ) -> Result<ApplyResult>;
    /// Creates layer `id` on `parent` from a tar stream as one atomic step:
    /// the layer exists only once the whole stream is applied and synced.
    /// Unlike `apply_diff`, the stream may be a gzip or zstd blob.
    fn import(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut (dyn Read + Send),
    ) -> Result<ApplyResult> {
        self.import_with(id, parent, tar, &ImportOptions::default())
    }
    /// `import` with options (an expected digest checked before the
    /// commit).
    fn import_with(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut (dyn Read + Send),
        opts: &ImportOptions,
    ) -> Result<ApplyResult>;
    /// Bytes of `id`'s changes relative to `parent`.
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;
    /// A getter over the layer's own files by tar path.
    fn diff_getter(&self, id: &LayerId) -> Result<Box<dyn FileGetter>>;
    /// What the driver promises engines.
    fn capabilities(&self) -> Capabilities;
    /// Metadata of one layer (resolving aliases).
    fn info(&self, id: &LayerId) -> Result<LayerMeta> {
        let id = self.store().resolve(id)?;
        self.store().meta(&id)
    }
    /// Every complete layer.
    fn list(&self) -> Result<Vec<LayerMeta>> {
        self.store().list()
    }
}

/// A driver's `status`: its name, home and backing filesystem, then the
/// facts `own` to the driver, then the number of layers.
pub(crate) fn status(
    name: &str,
    store: &Store,
    backing: &str,
    own: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let layers = store
        .list()
        .map(|l| l.len().to_string())
        .unwrap_or_else(|e| format!("error: {e}"));
    let mut s = vec![
        ("Driver".into(), name.into()),
        ("Home".into(), store.home().display().to_string()),
        ("Backing Filesystem".into(), backing.into()),
    ];
    s.extend(own);
    s.push(("Layers".into(), layers));
    s
}

/// Serves a layer's own files by tar path, resolved inside its content
/// root (the getter every driver whose layers are plain trees shares).
pub(crate) struct RootGetter {
    id: String,
    root: strata_fs::Root,
}

impl RootGetter {
    /// A getter over `root`, the content of layer `id`.
    pub(crate) fn new(id: &LayerId, root: strata_fs::Root) -> Self {
        RootGetter {
            id: id.to_string(),
            root,
        }
    }
}

impl FileGetter for RootGetter {
    fn get(&self, path: &[u8]) -> Result<Box<dyn Read + Send>> {
        let fs = |source| crate::DriverError::Fs {
            id: self.id.clone(),
            source,
        };
        let clean = strata_fs::clean_path(path).map_err(fs)?;
        Ok(Box::new(self.root.open_file(&clean).map_err(fs)?))
    }
}

/// Writes the exact bytes `id` was imported from, when that is what
/// `diff(id, parent)` asks for, serving its files from `own`, the layer's
/// content root. Returns `None` when the diff must be generated instead.
pub(crate) fn replay_import(
    store: &crate::Store,
    meta: &crate::LayerMeta,
    parent: Option<&LayerId>,
    own: &strata_fs::Root,
    out: &mut dyn Write,
) -> Result<Option<u64>> {
    let Some(record) = ImportRecord::find(store, meta, parent)? else {
        return Ok(None);
    };
    let get = |name: &[u8]| -> std::io::Result<Box<dyn Read>> {
        let clean = strata_fs::clean_path(name).map_err(std::io::Error::other)?;
        Ok(Box::new(
            own.open_file(&clean).map_err(std::io::Error::other)?,
        ))
    };
    record.replay(get, out).map(Some)
}

/// The tar-split record of an imported layer, found when `diff(id,
/// parent)` asks for exactly the imported bytes: an unchanged read-only
/// layer, compared with its own parent, whose record can be replayed from
/// its files.
pub(crate) struct ImportRecord {
    id: LayerId,
    file: std::fs::File,
}

impl ImportRecord {
    /// The record of `meta`'s layer for `diff(meta.id, parent)`; `None`
    /// when the diff must be generated instead.
    pub(crate) fn find(
        store: &crate::Store,
        meta: &crate::LayerMeta,
        parent: Option<&LayerId>,
    ) -> Result<Option<ImportRecord>> {
        let Some(import) = &meta.import else {
            return Ok(None);
        };
        if meta.kind != crate::LayerKind::Ro
            || import.export_fallback.is_some()
            || meta.parent.as_deref() != parent.map(LayerId::as_str)
        {
            return Ok(None);
        }
        let id = LayerId::new(&meta.id)?;
        let path = store.layer_dir(&id).join(crate::pipeline::TAR_SPLIT_FILE);
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Some(ImportRecord { id, file })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::DriverError::io(
                format!("layer {id}: open {}", path.display()),
                e,
            )),
        }
    }

    /// The layer the record belongs to.
    pub(crate) fn id(&self) -> &LayerId {
        &self.id
    }

    /// Writes the imported bytes to `out`, the files' contents from `get`
    /// (by tar name); returns the bytes written. Every file is checked
    /// against its CRC as it is read, so a layer changed on disk fails
    /// here, naming the file, rather than exporting different bytes.
    pub(crate) fn replay<'g>(
        self,
        get: impl FnMut(&[u8]) -> std::io::Result<Box<dyn Read + 'g>>,
        out: &mut dyn Write,
    ) -> Result<u64> {
        strata_tar::replay(strata_tar::RecordReader::new(self.file), get, out).map_err(|source| {
            crate::DriverError::Replay {
                id: self.id.to_string(),
                source,
            }
        })
    }
}
