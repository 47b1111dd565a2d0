//! Naive change detection between a layer tree and its parent tree, as
//! moby's `NaiveDiffDriver` does it with `archive.ChangesDirs`: both trees
//! are walked completely and compared object by object, so it works on any
//! backing store (vfs copies, mounted union views) at the price of reading
//! every inode twice.
//!
//! The comparison is moby's `statDifferent`, tightened where moby misses
//! real changes: every extended attribute is compared (not only
//! `security.capability`), symlink targets are compared, mtimes are compared
//! to the nanosecond, and a regular file whose ctime shows it was touched
//! after the layer was copied from its parent has its content compared when
//! its metadata looks unchanged. That last rule replaces moby's sleep to the
//! next full second: it catches a same-second rewrite that restored size and
//! mtime without trusting the clock.
//!
//! Results come in walk order: paths compared component by component
//! (bytewise within a component), so every directory precedes its contents,
//! which is the order the tar export needs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_fs::{FsError, Root, Visitor, WalkControl, WalkEntry, Xattr, clean_path, display_path};
use strata_tar::Timestamp;

use crate::ExportError;
use crate::export::keep_xattr;

/// What happened to a path, with Docker's wire integers
/// (`archive.ChangeType`: 0 modify, 1 add, 2 delete).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Present in both trees but different (or a directory with a changed
    /// descendant).
    Modify = 0,
    /// Present in the layer only.
    Add = 1,
    /// Present in the parent only.
    Delete = 2,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// Absolute path inside the layer with a leading `/`, as Docker reports
    /// it (`/etc/passwd`). Raw bytes: names need not be UTF-8.
    pub path: Vec<u8>,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// Tuning of the comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompareOptions {
    /// Objects whose ctime is later than this were touched after the layer
    /// was copied from its parent (vfs records this instant at create
    /// time); for those, equal metadata is not trusted and content is
    /// compared, which is how same-second changes are caught without
    /// moby's 1-second sleep. An object whose ctime *equals* the instant is
    /// treated as touched too: file timestamps come from a coarse clock, so
    /// a write in the same tick as the recording carries the same value.
    pub touched_after: Option<Timestamp>,
}

/// Naive comparison of `layer` against `parent` (`None` ⇒ everything is
/// [`ChangeKind::Add`]), sorted by path in walk order (component by
/// component, so a directory comes right before its contents).
///
/// Added directories are walked and their contents reported as added;
/// deleted directories are reported once, at the top-most deleted path; a
/// directory that exists in both trees is reported as modified when any
/// object below it changed (moby adds changed parents the same way). A
/// non-directory replaced by a directory, or the reverse, is a
/// modification of that path, and the new directory's contents are added.
pub fn changes(
    layer: &Root,
    parent: Option<&Root>,
    opts: &CompareOptions,
) -> Result<Vec<Change>, ExportError> {
    let diff = diff_trees(layer, parent, opts)?;
    Ok(diff
        .changes
        .into_iter()
        .map(|(key, kind)| {
            let mut path = Vec::with_capacity(key.len() + 1);
            path.push(b'/');
            path.extend(key_to_rel(&key));
            Change { path, kind }
        })
        .collect())
}

/// Bytes the added and modified non-directories of `changes` occupy in
/// `layer`, as Docker's `ChangesSize`: the `lstat` size of each (symlinks
/// count their target length), an inode with several links counted once,
/// directories and deletions counted as nothing. A path that no longer
/// exists (a running container removed it since the changes were taken)
/// counts as nothing.
pub fn changes_size(layer: &Root, changes: &[Change]) -> Result<u64, ExportError> {
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    for change in changes.iter().filter(|c| c.kind != ChangeKind::Delete) {
        let rel = clean_path(&change.path).map_err(|e| ExportError::fs_rel(&change.path, e))?;
        if rel.is_empty() {
            continue;
        }
        let Some(st) = layer
            .lstat(&rel)
            .map_err(|e| ExportError::fs(layer.path(), &rel, e))?
        else {
            continue;
        };
        if file_type(&st) == FileType::Directory {
            continue;
        }
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        total = total.saturating_add(u64::try_from(st.st_size).unwrap_or(0));
    }
    Ok(total)
}

