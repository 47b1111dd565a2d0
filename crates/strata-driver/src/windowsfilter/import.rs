//! Importing a Windows layer tar into a layer directory, losslessly.
//!
//! Each entry is checked against the Windows name rules
//! (`strata_windows::classify`), its records are parsed (a malformed value
//! is refused, naming the entry), and then:
//!
//! * objects under `Files/`, `Hives/` and `UtilityVM/Files/` are written
//!   at their own path in the layer directory by the shared applier
//!   (`strata_layer::Applier`), with Linux modes 0755/0644 (Windows keeps
//!   permissions in the security descriptor, and the tar's mode has none)
//!   and symlink targets converted for browsing on Linux;
//! * alternate data streams go to `streams/<tar name>`, so they stay out
//!   of the `Files/` view;
//! * tombstones are recorded (and refused in a base layer) and, for
//!   `Files/`, become overlay whiteouts in `whiteouts/` for the view;
//! * hard links link within the layer, or to the file of the nearest
//!   parent layer that has it (hcsshim links across layer directories
//!   too), and fall back to a copy where a link cannot be made;
//! * the four utility-VM boot files are also copied, as they stream, to
//!   `bcd*.bak`, as the seed does.
//!
//! Every entry, whatever it is, is appended to the layer's index with its
//! header and all its records; the tar-split record is written alongside.
//! No entry may pass through a symlink of the layer: Windows importers
//! refuse reparse points on the way, and it keeps every path inside the
//! tree it names.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use strata_fs::{FsError, Root, display_path, mkdir_all};
use strata_layer::{Applier, ApplyError, ApplyOptions, ApplyStats, Problem, WhiteoutMode};
use strata_tar::{EntryData, EntryKind, Header, record_stream};
use strata_windows::{
    INDEX_FILE, IndexLine, IndexWriter, Kind, LayerIndex, Role, SecurityDescriptor, Top, WinName,
    WinRecords, classify, fold_case, hard_link_target, mutated_backup, view_symlink_target,
};

use crate::driver::ApplyResult;
use crate::pipeline::import_stream;
use crate::{DriverError, LayerId};

use super::{FILES_DIR, STREAMS_DIR, WHITEOUTS_DIR};

/// The index while it is written (renamed to its name once complete).
const INDEX_TMP: &str = ".wcow-index.json.gz.tmp";

/// A parent layer, as seen by an import: where its tree is and what it
/// deletes from the layers below it.
pub(super) struct ParentLayer {
    /// The parent's layer directory.
    pub dir: PathBuf,
    /// Its index, read on first need.
    pub index: OnceLock<Option<LayerIndex>>,
}

impl ParentLayer {
    pub(super) fn new(dir: PathBuf) -> ParentLayer {
        ParentLayer {
            dir,
            index: OnceLock::new(),
        }
    }

    /// True when this layer deletes `path` or one of its ancestors.
    fn deletes(&self, path: &[u8]) -> bool {
        let idx = self
            .index
            .get_or_init(|| super::read_index(&self.dir).ok().flatten());
        let Some(idx) = idx else { return false };
        // Compared folded, as NTFS compares names.
        let path = fold_case(path);
        idx.tombstones().any(|t| {
            let t = fold_case(t);
            path == t || (path.starts_with(&t) && path.get(t.len()) == Some(&b'/'))
        })
    }
}

/// An entry-level refusal, in the applier's one-line form.
fn refuse(entry: &[u8], reason: impl Into<String>) -> ApplyError {
    ApplyError::entry(
        entry,
        Problem::Fs(FsError::Invalid {
            path: display_path(entry),
            reason: reason.into(),
        }),
    )
}

