//! `strata windows-layer`: build Windows container layers on Linux and
//! inspect them.
//!
//! `build SRC -o OUT.tar` turns a directory, or a Linux layer tar (read
//! entry by entry, so no root and no scratch space are needed), into a
//! Windows delta layer by the spec's rules (strata-windows' `LayerBuilder`):
//! `Files/` and `Hives/` first, parents before children, `Files/` on names
//! and hard-link targets, attributes, a security descriptor on every entry
//! (BuildKit's defaults, or `--sddl`), creation times, whiteouts for
//! deletions (overlay whiteouts and opaque directories of the source are
//! expanded against `--lower`), and absolute symlinks refused or, with
//! `--dereference`, replaced by what they point to.
//!
//! `inspect FILE|ID` lists a Windows layer tar's entries, or an imported
//! layer's from its index: type, size, attributes by name, the security
//! descriptor as SDDL (decoded here), EAs, streams, link targets, times and
//! records nobody interprets.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rustix::fs::{FileType, Mode, OFlags};
use serde_json::{Value, json};
use strata_fs::{Root, Visitor, WalkControl, WalkEntry, display_path};
use strata_tar::{EntryKind, TarReader, Timestamp};
use strata_windows::{
    BuildOptions, EntryMeta, IndexEntry, Kind, LayerBuilder, LayerIndex, Role, WinName, WinRecords,
    attr, binary_to_sddl, classify, fold_case, windows_link_text,
};

/// `strata windows-layer ...`.
#[derive(Subcommand, Debug)]
pub enum WindowsCmd {
    /// Build a Windows delta layer tar from a directory or a Linux layer
    /// tar.
    Build(BuildArgs),
    /// List a Windows layer tar's entries (or an imported layer's, by id)
    /// with their Windows metadata.
    Inspect {
        /// A Windows layer tar (plain, gzip or zstd), or the id of a layer
        /// of the windowsfilter driver's home.
        target: String,
    },
}

/// Options of `windows-layer build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Source: a directory, or a Linux layer tar (plain, gzip or zstd).
    src: PathBuf,
    /// Output tar.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Security descriptor for every entry, as SDDL (default: BuildKit's
    /// descriptors for directories and files).
    #[arg(long)]
    sddl: Option<String>,
    /// Replace absolute symlinks by what they point to (resolved inside
    /// the source) instead of refusing them.
    #[arg(long)]
    dereference: bool,
    /// The layers below as one directory (e.g. a mounted view), to expand
    /// opaque directories of the source into whiteouts.
    #[arg(long)]
    lower: Option<PathBuf>,
}

/// Runs a `windows-layer` command. `home`/`driver` are the global options,
/// used by `inspect ID`.
pub fn run(
    cmd: WindowsCmd,
    home: &Path,
    driver: Option<&str>,
    driver_opts: &[String],
    json: bool,
) -> Result<()> {
    match cmd {
        WindowsCmd::Build(a) => build(a, json),
        WindowsCmd::Inspect { target } => inspect(&target, home, driver, driver_opts, json),
    }
}

fn build(a: BuildArgs, json_out: bool) -> Result<()> {
    let meta = std::fs::metadata(&a.src).with_context(|| format!("{}", a.src.display()))?;
    // Dereferencing needs the whole tree at hand, so a tar is extracted
    // for it (as root: owners and overlay whiteouts); any other tar is
    // converted as it is read.
    let _extracted;
    let src_dir = if meta.is_dir() {
        Some(a.src.clone())
    } else if a.dereference {
        let t = TempDir::new()?;
        extract(&a.src, &t.0)?;
        let p = t.0.clone();
        _extracted = t;
        Some(p)
    } else {
        None
    };
    let mut opts = BuildOptions::new()?;
    if let Some(s) = &a.sddl {
        opts = opts.with_sddl(s).with_context(|| "--sddl")?;
    }
    let src = src_dir
        .as_ref()
        .map(|d| Root::open(d).with_context(|| format!("open {}", d.display())))
        .transpose()?;
    let lower = a
        .lower
        .as_ref()
        .map(|l| Root::open(l).with_context(|| format!("open {}", l.display())))
        .transpose()?;
    let out = File::create(&a.output).with_context(|| format!("create {}", a.output.display()))?;
    let mut counter = Counting {
        inner: BufWriter::with_capacity(1 << 20, out),
        n: 0,
    };
    let mut b = LayerBuilder::new(&mut counter, opts)?;
    let built = match &src {
        Some(src) => {
            let mut w = Walker {
                src,
                lower: lower.as_ref(),
                b: &mut b,
                dereference: a.dereference,
                inodes: HashMap::new(),
                err: None,
            };
            let r = strata_fs::walk(src, b"", &mut w);
            match (w.err.take(), r) {
                (Some(e), _) => Err(e),
                (None, r) => r.map_err(Into::into),
            }
        }
        None => from_tar(&a.src, &mut b, lower.as_ref()),
    };
    let finished = built.and_then(|()| {
        let entries = b.entries();
        b.finish()?.flush().context("write the layer")?;
        Ok(entries)
    });
    let entries = match finished {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&a.output);
            return Err(e);
        }
    };
    if json_out {
        println!(
            "{}",
            json!({ "output": a.output, "entries": entries, "bytes": counter.n })
        );
    } else {
        println!(
            "{} entries={entries} bytes={}",
            a.output.display(),
            counter.n
        );
    }
    Ok(())
}