/// The full result of comparing two trees, keyed for walk order.
pub(crate) struct TreeDiff {
    /// Every change, keyed by [`walk_key`] so that iteration is walk order.
    pub(crate) changes: BTreeMap<Vec<u8>, ChangeKind>,
    /// Keys of directories (never the root) that exist in both trees, lost
    /// at least one child, and whose every parent-tree child is either
    /// deleted or re-emitted in full by an export, so that an opaque marker
    /// can stand in for their whiteouts without hiding anything unchanged.
    pub(crate) opaque: BTreeSet<Vec<u8>>,
}

/// Compares `layer` with `parent` (see [`changes`]), also working out which
/// directories an export may mark opaque.
pub(crate) fn diff_trees(
    layer: &Root,
    parent: Option<&Root>,
    opts: &CompareOptions,
) -> Result<TreeDiff, ExportError> {
    let twin = match parent {
        Some(p) => Some(
            p.open_dir(b"")
                .map_err(|e| ExportError::fs(p.path(), b"", e))?,
        ),
        None => None,
    };
    let mut pass = LayerPass {
        layer,
        parent,
        touched_after: opts.touched_after,
        frames: vec![LayerFrame {
            key: Vec::new(),
            twin,
        }],
        changes: BTreeMap::new(),
        bufs: CompareBufs::default(),
        failed: None,
    };
    walk_tree(layer, &mut pass, |p| p.failed.take())?;
    let mut changes = pass.changes;
    let Some(parent) = parent else {
        // Without a parent everything is an addition, and additions need
        // no parent entries: their directories are additions too.
        return Ok(TreeDiff {
            changes,
            opaque: BTreeSet::new(),
        });
    };

    let twin = layer
        .open_dir(b"")
        .map_err(|e| ExportError::fs(layer.path(), b"", e))?;
    let mut pass = ParentPass {
        layer,
        parent,
        changes: &changes,
        frames: vec![DeleteFrame::new(Vec::new(), twin)],
        deleted: Vec::new(),
        opaque: BTreeSet::new(),
        failed: None,
    };
    walk_tree(parent, &mut pass, |p| p.failed.take())?;
    while let Some(frame) = pass.frames.pop() {
        frame.finish(&mut pass.opaque);
    }
    let (deleted, opaque) = (pass.deleted, pass.opaque);
    for key in deleted {
        changes.insert(key, ChangeKind::Delete);
    }
    add_changed_parents(&mut changes);
    Ok(TreeDiff { changes, opaque })
}

/// Reports every directory above a change as modified unless it already is
/// a change itself; the root is never reported (it has no entry in a tar).
///
/// Such a directory exists in both trees: additions and modifications were
/// found by walking the layer, and an unchanged layer directory exists in
/// the parent; deletions were found only under directories present in both.
fn add_changed_parents(changes: &mut BTreeMap<Vec<u8>, ChangeKind>) {
    let originals: Vec<Vec<u8>> = changes.keys().cloned().collect();
    for key in originals {
        let mut up = key_parent(&key);
        // Stopping at the first ancestor that is already a change is
        // enough: that ancestor's own ancestors are handled when it is
        // processed (as an original) or were handled when it was inserted.
        while let Some(dir) = up.filter(|d| !d.is_empty() && !changes.contains_key(*d)) {
            changes.insert(dir.to_vec(), ChangeKind::Modify);
            up = key_parent(dir);
        }
    }
}

// ---------------------------------------------------------------------
// Walk-order keys.
//
// A key is a layer path with its separators replaced by NUL. No name can
// contain NUL and NUL sorts below every other byte, so bytewise order of
// keys is component-by-component order of paths: the pre-order of a walk
// with bytewise-sorted children, parents first.

