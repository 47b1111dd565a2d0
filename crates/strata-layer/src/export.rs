//! Tar export of layers: the whole layer, its diff against a parent, or an
//! explicit list of entries (overlay's native diff lists them itself).
//!
//! One routine, [`header_for`], turns an object of a layer into a tar
//! [`Header`], and one writer streams headers and file contents, so the
//! three exports agree on every detail: names relative to the layer root
//! without `./`, directories with a trailing `/`, permission bits with
//! setuid/setgid/sticky, numeric owners with empty owner names,
//! nanosecond mtimes and no atime/ctime (so that an export depends only on
//! the layer's content), every extended attribute except overlayfs' private
//! ones, and the second and later paths of a multiply-linked inode as hard
//! links to the first one written.
//!
//! Deletions are written as AUFS whiteouts (`dir/.wh.name`) and, where
//! that is equivalent, an opaque marker (`dir/.wh..wh..opq`); both are
//! empty regular files, mode 0600, owned by 0:0, dated with the containing
//! directory's mtime so that exporting the same layer twice gives the same
//! bytes. Entries come in walk order (see [`changes`](crate::changes())),
//! each marker sorted among its siblings by its own name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use strata_fs::{FsError, Root, Visitor, WalkControl, WalkEntry, clean_path, display_path};
use strata_tar::{EntryKind, Header, OPAQUE_MARKER, TarWriter, Timestamp, WHITEOUT_PREFIX};

use crate::Change;
use crate::ExportError;
use crate::changes::{
    ChangeKind, CompareOptions, TreeDiff, abort, diff_trees, file_type, key_child, key_name,
    key_parent, key_to_rel, mtime_of, walk_key, walk_tree,
};

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Tar entries written (objects, hard links, whiteouts, opaque markers).
    pub entries: u64,
    /// Bytes of tar stream written, end-of-archive blocks included.
    pub bytes: u64,
}

/// One entry of an explicit export list (see [`export_items`]). Paths are
/// inside the layer, with or without a leading `/`; they are cleaned
/// before use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExportItem {
    /// The object at this path as it is in the layer. A directory is
    /// written alone, never with its contents.
    Object(Vec<u8>),
    /// A whiteout deleting this path from the layers below.
    Whiteout(Vec<u8>),
    /// An opaque marker for this directory: nothing of the layers below
    /// shows through it.
    Opaque(Vec<u8>),
}

impl From<&Change> for ExportItem {
    /// Deletions become whiteouts, additions and modifications objects.
    fn from(c: &Change) -> Self {
        match c.kind {
            ChangeKind::Delete => ExportItem::Whiteout(c.path.clone()),
            ChangeKind::Add | ChangeKind::Modify => ExportItem::Object(c.path.clone()),
        }
    }
}

/// Writes the tar of `layer`'s changes relative to `parent` (`None` ⇒ the
/// whole layer as a full tar) to `out`, and flushes it.
///
/// A full export streams the layer as it walks it. A diff export compares
/// the trees first (see [`changes`](crate::changes()); `opts` as there),
/// then writes each added or modified object (directories without their
/// contents: the contents that changed are changes of their own), a
/// whiteout for each top-most deletion, and an opaque marker instead of
/// the whiteouts of a directory when that is exactly equivalent: the
/// directory lost at least one child, and every other child it had in the
/// parent is re-written in full by this export (a modified non-directory,
/// or a directory that replaced a non-directory). The root never gets a
/// marker: a tar has no entry for it and overlayfs ignores opacity there.
pub fn export_diff<W: Write>(
    layer: &Root,
    parent: Option<&Root>,
    opts: &CompareOptions,
    out: W,
) -> Result<ExportStats, ExportError> {
    let Some(parent) = parent else {
        let mut tar = TarOut::new(out);
        let mut pass = FullPass {
            tar: &mut tar,
            failed: None,
        };
        walk_tree(layer, &mut pass, |p| p.failed.take())?;
        return tar.finish();
    };
    let diff = diff_trees(layer, Some(parent), opts)?;
    write_plan(layer, &plan_diff(&diff), out)
}

/// Writes a tar of exactly these entries (used by overlay's native diff,
/// which finds changes in its upper directory itself) to `out`, and
/// flushes it.
///
/// Each object is written as it is in `layer`; a directory alone, never
/// recursively, since callers list the children they want. Entries are
/// written in walk order whatever the order of `items` (markers sorted
/// among their siblings by their own names), exact duplicates once, and an
/// `Object` naming the root is ignored (a tar has no entry for it). A
/// whiteout or marker is dated with its directory's mtime in `layer`, so
/// that directory must exist there.
pub fn export_items<W: Write>(
    layer: &Root,
    items: &[ExportItem],
    out: W,
) -> Result<ExportStats, ExportError> {
    let mut plan = Vec::with_capacity(items.len());
    for item in items {
        let (ExportItem::Object(p) | ExportItem::Whiteout(p) | ExportItem::Opaque(p)) = item;
        let rel = clean_path(p).map_err(|e| ExportError::fs_rel(p, e))?;
        let key = walk_key(&rel);
        match item {
            ExportItem::Object(_) if rel.is_empty() => {}
            ExportItem::Object(_) => plan.push(Planned {
                key,
                mark: Mark::Object,
            }),
            ExportItem::Whiteout(_) => {
                let Some(dir) = key_parent(&key) else {
                    return Err(ExportError::fs_rel(
                        p,
                        FsError::Invalid {
                            path: display_path(p),
                            reason: "the layer root cannot be whited out".into(),
                        },
                    ));
                };
                plan.push(Planned {
                    key: key_child(dir, &whiteout_name(key_name(&key))),
                    mark: Mark::Marker,
                });
            }
            ExportItem::Opaque(_) => plan.push(Planned {
                key: key_child(&key, OPAQUE_MARKER.as_bytes()),
                mark: Mark::Marker,
            }),
        }
    }
    plan.sort();
    plan.dedup();
    write_plan(layer, &plan, out)
}

