//! The layer applier: turns tar entries into filesystem objects under a
//! layer root, with moby's `UnpackLayer` semantics made safe by in-root
//! resolution instead of a chroot.
//!
//! Each entry's name is cleaned lexically; a name that climbs above the
//! root is refused, an absolute one is taken relative to the root. The
//! entry's parent directory is resolved inside the root
//! (`openat2(RESOLVE_IN_ROOT)`, so symlinks in the image, absolute or
//! relative, lead only to places inside it) and created if missing (0755,
//! owned by 0:0). The final name is then acted on only with `*at` calls
//! that do not follow it: an entry replaces whatever is there (a symlink is
//! replaced, never written through), except that a directory entry over a
//! directory merges into it and updates its metadata. Regular files are
//! created `O_EXCL|O_NOFOLLOW` and streamed through one 1 MiB buffer;
//! devices and fifos are made with `mknodat` and never opened; hard links
//! link only objects found inside the root (and add a name, leaving the
//! inode's metadata as its own entry set it); symlinks are stored verbatim,
//! except that a relative target climbing above the root is refused, as
//! moby does.
//!
//! Metadata is applied in the order that leaves it exact: owner first
//! (`chown` clears setuid/setgid and file capabilities), then extended
//! attributes (all of the archive's, `security.capability` included, but
//! never `trusted.overlay.*`/`user.overlay.*`, which would let a layer forge
//! overlay whiteouts), then the mode, then times. Directory times are set
//! in [`Applier::finish`], after every entry, so later entries do not
//! disturb them.
//!
//! Whiteouts either delete (vfs: [`WhiteoutMode::Delete`]) or become
//! overlayfs whiteouts ([`WhiteoutMode::Overlay`]).
//!
//! Parent handles are cached as a chain of ancestors of the last entry's
//! directory, so consecutive entries in one directory (the common tar
//! order) resolve nothing. The chain is cut back to the ancestors of each
//! entry's parent before the entry is applied, and cleared whenever the
//! applier removes a directory or symlink, since that can change what a
//! cached path resolves to.

use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use strata_fs::{
    FsError, Root, Visitor, WalkControl, WalkEntry, chmod_at, chmod_fd, chown_at, chown_fd,
    clean_path, display_path, join_path, mkdir_all, mknod_at, open_dir_at, remove_all_at,
    set_times_at, set_times_fd, set_xattr_at, set_xattr_fd, walk_dir,
};
use strata_tar::{
    EntryData, EntryKind, Header, RecordError, RecordSummary, Recorder, TarError, TarReader,
    WHITEOUT_META_PREFIX, Whiteout, WhiteoutError, classify, record_stream,
};

use crate::error::{ApplyError, Problem};

mod writer;

use writer::{FileMeta, Pipeline, Target};

/// Smallest file whose write-back [`ApplyOptions::writeback`] starts
/// early. Smaller files are left to the kernel's own write-back: queueing
/// them one by one defeats the filesystem's batching of delayed
/// allocations. Measured on ext4 with a 1 GB, 60k-entry `/usr` tar, apply
/// plus `sync` was slower with early write-back of every file than with
/// none, and about 15% faster than with none when it was limited to files
/// of 64–256 KiB and up.
const WRITEBACK_MIN: u64 = 256 << 10;

/// Mode of parent directories the archive does not list (moby's choice).
const NEW_PARENT_MODE: u32 = 0o755;

/// Extended attributes never taken from an archive: overlayfs reads these
/// on the upper and lower dirs, so a layer carrying them could forge
/// whiteouts, opaque dirs or redirects.
const DROPPED_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// What whiteout entries turn into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// vfs/naive: whiteouts delete from the tree (`.wh.x` removes `x`,
    /// `.wh..wh..opq` removes what this layer did not put in the directory).
    Delete,
    /// overlay: `.wh.x` becomes a 0/0 character device `x`, and
    /// `.wh..wh..opq` sets `<xattr_prefix>opaque=y` on its directory.
    Overlay {
        /// `"trusted.overlay."`, or `"user.overlay."` for unprivileged
        /// overlay mounts (`userxattr`).
        xattr_prefix: &'static str,
    },
    /// The caller deals with whiteouts itself (a Windows layer's tombstones
    /// follow rules of their own): a whiteout reaching the applier is
    /// refused, and nothing is tracked for opaque directories.
    Refuse,
}

/// How to apply a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// What whiteouts become.
    pub whiteouts: WhiteoutMode,
    /// Start write-back of each regular file of 256 KiB or more as soon as
    /// it is written, so that the final `syncfs` of the layer has less
    /// left to do (small files are left to the kernel, which batches them
    /// better).
    pub writeback: bool,
}