/// Imports `tar` into the staging layer directory `dir` (which holds
/// nothing of the layer yet). `parents` is the chain, nearest first;
/// empty for a base layer.
pub(super) fn import(
    id: &LayerId,
    dir: &Path,
    parents: &[ParentLayer],
    tar: &mut (dyn Read + Send),
    decompress_blob: bool,
) -> crate::Result<ApplyResult> {
    let root = Root::open(dir).map_err(|source| DriverError::Fs {
        id: id.to_string(),
        source,
    })?;
    import_stream(id, dir, &root, tar, decompress_blob, |reader, rec| {
        let stream_err = |what: &'static str| move |source| ApplyError::Stream { what, source };
        // The index is compressed and written by a thread of its own, off
        // the applier's path, as the record is.
        let index_tmp = dir.join(INDEX_TMP);
        let index_file =
            File::create(&index_tmp).map_err(stream_err("creating the layer index"))?;
        let iw = IndexWriter::in_background(io::BufWriter::new(index_file), parents.is_empty())
            .map_err(stream_err("writing the layer index"))?;
        let mut imp = Importer::new(&root, dir, parents, iw);
        let mut summary =
            record_stream(reader, rec, |h, data| imp.entry(h, data)).map_err(|e| match e {
                strata_tar::RecordError::Tar(t) => ApplyError::Tar(t),
                strata_tar::RecordError::Entry(e) => e,
                strata_tar::RecordError::Data(source) => ApplyError::Stream {
                    what: "reading tar entry data",
                    source,
                },
                strata_tar::RecordError::Record(source) => ApplyError::Stream {
                    what: "writing the tar-split record",
                    source,
                },
            })?;
        summary.duplicates.append(&mut imp.respelt);
        let (size, entries) = imp.finish()?;
        std::fs::rename(&index_tmp, dir.join(INDEX_FILE))
            .map_err(stream_err("renaming the layer index"))?;
        let stats = ApplyStats {
            entries,
            size,
            ..ApplyStats::default()
        };
        Ok((stats, summary))
    })
}

/// Where an entry went in the layer: what its index line says beyond its
/// header.
struct Placed {
    role: Role,
    path: Vec<u8>,
    /// A stream's file, a tombstone's or link's target.
    target: Vec<u8>,
    cross_layer: bool,
}

impl Placed {
    /// At `path`, with no target and not cross-layer.
    fn at(role: Role, path: Vec<u8>) -> Placed {
        Placed {
            role,
            path,
            target: Vec::new(),
            cross_layer: false,
        }
    }
}

/// The state of one import.
struct Importer<'a> {
    root: &'a Root,
    dir: &'a Path,
    applier: Applier<'a>,
    parents: &'a [ParentLayer],
    index: IndexWriter<io::BufWriter<File>>,
    /// `MSWINDOWS.rawsd` values already checked (layers repeat a few).
    sds_ok: HashSet<Vec<u8>>,
    /// Symlinks this layer made: nothing may be written through them.
    symlinks: HashSet<Vec<u8>>,
    /// Regular files this layer holds (hard-link targets inside it), with
    /// the tar name that wrote each.
    files: HashMap<Vec<u8>, Vec<u8>>,
    /// Tar names of files that replaced a file of this layer spelt in
    /// another case: the directory holds one file for both entries, so the
    /// record cannot be replayed from it.
    respelt: Vec<Vec<u8>>,
    /// The regular file whose streams may follow.
    last_file: Option<Vec<u8>>,
    /// `Files/`-relative targets of this layer's tombstones.
    whiteouts: Vec<Vec<u8>>,
    spellings: Spellings<'a>,
    size: u64,
    entries: u64,
}

/// The spelling of every path of the chain as NTFS resolves names: a path
/// that differs from a known one only in case names the same object, so it
/// takes the known spelling (the first one seen in this layer, else the
/// nearest parent's). Without this, a delta writing `Files/WINDOWS/x` over
/// a parent's `Files/Windows` would show two directories in the view, and
/// a tombstone or hard link spelt differently would miss its target.
struct Spellings<'a> {
    parents: &'a [ParentLayer],
    /// Folded path -> the path as spelt.
    known: HashMap<Vec<u8>, Vec<u8>>,
    /// Folded directories whose entries in the parents were read.
    listed: HashSet<Vec<u8>>,
}