/// The walk-order key of a cleaned relative path (`""` is the root).
pub(crate) fn walk_key(rel: &[u8]) -> Vec<u8> {
    rel.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

/// The relative path of a key.
pub(crate) fn key_to_rel(key: &[u8]) -> Vec<u8> {
    key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect()
}

/// The key of the directory containing `key` (`None` for the root).
pub(crate) fn key_parent(key: &[u8]) -> Option<&[u8]> {
    if key.is_empty() {
        return None;
    }
    Some(
        key.iter()
            .rposition(|&b| b == 0)
            .map_or(&b""[..], |i| &key[..i]),
    )
}

/// The last component of a key.
pub(crate) fn key_name(key: &[u8]) -> &[u8] {
    key.iter()
        .rposition(|&b| b == 0)
        .map_or(key, |i| &key[i + 1..])
}

/// The key of `name` inside the directory `dir_key`.
pub(crate) fn key_child(dir_key: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir_key.len() + 1 + name.len());
    k.extend_from_slice(dir_key);
    if !dir_key.is_empty() {
        k.push(0);
    }
    k.extend_from_slice(name);
    k
}

/// True when `key` is the key of the relative path `rel` (without building
/// the key).
fn key_is(key: &[u8], rel: &[u8]) -> bool {
    key.len() == rel.len()
        && key
            .iter()
            .zip(rel)
            .all(|(&k, &r)| k == r || (k == 0 && r == b'/'))
}

// ---------------------------------------------------------------------
// Helpers shared with the export.

/// The object type of a stat result.
pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The modification time of a stat result.
pub(crate) fn mtime_of(st: &Stat) -> Timestamp {
    // Kernel nanoseconds are always below 1e9, so the narrowing is exact.
    Timestamp {
        secs: st.st_mtime,
        nanos: st.st_mtime_nsec as u32,
    }
}

/// The status-change time of a stat result.
fn ctime_of(st: &Stat) -> Timestamp {
    Timestamp {
        secs: st.st_ctime,
        nanos: st.st_ctime_nsec as u32,
    }
}

/// Runs [`strata_fs::walk`] over all of `root` with `v`. Visitors can only
/// return [`FsError`]; those that fail with a richer [`ExportError`] stash
/// it (see [`abort`]) and `failed` takes it back out here.
pub(crate) fn walk_tree<V: Visitor>(
    root: &Root,
    v: &mut V,
    failed: impl FnOnce(&mut V) -> Option<ExportError>,
) -> Result<(), ExportError> {
    match strata_fs::walk(root, b"", v) {
        Ok(()) => Ok(()),
        Err(e) => Err(failed(v).unwrap_or_else(|| ExportError::fs(root.path(), b"", e))),
    }
}

/// Stores `err` in a visitor's failure slot and returns the placeholder
/// that stops the walk.
pub(crate) fn abort(slot: &mut Option<ExportError>, rel: &[u8], err: ExportError) -> FsError {
    *slot = Some(err);
    FsError::Invalid {
        path: display_path(rel),
        reason: "walk aborted".into(),
    }
}

/// The error for a walk that did not deliver parents before children.
fn order_error(tree: &Path, rel: &[u8]) -> ExportError {
    ExportError::fs(
        tree,
        rel,
        FsError::Invalid {
            path: display_path(rel),
            reason: "walk visited an entry outside the current directory".into(),
        },
    )
}

/// Opens the directory `name` in `dir` without following a symlink.
fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

// ---------------------------------------------------------------------
// First pass: walk the layer, classify each object against the parent.

/// A directory of the layer being walked, with its counterpart in the
/// parent when that is a directory too (else everything below is added).
struct LayerFrame {
    key: Vec<u8>,
    twin: Option<OwnedFd>,
}

/// Visitor of the layer tree: finds additions and modifications.
struct LayerPass<'a> {
    layer: &'a Root,
    parent: Option<&'a Root>,
    touched_after: Option<Timestamp>,
    /// Open directories from the root down to the current entry's parent.
    /// Counterparts are looked up by name under the parent's handle, so no
    /// path in the parent tree is ever resolved through a symlink.
    frames: Vec<LayerFrame>,
    changes: BTreeMap<Vec<u8>, ChangeKind>,
    bufs: CompareBufs,
    failed: Option<ExportError>,
}

