//! Crash consistency of the `strata` binary (conformance points 37 and 38).
//!
//! `crash_anywhere` kills at least [`KILLS`] running store operations, as child
//! `strata` processes, alternating between an overlay home and a vfs home:
//! imports of a ~40 MB layer of ~2,000 files (with and without a parent),
//! small imports, `create`, `create-rw`, `create-rw --storage-opt size=64M`,
//! `rm` and `mount`. Each child gets SIGKILL at a random moment (tuned per
//! operation so that about half the kills land while it runs). After every
//! kill the home is read as it is, without repair: every layer directory is
//! complete, no other layer appeared or vanished, and an operation that
//! finished before the kill did what it said. The next operations then run
//! on whatever the kill left behind. At random sweep points, and at the end,
//! `strata cleanup` must leave no staging dir, `-removing` dir, mount or loop
//! device, and the store, reopened in process, must list exactly the layers
//! on disk with their parents, chains and import facts, and every layer an
//! operation touched must show exactly the tree its tars define.
//!
//! `interrupted_removal_finished_at_open` kills `strata rm` of a large layer
//! once its `<id>-removing` dir exists and checks that opening the store
//! finishes the removal and that the id can be used again.
//!
//! Both need root (overlay mounts, loop devices, root-owned trees): they
//! print `SKIP` without it, and fail instead under `CI=true`.
// Test code: an unwrap that fails is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use strata_driver::{Driver, LayerId, LayerKind};

/// The binary under test.
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
/// Kills per run that must land while the operation is still running (the
/// issue asks for at least 200); operations are started, each sent SIGKILL
/// at a random moment, until that many did.
const KILLS: usize = 200;
/// Bound on operations per run: about 45% of them are killed mid-way, so
/// this leaves ample room while keeping a broken timing from running on.
const MAX_OPS: usize = 900;
/// Imports of the large layer that must be killed while their staging dir
/// already holds extracted files, per home; otherwise the run proves little.
const MIN_STAGED_IMPORT_KILLS: usize = 3;
/// Chance that an operation is followed by a sweep point (`strata cleanup`
/// and a full check). Between sweep points the children run on the
/// leftovers of the earlier kills, which is part of what is tested.
const SWEEP_CHANCE: f64 = 0.3;
/// Chance that an import of the large layer is killed a short random time
/// after its first files show up in staging, instead of at a blind moment.
const TARGETED_CHANCE: f64 = 0.35;
/// The size storage option of the size-limited read-write layer.
const SIZE_OPT: &str = "size=64M";
/// Metadata file of a complete layer (ARCHITECTURE.md, "On disk").
const META_FILE: &str = "layer.json";
/// Timestamp of every tar entry.
const MTIME: u64 = 1_700_000_000;
/// Signal number of SIGKILL.
const SIGKILL: i32 = 9;
/// How long the kernel gets to release an auto-clearing loop device once
/// its last mount is gone (the release may run asynchronously).
const LOOP_RELEASE_WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Trees: what a layer's view must contain.

/// One path of a tree, as far as the store must keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    /// A regular file; its mtime is compared too (directories' are not:
    /// an overlay view shows a copied-up directory with its own times).
    File {
        size: u64,
        mtime: i64,
        sha256: [u8; 32],
    },
    Symlink(PathBuf),
    /// Any other file type (raw `st_mode` type bits); none is expected.
    Other(u32),
}

/// A path's node plus the metadata compared for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    node: Node,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// A tree by path relative to its root (the root itself left out).
type Tree = BTreeMap<String, Entry>;

/// The tree at `root`, read through the ordinary file API.
fn tree_of(root: &Path) -> Tree {
    let mut out = Tree::new();
    collect(root, "", &mut out);
    out
}

/// Adds the entries below `root/rel` to `out`, recursively.
fn collect(root: &Path, rel: &str, out: &mut Tree) {
    for ent in fs::read_dir(root.join(rel)).unwrap() {
        let ent = ent.unwrap();
        let name = ent.file_name().into_string().unwrap();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = fs::symlink_metadata(ent.path()).unwrap();
        let ft = md.file_type();
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_file() {
            Node::File {
                size: md.len(),
                mtime: md.mtime(),
                sha256: sha256_file(&ent.path()),
            }
        } else if ft.is_symlink() {
            Node::Symlink(fs::read_link(ent.path()).unwrap())
        } else {
            Node::Other(md.mode() & 0o170000)
        };
        out.insert(
            path.clone(),
            Entry {
                node,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            },
        );
        if ft.is_dir() {
            collect(root, &path, out);
        }
    }
}

/// SHA-256 of a file's content.
fn sha256_file(p: &Path) -> [u8; 32] {
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize().into();
        }
        h.update(&buf[..n]);
    }
}