impl<'a> Spellings<'a> {
    fn new(parents: &'a [ParentLayer]) -> Spellings<'a> {
        Spellings {
            parents,
            known: HashMap::new(),
            listed: HashSet::new(),
        }
    }

    /// The spelling of the layer path `path`, which it keeps from now on
    /// if it is new.
    fn spell(&mut self, path: &[u8]) -> Vec<u8> {
        let key = fold_case(path);
        if let Some(p) = self.known.get(&key) {
            return p.clone();
        }
        let (dir, name) = split_last(path);
        let dir = if dir.is_empty() {
            Vec::new()
        } else {
            self.spell(dir)
        };
        self.list_parents(&dir);
        if let Some(p) = self.known.get(&key) {
            return p.clone();
        }
        let p = strata_fs::join_path(&dir, name);
        self.known.insert(key, p.clone());
        p
    }

    /// Learns the parents' spellings of the entries of directory `dir`
    /// (spelt), nearest parent first, once per directory.
    fn list_parents(&mut self, dir: &[u8]) {
        if self.parents.is_empty() || !self.listed.insert(fold_case(dir)) {
            return;
        }
        for p in self.parents {
            // A directory a parent lacks (or cannot show) has no spellings.
            let names = Root::open(&p.dir).ok().and_then(|r| {
                let fd = r.open_dir(dir).ok()?;
                let mut d = rustix::fs::Dir::read_from(&fd).ok()?;
                strata_fs::dir_names(&mut d, dir).ok()
            });
            let Some(names) = names else { continue };
            for n in names {
                let path = strata_fs::join_path(dir, &n);
                self.known.entry(fold_case(&path)).or_insert(path);
            }
        }
    }
}

impl<'a> Importer<'a> {
    fn new(
        root: &'a Root,
        dir: &'a Path,
        parents: &'a [ParentLayer],
        index: IndexWriter<io::BufWriter<File>>,
    ) -> Importer<'a> {
        let opts = ApplyOptions {
            // Tombstones are handled here, never passed on.
            whiteouts: WhiteoutMode::Refuse,
            writeback: true,
        };
        Importer {
            root,
            dir,
            applier: Applier::new(root, opts),
            parents,
            index,
            sds_ok: HashSet::new(),
            symlinks: HashSet::new(),
            files: HashMap::new(),
            respelt: Vec::new(),
            last_file: None,
            whiteouts: Vec::new(),
            spellings: Spellings::new(parents),
            size: 0,
            entries: 0,
        }
    }