/// Converts a Linux layer tar as it is read: directories, files, hard
/// links and whiteouts in tar order; symlinks once every directory is
/// known (Windows needs to know whether a link names a directory); then
/// the whiteouts that expand opaque directories against `lower`.
fn from_tar<W: Write>(tar: &Path, b: &mut LayerBuilder<W>, lower: Option<&Root>) -> Result<()> {
    let f = File::open(tar).with_context(|| format!("open {}", tar.display()))?;
    let plain = strata_driver::plain_tar(io::BufReader::new(f))
        .with_context(|| format!("read {}", tar.display()))?;
    let mut reader = TarReader::new(plain);
    // Folded, as NTFS compares names.
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut symlinks = Vec::new();
    let mut opaque = Vec::new();
    while let Some(h) = reader
        .next_entry()
        .with_context(|| format!("read {}", tar.display()))?
    {
        let rel = strata_fs::clean_path(&h.path)
            .with_context(|| format!("{}: entry name", display_path(&h.path)))?;
        if rel.is_empty() {
            continue; // the layer root
        }
        let at = || display_path(&h.path);
        let (dir, name) = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], &rel[..]),
        };
        let meta = EntryMeta::at(h.mtime);
        if name == b".wh..wh..opq" {
            lower_names(lower, dir)?;
            opaque.push(dir.to_vec());
            continue;
        }
        if let Some(gone) = name.strip_prefix(b".wh.") {
            b.whiteout(&layer_path(&strata_fs::join_path(dir, gone)))
                .with_context(at)?;
            continue;
        }
        let path = layer_path(&rel);
        match h.kind {
            EntryKind::Directory => {
                b.dir(&path, &meta).with_context(at)?;
                dirs.insert(fold_case(&rel));
                let opaque_xattr = h.xattrs.iter().any(|(k, v)| {
                    (k == b"trusted.overlay.opaque" || k == b"user.overlay.opaque") && v == b"y"
                });
                if opaque_xattr {
                    lower_names(lower, &rel)?;
                    opaque.push(rel.clone());
                }
            }
            EntryKind::Regular if h.sparse.is_some() => {
                bail!("{}: sparse files cannot be in a Windows layer", at())
            }
            EntryKind::Regular => {
                b.file(&path, &meta, h.size, &mut reader.data())
                    .with_context(at)?;
            }
            EntryKind::HardLink => {
                let target = strata_fs::clean_path(&h.link_name)
                    .with_context(|| format!("{}: hard link target", at()))?;
                let target = layer_path(&target);
                if !b.has(&target) {
                    bail!(
                        "{}: hard link to {}, which is not earlier in the tar",
                        at(),
                        display_path(&h.link_name)
                    );
                }
                b.hard_link(&path, &target, None).with_context(at)?;
            }
            EntryKind::Symlink => match windows_link_text(&h.link_name) {
                Some(text) => symlinks.push((rel.clone(), meta, text, h.link_name.clone())),
                None => bail!(
                    "{}: absolute symlink to {} has no meaning on Windows \
                     (use --dereference to store what it points to)",
                    at(),
                    display_path(&h.link_name)
                ),
            },
            EntryKind::CharDevice if h.dev_major == 0 && h.dev_minor == 0 => {
                b.whiteout(&path).with_context(at)?;
            }
            other => bail!("{}: a {other:?} cannot be in a Windows layer", at()),
        }
    }
    for (rel, meta, text, target) in symlinks {
        let dir = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => &rel[..i],
            None => b"",
        };
        // Resolved lexically from the link's directory, inside the layer;
        // a target that climbs out or is not a directory of this layer or
        // the ones below is taken for a file.
        let resolved = strata_fs::clean_path(&strata_fs::join_path(dir, &target)).ok();
        let is_dir = resolved.is_some_and(|t| {
            dirs.contains(&fold_case(&t)) || lower.is_some_and(|l| l.open_dir(&t).is_ok())
        });
        b.symlink(&layer_path(&rel), &meta, &text, is_dir, false)
            .with_context(|| display_path(&rel))?;
    }
    for dir in opaque {
        for n in lower_names(lower, &dir)? {
            let p = layer_path(&strata_fs::join_path(&dir, &n));
            if !b.has(&p) {
                b.whiteout(&p).with_context(|| display_path(&p))?;
            }
        }
    }
    Ok(())
}