/// The tar header for the object `name` in the directory `parent`, whose
/// path in the layer is `path` and whose `lstat` is `stat`; `None` for a
/// socket, which tar cannot represent (Docker skips them too).
///
/// The entry is named `path` (a directory with a trailing `/`); it carries
/// the permission bits with setuid/setgid/sticky, numeric owner and group
/// with empty names, the mtime with nanoseconds, no atime or ctime, the
/// symlink target or device numbers, and every extended attribute except
/// overlayfs' private `trusted.overlay.*` / `user.overlay.*`. A regular
/// file's size is its `lstat` size; every other kind has size 0.
pub fn header_for(
    parent: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    stat: &Stat,
) -> Result<Option<Header>, ExportError> {
    let kind = match file_type(stat) {
        FileType::RegularFile => EntryKind::Regular,
        FileType::Directory => EntryKind::Directory,
        FileType::Symlink => EntryKind::Symlink,
        FileType::CharacterDevice => EntryKind::CharDevice,
        FileType::BlockDevice => EntryKind::BlockDevice,
        FileType::Fifo => EntryKind::Fifo,
        FileType::Socket | FileType::Unknown => return Ok(None),
    };
    let mut tar_path = path.to_vec();
    if kind == EntryKind::Directory {
        tar_path.push(b'/');
    }
    let mut h = Header::new(kind, tar_path);
    h.mode = stat.st_mode & 0o7777;
    h.uid = u64::from(stat.st_uid);
    h.gid = u64::from(stat.st_gid);
    h.mtime = mtime_of(stat);
    match kind {
        EntryKind::Regular => h.size = u64::try_from(stat.st_size).unwrap_or(0),
        EntryKind::Symlink => {
            h.link_name = rustix::fs::readlinkat(parent, name, Vec::new())
                .map_err(|e| ExportError::io_rel("readlink", path, e))?
                .into_bytes();
        }
        EntryKind::CharDevice | EntryKind::BlockDevice => {
            h.dev_major = rustix::fs::major(stat.st_rdev);
            h.dev_minor = rustix::fs::minor(stat.st_rdev);
        }
        _ => {}
    }
    h.xattrs =
        strata_fs::xattrs_at(parent, name, path).map_err(|e| ExportError::fs_rel(path, e))?;
    h.xattrs.retain(|(k, _)| keep_xattr(k));
    Ok(Some(h))
}

/// False for overlayfs' private attributes (`trusted.overlay.*`, and
/// `user.overlay.*` of user-namespaced mounts): they describe one overlay
/// mount's upper directory (opacity, redirects, origins) and would corrupt
/// or leak into whatever the tar is applied to.
pub(crate) fn keep_xattr(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.overlay.") && !name.starts_with(b"user.overlay.")
}

/// `.wh.<name>`.
fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut n = WHITEOUT_PREFIX.as_bytes().to_vec();
    n.extend_from_slice(name);
    n
}

/// One entry to write, by walk-order key of its tar name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Planned {
    key: Vec<u8>,
    mark: Mark,
}

/// What a planned entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    /// The layer object at the key.
    Object,
    /// An empty marker file (whiteout or opaque marker) named by the key.
    Marker,
}

/// The entries of a diff export, in walk order.
fn plan_diff(diff: &TreeDiff) -> Vec<Planned> {
    let mut plan = Vec::with_capacity(diff.changes.len() + diff.opaque.len());
    for (key, kind) in &diff.changes {
        if *kind != ChangeKind::Delete {
            plan.push(Planned {
                key: key.clone(),
                mark: Mark::Object,
            });
            continue;
        }
        let dir = key_parent(key).unwrap_or_default();
        // An opaque marker replaces the directory's whiteouts.
        if !diff.opaque.contains(dir) {
            plan.push(Planned {
                key: key_child(dir, &whiteout_name(key_name(key))),
                mark: Mark::Marker,
            });
        }
    }
    for dir in &diff.opaque {
        plan.push(Planned {
            key: key_child(dir, OPAQUE_MARKER.as_bytes()),
            mark: Mark::Marker,
        });
    }
    plan.sort();
    plan.dedup();
    plan
}