/// What applying a layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries applied (whiteouts and skipped AUFS metadata included).
    pub entries: u64,
    /// Bytes of the layer's own content: regular-file sizes (each inode
    /// once; sparse files count their full size) plus symlink target
    /// lengths.
    pub size: u64,
    /// Extended attributes the filesystem refused as unsupported for the
    /// object (`ENOTSUP`, or `EPERM` for `user.*` on a symlink or device)
    /// and that were therefore left out, as moby does.
    pub xattrs_skipped: u64,
}

/// Applies tar entries, one at a time, onto a layer root.
pub struct Applier<'r> {
    root: &'r Root,
    opts: ApplyOptions,
    /// Writes regular files' data and final metadata on a second thread.
    pipe: Pipeline,
    dirs: DirCache,
    /// Group of the root directory, read once.
    root_gid: Option<u32>,
    euid: u32,
    egid: u32,
    /// Paths this layer put in place (entries and the parents made for
    /// them), which an opaque marker must keep. Only kept in `Delete` mode.
    created: HashSet<Vec<u8>>,
    /// Directory times to set at the end, in entry order.
    dir_times: Vec<(Vec<u8>, Timestamps)>,
    /// The merged view of the layers below, when this layer holds only its
    /// own changes (overlay): hard-link targets not in `root` are copied up
    /// from it, as overlayfs itself would.
    lower: Option<&'r Root>,
    stats: ApplyStats,
}

impl<'r> Applier<'r> {
    /// An applier writing into `root`.
    pub fn new(root: &'r Root, opts: ApplyOptions) -> Self {
        Applier {
            lower: None,
            root,
            opts,
            pipe: Pipeline::new(),
            dirs: DirCache::default(),
            root_gid: None,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            created: HashSet::new(),
            dir_times: Vec::new(),
            stats: ApplyStats::default(),
        }
    }

    /// Makes hard links to files of `lower` (the merged view of the layers
    /// below) possible: such a target is copied up into this layer first.
    pub fn with_lower(mut self, lower: &'r Root) -> Self {
        self.lower = Some(lower);
        self
    }

