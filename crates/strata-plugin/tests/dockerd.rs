//! End to end with Debian's dockerd 20.10 (`/usr/sbin/dockerd`,
//! `/usr/bin/docker`) on a private data-root, exec-root and socket:
//! `--experimental --storage-driver=<plugin>`, the plugin found through a
//! spec file with a name unique to this run, pointing at a private socket.
//!
//! One test per Strata driver runs the whole life of an image and its
//! containers through the plugin, and holds what Docker reports against
//! the same steps on Docker's own overlay2 (run once, on another private
//! daemon): the image's merged root filesystem (tree manifests), `docker
//! diff`, `docker ps -s` and `docker system df` sizes, `docker save`
//! layer digests, `docker export`. Then, on Strata only: a plugin restart
//! under a running container, a dockerd restart with containers and
//! images kept, and removal of everything.
//!
//! The image is built here: busybox-static for a runnable `/bin/sh`, and
//! three layers with whiteouts, an opaque directory, hard links, xattrs
//! (`security.capability`, `user.*`, `trusted.*`), a dir/file swap.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strata_conformance::cases::tar_entries;
use strata_conformance::images;
use strata_conformance::manifest::{ManifestOptions, manifest};
use strata_conformance::tarbuild::{EPOCH, TarBuilder};
use strata_plugin::Config;
use strata_tar::{EntryKind, Header, Timestamp};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's 20.10 client; /usr/local/bin/docker may be a newer one.
const DOCKER: &str = "/usr/bin/docker";
const TAG: &str = "strata-e2e/image:latest";
const COMMITTED: &str = "strata-e2e/committed:latest";

/// What a command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// True when everything the test drives is here; otherwise a loud SKIP
/// (a failure under CI=true).
fn prerequisites(case: &str) -> bool {
    if !root(case) {
        return false;
    }
    for tool in [
        DOCKERD,
        DOCKER,
        images::BUSYBOX,
        "/usr/bin/containerd",
        "/usr/sbin/runc",
    ] {
        if !Path::new(tool).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{case}: {tool} is missing (apt-get install docker.io containerd runc busybox-static), and CI must not skip"
                );
            }
            eprintln!(
                "SKIP: {case}: {tool} is missing (apt-get install docker.io containerd runc busybox-static)"
            );
            return false;
        }
    }
    true
}

// ------------------------------------------------------------ host paths

/// Paths dockerd 20.10 (and the containerd it starts) create outside the
/// directories they are given. Whichever were absent when the first
/// daemon of this process started are removed (files, and directories
/// once empty) when the last one stops.
const HOST_PATHS: &[&str] = &[
    "/etc/docker/key.json",
    "/etc/docker/plugins",
    "/run/docker",
    "/opt/containerd",
];

struct HostState {
    users: usize,
    absent: Vec<PathBuf>,
}

static HOST: Mutex<HostState> = Mutex::new(HostState {
    users: 0,
    absent: Vec::new(),
});

struct HostGuard;