    /// Refuses a path that passes through a symlink of this layer.
    fn check_no_symlink_parent(&self, entry: &[u8], path: &[u8]) -> Result<(), ApplyError> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' && self.symlinks.contains(&path[..i]) {
                return Err(refuse(
                    entry,
                    format!(
                        "passes through the symlink {:?} (Windows does not follow reparse points while importing)",
                        display_path(&path[..i])
                    ),
                ));
            }
        }
        Ok(())
    }

    fn entry(&mut self, h: &Header, data: &mut dyn EntryData) -> Result<(), ApplyError> {
        self.entries += 1;
        let name = classify(&h.path).map_err(|e| refuse(&h.path, e.reason))?;
        let kind = Kind::of(h.kind).ok_or_else(|| {
            refuse(
                &h.path,
                format!("a {:?} entry cannot be in a Windows layer", h.kind),
            )
        })?;
        let win = WinRecords::parse(&h.pax).map_err(|e| refuse(&h.path, e.to_string()))?;
        if let Some(sd) = &win.rawsd
            && !self.sds_ok.contains(sd)
        {
            SecurityDescriptor::decode(sd).map_err(|e| refuse(&h.path, e.to_string()))?;
            if self.sds_ok.len() < 4096 {
                self.sds_ok.insert(sd.clone());
            }
        }
        let name = match name {
            WinName::Object { path, top } => WinName::Object {
                path: self.spellings.spell(&path),
                top,
            },
            WinName::Tombstone { path, target, top } => WinName::Tombstone {
                target: self.spellings.spell(&target),
                path,
                top,
            },
            WinName::Stream { path, file, stream } => WinName::Stream {
                file: self.spellings.spell(&file),
                path,
                stream,
            },
            opaque @ WinName::Opaque { .. } => opaque,
        };
        self.check_no_symlink_parent(&h.path, name.path())?;
        let base = self.parents.is_empty();
        let entry = match name {
            WinName::Tombstone { path, target, top } => {
                if base {
                    return Err(refuse(&h.path, "base layer cannot have tombstones"));
                }
                if top == Top::Files
                    && let Some(rel) = target.strip_prefix(b"Files/")
                {
                    self.whiteouts.push(rel.to_vec());
                }
                self.last_file = None;
                Placed {
                    target,
                    ..Placed::at(Role::Tombstone, path)
                }
            }
            WinName::Opaque { path, .. } => {
                if base {
                    return Err(refuse(&h.path, "base layer cannot have whiteouts"));
                }
                self.last_file = None;
                Placed::at(Role::Opaque, path)
            }
            WinName::Stream { path, file, .. } => {
                if kind != Kind::File {
                    return Err(refuse(&h.path, "a stream entry must be a regular file"));
                }
                if self.last_file.as_ref() != Some(&file) {
                    return Err(refuse(
                        &h.path,
                        format!(
                            "stream of {:?}, which is not the regular file just before it",
                            display_path(&file)
                        ),
                    ));
                }
                let mut stored = STREAMS_DIR.as_bytes().to_vec();
                stored.push(b'/');
                stored.extend_from_slice(&path);
                let mut h2 = plain(h, stored, 0o644);
                h2.link_name.clear();
                self.applier.apply(&h2, data)?;
                Placed {
                    target: file,
                    ..Placed::at(Role::Stream, path)
                }
            }
            WinName::Object { path, top } => self.object(h, data, kind, path, top)?,
        };
        let mut line = IndexLine::of_header(h, kind, entry.role, &entry.path);
        line.target = &entry.target;
        line.cross_layer = entry.cross_layer;
        self.index
            .push(&line)
            .map_err(|source| ApplyError::Stream {
                what: "writing the layer index",
                source,
            })?;
        Ok(())
    }

    fn object(
        &mut self,
        h: &Header,
        data: &mut dyn EntryData,
        kind: Kind,
        path: Vec<u8>,
        top: Top,
    ) -> Result<Placed, ApplyError> {
        let tree_root = path.iter().filter(|&&b| b == b'/').count() == 0
            || path.as_slice() == b"UtilityVM/Files";
        if tree_root && kind != Kind::Dir {
            return Err(refuse(&h.path, "must be a directory"));
        }
        if top == Top::UtilityVm && path.as_slice() == b"UtilityVM" && kind != Kind::Dir {
            return Err(refuse(&h.path, "must be a directory"));
        }
        self.last_file = None;
        match kind {
            Kind::Dir => {
                self.symlinks.remove(&path);
                let h2 = plain(h, path.clone(), 0o755);
                self.applier.apply(&h2, data)?;
            }
            Kind::File => {
                self.symlinks.remove(&path);
                let h2 = plain(h, path.clone(), 0o644);
                match mutated_backup(&path) {
                    None => self.applier.apply(&h2, data)?,
                    Some(bak) => {
                        let bak_path = self.dir.join(bak);
                        let f = File::create(&bak_path)
                            .map_err(|e| refuse(&h.path, format!("create {bak}: {e}")))?;
                        let mut tee = Tee {
                            inner: data,
                            copy: io::BufWriter::new(f),
                        };
                        self.applier.apply(&h2, &mut tee)?;
                        let f = tee
                            .copy
                            .into_inner()
                            .map_err(|e| refuse(&h.path, format!("write {bak}: {}", e.error())))?;
                        f.sync_all()
                            .map_err(|e| refuse(&h.path, format!("sync {bak}: {e}")))?;
                    }
                }
                if let Some(before) = self.files.insert(path.clone(), h.path.clone())
                    && strata_fs::clean_path(&before).ok() != strata_fs::clean_path(&h.path).ok()
                {
                    self.respelt.push(h.path.clone());
                }
                self.size += h.size;
                self.last_file = Some(path.clone());
            }
            Kind::Symlink => {
                let mut h2 = plain(h, path.clone(), 0o777);
                h2.link_name = view_symlink_target(&path, &h.link_name);
                self.applier.apply(&h2, data)?;
                self.files.remove(&path);
                self.symlinks.insert(path.clone());
            }
            Kind::HardLink => {
                let name = WinName::Object {
                    path: path.clone(),
                    top,
                };
                let target =
                    hard_link_target(&name, &h.link_name).map_err(|e| refuse(&h.path, e.reason))?;
                let target = self.spellings.spell(&target);
                self.check_no_symlink_parent(&h.path, &target)?;
                let cross = if self.files.contains_key(&target) {
                    let mut h2 = plain(h, path.clone(), 0o644);
                    h2.link_name = target.clone();
                    self.applier.apply(&h2, data)?;
                    false
                } else {
                    self.link_from_parent(h, &path, &target)?;
                    true
                };
                self.files.insert(path.clone(), h.path.clone());
                self.symlinks.remove(&path);
                return Ok(Placed {
                    target,
                    cross_layer: cross,
                    ..Placed::at(Role::Link, path)
                });
            }
        }
        Ok(Placed::at(Role::Object, path))
    }

    /// Links `path` to the file `target` of the nearest parent layer that
    /// has it (and does not delete it), or copies it where a link cannot
    /// be made.
    fn link_from_parent(
        &mut self,
        h: &Header,
        path: &[u8],
        target: &[u8],
    ) -> Result<(), ApplyError> {
        let not_found = || {
            refuse(
                &h.path,
                format!(
                    "hard link target {:?} is neither in this layer nor in its parents",
                    display_path(target)
                ),
            )
        };
        let mut found = None;
        for p in self.parents {
            if p.deletes(target) {
                return Err(not_found());
            }
            let proot = Root::open(&p.dir).map_err(|e| refuse(&h.path, e.to_string()))?;
            // A parent path through a symlink is not the file itself.
            let (pdir, pname) = match proot.open_parent(target) {
                Ok(x) => x,
                Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::NOENT.raw_os_error() || c == Errno::NOTDIR.raw_os_error()) =>
                {
                    continue;
                }
                Err(e) => return Err(refuse(&h.path, e.to_string())),
            };
            match rustix::fs::statat(&pdir, pname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    found = Some((pdir, pname.to_vec()));
                    break;
                }
                Ok(_) => {
                    return Err(refuse(
                        &h.path,
                        format!(
                            "hard link target {:?} is not a regular file in the parent layer",
                            display_path(target)
                        ),
                    ));
                }
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(refuse(
                        &h.path,
                        format!("lstat {}: {e}", display_path(target)),
                    ));
                }
            }
        }
        let Some((pdir, pname)) = found else {
            return Err(not_found());
        };
        let (parent_path, name) = split_last(path);
        let ddir = mkdir_all(self.root, parent_path, 0o755, Some((0, 0)), |_| {})
            .map_err(|e| refuse(&h.path, e.to_string()))?;
        match rustix::fs::unlinkat(&ddir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(refuse(
                    &h.path,
                    format!("replace {}: {e}", display_path(path)),
                ));
            }
        }
        match rustix::fs::linkat(&pdir, pname.as_slice(), &ddir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::XDEV | Errno::MLINK | Errno::PERM) => {
                copy_file(pdir.as_fd(), &pname, ddir.as_fd(), name)
                    .map_err(|e| refuse(&h.path, format!("copy from the parent layer: {e}")))
            }
            Err(e) => Err(refuse(
                &h.path,
                format!("link to the parent layer's file: {e}"),
            )),
        }
    }

    /// Finishes the applier and the index (synced), makes the view's
    /// whiteouts and returns (layer size, entries).
    fn finish(self) -> Result<(u64, u64), ApplyError> {
        self.applier.finish()?;
        let index_err = |source| ApplyError::Stream {
            what: "writing the layer index",
            source,
        };
        self.index
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(index_err)?;
        match rustix::fs::mkdirat(self.root.fd(), FILES_DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(refuse(FILES_DIR.as_bytes(), format!("mkdir: {e}"))),
        }
        if !self.whiteouts.is_empty() {
            make_whiteouts(self.dir, &self.whiteouts)?;
        }
        Ok((self.size, self.entries))
    }
}