    /// Applies one entry; `data` yields exactly `h.size` bytes for regular
    /// files (sparse: the chunk data, placed per `h.sparse`; the file gets
    /// `real_size` with holes). `data` is not read for other kinds.
    ///
    /// A regular file's data and final metadata may be written after this
    /// returns (by the applier's writer thread); a failure there is
    /// reported by a later call or by [`finish`](Self::finish), naming the
    /// file's entry.
    pub fn apply(&mut self, h: &Header, data: &mut dyn EntryData) -> Result<(), ApplyError> {
        if let Some(e) = self.pipe.take_error() {
            return Err(e);
        }
        self.stats.entries += 1;
        let r = self
            .apply_entry(h, data)
            .map_err(|p| ApplyError::entry(&h.path, p));
        // The writer's failure concerns an earlier entry: it comes first.
        match self.pipe.take_error() {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// Sets directory times (deferred, as moby does, so later entries do
    /// not disturb them) and returns the stats. A directory that a later
    /// entry removed or replaced is skipped: it has no time of its own to
    /// restore.
    pub fn finish(mut self) -> Result<ApplyStats, ApplyError> {
        self.stats.xattrs_skipped += self.pipe.close()?;
        for (path, times) in &self.dir_times {
            let r = if path.is_empty() {
                set_times_fd(self.root.fd(), times, path)
            } else {
                match self.root.resolve(
                    path,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                    Mode::empty(),
                ) {
                    Ok(fd) => set_times_fd(fd.as_fd(), times, path),
                    Err(e) if is_gone(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            };
            r.map_err(|e| ApplyError::entry(path, e.into()))?;
        }
        Ok(self.stats)
    }

    fn apply_entry(&mut self, h: &Header, data: &mut dyn EntryData) -> Result<(), Problem> {
        let rel = clean_path(&h.path)?;
        if rel.is_empty() {
            return self.apply_root(h);
        }
        match classify(&rel) {
            Ok(None) => {}
            Ok(Some(Whiteout::Remove { dir, name })) => return self.whiteout(dir, name, h),
            Ok(Some(Whiteout::Opaque { dir })) => return self.opaque(dir),
            Ok(Some(Whiteout::OtherMeta)) => return Ok(()),
            Err(WhiteoutError::EmptyName { .. }) => return Err(Problem::EmptyWhiteout),
            Err(WhiteoutError::DotName { .. }) => return Err(Problem::DotWhiteout),
        }
        let (parent_path, name) = split_last(&rel);
        // Content of AUFS metadata directories (`.wh..wh.plnk/...`) is
        // bookkeeping of the producer, not part of the image (moby skips it).
        if rel.starts_with(WHITEOUT_META_PREFIX.as_bytes()) && !parent_path.is_empty() {
            return Ok(());
        }
        let owner = owner(h)?;
        let parent = self
            .parent(parent_path, true)?
            .ok_or_else(|| missing(parent_path))?;
        let made = self.create(&parent, &rel, name, h, data, owner);
        self.put_parent(parent);
        if let Some(dir) = made? {
            self.dirs.put(dir);
        }
        if self.opts.whiteouts == WhiteoutMode::Delete {
            self.created.insert(rel);
        }
        Ok(())
    }

    /// Creates (or replaces, or merges into) the object of one entry.
    /// Returns the handle of a directory it made or merged, for the cache.
    fn create(
        &mut self,
        parent: &Parent,
        rel: &[u8],
        name: &[u8],
        h: &Header,
        data: &mut dyn EntryData,
        (uid, gid): (u32, u32),
    ) -> Result<Option<CachedDir>, Problem> {
        let dir = parent.fd(self.root);
        // A fresh object already has our ids, or its directory's group;
        // when those are the archive's too, chown would change nothing.
        let fresh_owner_ok = uid == self.euid && gid == self.egid && gid == parent.gid();
        match h.kind {
            EntryKind::Directory => self
                .make_dir(dir, rel, name, h, (uid, gid), fresh_owner_ok)
                .map(Some),
            EntryKind::Regular => {
                self.make_file(dir, rel, name, h, data, (uid, gid), fresh_owner_ok)?;
                Ok(None)
            }
            EntryKind::Symlink => {
                self.make_symlink(dir, rel, name, h, (uid, gid), fresh_owner_ok)?;
                Ok(None)
            }
            EntryKind::HardLink => {
                self.make_hardlink(dir, rel, name, h)?;
                Ok(None)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let (kind, dev) = match h.kind {
                    EntryKind::CharDevice => (
                        FileType::CharacterDevice,
                        rustix::fs::makedev(h.dev_major, h.dev_minor),
                    ),
                    EntryKind::BlockDevice => (
                        FileType::BlockDevice,
                        rustix::fs::makedev(h.dev_major, h.dev_minor),
                    ),
                    _ => (FileType::Fifo, 0),
                };
                self.create_replacing(dir, rel, name, || {
                    mknod_at(dir, name, kind, 0o600, dev, rel)
                })?;
                if !fresh_owner_ok {
                    chown_at(dir, name, uid, gid, rel)?;
                }
                self.xattrs(h, |k, v| set_xattr_at(dir, name, k, v, rel))?;
                chmod_at(dir, name, h.mode, rel)?;
                set_times_at(dir, name, &times(h), rel)?;
                Ok(None)
            }
        }
    }

    fn make_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        h: &Header,
        (uid, gid): (u32, u32),
        fresh_owner_ok: bool,
    ) -> Result<CachedDir, Problem> {
        // Owner-only until the exact mode is set below.
        let mkdir = || {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| FsError::io("mkdir", rel, e))
        };
        let fresh = match mkdir() {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| FsError::io("lstat", rel, e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    false
                } else {
                    self.remove_existing(dir, name, rel)?;
                    mkdir()?;
                    true
                }
            }
            Err(e) => return Err(e.into()),
        };
        let fd = open_dir_at(dir, name, rel)?;
        if !(fresh && fresh_owner_ok) {
            chown_fd(fd.as_fd(), uid, gid, rel)?;
        }
        self.xattrs(h, |k, v| set_xattr_fd(fd.as_fd(), k, v, rel))?;
        chmod_fd(fd.as_fd(), h.mode, rel)?;
        self.dir_times.push((rel.to_vec(), times(h)));
        Ok(CachedDir {
            path: rel.to_vec(),
            fd,
            gid,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn make_file(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        h: &Header,
        data: &mut dyn EntryData,
        (uid, gid): (u32, u32),
        fresh_owner_ok: bool,
    ) -> Result<(), Problem> {
        let fd = self.create_replacing(dir, rel, name, || {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| FsError::io("create", rel, e))
        })?;
        let target = Arc::new(Target {
            file: File::from(fd),
            entry: h.path.clone(),
        });
        self.stream_data(&target, h, data)?;
        let meta = FileMeta {
            len: h.sparse.as_ref().map(|sp| sp.real_size),
            writeback: self.opts.writeback && h.file_size() >= WRITEBACK_MIN,
            owner: (!fresh_owner_ok).then_some((uid, gid)),
            xattrs: h.xattrs.clone(),
            mode: h.mode,
            times: times(h),
        };
        self.pipe.finish_file(target, meta)?;
        self.stats.size += h.file_size();
        Ok(())
    }

    fn make_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        h: &Header,
        (uid, gid): (u32, u32),
        fresh_owner_ok: bool,
    ) -> Result<(), Problem> {
        let target = &h.link_name;
        if target.contains(&0) {
            return Err(Problem::Nul);
        }
        // Absolute targets resolve inside the root whenever we pass through
        // them; a relative one that climbs out lexically is refused, as
        // moby does, since other consumers of the layer may resolve it
        // outside any root.
        if target.first() != Some(&b'/') {
            let (parent_path, _) = split_last(rel);
            if let Err(FsError::Escapes { .. }) = clean_path(&join_path(parent_path, target)) {
                return Err(Problem::SymlinkEscapes(display_path(target)));
            }
        }
        self.create_replacing(dir, rel, name, || {
            rustix::fs::symlinkat(target.as_slice(), dir, name)
                .map_err(|e| FsError::io("symlink", rel, e))
        })?;
        if !fresh_owner_ok {
            chown_at(dir, name, uid, gid, rel)?;
        }
        self.xattrs(h, |k, v| set_xattr_at(dir, name, k, v, rel))?;
        set_times_at(dir, name, &times(h), rel)?;
        self.stats.size += target.len() as u64;
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        h: &Header,
    ) -> Result<(), Problem> {
        let shown = || display_path(&h.link_name);
        let target = match clean_path(&h.link_name) {
            Ok(t) => t,
            Err(FsError::Escapes { .. }) => return Err(Problem::LinkEscapes(shown())),
            Err(e) => return Err(e.into()),
        };
        let bad = |reason| Problem::LinkTarget {
            target: shown(),
            reason,
        };
        if target.is_empty() {
            return Err(bad("is the layer root"));
        }
        // A target only the layers below hold is copied up first, so the
        // link shares this layer's copy, as it would through an overlay.
        if let Some(lower) = self.lower
            && self.root.lstat(&target)?.is_none()
            && lower.lstat(&target)?.is_some()
        {
            strata_fs::copy_up(lower, self.root, &target)?;
        }
        // The target's directory is resolved inside the root and its last
        // component is not followed: only an object inside the root can be
        // linked, and a symlink target links the symlink itself.
        let (tdir, tname) = match self.root.open_parent(&target) {
            Ok(t) => t,
            Err(e) if is_gone(&e) => return Err(bad("does not exist in the layer")),
            Err(e) => return Err(e.into()),
        };
        let tst = match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(bad("does not exist in the layer")),
            Err(e) => return Err(FsError::io("lstat", &target, e).into()),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(bad("is a directory"));
        }
        // In overlay form a 0/0 device is this layer's record that the
        // path was deleted, not a file to link.
        if matches!(self.opts.whiteouts, WhiteoutMode::Overlay { .. })
            && strata_fs::overlay::is_whiteout(&tst)
        {
            return Err(bad("was deleted by this layer"));
        }
        let link = || {
            rustix::fs::linkat(&tdir, tname, dir, name, AtFlags::empty())
                .map_err(|e| FsError::io("link", rel, e))
        };
        match link() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| FsError::io("lstat", rel, e))?;
                // Already a name of the target: linking again would only
                // remove the target first.
                if (st.st_dev, st.st_ino) != (tst.st_dev, tst.st_ino) {
                    self.remove_existing(dir, name, rel)?;
                    link()?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        // The inode's metadata was set by its own entry; a link adds a
        // name only. (moby re-applies the link header's owner, but a chown
        // clears setuid/setgid and `security.capability` of the shared
        // inode, which a link header without xattrs would then lose; GNU
        // tar does not touch it either.)
        Ok(())
    }

    /// A `./` entry: only a directory may stand there, and it updates the
    /// root's own metadata.
    fn apply_root(&mut self, h: &Header) -> Result<(), Problem> {
        if h.kind != EntryKind::Directory {
            return Err(Problem::RootNotDir(kind_name(h.kind)));
        }
        let (uid, gid) = owner(h)?;
        let fd = self.root.fd();
        chown_fd(fd, uid, gid, b"")?;
        self.root_gid = Some(gid);
        self.xattrs(h, |k, v| set_xattr_fd(fd, k, v, b""))?;
        chmod_fd(fd, h.mode, b"")?;
        self.dir_times.push((Vec::new(), times(h)));
        if self.opts.whiteouts == WhiteoutMode::Delete {
            self.created.insert(Vec::new());
        }
        Ok(())
    }

    /// `dir/.wh.name`.
    fn whiteout(&mut self, dir_path: &[u8], name: &[u8], h: &Header) -> Result<(), Problem> {
        let rel = join_path(dir_path, name);
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                // Nothing to delete in a directory that is not there.
                let Some(parent) = self.parent(dir_path, false)? else {
                    return Ok(());
                };
                let r = self.remove_existing(parent.fd(self.root), name, &rel);
                self.put_parent(parent);
                r
            }
            WhiteoutMode::Refuse => Err(Problem::Whiteout),
            WhiteoutMode::Overlay { .. } => {
                let (uid, gid) = owner(h)?;
                let parent = self
                    .parent(dir_path, true)?
                    .ok_or_else(|| missing(dir_path))?;
                let dir = parent.fd(self.root);
                let r = self
                    .create_replacing(dir, &rel, name, || {
                        mknod_at(dir, name, FileType::CharacterDevice, 0, 0, &rel)
                    })
                    .and_then(|()| Ok(chown_at(dir, name, uid, gid, &rel)?));
                self.put_parent(parent);
                r
            }
        }
    }

    /// `dir/.wh..wh..opq`.
    fn opaque(&mut self, dir_path: &[u8]) -> Result<(), Problem> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let Some(parent) = self.parent(dir_path, false)? else {
                    return Ok(());
                };
                let r = self.remove_lower(parent.fd(self.root), dir_path);
                self.put_parent(parent);
                if r? {
                    self.dirs.clear();
                }
                Ok(())
            }
            WhiteoutMode::Overlay { xattr_prefix } => {
                let parent = self
                    .parent(dir_path, true)?
                    .ok_or_else(|| missing(dir_path))?;
                let mut key = xattr_prefix.as_bytes().to_vec();
                key.extend_from_slice(b"opaque");
                let r = set_xattr_fd(parent.fd(self.root), &key, b"y", dir_path);
                self.put_parent(parent);
                Ok(r?)
            }
            WhiteoutMode::Refuse => Err(Problem::Whiteout),
        }
    }

    /// Removes everything under the directory `dir` (at `dir_path`) that
    /// this layer did not put there, descending into what it did. Returns
    /// whether anything was removed.
    fn remove_lower(&self, dir: BorrowedFd<'_>, dir_path: &[u8]) -> Result<bool, Problem> {
        struct Sweep<'a> {
            keep: &'a HashSet<Vec<u8>>,
            removed: bool,
        }
        impl Visitor for Sweep<'_> {
            fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
                if self.keep.contains(e.path) {
                    return Ok(WalkControl::Continue);
                }
                remove_all_at(e.parent, e.name, e.path)?;
                self.removed = true;
                Ok(WalkControl::SkipChildren)
            }
        }
        // A new open file description: the walk reads it with getdents,
        // which must start at the beginning whatever was read before.
        let fd = rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::io("open directory", dir_path, e))?;
        let mut sweep = Sweep {
            keep: &self.created,
            removed: false,
        };
        walk_dir(fd, dir_path, &mut sweep)?;
        Ok(sweep.removed)
    }

    /// Runs `make`; if the name is taken, removes what is there and runs it
    /// once more.
    fn create_replacing<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        mut make: impl FnMut() -> strata_fs::Result<T>,
    ) -> Result<T, Problem> {
        match make() {
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {}
            r => return Ok(r?),
        }
        self.remove_existing(dir, name, rel)?;
        Ok(make()?)
    }

    /// Removes `name` in `dir` and all below it, if present. Removing a
    /// directory or symlink may change what cached paths resolve to, so
    /// the cache is dropped then.
    fn remove_existing(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
    ) -> Result<(), Problem> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(FsError::io("lstat", rel, e).into()),
        };
        remove_all_at(dir, name, rel)?;
        if matches!(
            FileType::from_raw_mode(st.st_mode),
            FileType::Directory | FileType::Symlink
        ) {
            self.dirs.clear();
        }
        Ok(())
    }

    /// Sets the archive's xattrs of `h` with `set` (see [`set_xattrs`]).
    fn xattrs(
        &mut self,
        h: &Header,
        set: impl FnMut(&[u8], &[u8]) -> strata_fs::Result<()>,
    ) -> Result<(), Problem> {
        Ok(set_xattrs(&h.xattrs, &mut self.stats.xattrs_skipped, set)?)
    }

    /// Streams the entry's data to the writer, at the chunk offsets for a
    /// sparse file.
    fn stream_data(
        &mut self,
        t: &Arc<Target>,
        h: &Header,
        data: &mut dyn EntryData,
    ) -> Result<(), Problem> {
        let mut progress = Progress {
            got: 0,
            expected: h.size,
        };
        match &h.sparse {
            None => self.stream_range(t, 0, h.size, data, &mut progress),
            Some(sp) => {
                check_sparse(sp, h.size)?;
                for c in &sp.chunks {
                    self.stream_range(t, c.offset, c.length, data, &mut progress)?;
                }
                Ok(())
            }
        }
    }

    /// Hands `len` bytes of `data` to the writer, to be written at offset
    /// `at`: as pieces of the stream's chunks where `data` gives them (no
    /// copy on this thread), else read straight into the writer's buffer.
    fn stream_range(
        &mut self,
        t: &Arc<Target>,
        mut at: u64,
        len: u64,
        data: &mut dyn EntryData,
        progress: &mut Progress,
    ) -> Result<(), Problem> {
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            if let Some(piece) = data.piece(want).map_err(Problem::Read)? {
                let n = piece.len() as u64;
                progress.got += n;
                self.pipe.queue_piece(t, at, piece)?;
                at += n;
                left -= n;
                continue;
            }
            let buf = self.pipe.room(want)?;
            let mut filled = 0;
            while filled < buf.len() {
                match data.read(&mut buf[filled..]) {
                    Ok(0) => {
                        return Err(Problem::Truncated {
                            expected: progress.expected,
                            got: progress.got,
                        });
                    }
                    Ok(n) => {
                        filled += n;
                        progress.got += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(Problem::Read(e)),
                }
            }
            self.pipe.commit_write(t, at, filled);
            at += filled as u64;
            left -= filled as u64;
        }
        Ok(())
    }

    /// The handle of the directory `path` (cleaned; `""` is the root):
    /// from the cache, else resolved inside the root, else (with `create`)
    /// made with its missing parents. `None` if absent and not created.
    fn parent(&mut self, path: &[u8], create: bool) -> Result<Option<Parent>, Problem> {
        if path.is_empty() {
            let gid = match self.root_gid {
                Some(g) => g,
                None => {
                    let st = rustix::fs::fstat(self.root.fd())
                        .map_err(|e| FsError::io("stat", b"", e))?;
                    self.root_gid = Some(st.st_gid);
                    st.st_gid
                }
            };
            return Ok(Some(Parent::Root { gid }));
        }
        if let Some(d) = self.dirs.take(path) {
            return Ok(Some(Parent::Dir(d)));
        }
        let fd = match self.root.open_dir(path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                if !create {
                    return Ok(None);
                }
                let track = self.opts.whiteouts == WhiteoutMode::Delete;
                let created = &mut self.created;
                mkdir_all(self.root, path, NEW_PARENT_MODE, Some((0, 0)), |p| {
                    if track {
                        created.insert(p.to_vec());
                    }
                })?
            }
            Err(e) if !create && is_gone(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| FsError::io("stat", path, e))?;
        Ok(Some(Parent::Dir(CachedDir {
            path: path.to_vec(),
            fd,
            gid: st.st_gid,
        })))
    }

    /// Returns a parent taken by [`parent`](Self::parent) to the cache.
    fn put_parent(&mut self, p: Parent) {
        if let Parent::Dir(d) = p {
            self.dirs.put(d);
        }
    }
}