impl HostGuard {
    fn acquire() -> HostGuard {
        let mut h = HOST.lock().unwrap_or_else(|e| e.into_inner());
        if h.users == 0 {
            h.absent = HOST_PATHS
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect();
        }
        h.users += 1;
        HostGuard
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let mut h = HOST.lock().unwrap_or_else(|e| e.into_inner());
        h.users -= 1;
        if h.users > 0 {
            return;
        }
        for p in std::mem::take(&mut h.absent) {
            if p.is_dir() {
                remove_empty_dirs(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn remove_empty_dirs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

// --------------------------------------------------------------- dockerd

/// A private dockerd: its own data-root, exec-root, socket and CLI config
/// under `root`. Stopped, and everything under `root` unmounted, on drop.
struct Dockerd {
    root: PathBuf,
    storage_driver: String,
    child: Option<Child>,
    _host: HostGuard,
}

impl Dockerd {
    fn start(root: &Path, storage_driver: &str) -> Dockerd {
        let host = HostGuard::acquire();
        for d in ["data", "exec", "cli"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // An empty config so that /etc/docker/daemon.json is not read.
        std::fs::write(root.join("daemon.json"), b"{}\n").unwrap();
        let mut d = Dockerd {
            root: root.to_path_buf(),
            storage_driver: storage_driver.to_string(),
            child: None,
            _host: host,
        };
        d.spawn();
        d
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .unwrap();
        let r = &self.root;
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(r.join("daemon.json"))
            .arg("--data-root")
            .arg(r.join("data"))
            .arg("--exec-root")
            .arg(r.join("exec"))
            .arg("--pidfile")
            .arg(r.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", r.join("docker.sock").display()))
            .args([
                "--experimental",
                "--storage-driver",
                &self.storage_driver,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.try_docker(&["version"]).0 {
                return;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited ({s}):\n{}", self.log_tail());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not come up:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(40) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_CONFIG", self.root.join("cli"))
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.root.join("docker.sock").display()
            ))
            .args(args);
        c
    }

    /// Runs a docker command; (success, stdout, stderr).
    fn try_docker(&self, args: &[&str]) -> (bool, String, String) {
        run(self.command(args), COMMAND_TIMEOUT)
    }

    /// Runs a docker command that must succeed; its stdout.
    fn docker(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_docker(args);
        assert!(
            ok,
            "docker {args:?} failed: {err}\n--- dockerd log ---\n{}",
            self.log_tail()
        );
        out
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        for m in mounts_under(&self.root).iter().rev() {
            let _ = strata_fs::mount::unmount(m, true);
        }
    }
}

/// Runs `cmd` to completion within `timeout`; (success, stdout, stderr).
fn run(mut cmd: Command, timeout: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

// ----------------------------------------------------------------- image

/// A v2 `security.capability` value granting cap_net_raw (ping's).
const CAP_NET_RAW: &[u8] = &[
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The test image as a docker-archive (`docker save` format).
struct Image {
    archive: Vec<u8>,
    diff_ids: Vec<String>,
}

fn layers() -> Vec<Vec<u8>> {
    let l1 = images::busybox_layer()
        .expect("/bin/busybox is busybox-static")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/ping", 0o4755, b"\x7fELF ping")
        .xattr("security.capability", CAP_NET_RAW)
        .entry(
            hardlink_like_target("usr/bin/ping6", "usr/bin/ping", 0o4755),
            b"",
        )
        .xattr("security.capability", CAP_NET_RAW)
        .dir("data", 0o755)
        .file("data/keep", 0o644, b"keep me\n")
        .file("data/delete-me", 0o644, b"doomed\n")
        .dir("data/dir-gone", 0o755)
        .file("data/dir-gone/inner", 0o644, b"inner\n")
        .dir("data/opaque", 0o755)
        .file("data/opaque/old", 0o644, b"hidden by the opaque dir\n")
        .file("data/xattrs", 0o600, b"xattrs\n")
        .owned(1000, 1000)
        .xattr("user.comment", b"first")
        .xattr("trusted.strata", b"\x00\x01binary\xff")
        .build();
    let l2 = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .dir("data", 0o755)
        .whiteout("data/delete-me")
        .whiteout("data/dir-gone")
        .dir("data/opaque", 0o750)
        .opaque("data/opaque")
        .file("data/opaque/new", 0o644, b"new in the opaque dir\n")
        .file("data/linked", 0o644, b"two names\n")
        .hardlink("data/linked2", "data/linked")
        .file("data/xattrs", 0o640, b"xattrs, second\n")
        .owned(1001, 100)
        .xattr("user.comment", b"second")
        .build();
    let l3 = TarBuilder::new()
        .dir("data", 0o755)
        .file("data/dir-gone", 0o644, b"a file where a dir was\n")
        .symlink("data/link", "/etc/passwd")
        .node("data/fifo", EntryKind::Fifo, 0o600, 0, 0)
        .build();
    vec![l1, l2, l3]
}

/// A hard-link entry carrying its target's mode (and, added by the caller,
/// xattrs), as tar writers produce it from the file's own stat. Docker
/// applies a link entry's owner, xattrs and mode to the shared inode
/// (its chown drops setuid and file capabilities until they are set
/// again); Strata leaves the inode as its first entry made it. With real
/// tars both give the same file.
fn hardlink_like_target(path: &str, target: &str, mode: u32) -> Header {
    let mut h = Header::new(EntryKind::HardLink, path.as_bytes().to_vec());
    h.link_name = target.as_bytes().to_vec();
    h.mode = mode;
    h.mtime = Timestamp::from_secs(EPOCH);
    h
}

fn build_image() -> Image {
    let layers = layers();
    Image {
        archive: images::docker_archive(TAG, &layers, &["/bin/sh"]),
        diff_ids: images::diff_ids(&layers),
    }
}

/// The driver's id (dockerd's cache-id) of the layer `chain_id`.
fn cache_id(d: &Dockerd, driver_dir: &str, chain_id: &str) -> String {
    let p = d
        .data()
        .join("image")
        .join(driver_dir)
        .join("layerdb/sha256")
        .join(chain_id.trim_start_matches("sha256:"))
        .join("cache-id");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

// ------------------------------------------------------------- lifecycle

/// What Docker reports for the shared steps; compared between Strata and
/// overlay2.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    rootfs: String,
    docker_diff: Vec<String>,
    ps_size: String,
    df: Vec<String>,
    saved: BTreeMap<String, Vec<String>>,
    committed_layers: usize,
    export: Vec<String>,
}

/// The container's writes: a new file, a deletion, a change, a new dir,
/// a removed dir, a copied-up hard link, a changed xattr'd file.
const SCRIPT: &str = "echo hi > /new.txt && rm /data/keep && echo more >> /etc/passwd \
    && mkdir -p /made/deep && rm -r /data/opaque && echo again >> /data/linked \
    && echo 0 > /data/xattrs && true";

/// The common steps: load, check the image's root filesystem, run a
/// container that changes files, diff, sizes, commit, save, export, and
/// remove what was made (the image stays).
fn exercise(d: &Dockerd, image: &Image, rootfs: &dyn Fn(&Dockerd) -> String) -> Observed {
    let archive = d.root.join("image.tar");
    std::fs::write(&archive, &image.archive).unwrap();
    let out = d.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(TAG), "{out}");
    let layers: Vec<String> = serde_json::from_str(&d.docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        TAG,
    ]))
    .unwrap();
    assert_eq!(layers, image.diff_ids);
    let rootfs = rootfs(d);

    d.docker(&[
        "run",
        "--network",
        "none",
        "--name",
        "c1",
        TAG,
        "sh",
        "-c",
        SCRIPT,
    ]);
    let mut docker_diff: Vec<String> = d
        .docker(&["diff", "c1"])
        .lines()
        .map(String::from)
        .collect();
    docker_diff.sort();
    let ps_size = d
        .docker(&["ps", "-as", "--filter", "name=c1", "--format", "{{.Size}}"])
        .trim()
        .to_string();
    let df: Vec<String> = d
        .docker(&[
            "system",
            "df",
            "--format",
            "{{.Type}} {{.TotalCount}} {{.Size}}",
        ])
        .lines()
        .map(String::from)
        .collect();

    d.docker(&["commit", "c1", COMMITTED]);
    let committed: Vec<String> = serde_json::from_str(&d.docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        COMMITTED,
    ]))
    .unwrap();
    assert_eq!(committed.len(), 4);
    assert_eq!(committed[..3], image.diff_ids[..]);

    let save = d.root.join("save.tar");
    d.docker(&["save", "-o", save.to_str().unwrap(), TAG, COMMITTED]);
    let saved = saved_layers(&std::fs::read(&save).unwrap());
    assert_eq!(
        saved[TAG], image.diff_ids,
        "docker save changed the image's layers"
    );
    assert_eq!(
        saved[COMMITTED], committed,
        "docker save changed the committed layers"
    );

    let export = d.root.join("export.tar");
    d.docker(&["export", "-o", export.to_str().unwrap(), "c1"]);
    let mut export: Vec<String> = tar_entries(&std::fs::read(&export).unwrap())
        .iter()
        .map(|(h, _)| String::from_utf8_lossy(&h.path).into_owned())
        .collect();
    export.sort();
    assert!(export.contains(&"new.txt".to_string()), "{export:?}");
    assert!(!export.contains(&"data/keep".to_string()), "{export:?}");

    d.docker(&["rm", "c1"]);
    d.docker(&["rmi", COMMITTED]);
    Observed {
        rootfs,
        docker_diff,
        ps_size,
        df,
        saved,
        committed_layers: committed.len(),
        export,
    }
}

/// `docker save` output: each tag's layer digests, computed from the layer
/// tars themselves (a layer saved twice is a symlink to the first copy).
fn saved_layers(archive: &[u8]) -> BTreeMap<String, Vec<String>> {
    let entries = tar_entries(archive);
    let by_name: BTreeMap<String, &(strata_tar::Header, Vec<u8>)> = entries
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.0.path).into_owned(), e))
        .collect();
    let file = |name: &str| -> Vec<u8> {
        let mut name = name.to_string();
        for _ in 0..8 {
            let (h, data) = by_name[&name];
            if h.kind != EntryKind::Symlink {
                return data.clone();
            }
            let target = String::from_utf8_lossy(&h.link_name).into_owned();
            let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
            let joined = dir.join(&target);
            let mut parts: Vec<String> = Vec::new();
            for c in joined.components() {
                match c {
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                    _ => {}
                }
            }
            name = parts.join("/");
        }
        panic!("symlink loop at {name}")
    };
    let manifest: Value = serde_json::from_slice(&file("manifest.json")).unwrap();
    let mut out = BTreeMap::new();
    for m in manifest.as_array().unwrap() {
        let digests: Vec<String> = m["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| sha256(&file(l.as_str().unwrap())))
            .collect();
        for tag in m["RepoTags"].as_array().unwrap() {
            out.insert(tag.as_str().unwrap().to_string(), digests.clone());
        }
    }
    out
}

fn tree(dir: &Path) -> String {
    manifest(dir, &ManifestOptions::default())
}

/// Docker's own overlay2, once per test process.
fn reference(image: &Image) -> &'static Observed {
    static REFERENCE: OnceLock<Observed> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("strata-e2e-overlay2")
            .tempdir_in("/var/tmp")
            .unwrap();
        let d = Dockerd::start(tmp.path(), "overlay2");
        let top = images::chain_ids(&image.diff_ids).pop().unwrap();
        let observed = exercise(&d, image, &|d| {
            // overlay2 keeps each layer's diff/ and, for layers with
            // parents, a `lower` file of short links: mount them the way
            // overlay2 does, read-only.
            let ovl = d.data().join("overlay2");
            let id = cache_id(d, "overlay2", &top);
            let mut lowers = vec![ovl.join(&id).join("diff")];
            let lower = std::fs::read_to_string(ovl.join(&id).join("lower")).unwrap();
            lowers.extend(lower.trim().split(':').map(|l| ovl.join(l)));
            let target = d.root.join("overlay2-view");
            std::fs::create_dir_all(&target).unwrap();
            let lowerdir = lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let (ok, _, err) = run(
                {
                    let mut c = Command::new("mount");
                    c.args(["-t", "overlay", "overlay", "-o"])
                        .arg(format!("ro,lowerdir={lowerdir}"))
                        .arg(&target);
                    c
                },
                COMMAND_TIMEOUT,
            );
            assert!(ok, "mount overlay2's view: {err}");
            let t = tree(&target);
            strata_fs::mount::unmount(&target, false).unwrap();
            t
        });
        d.docker(&["rmi", TAG]);
        observed
    })
}

