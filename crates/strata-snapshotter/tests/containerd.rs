//! End to end with Debian's containerd 1.6 and ctr: a private containerd
//! (own root, state, sockets; `[proxy_plugins.strata]` pointing at a
//! snapshotter served from this process) imports images built here,
//! runs containers on them, lists, inspects, views and removes snapshots,
//! garbage-collects them, and survives restarts of both sides. The merged
//! rootfs is compared with what containerd's own overlayfs snapshotter
//! gives for the same image.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, run};
use strata_conformance::manifest::{ManifestOptions, manifest};
use strata_conformance::tarbuild::TarBuilder;
use strata_conformance::{images, oracle};

/// Where containerd's shims and runc keep state, whatever the config says.
const RUN_DIR: &str = "/run/containerd";

const TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "containerd-shim-runc-v2",
    "busybox",
];

/// A private containerd, stopped (and its mounts released) on drop.
struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    ns: String,
    strata_sock: PathBuf,
    child: Option<Child>,
    /// Whether /run/containerd was made by this test (shims and runc keep
    /// state there whatever the config says), so it goes again at the end.
    made_run_dir: bool,
}

impl Containerd {
    fn start(dir: &Path, strata_sock: &Path) -> Containerd {
        std::fs::create_dir_all(dir.join("fifo")).unwrap();
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            sock: dir.join("containerd.sock"),
            ns: format!("strata-e2e-{:08x}", rand::random::<u32>()),
            strata_sock: strata_sock.to_path_buf(),
            child: None,
            made_run_dir: !Path::new(RUN_DIR).exists(),
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        let w = self.dir.display();
        let config = format!(
            r#"version = 2
root = "{w}/root"
state = "{w}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{w}/containerd.sock"
[ttrpc]
  address = "{w}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
[proxy_plugins]
  [proxy_plugins.strata]
    type = "snapshot"
    address = "{}"
"#,
            self.strata_sock.display()
        );
        std::fs::write(self.dir.join("config.toml"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self
                .ctr(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up:\n{}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        log[log.len().saturating_sub(4000)..].to_string()
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .args(["-n", &self.ns])
            .args(args);
        c
    }

    /// Runs ctr; panics with its output (and containerd's log) on failure.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args).output().unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\n{}{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Retries `ctr args` until it works (containerd redials a restarted
    /// snapshotter with a backoff of up to a few seconds).
    #[track_caller]
    fn eventually(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = self.ctr(args).output().unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "ctr {args:?} kept failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            );
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // Mounts a failed test left (views, container rootfs), deepest first.
        if let Ok(mounts) = strata_fs::mountinfo::read_self() {
            let mut under: Vec<PathBuf> = strata_fs::mountinfo::mounts_under(&mounts, &self.dir)
                .iter()
                .map(|m| m.mount_point.clone())
                .collect();
            under.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in under {
                let _ = strata_fs::mount::unmount(&p, true);
            }
        }
        // runc's state dir for this namespace is made outside our dir; the
        // shared dirs go only if this test made them and they are empty.
        let run = Path::new(RUN_DIR);
        let _ = std::fs::remove_dir(run.join("runc").join(&self.ns));
        if self.made_run_dir {
            for d in ["runc", "s", "fifo"] {
                let _ = std::fs::remove_dir(run.join(d));
            }
            let _ = std::fs::remove_dir(run);
        }
    }
}

/// A runnable busybox image: the shared busybox base, then a layer that
/// adds, deletes and replaces.
fn busybox_layers() -> Option<Vec<Vec<u8>>> {
    let l1 = images::busybox_layer()?
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .file("etc/old", 0o644, b"to be deleted\n")
        .dir("opt", 0o755)
        .dir("opt/old", 0o755)
        .file("opt/old/file", 0o644, b"hidden by an opaque dir\n")
        .build();
    let l2 = TarBuilder::new()
        .dir("etc", 0o755)
        .whiteout("etc/old")
        .file("etc/motd", 0o644, b"layer two\n")
        .dir("opt", 0o755)
        .dir("opt/old", 0o755)
        .opaque("opt/old")
        .file("opt/old/new", 0o644, b"new\n")
        .build();
    Some(vec![l1, l2])
}

/// Chain ids of `layers` (containerd's snapshot names), base first.
fn chain_ids(layers: &[Vec<u8>]) -> Vec<String> {
    images::chain_ids(&images::diff_ids(layers))
}

struct Env {
    // Field order is drop order: containerd goes before the snapshotter
    // it talks to, the temp dir last.
    ctrd: Containerd,
    server: Option<Server>,
    tmp: tempfile::TempDir,
}

impl Env {
    fn new(case: &str) -> Option<(Env, Vec<Vec<u8>>)> {
        if !common::ready(case, TOOLS) {
            return None;
        }
        let Some(busybox) = busybox_layers() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{case}: /bin/busybox is not busybox-static");
            }
            eprintln!("SKIP: {case}: /bin/busybox is not the static busybox (busybox-static)");
            return None;
        };
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(&tmp.path().join("home"), &tmp.path().join("strata.sock"));
        let ctrd = Containerd::start(&tmp.path().join("ctrd"), &tmp.path().join("strata.sock"));
        Some((
            Env {
                ctrd,
                server: Some(server),
                tmp,
            },
            busybox,
        ))
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn import(&self, name: &str, archive: &[u8], snapshotter: &str) {
        let path = self.tmp.path().join(format!("{name}-{snapshotter}.tar"));
        std::fs::write(&path, archive).unwrap();
        self.ctrd.ok(&[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            path.to_str().unwrap(),
        ]);
    }

    /// Mounts a view of snapshot `parent` with ctr (`view --target`
    /// prints the mount commands) and returns the manifest of its tree.
    /// The view carries no GC root, so containerd's collector may take it
    /// while it is mounted (its parents stay: they hold the tree); its
    /// removal afterwards is allowed to find it gone.
    fn view_manifest(&self, snapshotter: &str, parent: &str, opts: &ManifestOptions) -> String {
        let key = format!("view-{snapshotter}");
        let target = self.tmp.path().join(format!("mnt-{snapshotter}"));
        std::fs::create_dir_all(&target).unwrap();
        let t = target.to_str().unwrap();
        let cmd = self.ctrd.ok(&[
            "snapshots",
            "--snapshotter",
            snapshotter,
            "view",
            "--target",
            t,
            &key,
            parent,
        ]);
        run(Command::new("sh").args(["-c", &cmd]));
        let m = manifest(&target, opts);
        run(Command::new("umount").arg(&target));
        self.remove_snapshot(snapshotter, &key);
        m
    }

    /// `ctr snapshots rm`, allowed to find the snapshot collected already.
    fn remove_snapshot(&self, snapshotter: &str, key: &str) {
        let out = self
            .ctrd
            .ctr(&["snapshots", "--snapshotter", snapshotter, "rm", key])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("not found"),
            "rm {key}: {err}"
        );
    }

    fn run_container(&self, image: &str, extra: &[&str], script: &str) -> String {
        let id = format!("c-{:08x}", rand::random::<u32>());
        let fifo = self.ctrd.dir.join("fifo");
        let mut args = vec![
            "run",
            "--rm",
            "--snapshotter",
            "strata",
            "--fifo-dir",
            fifo.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, &id, "/bin/sh", "-c", script]);
        self.ctrd.ok(&args)
    }