/// Materializes a layer's `Files/` tombstones as overlay whiteouts (0/0
/// character devices) under `whiteouts/`, each parent directory taking
/// the mode and times of its `Files/` counterpart when there is one, so
/// the view shows the layer's own directory metadata.
fn make_whiteouts(dir: &Path, whiteouts: &[Vec<u8>]) -> Result<(), ApplyError> {
    let wh_root_path = dir.join(WHITEOUTS_DIR);
    std::fs::create_dir(&wh_root_path)
        .map_err(|e| refuse(WHITEOUTS_DIR.as_bytes(), format!("mkdir: {e}")))?;
    let wroot = Root::open(&wh_root_path).map_err(|e| refuse(b"whiteouts", e.to_string()))?;
    let files = Root::open(dir.join(FILES_DIR)).map_err(|e| refuse(b"Files", e.to_string()))?;
    let mut made_dirs: Vec<Vec<u8>> = Vec::new();
    for t in whiteouts {
        let (parent, name) = split_last(t);
        let dfd = mkdir_all(&wroot, parent, 0o755, None, |p| made_dirs.push(p.to_vec()))
            .map_err(|e| refuse(t, e.to_string()))?;
        match strata_fs::mknod_at(dfd.as_fd(), name, FileType::CharacterDevice, 0, 0, t) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {}
            Err(e) => return Err(refuse(t, format!("whiteout for the view: {e}"))),
        }
    }
    // Deepest first, so setting a parent's times is not undone; the root
    // last of all.
    made_dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    made_dirs.push(Vec::new());
    for d in made_dirs {
        let Ok(Some(st)) = files.lstat(&d) else {
            continue;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            continue;
        }
        let fd = wroot
            .resolve(
                &d,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| refuse(&d, e.to_string()))?;
        strata_fs::chmod_fd(fd.as_fd(), st.st_mode, &d).map_err(|e| refuse(&d, e.to_string()))?;
        strata_fs::set_times_fd(fd.as_fd(), &strata_fs::stat_times(&st), &d)
            .map_err(|e| refuse(&d, e.to_string()))?;
    }
    Ok(())
}