/// The names in the layers below (`lower`) of directory `rel`, which an
/// opaque directory of the source hides: each needs a whiteout unless the
/// source has it again.
fn lower_names(lower: Option<&Root>, rel: &[u8]) -> Result<Vec<Vec<u8>>> {
    let Some(lower) = lower else {
        bail!(
            "{}: opaque directory; give the layers below with --lower to expand it into whiteouts",
            display_path(rel)
        );
    };
    match lower.open_dir(rel) {
        Ok(fd) => {
            let mut d = rustix::fs::Dir::read_from(&fd)?;
            Ok(strata_fs::dir_names(&mut d, rel)?)
        }
        Err(_) => Ok(Vec::new()),
    }
}

/// Walks the source and feeds the builder.
struct Walker<'a, 'b, W: Write> {
    src: &'a Root,
    lower: Option<&'a Root>,
    b: &'b mut LayerBuilder<W>,
    dereference: bool,
    /// (dev, ino) of files with several names -> the first one's layer path.
    inodes: HashMap<(u64, u64), Vec<u8>>,
    err: Option<anyhow::Error>,
}

fn layer_path(rel: &[u8]) -> Vec<u8> {
    let mut p = b"Files/".to_vec();
    p.extend_from_slice(rel);
    p
}

fn mtime_of(st: &rustix::fs::Stat) -> Timestamp {
    Timestamp {
        secs: st.st_mtime,
        nanos: st.st_mtime_nsec as u32,
    }
}

impl<W: Write> Walker<'_, '_, W> {
    fn entry(&mut self, rel: &[u8], st: &rustix::fs::Stat) -> Result<WalkControl> {
        let path = layer_path(rel);
        let meta = EntryMeta::at(mtime_of(st));
        match FileType::from_raw_mode(st.st_mode) {
            FileType::CharacterDevice if st.st_rdev == 0 => {
                self.b.whiteout(&path)?;
            }
            FileType::Directory => {
                self.b.dir(&path, &meta)?;
                let fd = self.src.open_dir(rel)?;
                if strata_fs::overlay::is_opaque_dir(&fd, false)?
                    || strata_fs::overlay::is_opaque_dir(&fd, true)?
                {
                    self.opaque(rel)?;
                }
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.inodes.get(&key) {
                        let first = first.clone();
                        self.b.hard_link(&path, &first, None)?;
                        return Ok(WalkControl::Continue);
                    }
                    self.inodes.insert(key, path.clone());
                }
                let mut f = self.src.open_file(rel)?;
                self.b.file(&path, &meta, st.st_size as u64, &mut f)?;
            }
            FileType::Symlink => {
                let target = self.src.read_link(rel)?;
                match windows_link_text(&target) {
                    Some(text) => {
                        let is_dir = self
                            .src
                            .resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                            .is_ok();
                        self.b.symlink(&path, &meta, &text, is_dir, false)?;
                    }
                    None if self.dereference => self.deref(rel, &path)?,
                    None => bail!(
                        "{}: absolute symlink to {} has no meaning on Windows \
                         (use --dereference to store what it points to)",
                        display_path(rel),
                        display_path(&target)
                    ),
                }
            }
            other => bail!(
                "{}: a {other:?} cannot be in a Windows layer",
                display_path(rel)
            ),
        }
        Ok(WalkControl::Continue)
    }

    /// Whiteouts for everything below `rel` in the lower layers that the
    /// source does not have again.
    fn opaque(&mut self, rel: &[u8]) -> Result<()> {
        for n in lower_names(self.lower, rel)? {
            let p = strata_fs::join_path(rel, &n);
            if self.src.lstat(&p)?.is_none() {
                self.b.whiteout(&layer_path(&p))?;
            }
        }
        Ok(())
    }

    /// Stores what the absolute symlink at `rel` points to (resolved inside
    /// the source) under its name: a file's content, or a directory tree.
    fn deref(&mut self, rel: &[u8], path: &[u8]) -> Result<()> {
        let fd = self
            .src
            .resolve(rel, OFlags::RDONLY, Mode::empty())
            .with_context(|| format!("{}: dereference", display_path(rel)))?;
        let st = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let mut f = File::from(fd);
                self.b.file(
                    path,
                    &EntryMeta::at(mtime_of(&st)),
                    st.st_size as u64,
                    &mut f,
                )?;
            }
            FileType::Directory => {
                self.b.dir(path, &EntryMeta::at(mtime_of(&st)))?;
                let mut d = rustix::fs::Dir::read_from(&fd)?;
                for n in strata_fs::dir_names(&mut d, rel)? {
                    let child = strata_fs::join_path(rel, &n);
                    let mut cpath = path.to_vec();
                    cpath.push(b'/');
                    cpath.extend_from_slice(&n);
                    let cst = rustix::fs::statat(
                        &fd,
                        n.as_slice(),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                    if FileType::from_raw_mode(cst.st_mode) == FileType::Symlink {
                        let t = rustix::fs::readlinkat(&fd, n.as_slice(), Vec::new())?.into_bytes();
                        match windows_link_text(&t) {
                            Some(text) => self.b.symlink(
                                &cpath,
                                &EntryMeta::at(mtime_of(&cst)),
                                &text,
                                false,
                                false,
                            )?,
                            None => self.deref(&child, &cpath)?,
                        }
                    } else {
                        // Resolved through the symlinked directory.
                        self.deref(&child, &cpath)?;
                    }
                }
            }
            other => bail!(
                "{}: points to a {other:?}, which cannot be in a Windows layer",
                display_path(rel)
            ),
        }
        Ok(())
    }
}