impl LayerPass<'_> {
    fn step(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl, ExportError> {
        let key = walk_key(e.path);
        let up = key_parent(&key).unwrap_or_default();
        while self.frames.last().is_some_and(|f| f.key != up) {
            self.frames.pop();
        }
        let Some(frame) = self.frames.last() else {
            return Err(order_error(self.layer.path(), e.path));
        };
        let is_dir = file_type(e.stat) == FileType::Directory;
        let parent_tree = self.parent.map_or(Path::new(""), |p| p.path());
        let mut twin = None;
        let kind = match &frame.twin {
            None => Some(ChangeKind::Add),
            Some(pdir) => match rustix::fs::statat(pdir, e.name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => Some(ChangeKind::Add),
                Err(err) => return Err(ExportError::io("lstat", parent_tree, e.path, err)),
                Ok(pst) => {
                    let pair = Pair {
                        name: e.name,
                        rel: e.path,
                        layer: Side {
                            dir: e.parent,
                            tree: self.layer.path(),
                            stat: e.stat,
                        },
                        parent: Side {
                            dir: pdir.as_fd(),
                            tree: parent_tree,
                            stat: &pst,
                        },
                    };
                    let changed = differs(&pair, self.touched_after, &mut self.bufs)?;
                    if is_dir && file_type(&pst) == FileType::Directory {
                        twin =
                            Some(open_subdir(pdir.as_fd(), e.name).map_err(|err| {
                                ExportError::io("open", parent_tree, e.path, err)
                            })?);
                    }
                    changed.then_some(ChangeKind::Modify)
                }
            },
        };
        if let Some(kind) = kind {
            self.changes.insert(key.clone(), kind);
        }
        if is_dir {
            self.frames.push(LayerFrame { key, twin });
        }
        Ok(WalkControl::Continue)
    }
}

impl Visitor for LayerPass<'_> {
    fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
        self.step(e)
            .map_err(|err| abort(&mut self.failed, e.path, err))
    }

    fn leave_dir(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<()> {
        // Closing the counterpart as soon as the walk leaves keeps the
        // number of open descriptors proportional to depth.
        if self.frames.last().is_some_and(|f| key_is(&f.key, e.path)) {
            self.frames.pop();
        }
        Ok(())
    }
}

/// One side of a comparison: the object `Pair::name` in directory `dir`.
struct Side<'a> {
    dir: BorrowedFd<'a>,
    tree: &'a Path,
    stat: &'a Stat,
}

/// The same path in the layer and in the parent.
struct Pair<'a> {
    name: &'a [u8],
    rel: &'a [u8],
    layer: Side<'a>,
    parent: Side<'a>,
}

impl Side<'_> {
    fn read_link(&self, name: &[u8], rel: &[u8]) -> Result<Vec<u8>, ExportError> {
        rustix::fs::readlinkat(self.dir, name, Vec::new())
            .map(|t| t.into_bytes())
            .map_err(|e| ExportError::io("readlink", self.tree, rel, e))
    }

    fn xattrs(&self, name: &[u8], rel: &[u8]) -> Result<Vec<Xattr>, ExportError> {
        let mut x = strata_fs::xattrs_at(self.dir, name, rel)
            .map_err(|e| ExportError::fs(self.tree, rel, e))?;
        x.retain(|(k, _)| keep_xattr(k));
        Ok(x)
    }

    fn open(&self, name: &[u8], rel: &[u8]) -> Result<File, ExportError> {
        rustix::fs::openat(
            self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| ExportError::io("open", self.tree, rel, e))
    }
}