/// A copy of `h` at `path` with Linux mode `mode`, no xattrs and no
/// records (the index keeps those; the applier needs none of them).
fn plain(h: &Header, path: Vec<u8>, mode: u32) -> Header {
    let mut h2 = Header::new(h.kind, path);
    h2.mode = mode;
    h2.uid = h.uid;
    h2.gid = h.gid;
    h2.size = h.size;
    h2.mtime = h.mtime;
    h2.atime = h.atime;
    h2.link_name = h.link_name.clone();
    h2.sparse = h.sparse.clone();
    if h.kind != EntryKind::Regular {
        h2.size = 0;
    }
    h2
}

/// (parent, name) of a cleaned path.
fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

/// Copies the regular file `sname` in `sdir` to a new file `dname` in
/// `ddir`, with its mode and times.
fn copy_file(
    sdir: std::os::fd::BorrowedFd<'_>,
    sname: &[u8],
    ddir: std::os::fd::BorrowedFd<'_>,
    dname: &[u8],
) -> io::Result<()> {
    let src = crate::store::open_file_at(sdir, sname, OFlags::empty())?;
    let st = rustix::fs::fstat(&src)?;
    let dst = rustix::fs::openat(
        ddir,
        dname,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(st.st_mode & 0o7777),
    )?;
    let mut src = File::from(src);
    let mut dst = File::from(dst);
    io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    strata_fs::set_times_fd(dst.as_fd(), &strata_fs::stat_times(&st), dname)
        .map_err(io::Error::other)
}

/// A reader that copies what it passes to a second writer.
struct Tee<'d, W: Write> {
    inner: &'d mut dyn EntryData,
    copy: W,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Read only: pieces of the stream would bypass the copy.
impl<W: Write> EntryData for Tee<'_, W> {}
