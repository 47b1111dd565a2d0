//! Changes, sizes and generated exports of Windows layers.
//!
//! An imported read-only layer compared with its own parent is described
//! by its index: its entries are its changes (tombstones are deletions;
//! whether an object is an Add or a Modify is decided by looking it up in
//! the layers below), its size is the sum of its regular files (streams
//! and links not counted, as moby and hcsshim count). A read-write layer
//! is described by its overlay upper dir (objects, whiteouts, opaque dirs).
//! Anything else is a comparison of the two mounted `Files/` views.
//!
//! Generated tars follow the spec's rules through `LayerBuilder`, and keep
//! what the chain's indexes know about each path (security descriptor,
//! attributes, creation time, EAs, streams, unknown records, the original
//! link text of symlinks and junctions); paths no index knows get the
//! defaults. A read-only layer whose record cannot be replayed is written
//! back from its own index, entry by entry.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use rustix::fs::{FileType, Mode, OFlags};
use strata_fs::{Root, Visitor, WalkControl, WalkEntry};
use strata_layer::{Change, ChangeKind, CompareOptions};
use strata_tar::{TarWriter, Timestamp};
use strata_windows::{
    BuildOptions, EntryMeta, IndexEntry, Kind, LayerBuilder, LayerIndex, Role, is_known_key,
    mutated_backup, view_symlink_target,
};

use super::{FILES_DIR, STREAMS_DIR, WindowsDriver, read_index};
use crate::store::{LayerKind, LayerMeta};
use crate::{DriverError, LayerId, Result};

/// A change of the `Files/` view, by view-relative path.
type ViewChange = (Vec<u8>, ChangeKind);

fn export_err(id: &LayerId, source: strata_layer::ExportError) -> DriverError {
    DriverError::Export {
        id: id.to_string(),
        source,
    }
}

fn fs_err(id: &LayerId, source: strata_fs::FsError) -> DriverError {
    DriverError::Fs {
        id: id.to_string(),
        source,
    }
}

fn io_err(id: &LayerId, what: impl std::fmt::Display, e: std::io::Error) -> DriverError {
    DriverError::io(format!("layer {id}: {what}"), e)
}

/// The index of layer `id`, if it has one.
fn index_of(d: &WindowsDriver, id: &LayerId) -> Result<Option<LayerIndex>> {
    read_index(&d.dir(id)).map_err(|e| io_err(id, strata_windows::INDEX_FILE, e))
}

fn own_parent(meta: &LayerMeta, parent: Option<&LayerId>) -> bool {
    meta.parent.as_deref() == parent.map(LayerId::as_str)
}

fn with_slash(p: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(p.len() + 1);
    v.push(b'/');
    v.extend_from_slice(p);
    v
}

fn files_path(rel: &[u8]) -> Vec<u8> {
    let mut v = FILES_DIR.as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(rel);
    v
}

/// Walk order: by path components, so a directory precedes its contents.
fn sort_changes(c: &mut [Change]) {
    c.sort_by(|a, b| {
        a.path
            .split(|&x| x == b'/')
            .cmp(b.path.split(|&x| x == b'/'))
    });
}

/// `id`'s changes relative to `parent`.
pub(super) fn changes(
    d: &WindowsDriver,
    id: &LayerId,
    meta: &LayerMeta,
    parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    if own_parent(meta, parent)
        && meta.kind == LayerKind::Ro
        && let Some(idx) = index_of(d, id)?
    {
        return index_changes(d, id, &idx, parent);
    }
    let mut out: Vec<Change> = view_changes(d, id, meta, parent)?
        .into_iter()
        .map(|(p, kind)| Change {
            path: with_slash(&files_path(&p)),
            kind,
        })
        .collect();
    sort_changes(&mut out);
    Ok(out)
}