/// Writes planned entries, each looked up in `layer` by name under its
/// directory's handle.
fn write_plan<W: Write>(
    layer: &Root,
    plan: &[Planned],
    out: W,
) -> Result<ExportStats, ExportError> {
    let mut tar = TarOut::new(out);
    let mut dirs = DirCache::default();
    for item in plan {
        let dir_key = key_parent(&item.key).unwrap_or_default();
        let name = key_name(&item.key);
        let rel = key_to_rel(&item.key);
        let (dir, dir_stat) = dirs.get(layer, dir_key)?;
        match item.mark {
            Mark::Object => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| ExportError::io("lstat", layer.path(), &rel, e))?;
                tar.object(dir, name, &rel, &st)?;
            }
            Mark::Marker => tar.marker(rel, mtime_of(&dir_stat))?,
        }
    }
    tar.finish()
}

/// The directory of the previous entry, kept open because consecutive
/// entries are mostly siblings.
#[derive(Default)]
struct DirCache {
    cur: Option<(Vec<u8>, OwnedFd, Stat)>,
}

impl DirCache {
    /// The handle and `stat` of the layer directory with key `key`.
    fn get(&mut self, layer: &Root, key: &[u8]) -> Result<(BorrowedFd<'_>, Stat), ExportError> {
        let cur = match self.cur.take() {
            Some(c) if c.0 == key => c,
            _ => {
                let rel = key_to_rel(key);
                let fd = layer
                    .open_dir(&rel)
                    .map_err(|e| ExportError::fs(layer.path(), &rel, e))?;
                let st = rustix::fs::fstat(&fd)
                    .map_err(|e| ExportError::io("stat", layer.path(), &rel, e))?;
                (key.to_vec(), fd, st)
            }
        };
        let (_, fd, st) = self.cur.insert(cur);
        Ok((OwnedFd::as_fd(fd), *st))
    }
}

/// Visitor of a full export: writes every object as the walk meets it.
struct FullPass<'a, W: Write> {
    tar: &'a mut TarOut<W>,
    failed: Option<ExportError>,
}

impl<W: Write> Visitor for FullPass<'_, W> {
    fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
        match self.tar.object(e.parent, e.name, e.path, e.stat) {
            Ok(()) => Ok(WalkControl::Continue),
            Err(err) => Err(abort(&mut self.failed, e.path, err)),
        }
    }
}

/// Capacity of the output buffer. The tar writer issues one small write per
/// header and copies file data in 128 KiB chunks; buffering joins the
/// former, while chunks at least this large bypass the buffer.
const OUT_BUFFER: usize = 64 * 1024;

/// The tar stream being written, with the state that spans entries.
struct TarOut<W: Write> {
    tar: TarWriter<Counting<BufWriter<W>>>,
    /// First path written for each multiply-linked inode, by (dev, ino).
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        let out = Counting {
            inner: BufWriter::with_capacity(OUT_BUFFER, out),
            count: 0,
        };
        TarOut {
            tar: TarWriter::new(out),
            links: HashMap::new(),
            entries: 0,
        }
    }

    /// Writes the object `name` in `dir` (path `rel`, `lstat` `st`).
    fn object(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        st: &Stat,
    ) -> Result<(), ExportError> {
        let Some(mut h) = header_for(dir, name, rel, st)? else {
            return Ok(());
        };
        if h.kind != EntryKind::Directory && st.st_nlink > 1 {
            match self.links.entry((st.st_dev, st.st_ino)) {
                Entry::Occupied(first) => {
                    h.kind = EntryKind::HardLink;
                    h.link_name = first.get().clone();
                    h.size = 0;
                    return self.append(&h, &mut io::empty());
                }
                Entry::Vacant(v) => {
                    v.insert(h.path.clone());
                }
            }
        }
        if h.kind != EntryKind::Regular || h.size == 0 {
            return self.append(&h, &mut io::empty());
        }
        let file = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ExportError::io_rel("open", rel, e))?;
        // The writer copies exactly `h.size` bytes through its own 128 KiB
        // buffer, so memory does not grow with the file; a file that shrank
        // since its lstat fails the entry instead of corrupting the archive,
        // and one that grew is cut at the size the header announced.
        self.append(&h, &mut File::from(file))
    }

    /// Writes an empty marker file (whiteout or opaque marker) named `rel`.
    fn marker(&mut self, rel: Vec<u8>, mtime: Timestamp) -> Result<(), ExportError> {
        let mut h = Header::new(EntryKind::Regular, rel);
        h.mode = 0o600;
        h.mtime = mtime;
        self.append(&h, &mut io::empty())
    }

    fn append(&mut self, h: &Header, data: &mut dyn Read) -> Result<(), ExportError> {
        self.tar
            .append(h, data)
            .map_err(|e| ExportError::tar(&h.path, e))?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the archive and flushes the output.
    fn finish(self) -> Result<ExportStats, ExportError> {
        // The writer flushes after the end-of-archive blocks, through the
        // counter and the buffer down to the caller's writer.
        let out = self
            .tar
            .finish()
            .map_err(|e| ExportError::tar(b"(end of archive)", e))?;
        Ok(ExportStats {
            entries: self.entries,
            bytes: out.count,
        })
    }
}

/// A writer that counts the bytes it passes on.
struct Counting<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