/// Panics with the first differences if `got` is not `want`.
fn assert_same_tree(want: &Tree, got: &Tree, what: &str) {
    if want == got {
        return;
    }
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => diffs.push(format!("missing   {p}: {w:?}")),
            Some(g) if g != w => diffs.push(format!("differs   {p}: want {w:?}, got {g:?}")),
            Some(_) => {}
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            diffs.push(format!("unexpected {p}: {g:?}"));
        }
    }
    let n = diffs.len();
    diffs.truncate(12);
    panic!(
        "{what}: view differs from the expected tree in {n} path(s):\n  {}",
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Layer tars, written here (plain ustar) so the expected tree is known
// exactly and nothing of Strata's own codec is trusted to build its input.

/// A layer tar being built, with the tree it stands for.
#[derive(Default)]
struct TarBuilder {
    bytes: Vec<u8>,
    entries: Tree,
    whiteouts: Vec<String>,
}

/// A finished layer tar and what applying it means.
struct LayerTar {
    bytes: Vec<u8>,
    /// `sha256:<hex>` of the whole stream (the diffID the import reports).
    digest: String,
    /// Paths the layer adds or replaces.
    entries: Tree,
    /// Paths the layer deletes (by `.wh.` whiteout).
    whiteouts: Vec<String>,
}

impl TarBuilder {
    fn dir(&mut self, path: &str, mode: u32) {
        self.header(&format!("{path}/"), mode, 0, b'5', "");
        self.add(path, Node::Dir, mode);
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.header(path, mode, data.len() as u64, b'0', "");
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
        let sha256 = Sha256::digest(data).into();
        let size = data.len() as u64;
        let mtime = MTIME as i64;
        self.add(
            path,
            Node::File {
                size,
                mtime,
                sha256,
            },
            mode,
        );
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.header(path, 0o777, 0, b'2', target);
        self.add(path, Node::Symlink(target.into()), 0o777);
    }

    fn whiteout(&mut self, path: &str) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.header(&wh, 0o644, 0, b'0', "");
        self.whiteouts.push(path.to_string());
    }

    fn add(&mut self, path: &str, node: Node, mode: u32) {
        let e = Entry {
            node,
            mode,
            uid: 0,
            gid: 0,
        };
        self.entries.insert(path.to_string(), e);
    }

    /// Appends one ustar header block (names here are all under 100 bytes).
    fn header(&mut self, name: &str, mode: u32, size: u64, kind: u8, link: &str) {
        fn octal(field: &mut [u8], v: u64) {
            let w = field.len() - 1;
            field[..w].copy_from_slice(format!("{v:0w$o}").as_bytes());
            field[w] = 0;
        }
        assert!(
            name.len() < 100 && link.len() < 100,
            "{name}: name too long"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], MTIME);
        h[148..156].fill(b' ');
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&h);
    }

    fn finish(mut self) -> LayerTar {
        self.bytes.resize(self.bytes.len() + 1024, 0);
        let digest = format!("sha256:{}", hex(&Sha256::digest(&self.bytes)));
        LayerTar {
            bytes: self.bytes,
            digest,
            entries: self.entries,
            whiteouts: self.whiteouts,
        }
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `size` bytes of content unique to `seed`: a header line naming the seed,
/// then a repeating pattern (cheap to make; files that got mixed up or
/// truncated still hash differently).
fn content(seed: u64, size: usize) -> Vec<u8> {
    let pattern: Vec<u8> = (0..502u32).map(|k| (k % 251) as u8).collect();
    let mut v = format!("{seed:016x}\n").into_bytes();
    v.truncate(size);
    let off = (seed % 251) as usize;
    while v.len() < size {
        let n = (size - v.len()).min(251);
        v.extend_from_slice(&pattern[off..off + n]);
    }
    v
}

/// The small base layer: a few dirs, files, a symlink.
fn base_tar() -> LayerTar {
    let mut t = TarBuilder::default();
    t.dir("etc", 0o755);
    t.file("etc/os-release", 0o644, b"NAME=strata-crash base\n");
    t.file("etc/gone", 0o644, b"deleted by the app layer\n");
    t.file("etc/keep", 0o640, b"kept\n");
    t.dir("bin", 0o755);
    t.file("bin/sh", 0o755, &content(1, 3000));
    t.dir("lib", 0o755);
    for i in 0..20u64 {
        t.file(
            &format!("lib/lib{i}.so"),
            0o644,
            &content(100 + i, 100 + 250 * i as usize),
        );
    }
    t.symlink("lib64", "lib");
    t.finish()
}

/// The small layer on `base`: replaces a file, deletes one, adds a dir.
fn app_tar() -> LayerTar {
    let mut t = TarBuilder::default();
    t.dir("etc", 0o755);
    t.file("etc/os-release", 0o600, b"NAME=strata-crash app\n");
    t.whiteout("etc/gone");
    t.dir("app", 0o750);
    for i in 0..30u64 {
        t.file(
            &format!("app/f{i:02}"),
            0o644,
            &content(200 + i, 64 * i as usize),
        );
    }
    t.symlink("app/link", "../etc/keep");
    t.finish()
}

/// The large layer: ~24 MB in 2,000 files over 40 dirs plus 16 MB in four
/// large files, all under `bulk/` (which is how a kill mid-extraction is
/// recognised in staging).
fn bulk_tar() -> LayerTar {
    let mut t = TarBuilder::default();
    t.dir("bulk", 0o755);
    for d in 0..40u64 {
        t.dir(&format!("bulk/d{d:02}"), 0o755);
        for f in 0..50u64 {
            let k = d * 50 + f;
            let size = 1 + (k * 7919 % 24576) as usize;
            let mode = if k % 7 == 0 { 0o755 } else { 0o644 };
            t.file(
                &format!("bulk/d{d:02}/f{f:02}"),
                mode,
                &content(1000 + k, size),
            );
        }
    }
    for b in 0..4u64 {
        t.file(&format!("bulk/blob{b}"), 0o644, &content(9000 + b, 4 << 20));
    }
    t.finish()
}

/// The view of a layer stacked from `tars`, bottom first (moby semantics:
/// a whiteout deletes the path and everything below it; later entries
/// replace earlier ones).
fn stack(tars: &[&LayerTar]) -> Tree {
    let mut t = Tree::new();
    for l in tars {
        for w in &l.whiteouts {
            let below = format!("{w}/");
            t.retain(|p, _| p != w && !p.starts_with(&below));
        }
        for (p, e) in &l.entries {
            t.insert(p.clone(), e.clone());
        }
    }
    t
}

// ---------------------------------------------------------------------------
// The layers the crash test works on. Each id always has the same parent and
// recipe, so its expected view stays the same when it is made again after
// it vanished.

/// Which tar an import applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    Base,
    App,
    Bulk,
}

/// How a layer is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Import(Source),
    Create,
    CreateRw,
    CreateRwSized,
}