/// The changes an imported layer's index describes.
fn index_changes(
    d: &WindowsDriver,
    id: &LayerId,
    idx: &LayerIndex,
    parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    let below: Vec<Root> = match parent {
        None => Vec::new(),
        Some(p) => {
            let mut ids = vec![p.clone()];
            ids.extend(d.store.chain(p)?);
            let mut roots = Vec::new();
            for l in ids {
                if d.store.meta(&l)?.kind == LayerKind::Ro {
                    roots.push(d.layer_root(&l)?);
                }
            }
            roots
        }
    };
    let in_base = |view: Option<&Root>, path: &[u8]| -> Result<bool> {
        if let (Some(v), Some(rel)) = (view, path.strip_prefix(b"Files/")) {
            return v.lstat(rel).map(|s| s.is_some()).map_err(|e| fs_err(id, e));
        }
        for r in &below {
            if r.lstat(path).map_err(|e| fs_err(id, e))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let run = |view: Option<&Root>| -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for e in &idx.entries {
            let (path, kind) = match e.role {
                Role::Tombstone => (&e.target, ChangeKind::Delete),
                Role::Object | Role::Link => {
                    let kind = if below.is_empty() || !in_base(view, &e.path)? {
                        ChangeKind::Add
                    } else {
                        ChangeKind::Modify
                    };
                    (&e.path, kind)
                }
                Role::Stream | Role::Opaque => continue,
            };
            out.push(Change {
                path: with_slash(path),
                kind,
            });
        }
        sort_changes(&mut out);
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    };
    match parent {
        Some(p) if d.overlay.is_ok() => d.with_view(p, |v| run(Some(v))),
        _ => run(None),
    }
}

/// Changes of `id`'s `Files/` view: from a read-write layer's upper dir
/// when compared with its own parent, else by comparing the two views.
fn view_changes(
    d: &WindowsDriver,
    id: &LayerId,
    meta: &LayerMeta,
    parent: Option<&LayerId>,
) -> Result<Vec<ViewChange>> {
    if own_parent(meta, parent) && meta.kind == LayerKind::Rw {
        crate::sandbox::ensure(&d.store, id, meta)?;
        let upper = d.store.content_root(id)?;
        let items = upper_items(id, &upper, d.userxattr())?;
        return match parent {
            None => Ok(items
                .into_iter()
                .filter_map(|i| match i {
                    UpperItem::Object(p) => Some((p, ChangeKind::Add)),
                    _ => None,
                })
                .collect()),
            Some(p) => d.with_view(p, |base| {
                let mut out = Vec::new();
                for i in items {
                    match i {
                        UpperItem::Whiteout(p) => out.push((p, ChangeKind::Delete)),
                        UpperItem::Object(p) => {
                            let kind = if base.lstat(&p).map_err(|e| fs_err(id, e))?.is_some() {
                                ChangeKind::Modify
                            } else {
                                ChangeKind::Add
                            };
                            out.push((p, kind));
                        }
                        UpperItem::Opaque(dir) => {
                            for n in list_names(base, &dir).map_err(|e| fs_err(id, e))? {
                                let p = strata_fs::join_path(&dir, &n);
                                if upper.lstat(&p).map_err(|e| fs_err(id, e))?.is_none() {
                                    out.push((p, ChangeKind::Delete));
                                }
                            }
                        }
                    }
                }
                Ok(out)
            }),
        };
    }
    let opts = CompareOptions::default();
    let strip = |c: Vec<Change>| -> Vec<ViewChange> {
        c.into_iter()
            .map(|c| {
                (
                    c.path.strip_prefix(b"/").unwrap_or(&c.path).to_vec(),
                    c.kind,
                )
            })
            .collect()
    };
    d.with_view(id, |layer| match parent {
        None => strata_layer::changes(layer, None, &opts)
            .map(strip)
            .map_err(|e| export_err(id, e)),
        Some(p) => d.with_view(p, |base| {
            strata_layer::changes(layer, Some(base), &opts)
                .map(strip)
                .map_err(|e| export_err(id, e))
        }),
    })
}

/// What a read-write layer's upper dir holds.
enum UpperItem {
    Object(Vec<u8>),
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
}

fn upper_items(id: &LayerId, upper: &Root, userxattr: bool) -> Result<Vec<UpperItem>> {
    struct Collect<'a> {
        items: Vec<UpperItem>,
        userxattr: bool,
        root: &'a Root,
    }
    impl Visitor for Collect<'_> {
        fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
            if strata_fs::overlay::is_whiteout(e.stat) {
                self.items.push(UpperItem::Whiteout(e.path.to_vec()));
                return Ok(WalkControl::Continue);
            }
            self.items.push(UpperItem::Object(e.path.to_vec()));
            if e.file_type() == FileType::Directory {
                let fd = self.root.open_dir(e.path)?;
                if strata_fs::overlay::is_opaque_dir(&fd, self.userxattr)? {
                    self.items.push(UpperItem::Opaque(e.path.to_vec()));
                }
            }
            Ok(WalkControl::Continue)
        }
    }
    let mut c = Collect {
        items: Vec::new(),
        userxattr,
        root: upper,
    };
    strata_fs::walk(upper, b"", &mut c).map_err(|e| fs_err(id, e))?;
    Ok(c.items)
}