/// Applies a whole tar stream onto `root` and finishes. Errors name the
/// entry and its offset in the stream.
pub fn apply_tar<R: Read>(
    root: &Root,
    reader: &mut TarReader<R>,
    opts: ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    apply_entries(Applier::new(root, opts), reader)
}

/// Feeds every entry of `reader` to `a` and finishes it.
pub fn apply_entries<R: Read>(
    mut a: Applier<'_>,
    reader: &mut TarReader<R>,
) -> Result<ApplyStats, ApplyError> {
    while let Some(h) = reader.next_entry()? {
        let at = reader.entry_offset();
        if let Err(e) = a.apply(&h, &mut reader.data()) {
            return Err(tar_cause(e).with_offset(at));
        }
    }
    a.finish()
}

/// As [`apply_entries`], and records the stream's framing into `rec`
/// while applying it (tar-split: every header, padding and trailer byte,
/// and each file's CRC), so the layer can later be exported byte for byte.
/// The summary says whether the record can be replayed from the layer's
/// files (not when the tar names a path twice, or holds sparse files).
pub fn apply_recorded<R: Read, W: Write>(
    mut a: Applier<'_>,
    reader: &mut TarReader<R>,
    rec: &mut Recorder<W>,
) -> Result<(ApplyStats, RecordSummary), ApplyError> {
    let summary = record_stream(reader, rec, |h, data| a.apply(h, data)).map_err(|e| match e {
        RecordError::Entry(e) => tar_cause(e),
        RecordError::Tar(t) => ApplyError::Tar(t),
        RecordError::Data(source) => stream_error(source),
        RecordError::Record(source) => ApplyError::Stream {
            what: "writing the tar-split record",
            source,
        },
    })?;
    Ok((a.finish()?, summary))
}