/// moby's `statDifferent` plus the checks it lacks (see the module
/// documentation).
fn differs(
    o: &Pair<'_>,
    touched_after: Option<Timestamp>,
    bufs: &mut CompareBufs,
) -> Result<bool, ExportError> {
    let (l, p) = (o.layer.stat, o.parent.stat);
    // `st_mode` holds the type as well as the permission bits, so this
    // also catches a file replaced by a directory and the reverse.
    if l.st_mode != p.st_mode || l.st_uid != p.st_uid || l.st_gid != p.st_gid {
        return Ok(true);
    }
    if l.st_rdev != p.st_rdev {
        return Ok(true);
    }
    let ft = file_type(l);
    // A directory's size depends on its history and its mtime moves with
    // every entry added or removed, so neither says anything about the
    // directory itself (moby#9874); its changed children speak for it.
    if ft != FileType::Directory && (l.st_size != p.st_size || mtime_of(l) != mtime_of(p)) {
        return Ok(true);
    }
    if ft == FileType::Symlink
        && o.layer.read_link(o.name, o.rel)? != o.parent.read_link(o.name, o.rel)?
    {
        return Ok(true);
    }
    if o.layer.xattrs(o.name, o.rel)? != o.parent.xattrs(o.name, o.rel)? {
        return Ok(true);
    }
    if ft == FileType::RegularFile && touched_after.is_some_and(|t| ctime_of(l) >= t) {
        return Ok(!same_content(o, bufs)?);
    }
    Ok(false)
}

/// Read buffers for content comparison, allocated on first use and reused.
#[derive(Default)]
struct CompareBufs {
    layer: Vec<u8>,
    parent: Vec<u8>,
}

/// Size of each comparison read.
const COMPARE_CHUNK: usize = 128 * 1024;

/// Compares two regular files chunk by chunk, stopping at the first
/// difference; memory stays at two chunks whatever the file size.
fn same_content(o: &Pair<'_>, bufs: &mut CompareBufs) -> Result<bool, ExportError> {
    let mut a = o.layer.open(o.name, o.rel)?;
    let mut b = o.parent.open(o.name, o.rel)?;
    bufs.layer.resize(COMPARE_CHUNK, 0);
    bufs.parent.resize(COMPARE_CHUNK, 0);
    loop {
        let n = read_full(&mut a, &mut bufs.layer)
            .map_err(|e| ExportError::io("read", o.layer.tree, o.rel, e))?;
        let m = read_full(&mut b, &mut bufs.parent)
            .map_err(|e| ExportError::io("read", o.parent.tree, o.rel, e))?;
        if bufs.layer[..n] != bufs.parent[..m] {
            return Ok(false);
        }
        // Equal slices have equal lengths; a short chunk means both files
        // ended.
        if n < COMPARE_CHUNK {
            return Ok(true);
        }
    }
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// ---------------------------------------------------------------------
// Second pass: walk the parent, find deletions.

/// A directory present (as a directory) in both trees, with the layer's
/// handle and the tally of its parent-tree children for the opaque rule.
struct DeleteFrame {
    key: Vec<u8>,
    twin: OwnedFd,
    children: u64,
    deleted: u64,
    /// Children deleted or re-emitted in full by an export.
    covered: u64,
}

impl DeleteFrame {
    fn new(key: Vec<u8>, twin: OwnedFd) -> Self {
        DeleteFrame {
            key,
            twin,
            children: 0,
            deleted: 0,
            covered: 0,
        }
    }

    /// Records the directory as opaque-eligible when it lost a child and
    /// nothing of the parent's below it would survive unexported. The root
    /// is excluded: a tar has no entry for it, and overlayfs ignores
    /// opacity of its upper root.
    fn finish(self, opaque: &mut BTreeSet<Vec<u8>>) {
        if !self.key.is_empty() && self.deleted > 0 && self.covered == self.children {
            opaque.insert(self.key);
        }
    }
}

/// Visitor of the parent tree: finds deletions (top-most only).
struct ParentPass<'a> {
    layer: &'a Root,
    parent: &'a Root,
    changes: &'a BTreeMap<Vec<u8>, ChangeKind>,
    frames: Vec<DeleteFrame>,
    deleted: Vec<Vec<u8>>,
    opaque: BTreeSet<Vec<u8>>,
    failed: Option<ExportError>,
}