/// The names in directory `dir` of `root` (none if it is not one).
fn list_names(root: &Root, dir: &[u8]) -> strata_fs::Result<Vec<Vec<u8>>> {
    let fd = match root.open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOTDIR.raw_os_error() || c == rustix::io::Errno::NOENT.raw_os_error()) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut dirfd =
        rustix::fs::Dir::read_from(&fd).map_err(|e| strata_fs::FsError::io("opendir", dir, e))?;
    strata_fs::dir_names(&mut dirfd, dir)
}

/// Bytes of `id`'s changes relative to `parent`.
pub(super) fn diff_size(
    d: &WindowsDriver,
    id: &LayerId,
    meta: &LayerMeta,
    parent: Option<&LayerId>,
) -> Result<u64> {
    if own_parent(meta, parent) {
        if meta.kind == LayerKind::Ro
            && let Some(idx) = index_of(d, id)?
        {
            return Ok(idx
                .entries
                .iter()
                .filter(|e| e.role == Role::Object && e.kind == Kind::File)
                .map(|e| e.size)
                .sum());
        }
        if meta.kind == LayerKind::Rw {
            crate::sandbox::ensure(&d.store, id, meta)?;
            let upper = d.store.content_root(id)?;
            let all = strata_layer::changes(&upper, None, &CompareOptions::default())
                .map_err(|e| export_err(id, e))?;
            return strata_layer::changes_size(&upper, &all).map_err(|e| export_err(id, e));
        }
    }
    let changes: Vec<Change> = view_changes(d, id, meta, parent)?
        .into_iter()
        .map(|(p, kind)| Change {
            path: with_slash(&p),
            kind,
        })
        .collect();
    d.with_view(id, |view| {
        strata_layer::changes_size(view, &changes).map_err(|e| export_err(id, e))
    })
}

/// Writes a generated Windows layer tar of `id`'s changes relative to
/// `parent` (when the imported bytes cannot be replayed).
pub(super) fn generate(
    d: &WindowsDriver,
    id: &LayerId,
    meta: &LayerMeta,
    parent: Option<&LayerId>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut counter = Counter { inner: out, n: 0 };
    if own_parent(meta, parent)
        && meta.kind == LayerKind::Ro
        && let Some(idx) = index_of(d, id)?
    {
        from_index(d, id, &idx, &mut counter)?;
        return Ok(counter.n);
    }
    let changes = view_changes(d, id, meta, parent)?;
    // What the indexes of the chain (the layer itself first) know.
    let mut layers = Vec::new();
    if meta.kind == LayerKind::Ro {
        layers.push(id.clone());
    }
    layers.extend(d.store.chain(id)?);
    let kept = Kept::load(d, &layers)?;
    d.with_view(id, |view| emit(id, view, &changes, &kept, &mut counter))?;
    Ok(counter.n)
}