/// A failed read of the stream: the tar reader's own error when it is one
/// (it names the entry and offset), else the I/O error as it is.
fn stream_error(source: std::io::Error) -> ApplyError {
    if !source.get_ref().is_some_and(|i| i.is::<TarError>()) {
        return ApplyError::Stream {
            what: "reading the layer stream",
            source,
        };
    }
    match source.into_inner().map(|i| i.downcast::<TarError>()) {
        Some(Ok(t)) => ApplyError::Tar(*t),
        Some(Err(other)) => ApplyError::Stream {
            what: "reading the layer stream",
            source: std::io::Error::other(other),
        },
        None => ApplyError::Stream {
            what: "reading the layer stream",
            source: std::io::Error::other("unreadable"),
        },
    }
}

/// A data read that failed because of the tar stream (truncated, I/O) is
/// reported as the tar reader's own error, which already names the entry
/// and offset.
fn tar_cause(e: ApplyError) -> ApplyError {
    let ApplyError::Entry {
        entry,
        offset,
        problem: Problem::Read(io),
    } = e
    else {
        return e;
    };
    let read = |io| ApplyError::Entry {
        entry,
        offset,
        problem: Problem::Read(io),
    };
    if !io.get_ref().is_some_and(|inner| inner.is::<TarError>()) {
        return read(io);
    }
    let kind = io.kind();
    match io.into_inner().map(|inner| inner.downcast::<TarError>()) {
        Some(Ok(t)) => ApplyError::Tar(*t),
        Some(Err(other)) => read(std::io::Error::new(kind, other)),
        None => read(std::io::Error::from(kind)),
    }
}