impl ParentPass<'_> {
    fn step(&mut self, e: &WalkEntry<'_>) -> Result<WalkControl, ExportError> {
        let key = walk_key(e.path);
        let up = key_parent(&key).unwrap_or_default();
        while self.frames.last().is_some_and(|f| f.key != up) {
            if let Some(done) = self.frames.pop() {
                done.finish(&mut self.opaque);
            }
        }
        let Some(frame) = self.frames.last_mut() else {
            return Err(order_error(self.parent.path(), e.path));
        };
        frame.children += 1;
        let lst = match rustix::fs::statat(&frame.twin, e.name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                frame.deleted += 1;
                frame.covered += 1;
                self.deleted.push(key);
                // Only the top-most deleted path is reported.
                return Ok(WalkControl::SkipChildren);
            }
            Err(err) => return Err(ExportError::io("lstat", self.layer.path(), e.path, err)),
            Ok(st) => st,
        };
        let parent_is_dir = file_type(e.stat) == FileType::Directory;
        if parent_is_dir && file_type(&lst) == FileType::Directory {
            let twin = open_subdir(frame.twin.as_fd(), e.name)
                .map_err(|err| ExportError::io("open", self.layer.path(), e.path, err))?;
            self.frames.push(DeleteFrame::new(key, twin));
            return Ok(WalkControl::Continue);
        }
        // At least one side is not a directory, so an export of a
        // modification replaces the whole object (a new directory comes
        // with all of its contents as additions). Unchanged, it would not
        // be exported, and an opaque marker would hide it; a socket is
        // never exported (tar cannot hold one).
        if self.changes.get(&key) == Some(&ChangeKind::Modify)
            && file_type(&lst) != FileType::Socket
        {
            frame.covered += 1;
        }
        // What was below a directory the layer replaced is gone with it,
        // not deleted path by path.
        Ok(WalkControl::SkipChildren)
    }
}

impl Visitor for ParentPass<'_> {
    fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
        self.step(e)
            .map_err(|err| abort(&mut self.failed, e.path, err))
    }

    fn leave_dir(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<()> {
        if self.frames.last().is_some_and(|f| key_is(&f.key, e.path))
            && let Some(done) = self.frames.pop()
        {
            done.finish(&mut self.opaque);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_walk_order() {
        let mut paths: Vec<&[u8]> = vec![b"a-b", b"a/b", b"a", b"a/b/c", b"a.b", b"ab", b"a/.wh.x"];
        paths.sort_by_key(|p| walk_key(p));
        let want: Vec<&[u8]> = vec![b"a", b"a/.wh.x", b"a/b", b"a/b/c", b"a-b", b"a.b", b"ab"];
        assert_eq!(paths, want);
    }

    #[test]
    fn key_helpers() {
        let k = walk_key(b"x/y/z");
        assert_eq!(key_to_rel(&k), b"x/y/z");
        assert_eq!(key_parent(&k), Some(&b"x\0y"[..]));
        assert_eq!(key_parent(b"x"), Some(&b""[..]));
        assert_eq!(key_parent(b""), None);
        assert_eq!(key_name(&k), b"z");
        assert_eq!(key_child(b"", b"n"), b"n");
        assert_eq!(key_child(b"x", b"n"), b"x\0n");
        assert!(key_is(&k, b"x/y/z"));
        assert!(!key_is(&k, b"x/y/q"));
    }

    #[test]
    fn changed_parents_are_added_once() {
        let mut m = BTreeMap::new();
        m.insert(walk_key(b"a/b/c"), ChangeKind::Add);
        m.insert(walk_key(b"a/b/d"), ChangeKind::Delete);
        m.insert(walk_key(b"x"), ChangeKind::Modify);
        m.insert(walk_key(b"x/y"), ChangeKind::Add);
        add_changed_parents(&mut m);
        let got: Vec<(Vec<u8>, ChangeKind)> =
            m.into_iter().map(|(k, v)| (key_to_rel(&k), v)).collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), ChangeKind::Modify),
                (b"a/b".to_vec(), ChangeKind::Modify),
                (b"a/b/c".to_vec(), ChangeKind::Add),
                (b"a/b/d".to_vec(), ChangeKind::Delete),
                (b"x".to_vec(), ChangeKind::Modify),
                (b"x/y".to_vec(), ChangeKind::Add),
            ]
        );
    }
}