/// Writes an imported layer back from its index: every entry in order
/// (the last of a repeated path only, since the layer holds that one),
/// with its own header fields and records, data from the layer.
fn from_index(
    d: &WindowsDriver,
    id: &LayerId,
    idx: &LayerIndex,
    out: &mut dyn Write,
) -> Result<()> {
    let root = d.layer_root(id)?;
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, e) in idx.entries.iter().enumerate() {
        last.insert(&e.path, i);
    }
    let mut tw = TarWriter::new(out);
    for (i, e) in idx.entries.iter().enumerate() {
        if last.get(e.path.as_slice()) != Some(&i) {
            continue;
        }
        let h = e.to_header();
        let tar = |source| DriverError::Io {
            what: format!("layer {id}: write the generated tar"),
            source: std::io::Error::other(source),
        };
        if e.kind == Kind::File && e.role != Role::Tombstone && e.role != Role::Opaque && e.size > 0
        {
            let rel = stored_path(e);
            let mut f = root.open_file(&rel).map_err(|e| fs_err(id, e))?;
            tw.append(&h, &mut f).map_err(tar)?;
        } else {
            let mut h = h;
            h.size = 0;
            tw.append(&h, &mut std::io::empty()).map_err(tar)?;
        }
    }
    tw.finish().map_err(|e| DriverError::Io {
        what: format!("layer {id}: finish the generated tar"),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

/// Where an index entry's data is in its layer directory.
fn stored_path(e: &IndexEntry) -> Vec<u8> {
    match e.role {
        Role::Stream => {
            let mut p = STREAMS_DIR.as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(&e.path);
            p
        }
        _ => match mutated_backup(&e.path) {
            Some(bak) => bak.as_bytes().to_vec(),
            None => e.path.clone(),
        },
    }
}

/// What the chain's indexes know about `Files/` paths: the nearest
/// layer's entry for each path, and its streams.
struct Kept {
    dirs: Vec<PathBuf>,
    /// Layer path -> (layer number in `dirs`, entry).
    entries: HashMap<Vec<u8>, (usize, IndexEntry)>,
    /// File path -> its stream entries, of the same layer as the file.
    streams: HashMap<Vec<u8>, Vec<IndexEntry>>,
}

impl Kept {
    fn load(d: &WindowsDriver, layers: &[LayerId]) -> Result<Kept> {
        let mut k = Kept {
            dirs: Vec::new(),
            entries: HashMap::new(),
            streams: HashMap::new(),
        };
        for l in layers {
            let Some(idx) = index_of(d, l)? else { continue };
            let n = k.dirs.len();
            k.dirs.push(d.dir(l));
            let mut mine: HashMap<Vec<u8>, Vec<IndexEntry>> = HashMap::new();
            for e in idx.entries {
                match e.role {
                    Role::Object | Role::Link => {
                        if !k.entries.contains_key(&e.path) {
                            k.entries.insert(e.path.clone(), (n, e));
                        }
                    }
                    Role::Stream => mine.entry(e.target.clone()).or_default().push(e),
                    Role::Tombstone | Role::Opaque => {}
                }
            }
            for (file, s) in mine {
                if matches!(k.entries.get(&file), Some((m, _)) if *m == n) {
                    k.streams.entry(file).or_insert(s);
                }
            }
        }
        Ok(k)
    }

    /// Kept metadata for `path` with the current modification time.
    fn meta(&self, path: &[u8], mtime: Timestamp) -> EntryMeta {
        let mut m = EntryMeta::at(mtime);
        if let Some((_, e)) = self.entries.get(path)
            && let Ok(win) = e.win()
        {
            m.win = win;
            m.win.mtime = None;
            m.extra = e
                .records
                .iter()
                .filter(|r| !is_known_key(&r.k) && !r.k.starts_with(b"GNU.sparse."))
                .map(|r| (r.k.clone(), r.v.clone()))
                .collect();
        }
        m
    }
}

/// Writes the Windows tar of `changes` (view paths) with the objects of
/// `view`.
fn emit(
    id: &LayerId,
    view: &Root,
    changes: &[ViewChange],
    kept: &Kept,
    out: &mut dyn Write,
) -> Result<()> {
    let build = |e: strata_windows::BuildError| DriverError::Io {
        what: format!("layer {id}: generate the Windows layer tar"),
        source: std::io::Error::other(e),
    };
    let opts = BuildOptions::new().map_err(|e| build(e.into()))?;
    let mut b = LayerBuilder::new(out, opts).map_err(build)?;
    let mut sorted: Vec<&ViewChange> = changes.iter().collect();
    sorted.sort_by(|a, b| a.0.split(|&x| x == b'/').cmp(b.0.split(|&x| x == b'/')));
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (rel, kind) in sorted {
        let path = files_path(rel);
        if *kind == ChangeKind::Delete {
            b.whiteout(&path).map_err(build)?;
            continue;
        }
        let Some(st) = view.lstat(rel).map_err(|e| fs_err(id, e))? else {
            continue;
        };
        let mtime = Timestamp {
            secs: st.st_mtime,
            nanos: st.st_mtime_nsec as u32,
        };
        let meta = kept.meta(&path, mtime);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => b.dir(&path, &meta).map_err(build)?,
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1
                    && let Some(first) = inodes.get(&key)
                {
                    let target = first.clone();
                    let link_meta = kept.entries.contains_key(&path).then_some(&meta);
                    b.hard_link(&path, &target, link_meta).map_err(build)?;
                    continue;
                }
                if st.st_nlink > 1 {
                    inodes.insert(key, path.clone());
                }
                let mut f = view.open_file(rel).map_err(|e| fs_err(id, e))?;
                b.file(&path, &meta, st.st_size as u64, &mut f)
                    .map_err(build)?;
                if let Some(streams) = kept.streams.get(&path) {
                    let (n, _) = &kept.entries[&path];
                    let root = Root::open(&kept.dirs[*n]).map_err(|e| fs_err(id, e))?;
                    for s in streams {
                        let name = &s.path[path.len() + 1..];
                        let name = name.strip_suffix(b":$DATA").unwrap_or(name);
                        let mut f = root.open_file(&stored_path(s)).map_err(|e| fs_err(id, e))?;
                        b.stream(&path, name, s.size, &mut f).map_err(build)?;
                    }
                }
            }
            FileType::Symlink => {
                let target = view.read_link(rel).map_err(|e| fs_err(id, e))?;
                let kept_entry = kept.entries.get(&path).map(|(_, e)| e);
                // The original Windows text, if the link is still the one
                // that was imported.
                let text = match kept_entry {
                    Some(e)
                        if e.kind == Kind::Symlink
                            && view_symlink_target(&path, &e.link) == target =>
                    {
                        e.link.clone()
                    }
                    _ => linux_to_windows_link(&target),
                };
                let is_dir = view
                    .resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                    .is_ok()
                    || meta
                        .win
                        .fileattr
                        .is_some_and(|a| a & strata_windows::attr::DIRECTORY != 0);
                let junction = meta.win.mountpoint;
                b.symlink(&path, &meta, &text, is_dir, junction)
                    .map_err(build)?;
            }
            other => {
                return Err(DriverError::NotSupported {
                    id: id.to_string(),
                    driver: super::NAME,
                    what: format!(
                        "exporting {:?} ({other:?}) into a Windows layer",
                        strata_fs::display_path(rel)
                    ),
                });
            }
        }
    }
    b.finish().map_err(build)?;
    Ok(())
}

/// A Linux symlink target as Windows link text: `\` separators, and an
/// absolute target made absolute on C:.
fn linux_to_windows_link(t: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() + 2);
    if t.first() == Some(&b'/') {
        out.extend_from_slice(b"C:");
    }
    out.extend(t.iter().map(|&b| if b == b'/' { b'\\' } else { b }));
    out
}

/// Counts bytes written.
struct Counter<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