/// Bytes of an entry's data read so far, against what its header
/// promised, for the truncation message.
struct Progress {
    got: u64,
    expected: u64,
}

/// A directory an entry goes into: the root, or a cached handle taken out
/// of the cache for the duration of the entry.
enum Parent {
    Root { gid: u32 },
    Dir(CachedDir),
}

impl Parent {
    fn fd<'a>(&'a self, root: &'a Root) -> BorrowedFd<'a> {
        match self {
            Parent::Root { .. } => root.fd(),
            Parent::Dir(d) => d.fd.as_fd(),
        }
    }

    fn gid(&self) -> u32 {
        match self {
            Parent::Root { gid } => *gid,
            Parent::Dir(d) => d.gid,
        }
    }
}

/// A resolved directory handle with the facts the applier needs about it.
struct CachedDir {
    /// Cleaned path relative to the root (never empty).
    path: Vec<u8>,
    fd: OwnedFd,
    /// The directory's group, which new objects in it may inherit.
    gid: u32,
}

/// Cached directory handles: a chain in which each entry is an ancestor of
/// the next, ending at the directory of a recent entry.
#[derive(Default)]
struct DirCache {
    stack: Vec<CachedDir>,
}

impl DirCache {
    /// Cuts the chain back to the ancestors of `path` and takes `path`'s
    /// own handle out of it, if cached.
    fn take(&mut self, path: &[u8]) -> Option<CachedDir> {
        while let Some(top) = self.stack.last() {
            if is_ancestor_or_self(&top.path, path) {
                break;
            }
            self.stack.pop();
        }
        if self.stack.last().is_some_and(|t| t.path == path) {
            self.stack.pop()
        } else {
            None
        }
    }