/// One layer id of the test, its fixed parent and recipe.
struct LayerDef {
    id: &'static str,
    parent: Option<&'static str>,
    how: How,
}

const LAYERS: &[LayerDef] = &[
    LayerDef {
        id: "base",
        parent: None,
        how: How::Import(Source::Base),
    },
    LayerDef {
        id: "app",
        parent: Some("base"),
        how: How::Import(Source::App),
    },
    LayerDef {
        id: "big",
        parent: None,
        how: How::Import(Source::Bulk),
    },
    LayerDef {
        id: "bigc",
        parent: Some("app"),
        how: How::Import(Source::Bulk),
    },
    LayerDef {
        id: "empty",
        parent: None,
        how: How::Create,
    },
    LayerDef {
        id: "ro",
        parent: Some("big"),
        how: How::Create,
    },
    LayerDef {
        id: "rw",
        parent: Some("app"),
        how: How::CreateRw,
    },
    LayerDef {
        id: "rwbig",
        parent: Some("bigc"),
        how: How::CreateRw,
    },
    LayerDef {
        id: "rws",
        parent: Some("app"),
        how: How::CreateRwSized,
    },
];

/// Index of layer `id` in [`LAYERS`].
fn layer_index(id: &str) -> usize {
    LAYERS.iter().position(|l| l.id == id).unwrap()
}

/// Index of layer `j`'s parent in [`LAYERS`].
fn parent_index(j: usize) -> Option<usize> {
    LAYERS[j].parent.map(layer_index)
}

/// The tars on disk and every layer's expected view.
struct Fixtures {
    tars: HashMap<Source, (PathBuf, String, u64)>,
    views: Vec<Tree>,
}

impl Fixtures {
    /// Builds the tars, writes them into `dir` and derives the views.
    fn write(dir: &Path) -> Fixtures {
        let built = [
            (Source::Base, base_tar()),
            (Source::App, app_tar()),
            (Source::Bulk, bulk_tar()),
        ];
        let mut tars = HashMap::new();
        for (src, t) in &built {
            let path = dir.join(format!("{src:?}.tar").to_lowercase());
            fs::write(&path, &t.bytes).unwrap();
            tars.insert(*src, (path, t.digest.clone(), t.bytes.len() as u64));
        }
        let tar_of = |s: Source| &built.iter().find(|(b, _)| *b == s).unwrap().1;
        let views = (0..LAYERS.len())
            .map(|j| {
                let mut sources = Vec::new();
                let mut cur = Some(j);
                while let Some(c) = cur {
                    if let How::Import(s) = LAYERS[c].how {
                        sources.push(tar_of(s));
                    }
                    cur = parent_index(c);
                }
                sources.reverse();
                stack(&sources)
            })
            .collect();
        Fixtures { tars, views }
    }
}

// ---------------------------------------------------------------------------
// Operations.

/// One `strata` command of the crash test.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Import or create layer `j`.
    Make(usize),
    /// `rm` layer `j`.
    Remove(usize),
    /// `mount` layer `j` (the driver's `get`).
    Mount(usize),
}

/// Operation kinds, with the weight of each in the random choice. Removal
/// weighs most because every layer that is made must go again for the
/// creating operations to stay available.
const KINDS: &[(&str, u32)] = &[
    ("import big", 14),
    ("import big+parent", 14),
    ("import small", 12),
    ("create", 8),
    ("create-rw", 8),
    ("create-rw size", 6),
    ("rm", 26),
    ("mount (get)", 12),
];

impl Op {
    fn target(self) -> usize {
        match self {
            Op::Make(j) | Op::Remove(j) | Op::Mount(j) => j,
        }
    }

    /// Its kind: a key of [`KINDS`].
    fn kind(self) -> &'static str {
        match self {
            Op::Make(j) => match LAYERS[j].how {
                How::Import(Source::Bulk) if LAYERS[j].parent.is_some() => "import big+parent",
                How::Import(Source::Bulk) => "import big",
                How::Import(_) => "import small",
                How::Create => "create",
                How::CreateRw => "create-rw",
                How::CreateRwSized => "create-rw size",
            },
            Op::Remove(_) => "rm",
            Op::Mount(_) => "mount (get)",
        }
    }

    fn is_big_import(self) -> bool {
        matches!(self, Op::Make(j) if LAYERS[j].how == How::Import(Source::Bulk))
    }

    /// Command-line arguments after the global options.
    fn args(self, fx: &Fixtures) -> Vec<OsString> {
        let j = self.target();
        let l = &LAYERS[j];
        let mut a: Vec<OsString> = Vec::new();
        let verb = match self {
            Op::Remove(_) => "rm",
            Op::Mount(_) => "mount",
            Op::Make(_) => match l.how {
                How::Import(_) => "import",
                How::Create => "create",
                How::CreateRw | How::CreateRwSized => "create-rw",
            },
        };
        a.push(verb.into());
        a.push(l.id.into());
        if let Op::Make(_) = self {
            if let Some(p) = l.parent {
                a.push("--parent".into());
                a.push(p.into());
            }
            match l.how {
                How::Import(s) => a.push(fx.tars[&s].0.clone().into()),
                How::CreateRwSized => {
                    a.push("--storage-opt".into());
                    a.push(SIZE_OPT.into());
                }
                How::Create | How::CreateRw => {}
            }
        }
        a
    }

    /// Whether the target exists once the operation has done its work.
    fn exists_after(self, before: bool) -> bool {
        match self {
            Op::Make(_) => true,
            Op::Remove(_) => false,
            Op::Mount(_) => before,
        }
    }
}

/// The operations possible in state `exists`: make an absent layer whose
/// parent exists, remove a layer no existing layer depends on, mount an
/// existing one.
fn candidates(exists: &[bool]) -> Vec<Op> {
    let mut ops = Vec::new();
    for j in 0..LAYERS.len() {
        if exists[j] {
            let has_child = (0..LAYERS.len()).any(|c| exists[c] && parent_index(c) == Some(j));
            if !has_child {
                ops.push(Op::Remove(j));
            }
            ops.push(Op::Mount(j));
        } else if parent_index(j).is_none_or(|p| exists[p]) {
            ops.push(Op::Make(j));
        }
    }
    ops
}