impl<W: Write> Visitor for Walker<'_, '_, W> {
    fn visit(&mut self, e: &WalkEntry<'_>) -> strata_fs::Result<WalkControl> {
        match self.entry(e.path, e.stat) {
            Ok(c) => Ok(c),
            Err(err) => {
                self.err = Some(err);
                Err(strata_fs::FsError::Invalid {
                    path: display_path(e.path),
                    reason: "stopped".into(),
                })
            }
        }
    }
}

/// Extracts a Linux layer tar into `dir` with overlay-style whiteouts (so
/// deletions and opaque directories survive as the source's own), for
/// `--dereference`, which must resolve links against the whole tree.
fn extract(tar: &Path, dir: &Path) -> Result<()> {
    let f = File::open(tar).with_context(|| format!("open {}", tar.display()))?;
    let root = Root::open(dir)?;
    let plain = strata_driver::plain_tar(io::BufReader::new(f))
        .with_context(|| format!("read {}", tar.display()))?;
    let mut reader = TarReader::new(plain);
    let opts = strata_layer::ApplyOptions {
        whiteouts: strata_layer::WhiteoutMode::Overlay {
            xattr_prefix: "trusted.overlay.",
        },
        writeback: false,
    };
    strata_layer::apply_tar(&root, &mut reader, opts)
        .with_context(|| format!("extract {}", tar.display()))?;
    Ok(())
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("strata-winbuild-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("create {}", p.display()))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Counting<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn inspect(
    target: &str,
    home: &Path,
    driver: Option<&str>,
    driver_opts: &[String],
    json_out: bool,
) -> Result<()> {
    let entries: Vec<IndexEntry> = if Path::new(target).is_file() {
        read_tar_entries(Path::new(target))?
    } else {
        let d = strata_driver::open(Some(driver.unwrap_or("windowsfilter")), home, driver_opts)?;
        let id = d.store().resolve(&strata_driver::LayerId::new(target)?)?;
        d.store().meta(&id)?;
        let path = d.store().layer_dir(&id).join(strata_windows::INDEX_FILE);
        let f = File::open(&path)
            .with_context(|| format!("layer {id} has no Windows index ({})", path.display()))?;
        LayerIndex::from_reader(f)?.entries
    };
    let rows: Vec<Value> = entries.iter().map(describe).collect();
    if json_out {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    let mut o = io::stdout().lock();
    for r in &rows {
        let mut line = format!(
            "{:<9} {:>10}  {}",
            r["type"].as_str().unwrap_or("?"),
            r["size"],
            r["name"].as_str().unwrap_or("")
        );
        if let Some(t) = r["link"].as_str() {
            line.push_str(&format!(" -> {t}"));
        }
        if let Some(t) = r["target"].as_str() {
            line.push_str(&format!(" ({t})"));
        }
        if let Some(a) = r["attributes"].as_array() {
            let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("  [{}]", names.join("|")));
        }
        if let Some(s) = r["sd"].as_str() {
            line.push_str(&format!("  {s}"));
        }
        if let Some(t) = r["created"].as_str() {
            line.push_str(&format!("  created {t}"));
        }
        if let Some(eas) = r["eas"].as_array()
            && !eas.is_empty()
        {
            let names: Vec<&str> = eas.iter().filter_map(|e| e["name"].as_str()).collect();
            line.push_str(&format!("  EAs {}", names.join(",")));
        }
        writeln!(o, "{line}")?;
    }
    Ok(())
}

/// Reads a Windows layer tar into index entries (the same shape the
/// driver keeps), classifying each name.
fn read_tar_entries(p: &Path) -> Result<Vec<IndexEntry>> {
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let plain = strata_driver::plain_tar(io::BufReader::new(f))
        .with_context(|| format!("read {}", p.display()))?;
    let mut r = TarReader::new(plain);
    let mut out = Vec::new();
    while let Some(h) = r.next_entry()? {
        let kind = Kind::of(h.kind).unwrap_or(Kind::File);
        let (role, path, target) = match classify(&h.path) {
            Ok(WinName::Object { path, .. }) if h.kind == EntryKind::HardLink => {
                (Role::Link, path, h.link_name.clone())
            }
            Ok(WinName::Object { path, .. }) => (Role::Object, path, Vec::new()),
            Ok(WinName::Stream { path, file, .. }) => (Role::Stream, path, file),
            Ok(WinName::Tombstone { path, target, .. }) => (Role::Tombstone, path, target),
            Ok(WinName::Opaque { path, .. }) => (Role::Opaque, path, Vec::new()),
            Err(e) => bail!("{}: {}", display_path(&h.path), e.reason),
        };
        let mut e = IndexEntry::from_header(&h, kind, role, path);
        e.target = target;
        out.push(e);
    }
    Ok(out)
}

/// One entry as inspect shows it.
fn describe(e: &IndexEntry) -> Value {
    let ty = match (e.role, e.kind) {
        (Role::Stream, _) => "stream",
        (Role::Tombstone, _) => "tombstone",
        (Role::Opaque, _) => "opaque",
        (Role::Link, _) | (_, Kind::HardLink) => "hardlink",
        (_, Kind::Dir) => "dir",
        (_, Kind::Symlink) => "symlink",
        (_, Kind::File) => "file",
    };
    let mut v = json!({
        "name": display_path(&e.name),
        "type": ty,
        "size": e.size,
    });
    match WinRecords::parse(&e.record_pairs()) {
        Ok(w) => {
            if w.mountpoint {
                v["type"] = json!("junction");
            }
            if let Some(a) = w.fileattr {
                v["fileattr"] = json!(a);
                v["attributes"] = json!(attr::names(a));
            }
            if let Some(sd) = &w.rawsd {
                v["sd"] = json!(binary_to_sddl(sd).unwrap_or_else(|e| format!("({e})")));
                v["sd_bytes"] = json!(sd.len());
            } else if let Some(s) = &w.sddl {
                v["sd"] = json!(s);
                v["sd_legacy"] = json!(true);
            }
            if let Some(t) = &w.creation_time {
                v["created"] = json!(t.to_rfc3339());
                v["created_raw"] = json!(t.raw);
            }
            v["eas"] = Value::Array(
                w.eas
                    .iter()
                    .map(|(n, val)| json!({ "name": n, "size": val.len(), "hex": hex(val) }))
                    .collect(),
            );
        }
        Err(err) => v["error"] = json!(err.to_string()),
    }
    if !e.link.is_empty() {
        v["link"] = json!(display_path(&e.link));
    }
    match e.role {
        Role::Stream => v["stream_of"] = json!(display_path(&e.target)),
        Role::Tombstone => v["target"] = json!(display_path(&e.target)),
        Role::Link if e.cross_layer => v["cross_layer"] = json!(true),
        _ => {}
    }
    let other: Vec<Value> = e
        .records
        .iter()
        .filter(|r| !strata_windows::is_known_key(&r.k))
        .map(|r| json!([display_path(&r.k), display_path(&r.v)]))
        .collect();
    if !other.is_empty() {
        v["other_records"] = Value::Array(other);
    }
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