    /// Adds `d` at the end of the chain, after dropping entries that are
    /// not its proper ancestors.
    fn put(&mut self, d: CachedDir) {
        while let Some(top) = self.stack.last() {
            if top.path != d.path && is_ancestor_or_self(&top.path, &d.path) {
                break;
            }
            self.stack.pop();
        }
        self.stack.push(d);
    }

    fn clear(&mut self) {
        self.stack.clear();
    }
}

/// Whether `a` is `b` or a directory above it (both cleaned, non-empty).
fn is_ancestor_or_self(a: &[u8], b: &[u8]) -> bool {
    b.starts_with(a) && (b.len() == a.len() || b[a.len()] == b'/')
}

/// Sets `xattrs` with `set`, leaving out overlay ones (see
/// [`DROPPED_XATTR_PREFIXES`]) and counting in `skipped` those the
/// filesystem refuses as unsupported for the object (`ENOTSUP`, or `EPERM`
/// for `user.*` on a symlink or device), which moby ignores too.
fn set_xattrs(
    xattrs: &[strata_fs::Xattr],
    skipped: &mut u64,
    mut set: impl FnMut(&[u8], &[u8]) -> strata_fs::Result<()>,
) -> strata_fs::Result<()> {
    for (k, v) in xattrs {
        if DROPPED_XATTR_PREFIXES.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        match set(k, v) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error())
                    || e.raw_os_error() == Some(Errno::PERM.raw_os_error()) =>
            {
                *skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splits a cleaned, non-empty path into (parent, name).
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

/// The entry's owner as Linux ids.
fn owner(h: &Header) -> Result<(u32, u32), Problem> {
    match (u32::try_from(h.uid), u32::try_from(h.gid)) {
        (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => Ok((u, g)),
        _ => Err(Problem::Owner {
            uid: h.uid,
            gid: h.gid,
        }),
    }
}

/// The entry's times; without an atime the mtime stands in (moby does so).
fn times(h: &Header) -> Timestamps {
    let ts = |t: strata_tar::Timestamp| Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    };
    Timestamps {
        last_access: ts(h.atime.unwrap_or(h.mtime)),
        last_modification: ts(h.mtime),
    }
}

/// Checks that sparse chunks are ordered, disjoint, inside the real size
/// and add up to the archived data, so that writing them cannot go wrong.
fn check_sparse(sp: &strata_tar::Sparse, size: u64) -> Result<(), Problem> {
    let mut end = 0u64;
    let mut total = 0u64;
    for c in &sp.chunks {
        let c_end = c.offset.checked_add(c.length);
        match c_end {
            Some(e) if c.offset >= end && e <= sp.real_size => end = e,
            _ => {
                return Err(Problem::BadSparse(format!(
                    "chunk at {} of {} bytes is out of order or past the real size {}",
                    c.offset, c.length, sp.real_size
                )));
            }
        }
        total = total.saturating_add(c.length);
    }
    if total != size {
        return Err(Problem::BadSparse(format!(
            "chunks hold {total} bytes but the entry has {size}"
        )));
    }
    Ok(())
}

/// True when `e` says an object or one of its parents is not there (or a
/// parent is not a directory, or the object is a symlink where a directory
/// was wanted).
fn is_gone(e: &FsError) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::NOENT.raw_os_error()
        || c == Errno::NOTDIR.raw_os_error()
        || c == Errno::LOOP.raw_os_error())
}