/// Picks an operation: a kind by weight among those possible now, then one
/// of its operations. `extra` favours imports of the large layer (and the
/// removals that make room for them).
fn pick(exists: &[bool], rng: &mut StdRng, extra: bool) -> Op {
    let ops = candidates(exists);
    let weighted: Vec<(&str, u32)> = KINDS
        .iter()
        .map(|&(k, w)| {
            let w = match (extra, k) {
                (false, _) => w,
                (true, "import big" | "import big+parent") => 60,
                (true, "rm" | "import small") => w,
                (true, _) => 0,
            };
            (k, w)
        })
        .filter(|(k, w)| *w > 0 && ops.iter().any(|o| o.kind() == *k))
        .collect();
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    let kind = weighted
        .iter()
        .find(|(_, w)| {
            if r < *w {
                return true;
            }
            r -= w;
            false
        })
        .unwrap()
        .0;
    let of_kind: Vec<Op> = ops.into_iter().filter(|o| o.kind() == kind).collect();
    of_kind[rng.random_range(0..of_kind.len())]
}

/// A first guess at how long an operation runs; replaced by what is seen.
fn initial_estimate(kind: &str) -> Duration {
    if kind.starts_with("import big") {
        Duration::from_millis(400)
    } else {
        Duration::from_millis(60)
    }
}

/// A uniformly random duration in `0..=max`.
fn random_duration(rng: &mut StdRng, max: Duration) -> Duration {
    Duration::from_micros(rng.random_range(0..=max.as_micros() as u64))
}

// ---------------------------------------------------------------------------
// Children and the home as found on disk.