    fn restart_strata(&mut self) {
        let s = self.server.take().unwrap();
        let (home, sock) = (s.home.clone(), s.socket.clone());
        s.stop();
        self.server = Some(Server::start(&home, &sock));
    }
}

const BUSYBOX: &str = "docker.io/library/strata-busybox:latest";
const MULTI: &str = "docker.io/library/strata-multi:latest";

#[test]
fn import_run_inspect_and_collect() {
    let Some((e, busybox)) = Env::new("import_run_inspect_and_collect") else {
        return;
    };
    let multi = oracle::containerd_layers();
    e.import(
        "multi",
        &images::docker_archive("strata-multi:latest", &multi, &["/bin/sh"]),
        "strata",
    );
    e.import(
        "busybox",
        &images::docker_archive("strata-busybox:latest", &busybox, &["/bin/sh"]),
        "strata",
    );
    let chains = chain_ids(&multi);
    let top = chains.last().unwrap();

    let ls = e.ctrd.ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    for c in chains.iter().chain(chain_ids(&busybox).iter()) {
        assert!(ls.contains(c.as_str()), "{c} missing from:\n{ls}");
    }
    let info = e
        .ctrd
        .ok(&["snapshots", "--snapshotter", "strata", "info", top]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Kind"], "Committed", "{info}");
    assert_eq!(info["Parent"], chains[2].as_str());
    let usage = e
        .ctrd
        .ok(&["snapshots", "--snapshotter", "strata", "usage", &chains[0]]);
    assert!(usage.contains(chains[0].as_str()), "{usage}");
    let tree = e.ctrd.ok(&["snapshots", "--snapshotter", "strata", "tree"]);
    assert!(tree.contains(top.as_str()), "{tree}");

    // The store holds them as layers under their containerd names.
    let names = strata_snapshotter::names(&e.home()).unwrap();
    assert_eq!(names.len(), 6, "{names:?}");
    for c in &chains {
        assert!(
            names.values().any(|n| n.key.ends_with(&format!("/{c}"))),
            "{c}: {names:?}"
        );
    }

    // The merged rootfs is what containerd's own overlayfs snapshotter
    // gives for the same image.
    e.import(
        "multi",
        &images::docker_archive("strata-multi:latest", &multi, &["/bin/sh"]),
        "overlayfs",
    );
    let opts = ManifestOptions::default();
    let ours = e.view_manifest("strata", top, &opts);
    let theirs = e.view_manifest("overlayfs", top, &opts);
    assert!(ours.contains("usr/bin/newtool-link"), "{ours}");
    assert!(
        !ours.contains("usr/bin/wall") && ours.contains("var/lib/new/deep"),
        "{ours}"
    );
    assert_eq!(ours, theirs);

    // Mounts of an active snapshot are one overlay mount with an upper.
    let mounts = e.ctrd.ok(&[
        "snapshots",
        "--snapshotter",
        "strata",
        "prepare",
        "--target",
        "/mnt",
        "active-1",
        top,
    ]);
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
    assert!(
        mounts.starts_with("mount -t overlay overlay /mnt -o index=off,workdir="),
        "{mounts}"
    );
    assert!(
        mounts.contains(",upperdir=") && mounts.contains(",lowerdir="),
        "{mounts}"
    );
    e.remove_snapshot("strata", "active-1");

    // `ctr snapshots mounts` of a container's snapshot (a container keeps
    // its snapshot from the collector): an overlay on both image layers.
    e.ctrd.ok(&[
        "containers",
        "create",
        "--snapshotter",
        "strata",
        BUSYBOX,
        "mounts-check",
    ]);
    let mounts = e.ctrd.ok(&[
        "snapshots",
        "--snapshotter",
        "strata",
        "mounts",
        "/mnt",
        "mounts-check",
    ]);
    let lower = mounts.split(",lowerdir=").nth(1).unwrap_or_default();
    assert_eq!(lower.trim().split(':').count(), 2, "{mounts}");
    assert!(mounts.contains(",upperdir="), "{mounts}");
    e.ctrd.ok(&["containers", "rm", "mounts-check"]);

    // A container runs on it and writes.
    let out = e.run_container(
        BUSYBOX,
        &[],
        "echo written > /hello && cat /hello /etc/motd && ls /opt/old && ls /etc",
    );
    // /opt/old is opaque in layer two, /etc/old deleted by a whiteout.
    assert_eq!(out, "written\nlayer two\nnew\ngroup\nmotd\npasswd\n");

    // A snapshot label gives the container's writable layer a limit.
    if common::ready("size label", &["mkfs.ext4"]) {
        let out = e.run_container(
            BUSYBOX,
            &[
                "--snapshotter-label",
                "containerd.io/snapshot/strata.size=20M",
            ],
            "dd if=/dev/zero of=/big bs=1M count=40 2>&1; echo rc=$?",
        );
        assert!(
            out.contains("No space left on device") && !out.contains("rc=0"),
            "{out}"
        );
    }

    // Removing the images lets containerd's GC remove every snapshot,
    // leaf first; the store ends empty.
    e.ctrd.ok(&["images", "rm", "--sync", MULTI, BUSYBOX]);
    let ls = e.ctrd.ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(ls.lines().count(), 1, "only the header is left:\n{ls}");
    assert!(strata_snapshotter::names(&e.home()).unwrap().is_empty());
    common::wait_layers(&e.home(), &[]);
}

#[test]
fn restarts_keep_images() {
    let Some((mut e, busybox)) = Env::new("restarts_keep_images") else {
        return;
    };
    e.import(
        "busybox",
        &images::docker_archive("strata-busybox:latest", &busybox, &["/bin/sh"]),
        "strata",
    );
    let before = strata_snapshotter::names(&e.home()).unwrap();
    assert_eq!(before.len(), 2);

    e.ctrd.restart();
    let out = e.run_container(BUSYBOX, &[], "cat /etc/motd");
    assert_eq!(out, "layer two\n");

    e.restart_strata();
    e.ctrd.eventually(&[
        "snapshots",
        "--snapshotter",
        "strata",
        "info",
        &chain_ids(&busybox)[1],
    ]);
    let out = e.run_container(BUSYBOX, &[], "echo again > /x && cat /x");
    assert_eq!(out, "again\n");

    e.ctrd.restart();
    e.restart_strata();
    e.ctrd
        .eventually(&["snapshots", "--snapshotter", "strata", "usage"]);
    let out = e.run_container(BUSYBOX, &[], "cat /etc/passwd");
    assert!(out.starts_with("root:x:0:0"), "{out}");
    let after = strata_snapshotter::names(&e.home()).unwrap();
    for (l, n) in &before {
        assert_eq!(after.get(l), Some(n), "{l} kept");
    }
    e.ctrd.ok(&["images", "rm", "--sync", BUSYBOX]);
    common::wait_layers(&e.home(), &[]);
}