// ---------------------------------------------------------------- strata

fn docker_on_strata(driver: &str) {
    let case = format!("docker_on_strata_{driver}");
    if !prerequisites(&case) {
        return;
    }
    let image = build_image();
    let tmp = tempfile::Builder::new()
        .prefix("strata-e2e")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = tmp.path();
    let name = format!("strata-e2e-{}-{driver}", std::process::id());
    let socket = root.join("plugin.sock");
    let config = Config {
        home: None,
        driver: Some(driver.to_string()),
        driver_opts: Vec::new(),
        state_file: Some(root.join("plugin.sock.init.json")),
    };
    let host = HostGuard::acquire();
    let spec = strata_plugin::socket::write_spec_file(
        &Path::new("/etc/docker/plugins").join(format!("{name}.spec")),
        &socket,
    )
    .unwrap();
    let mut plugin = Some(TestPlugin::start(
        &socket,
        config.clone(),
        Duration::from_secs(10),
    ));
    let mut d = Dockerd::start(root, &name);
    let home = d.data().join(&name);
    let info = d.docker(&["info", "--format", "{{.Driver}} {{json .DriverStatus}}"]);
    assert!(
        info.contains(&format!("[\"Driver\",\"{driver}\"]")),
        "{info}"
    );

    let top = images::chain_ids(&image.diff_ids).pop().unwrap();
    let observed = exercise(&d, &image, &|d| {
        let id = cache_id(d, &name, &top);
        let dir = ok(&socket, "GraphDriver.Get", json!({ "ID": id }))["Dir"]
            .as_str()
            .unwrap()
            .to_string();
        let t = tree(Path::new(&dir));
        ok(&socket, "GraphDriver.Put", json!({ "ID": id }));
        t
    });
    let want = reference(&image);
    assert_eq!(
        observed.rootfs, want.rootfs,
        "merged rootfs differs from overlay2's"
    );
    let mut want_diff = want.docker_diff.clone();
    if driver == "vfs" {
        // The script appends to /data/linked, one of two hard-linked
        // names. overlay copies the file up, which splits the pair; a vfs
        // layer is a full copy, where both names stay one file and so
        // both changed (as with Docker's own vfs driver).
        want_diff.push("C /data/linked2".into());
        want_diff.sort();
        assert_eq!(
            d.docker(&[
                "run",
                "--rm",
                "--network",
                "none",
                TAG,
                "cat",
                "/data/linked2"
            ]),
            "two names\n"
        );
    }
    assert_eq!(observed.docker_diff, want_diff, "docker diff");
    eprintln!(
        "{driver}: docker diff {:?}; ps -s {:?}; system df {:?}",
        observed.docker_diff, observed.ps_size, observed.df
    );
    assert_eq!(observed.ps_size, want.ps_size, "docker ps -s");
    assert_eq!(observed.df, want.df, "docker system df");
    assert_eq!(observed.saved.len(), want.saved.len());
    assert_eq!(observed.committed_layers, want.committed_layers);
    assert_eq!(observed.export, want.export, "docker export");

    // A running container survives a plugin restart: its root filesystem
    // stays mounted, and the new plugin process (which gets no Init)
    // serves the stop and the next start.
    d.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "c2",
        TAG,
        "sleep",
        "600",
    ]);
    d.docker(&["exec", "c2", "sh", "-c", "echo during > /during.txt"]);
    let pid = d.docker(&["inspect", "--format", "{{.State.Pid}}", "c2"]);
    let in_container = PathBuf::from(format!("/proc/{}/root", pid.trim()));
    plugin.take().unwrap().stop();
    // While no plugin runs, dockerd cannot serve calls that need it (even
    // `docker exec` asks for the layer's metadata), but the container
    // runs on: its root filesystem is still there.
    assert_eq!(
        std::fs::read(in_container.join("data/linked")).unwrap(),
        b"two names\n"
    );
    std::fs::write(in_container.join("tmp/while-down"), b"written\n").unwrap();
    plugin = Some(TestPlugin::start(
        &socket,
        config.clone(),
        Duration::from_secs(10),
    ));
    assert_eq!(
        d.docker(&["exec", "c2", "cat", "/tmp/while-down"]),
        "written\n"
    );
    assert_eq!(d.docker(&["exec", "c2", "cat", "/during.txt"]), "during\n");
    d.docker(&["stop", "-t", "1", "c2"]);
    d.docker(&["start", "c2"]);
    assert_eq!(d.docker(&["exec", "c2", "cat", "/during.txt"]), "during\n");

    // dockerd restarts with its containers and images.
    d.restart();
    assert!(
        d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains(TAG)
    );
    assert!(
        d.docker(&["ps", "-a", "--format", "{{.Names}}"])
            .contains("c2")
    );
    d.docker(&["start", "c2"]);
    assert_eq!(d.docker(&["exec", "c2", "cat", "/during.txt"]), "during\n");
    assert_eq!(
        d.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            TAG,
            "cat",
            "/data/dir-gone"
        ]),
        "a file where a dir was\n"
    );

    // Everything removed: no layer, no mount, no leftover is kept.
    d.docker(&["rm", "-f", "c2"]);
    d.docker(&["rmi", TAG]);
    assert!(layer_dirs(&home).is_empty(), "{:?}", layer_dirs(&home));
    assert!(staging_entries(&home).is_empty());
    assert!(mounts_under(&home).is_empty(), "{:?}", mounts_under(&home));
    drop(d);
    drop(plugin);
    drop(spec);
    drop(host);
}

#[test]
fn docker_on_strata_overlay() {
    docker_on_strata("overlay");
}

#[test]
fn docker_on_strata_vfs() {
    docker_on_strata("vfs");
}