/// A `strata` command on `home` with `driver`, its environment cleared of
/// settings that could point it elsewhere.
fn strata(driver: &str, home: &Path) -> Command {
    let mut c = Command::new(STRATA);
    c.arg("--home")
        .arg(home)
        .arg("--driver")
        .arg(driver)
        .env_remove("STRATA_HOME")
        .env_remove("STRATA_DRIVER")
        .env_remove("STRATA_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs a `strata` command to completion; panics unless it succeeds.
fn strata_ok(driver: &str, home: &Path, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = strata(driver, home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "strata {args:?} on {}: {}\n{}",
        home.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A running child, killed and reaped if dropped before it was waited for
/// (so a failing check never leaves one behind).
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Waits for the child; its exit status and standard error.
    fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.0.take().unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// When to kill a child.
enum KillAt {
    /// This long after the start.
    After(Duration),
    /// This long after the large layer's first files show up in staging.
    AfterStaged(Duration),
}

/// What became of one child.
struct Outcome {
    status: ExitStatus,
    /// From start to exit (or to the kill).
    elapsed: Duration,
    /// The kill found it running (it died of SIGKILL).
    killed: bool,
    /// A staging dir made by this child held files of the large layer when
    /// it was killed: it died while building a layer (extracting an
    /// import, or for vfs, copying a parent).
    staged: bool,
    stderr: String,
}

/// Starts `cmd` and SIGKILLs it at `at` unless it exits first.
fn run_and_kill(mut cmd: Command, home: &Path, at: KillAt) -> Outcome {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    // Staging dirs of earlier killed children (not swept yet) do not count.
    let earlier = staging_entries(home);
    let start = Instant::now();
    let mut child = Running(Some(cmd.spawn().unwrap()));
    let mut deadline = match at {
        KillAt::After(d) => Some(start + d),
        KillAt::AfterStaged(_) => None,
    };
    let mut staged = false;
    let elapsed = loop {
        if child.child().try_wait().unwrap().is_some() {
            break start.elapsed();
        }
        let now = Instant::now();
        if let (None, KillAt::AfterStaged(grace)) = (deadline, &at)
            && staging_has_bulk(home, &earlier)
        {
            deadline = Some(now + *grace);
        }
        if deadline.is_some_and(|d| now >= d) {
            staged = staging_has_bulk(home, &earlier);
            // SIGKILL; harmless if it exited since the last look.
            let _ = child.child().kill();
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    let (status, stderr) = child.wait();
    let killed = status.signal() == Some(SIGKILL);
    Outcome {
        status,
        elapsed,
        killed,
        staged: staged && killed,
        stderr,
    }
}

/// True when a staging dir not among `earlier` already holds part of the
/// large layer.
fn staging_has_bulk(home: &Path, earlier: &[String]) -> bool {
    let Ok(rd) = fs::read_dir(home.join("staging")) else {
        return false;
    };
    rd.flatten().any(|e| {
        !earlier
            .iter()
            .any(|n| *n == *e.file_name().to_string_lossy())
            && fs::symlink_metadata(e.path().join("diff/bulk")).is_ok()
    })
}

/// Which layers of [`LAYERS`] exist in `home`, read from disk without
/// opening (and so repairing) the store. Panics on a layer dir that is not
/// complete: that would be a half-visible layer.
fn raw_state(home: &Path, ctx: &str) -> Vec<bool> {
    LAYERS
        .iter()
        .map(|l| {
            let dir = home.join(l.id);
            let present = fs::symlink_metadata(&dir).is_ok();
            let complete = fs::symlink_metadata(dir.join(META_FILE)).is_ok();
            assert_eq!(
                present,
                complete,
                "{ctx}: {} exists without {META_FILE}: a half-visible layer",
                dir.display()
            );
            complete
        })
        .collect()
}

/// Entries of `home/staging`.
fn staging_entries(home: &Path) -> Vec<String> {
    match fs::read_dir(home.join("staging")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("list {}/staging: {e}", home.display()),
    }
}

/// `*-removing` entries of `home`.
fn removing_entries(home: &Path) -> Vec<String> {
    fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-removing"))
        .collect()
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`. Parsed
/// here rather than with Strata's own parser, so a bug there cannot hide a
/// leak here.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape_mount_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Loop devices (`/dev/loopN`) whose backing file lies below `dir`.
/// `/sys/block/loopN/loop/backing_file` exists only while a device is bound.
fn loops_under(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing).starts_with(dir) {
            out.push(format!("/dev/{name}"));
        }
    }
    out
}

/// Number of entries below `dir` (0 if it is gone), tolerating entries
/// that vanish while it counts.
fn count_entries(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let below = match e.file_type() {
                Ok(t) if t.is_dir() => count_entries(&e.path()),
                _ => 0,
            };
            1 + below
        })
        .sum()
}

/// Asserts that `home` holds no staging dir, `-removing` dir, mount or
/// loop device.
fn assert_no_leftovers(home: &Path, ctx: &str) {
    assert_leftovers_only(home, ctx, &[]);
}

/// As [`assert_no_leftovers`], but the mounts in `allowed` may stay (with
/// their loop devices): a size-limited layer's sandbox is its storage and
/// stays mounted while the layer exists; only `cleanup` releases it.
fn assert_leftovers_only(home: &Path, ctx: &str, allowed: &[PathBuf]) {
    let staging = staging_entries(home);
    assert!(staging.is_empty(), "{ctx}: staging leftovers {staging:?}");
    let removing = removing_entries(home);
    assert!(removing.is_empty(), "{ctx}: removal leftovers {removing:?}");
    let mounts: Vec<_> = mounts_under(home)
        .into_iter()
        .filter(|m| !allowed.contains(m))
        .collect();
    assert!(mounts.is_empty(), "{ctx}: mounts left {mounts:?}");
    if !allowed.is_empty() {
        return;
    }
    // Auto-clearing loop devices are let go when their last mount is, but
    // the kernel may do that asynchronously: give it a moment.
    let start = Instant::now();
    loop {
        let loops = loops_under(home);
        if loops.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < LOOP_RELEASE_WAIT,
            "{ctx}: loop devices still backed by files in the home: {loops:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Root, drivers and the clean-up guard.

/// Says SKIP loudly, or fails under `CI=true`, where nothing may be skipped.
fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason}, and CI must not skip it");
    }
    eprintln!("SKIP: {test}: {reason}");
}

/// True when running as root; otherwise says SKIP (or fails under CI).
fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip(
        test,
        "needs root (overlay mounts, loop devices, root-owned layers)",
    );
    false
}

/// The drivers to exercise: vfs always; overlay when the kernel and the
/// filesystem under `scratch` allow it (SKIP for it otherwise).
fn usable_drivers(test: &str, scratch: &Path) -> Vec<&'static str> {
    let probe = scratch.join("overlay-probe");
    let r = strata_driver::open(Some("overlay"), &probe, &[]);
    let overlay = match r {
        Ok(d) => {
            drop(d);
            true
        }
        Err(e) => {
            skip(
                test,
                &format!("overlay part: the driver is unusable here: {e}"),
            );
            false
        }
    };
    let _ = fs::remove_dir_all(&probe);
    if overlay {
        vec!["overlay", "vfs"]
    } else {
        vec!["vfs"]
    }
}

/// Leaves no mount or loop device behind, even when a check failed: runs
/// `strata cleanup` on each home, then detaches whatever is still mounted
/// or attached below it. Declared after the temporary dir, so it runs
/// before that is deleted.
struct CleanupGuard {
    homes: Vec<(&'static str, PathBuf)>,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        for (driver, home) in &self.homes {
            let Ok(home) = home.canonicalize() else {
                continue;
            };
            let _ = strata(driver, &home)
                .arg("cleanup")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let mut mounts = mounts_under(&home);
            // Deepest first, so a mount on a mount goes before its base.
            mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
            for m in mounts {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
            for dev in loops_under(&home) {
                let _ = Command::new("losetup")
                    .arg("-d")
                    .arg(&dev)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The crash test.

/// Counts for one kind of operation on one driver.
#[derive(Default, Clone, Copy)]
struct Tally {
    runs: usize,
    /// Exited before the kill came.
    finished: usize,
    /// Killed while running.
    killed: usize,
    /// Killed while running, yet the effect was already visible (the kill
    /// came after the commit point).
    killed_after_commit: usize,
    /// Killed while building a layer in staging (see [`Outcome::staged`]).
    killed_staged: usize,
    /// Finished with an accepted refusal ("not supported").
    refused: usize,
}

/// What the sweep points found before cleaning.
#[derive(Default)]
struct Leftovers {
    sweeps: usize,
    staging: usize,
    removing: usize,
    mounts: usize,
    loops: usize,
}

/// One home and what the test knows about it.
struct HomeRun {
    driver: &'static str,
    home: PathBuf,
    /// Which layers of [`LAYERS`] exist, as last read from disk.
    exists: Vec<bool>,
    /// Layers an operation touched since their view was last verified.
    dirty: BTreeSet<usize>,
    /// Running estimate of each operation's duration, by kind and id.
    estimate: HashMap<String, Duration>,
    /// `status` of the first reopen (minus the layer count).
    status: Option<Vec<(String, String)>>,
    tallies: BTreeMap<&'static str, Tally>,
    leftovers: Leftovers,
    /// Time spent running and killing operations.
    op_time: Duration,
    /// Time spent in sweep points (cleanup and checks).
    sweep_time: Duration,
}

impl HomeRun {
    fn new(driver: &'static str, home: PathBuf) -> HomeRun {
        HomeRun {
            driver,
            home,
            exists: vec![false; LAYERS.len()],
            dirty: BTreeSet::new(),
            estimate: HashMap::new(),
            status: None,
            tallies: BTreeMap::new(),
            leftovers: Leftovers::default(),
            op_time: Duration::ZERO,
            sweep_time: Duration::ZERO,
        }
    }

    /// Operations killed while still running.
    fn kills(&self) -> usize {
        self.tallies.values().map(|t| t.killed).sum()
    }

    /// Imports killed while extracting into staging.
    fn staged_import_kills(&self) -> usize {
        self.tallies
            .iter()
            .filter(|(k, _)| k.starts_with("import"))
            .map(|(_, t)| t.killed_staged)
            .sum()
    }

    /// Starts one random operation, kills it at a random moment and checks
    /// what it left, without repairing anything.
    fn step(&mut self, fx: &Fixtures, rng: &mut StdRng, extra: bool) {
        let op = pick(&self.exists, rng, extra);
        let t = op.target();
        let kind = op.kind();
        let args = op.args(fx);
        let shown = format!(
            "{}: strata {}",
            self.driver,
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let key = format!("{kind} {}", LAYERS[t].id);
        let est = *self
            .estimate
            .entry(key.clone())
            .or_insert_with(|| initial_estimate(kind));
        let at = if op.is_big_import() && (extra || rng.random_bool(TARGETED_CHANCE)) {
            KillAt::AfterStaged(random_duration(rng, est / 3))
        } else {
            // Up to twice the usual duration: about half the kills come
            // while the child runs, half after it is done.
            KillAt::After(random_duration(rng, est * 2))
        };
        let mut cmd = strata(self.driver, &self.home);
        cmd.args(&args);
        let out = run_and_kill(cmd, &self.home, at);
        self.op_time += out.elapsed;

        // Learn how long this operation takes: what a finished run took,
        // or at least as long as a killed run had been going.
        let e = self.estimate.get_mut(&key).unwrap();
        if out.killed {
            *e = (*e).max(out.elapsed);
        } else {
            *e = (*e + out.elapsed) / 2;
        }

        let before = &self.exists;
        let after = raw_state(&self.home, &shown);
        for (j, l) in LAYERS.iter().enumerate() {
            if j != t {
                assert_eq!(
                    after[j],
                    before[j],
                    "{shown}: layer {} {} though the operation was on {}",
                    l.id,
                    if after[j] { "appeared" } else { "vanished" },
                    LAYERS[t].id
                );
            }
        }
        let new = op.exists_after(before[t]);
        let tally = self.tallies.entry(kind).or_default();
        tally.runs += 1;
        if out.killed {
            tally.killed += 1;
            if after[t] == new && new != before[t] {
                tally.killed_after_commit += 1;
            }
            if out.staged {
                tally.killed_staged += 1;
            }
        } else if out.status.success() {
            tally.finished += 1;
            assert_eq!(
                after[t],
                new,
                "{shown}: succeeded, but the layer {} exist",
                if new { "does not" } else { "does still" }
            );
        } else {
            // Every operation is picked so that it can work (its parent
            // exists, the id is free, no layer depends on a removed one);
            // the only accepted failure is the size option on a driver
            // that does not offer it.
            assert!(
                kind == "create-rw size" && out.stderr.contains("not supported"),
                "{shown}: failed ({}) though it should work here:\n{}",
                out.status,
                out.stderr
            );
            assert_eq!(after[t], before[t], "{shown}: failed but changed the layer");
            tally.finished += 1;
            tally.refused += 1;
        }
        // The target changed or was used; an import or create also read
        // its parent (overlay mounts it, vfs copies it).
        self.dirty.insert(t);
        if let (Op::Make(_), Some(p)) = (op, parent_index(t)) {
            self.dirty.insert(p);
        }
        self.exists = after;
    }

    /// A sweep point: `strata cleanup` must leave nothing behind; then the
    /// store, reopened in process, must agree with the disk and show every
    /// touched layer (every layer when `all`) with its expected content.
    fn sweep_and_check(&mut self, fx: &Fixtures, all: bool) {
        let ctx = format!("{} home, sweep {}", self.driver, self.leftovers.sweeps);
        let start = Instant::now();
        let l = &mut self.leftovers;
        l.sweeps += 1;
        l.staging += staging_entries(&self.home).len();
        l.removing += removing_entries(&self.home).len();
        l.mounts += mounts_under(&self.home).len();
        l.loops += loops_under(&self.home).len();

        let out = strata_ok(
            self.driver,
            &self.home,
            &["--json".as_ref(), "cleanup".as_ref()],
        );
        let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            report["errors"].as_array().is_some_and(|e| e.is_empty()),
            "{ctx}: strata cleanup reported errors: {report}"
        );
        assert_no_leftovers(&self.home, &format!("{ctx}, after strata cleanup"));
        let exists = raw_state(&self.home, &ctx);
        assert_eq!(
            exists, self.exists,
            "{ctx}: cleanup changed which layers exist"
        );

        let d = strata_driver::open(Some(self.driver), &self.home, &[]).unwrap();
        let status: Vec<_> = d
            .status()
            .into_iter()
            .filter(|(k, _)| k != "Layers")
            .collect();
        let first = self.status.get_or_insert_with(|| status.clone());
        assert_eq!(&status, first, "{ctx}: status changed across restarts");
        let listed: Vec<String> = d.list().unwrap().into_iter().map(|m| m.id).collect();
        let mut want: Vec<String> = LAYERS
            .iter()
            .zip(&exists)
            .filter(|(_, e)| **e)
            .map(|(l, _)| l.id.to_string())
            .collect();
        want.sort();
        assert_eq!(listed, want, "{ctx}: list differs from the layers on disk");
        for (j, l) in LAYERS.iter().enumerate() {
            let id = LayerId::new(l.id).unwrap();
            assert_eq!(d.exists(&id), exists[j], "{ctx}: exists({})", l.id);
            if exists[j] {
                check_meta(d.as_ref(), j, fx, &ctx);
            }
        }
        for (j, l) in LAYERS.iter().enumerate() {
            if !exists[j] || !(all || self.dirty.contains(&j)) {
                continue;
            }
            let id = LayerId::new(l.id).unwrap();
            let view = d.get(&id, "").unwrap();
            let tree = tree_of(&view);
            d.put(&id).unwrap();
            assert_same_tree(&fx.views[j], &tree, &format!("{ctx}: layer {}", l.id));
        }
        // Sandboxes of existing size-limited layers stay mounted.
        let sandboxes: Vec<PathBuf> = d
            .list()
            .unwrap()
            .iter()
            .filter(|m| m.size_limit.is_some())
            .map(|m| self.home.join(&m.id).join("sandbox"))
            .collect();
        drop(d);
        assert_leftovers_only(
            &self.home,
            &format!("{ctx}, after the checks' get/put"),
            &sandboxes,
        );
        self.dirty.clear();
        self.sweep_time += start.elapsed();
    }
}

/// Checks layer `j`'s metadata as the reopened store reads it: kind,
/// parent, chain, and for imports the stream's size and digest.
fn check_meta(d: &dyn Driver, j: usize, fx: &Fixtures, ctx: &str) {
    let l = &LAYERS[j];
    let id = LayerId::new(l.id).unwrap();
    let meta = d.info(&id).unwrap();
    assert_eq!(meta.id, l.id, "{ctx}: id in {}'s metadata", l.id);
    assert_eq!(
        meta.parent.as_deref(),
        l.parent,
        "{ctx}: parent of {}",
        l.id
    );
    let kind = match l.how {
        How::Import(_) | How::Create => LayerKind::Ro,
        How::CreateRw | How::CreateRwSized => LayerKind::Rw,
    };
    assert_eq!(meta.kind, kind, "{ctx}: kind of {}", l.id);
    let chain: Vec<String> = d
        .store()
        .chain(&id)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut want = Vec::new();
    let mut cur = parent_index(j);
    while let Some(p) = cur {
        want.push(LAYERS[p].id.to_string());
        cur = parent_index(p);
    }
    assert_eq!(chain, want, "{ctx}: chain of {}", l.id);
    d.metadata(&id).unwrap();
    if let How::Import(s) = l.how {
        let (_, digest, len) = &fx.tars[&s];
        let import = meta
            .import
            .unwrap_or_else(|| panic!("{ctx}: {} has no import facts", l.id));
        assert_eq!(&import.digest, digest, "{ctx}: digest of {}", l.id);
        assert_eq!(import.tar_bytes, *len, "{ctx}: tar bytes of {}", l.id);
    }
}

/// Prints the per-driver, per-kind figures and what the sweeps found.
fn print_summary(runs: &[HomeRun], ops: usize, elapsed: Duration, seed: u64) {
    println!(
        "crash summary: {ops} operations, each sent SIGKILL at a random moment unless it had \
         finished, in {:.1} s (seed {seed}); finished = done before the kill, killed = still \
         running, after-commit = killed with its effect already visible, mid-build = killed \
         while writing a new layer in staging, refused = size option not supported",
        elapsed.as_secs_f64()
    );
    println!(
        "  {:<8} {:<18} {:>5} {:>9} {:>7} {:>13} {:>13} {:>8}",
        "driver", "operation", "runs", "finished", "killed", "after-commit", "mid-build", "refused"
    );
    let mut total = Tally::default();
    for r in runs {
        for (k, t) in &r.tallies {
            println!(
                "  {:<8} {:<18} {:>5} {:>9} {:>7} {:>13} {:>13} {:>8}",
                r.driver,
                k,
                t.runs,
                t.finished,
                t.killed,
                t.killed_after_commit,
                t.killed_staged,
                t.refused
            );
            total.runs += t.runs;
            total.finished += t.finished;
            total.killed += t.killed;
            total.killed_after_commit += t.killed_after_commit;
            total.killed_staged += t.killed_staged;
            total.refused += t.refused;
        }
    }
    println!(
        "  {:<8} {:<18} {:>5} {:>9} {:>7} {:>13} {:>13} {:>8}",
        "all",
        "",
        total.runs,
        total.finished,
        total.killed,
        total.killed_after_commit,
        total.killed_staged,
        total.refused
    );
    for r in runs {
        let l = &r.leftovers;
        println!(
            "  {}: {} sweeps found {} staging dirs, {} -removing dirs, {} mounts, {} loop devices; \
             strata cleanup left none ({:.1} s in operations, {:.1} s in sweeps)",
            r.driver,
            l.sweeps,
            l.staging,
            l.removing,
            l.mounts,
            l.loops,
            r.op_time.as_secs_f64(),
            r.sweep_time.as_secs_f64()
        );
    }
}

/// Conformance 37-38 through the CLI: operations killed at random moments
/// leave only complete layers, and cleanup leaves nothing else.
#[test]
fn crash_anywhere() {
    const TEST: &str = "crash_anywhere";
    if !require_root(TEST) {
        return;
    }
    let start = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("strata-crash")
        .tempdir_in("/var/tmp")
        .unwrap();
    let fx = Fixtures::write(tmp.path());
    let mut runs: Vec<HomeRun> = usable_drivers(TEST, tmp.path())
        .into_iter()
        .map(|d| HomeRun::new(d, tmp.path().join(format!("home-{d}"))))
        .collect();
    let _guard = CleanupGuard {
        homes: runs.iter().map(|r| (r.driver, r.home.clone())).collect(),
    };
    for r in &mut runs {
        // Created through the CLI so the home has its canonical path, which
        // the mount and loop checks compare against.
        strata_ok(r.driver, &r.home, &["status".as_ref()]);
        r.home = r.home.canonicalize().unwrap();
    }
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (STRATA_CRASH_SEED=<seed> repeats the operations; timings vary)");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut ops = 0;
    let kills = |runs: &[HomeRun]| runs.iter().map(HomeRun::kills).sum::<usize>();
    for i in 0..MAX_OPS {
        let extra = kills(&runs) >= KILLS;
        let enough = |r: &HomeRun| r.staged_import_kills() >= MIN_STAGED_IMPORT_KILLS;
        if extra && runs.iter().all(enough) {
            break;
        }
        let n = runs.len();
        let run = &mut runs[i % n];
        if extra && enough(run) {
            continue;
        }
        run.step(&fx, &mut rng, extra);
        ops += 1;
        if rng.random_bool(SWEEP_CHANCE) {
            run.sweep_and_check(&fx, false);
        }
    }
    for r in &mut runs {
        r.sweep_and_check(&fx, true);
    }
    print_summary(&runs, ops, start.elapsed(), seed);

    assert!(
        kills(&runs) >= KILLS,
        "only {} kills landed mid-operation in {ops} operations",
        kills(&runs)
    );
    for r in &runs {
        assert!(
            r.staged_import_kills() >= MIN_STAGED_IMPORT_KILLS,
            "{}: only {} imports were killed mid-extraction after {ops} operations; \
             the run did not test interrupted imports",
            r.driver,
            r.staged_import_kills()
        );
    }
}

/// Conformance 37: a removal killed after its rename to `<id>-removing` is
/// finished when the store is next opened, and the id can be used again.
#[test]
fn interrupted_removal_finished_at_open() {
    const TEST: &str = "interrupted_removal_finished_at_open";
    const ATTEMPTS: usize = 10;
    const MAX_RM_DELAY: Duration = Duration::from_millis(20);
    if !require_root(TEST) {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-crash-rm")
        .tempdir_in("/var/tmp")
        .unwrap();
    let fx = Fixtures::write(tmp.path());
    let drivers = usable_drivers(TEST, tmp.path());
    let _guard = CleanupGuard {
        homes: drivers
            .iter()
            .map(|d| (*d, tmp.path().join(format!("home-{d}"))))
            .collect(),
    };
    let base_tar = fx.tars[&Source::Base].0.as_os_str();
    let bulk_tar = fx.tars[&Source::Bulk].0.clone();
    let bulk_entries = fx.views[layer_index("big")].len();
    let mut rng = StdRng::seed_from_u64(rand::random());
    for driver in drivers {
        let home = tmp.path().join(format!("home-{driver}"));
        strata_ok(
            driver,
            &home,
            &["import".as_ref(), "keep".as_ref(), base_tar],
        );
        let removing = home.join("big-removing");
        let mut landed = None;
        for attempt in 1..=ATTEMPTS {
            if fs::symlink_metadata(home.join("big")).is_err() {
                strata_ok(
                    driver,
                    &home,
                    &["import".as_ref(), "big".as_ref(), bulk_tar.as_os_str()],
                );
            }
            let mut cmd = strata(driver, &home);
            cmd.args(["rm", "big"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = Running(Some(cmd.spawn().unwrap()));
            // Watch for the rename as closely as possible, then kill, at
            // once or (in the first half of the attempts) a little later so
            // the deletion is under way; it takes far longer than either.
            let delay = if attempt <= ATTEMPTS / 2 {
                random_duration(&mut rng, MAX_RM_DELAY)
            } else {
                Duration::ZERO
            };
            loop {
                if fs::symlink_metadata(&removing).is_ok() {
                    std::thread::sleep(delay);
                    let _ = child.child().kill();
                    break;
                }
                if child.child().try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::yield_now();
            }
            let (status, stderr) = child.wait();
            if status.signal() == Some(SIGKILL) && fs::symlink_metadata(&removing).is_ok() {
                landed = Some((attempt, count_entries(&removing.join("diff"))));
                break;
            }
            assert!(
                status.signal() == Some(SIGKILL) || status.success(),
                "{driver}: strata rm big failed: {status}\n{stderr}"
            );
        }
        let (attempts, left) = landed.unwrap_or_else(|| {
            panic!("{driver}: no kill of `strata rm big` landed during the deletion in {ATTEMPTS} attempts")
        });
        println!(
            "{driver}: `strata rm big` killed after its rename (attempt {attempts}), \
             {left} of {bulk_entries} entries left in big-removing"
        );
        assert!(
            fs::symlink_metadata(home.join("big")).is_err(),
            "{driver}: the layer must stop existing at the rename"
        );

        let d = strata_driver::open(Some(driver), &home, &[]).unwrap();
        assert!(
            fs::symlink_metadata(&removing).is_err(),
            "{driver}: opening the store must finish the interrupted removal"
        );
        let big = LayerId::new("big").unwrap();
        let keep = LayerId::new("keep").unwrap();
        assert!(!d.exists(&big), "{driver}: big exists after its removal");
        let listed: Vec<String> = d.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(
            listed,
            ["keep"],
            "{driver}: layers after the interrupted removal"
        );
        let view = d.get(&keep, "").unwrap();
        let tree = tree_of(&view);
        d.put(&keep).unwrap();
        assert_same_tree(
            &fx.views[layer_index("base")],
            &tree,
            &format!("{driver}: untouched layer keep"),
        );
        // The id is free again.
        let mut f = fs::File::open(&bulk_tar).unwrap();
        d.import(&big, None, &mut f).unwrap();
        let view = d.get(&big, "").unwrap();
        let tree = tree_of(&view);
        d.put(&big).unwrap();
        assert_same_tree(
            &fx.views[layer_index("big")],
            &tree,
            &format!("{driver}: big imported again"),
        );
        drop(d);
        strata_ok(driver, &home, &["cleanup".as_ref()]);
        assert_no_leftovers(
            &home.canonicalize().unwrap(),
            &format!("{driver}: at the end"),
        );
    }
}