/// The error for a parent that should exist after being created.
fn missing(path: &[u8]) -> Problem {
    Problem::Fs(FsError::io("resolve", path, Errno::NOENT))
}

/// A readable name for an entry kind, for messages.
fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Regular => "regular file",
        EntryKind::HardLink => "hard link",
        EntryKind::Symlink => "symlink",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Directory => "directory",
        EntryKind::Fifo => "fifo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry() {
        assert!(is_ancestor_or_self(b"a", b"a"));
        assert!(is_ancestor_or_self(b"a", b"a/b"));
        assert!(!is_ancestor_or_self(b"a", b"ab"));
        assert!(!is_ancestor_or_self(b"a/b", b"a"));
    }

    fn cached(p: &[u8]) -> CachedDir {
        CachedDir {
            path: p.to_vec(),
            fd: rustix::fs::open(".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .expect("open ."),
            gid: 0,
        }
    }

    #[test]
    fn cache_keeps_a_chain_of_ancestors() {
        let mut c = DirCache::default();
        c.put(cached(b"a"));
        c.put(cached(b"a/b"));
        c.put(cached(b"a/b/c"));
        // Going back up drops the deeper entries and hands out the match.
        let ab = c.take(b"a/b").expect("cached");
        assert_eq!(ab.path, b"a/b");
        assert_eq!(c.stack.len(), 1);
        c.put(ab);
        // A sibling branch keeps only the common ancestors.
        assert!(c.take(b"a/x").is_none());
        assert_eq!(c.stack.len(), 1);
        c.put(cached(b"a/x"));
        assert_eq!(
            c.stack.iter().map(|d| d.path.clone()).collect::<Vec<_>>(),
            [b"a".to_vec(), b"a/x".to_vec()]
        );
        assert!(c.take(b"z").is_none());
        assert!(c.stack.is_empty());
    }

    #[test]
    fn sparse_maps_are_checked() {
        use strata_tar::{Sparse, SparseChunk};
        let sp = |chunks: &[(u64, u64)], real| Sparse {
            real_size: real,
            chunks: chunks
                .iter()
                .map(|&(offset, length)| SparseChunk { offset, length })
                .collect(),
        };
        assert!(check_sparse(&sp(&[(0, 4), (100, 4), (200, 0)], 200), 8).is_ok());
        assert!(check_sparse(&sp(&[(100, 4), (0, 4)], 200), 8).is_err());
        assert!(check_sparse(&sp(&[(0, 4), (2, 4)], 200), 8).is_err());
        assert!(check_sparse(&sp(&[(0, 4), (198, 4)], 200), 8).is_err());
        assert!(check_sparse(&sp(&[(0, 4)], 200), 8).is_err());
        assert!(check_sparse(&sp(&[(u64::MAX, 4)], 200), 4).is_err());
    }
}
