//! `strata serve` as a process, the way an init system runs it: the socket
//! (mode 0600) and spec file it makes, its startup line (`--json`), one
//! JSON log line per call (`--log-format json`), where the home comes from
//! (dockerd's Init, or `--home`), a stop on SIGTERM or SIGINT that removes
//! the socket and spec file, and a restart that serves without a new Init.
//! The protocol itself is tested in crates/strata-plugin; these use the
//! vfs driver, so they need no privileges.
// Test code: an unwrap that fails is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A running `strata serve`; killed on drop if a test fails before it
/// stops it.
struct Serve {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: PathBuf,
}

impl Serve {
    /// Starts `strata <args>` and waits for its startup line.
    fn start(args: &[&str], stderr: &Path) -> (Serve, String) {
        let mut child = Command::new(STRATA)
            .args(args)
            .env_remove("STRATA_HOME")
            .env_remove("STRATA_DRIVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Serve {
            child,
            stdout,
            stderr: stderr.to_path_buf(),
        };
        let mut line = String::new();
        s.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "no startup line; stderr:\n{}", s.log());
        (s, line)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `sig` and waits for the exit; returns whether it succeeded.
    fn stop(&mut self, sig: rustix::process::Signal) -> bool {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "strata serve did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs a JSON body; (status, reply).
fn call(socket: &Path, endpoint: &str, body: Value) -> (u16, Value) {
    let body = format!("{body}\n");
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST /{endpoint} HTTP/1.1\r\nHost: plugin.moby.localhost\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8(reply).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

fn ok(socket: &Path, endpoint: &str, body: Value) -> Value {
    let (status, reply) = call(socket, endpoint, body);
    assert_eq!(status, 200, "{endpoint}: {reply}");
    reply
}

const LAYER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn serve_lifecycle() {
    let t = tempfile::tempdir().unwrap();
    let socket = t.path().join("dev.sock");
    let spec = t.path().join("plugins/dev.spec");
    let log = t.path().join("serve.log");
    let args = [
        "--json",
        "--driver",
        "vfs",
        "serve",
        "--docker",
        socket.to_str().unwrap(),
        "--spec-file",
        spec.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    let (mut serve, line) = Serve::start(&args, &log);
    let started: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        started,
        json!({"docker": {"socket": socket, "spec_file": spec, "storage_driver": "dev"}})
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        format!("unix://{}\n", socket.display())
    );

    // What dockerd does at start, then a layer.
    let home = t.path().join("data/dev");
    assert_eq!(
        ok(&socket, "Plugin.Activate", json!({})),
        json!({"Implements": ["GraphDriver"]})
    );
    ok(
        &socket,
        "GraphDriver.Init",
        json!({"Home": home, "Opts": null, "UIDMaps": null, "GIDMaps": null}),
    );
    ok(&socket, "GraphDriver.Create", json!({"ID": LAYER}));
    assert!(home.join(LAYER).is_dir());
    let (status, reply) = call(&socket, "GraphDriver.Get", json!({"ID": "../x"}));
    assert_eq!(status, 400);
    assert!(reply["Err"].as_str().unwrap().contains("invalid layer id"));

    assert!(serve.stop(rustix::process::Signal::TERM));
    assert!(!socket.exists(), "socket left behind");
    assert!(!spec.exists(), "spec file left behind");
    // One JSON line per call, with the layer, duration and bytes.
    let lines: Vec<Value> = serve
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let create = lines
        .iter()
        .find(|l| l["call"] == "GraphDriver.Create")
        .unwrap_or_else(|| panic!("no Create line in {lines:?}"));
    assert_eq!(create["id"], LAYER);
    assert_eq!(create["status"], 200);
    assert!(create["ms"].is_number() && create["bytes_in"].is_number());
    let failed = lines.iter().find(|l| l["status"] == 400).unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("../x"),
        "{failed}"
    );

    // A restarted plugin gets no Init from a running dockerd: it serves the
    // remembered home at once.
    let (mut serve, _) = Serve::start(&args, &log);
    assert_eq!(
        ok(&socket, "GraphDriver.Exists", json!({"ID": LAYER})),
        json!({"Exists": true})
    );
    assert!(serve.stop(rustix::process::Signal::INT));
    assert!(!socket.exists());
}

#[test]
fn serve_home_overrides_the_daemons() {
    let t = tempfile::tempdir().unwrap();
    let socket = t.path().join("p.sock");
    let spec = t.path().join("p.spec");
    let fixed = t.path().join("fixed");
    let log = t.path().join("serve.log");
    for args in [
        vec![
            "--home",
            fixed.to_str().unwrap(),
            "--driver",
            "vfs",
            "serve",
        ],
        vec![
            "--driver",
            "vfs",
            "serve",
            "--home",
            fixed.to_str().unwrap(),
        ],
    ] {
        let mut args = args.clone();
        args.extend(["--docker", socket.to_str().unwrap()]);
        args.extend(["--spec-file", spec.to_str().unwrap()]);
        let (mut serve, line) = Serve::start(&args, &log);
        assert!(line.contains("--storage-driver=p"), "{line}");
        let daemons = t.path().join("data/p");
        ok(&socket, "GraphDriver.Init", json!({"Home": daemons}));
        ok(&socket, "GraphDriver.Create", json!({"ID": LAYER}));
        assert!(fixed.join(LAYER).is_dir());
        assert!(!daemons.exists());
        ok(&socket, "GraphDriver.Remove", json!({"ID": LAYER}));
        assert!(serve.stop(rustix::process::Signal::TERM));
    }
}

#[test]
fn serve_leaves_a_live_socket_alone() {
    let t = tempfile::tempdir().unwrap();
    let socket = t.path().join("p.sock");
    let spec = t.path().join("p.spec");
    let args = [
        "--driver",
        "vfs",
        "serve",
        "--docker",
        socket.to_str().unwrap(),
        "--spec-file",
        spec.to_str().unwrap(),
    ];
    let (mut first, _) = Serve::start(&args, &t.path().join("1.log"));
    let out = Command::new(STRATA).args(args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is serving"), "{err}");
    ok(&socket, "Plugin.Activate", json!({}));
    assert!(first.stop(rustix::process::Signal::TERM));
}

/// Both listeners in one process over one home: containerd's snapshotter
/// socket (0600) beside Docker's plugin, and `strata ls` naming the
/// containerd snapshots while the server holds the metadata database.
#[test]
fn serve_containerd_beside_docker_and_ls_names() {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("serve_containerd: needs root (overlay layers), and CI must not skip it");
        }
        eprintln!("SKIP: serve_containerd: needs root (overlay layers)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    // A committed snapshot and an active one on top, made by the library.
    {
        let driver = strata_driver::overlay::OverlayDriver::open_shared(&home, &[]).unwrap();
        let snap = strata_snapshotter::Snapshotter::open(driver).unwrap();
        snap.prepare("default/1/extract", "", Default::default())
            .unwrap();
        snap.commit("default/2/base", "default/1/extract", Default::default())
            .unwrap();
        snap.prepare("default/3/work", "default/2/base", Default::default())
            .unwrap();
    }
    let ctrd = t.path().join("run/ctrd.sock");
    let docker = t.path().join("dk.sock");
    let spec = t.path().join("dk.spec");
    let log = t.path().join("serve.log");
    let (mut serve, line) = Serve::start(
        &[
            "--json",
            "--home",
            home.to_str().unwrap(),
            "serve",
            "--containerd",
            ctrd.to_str().unwrap(),
            "--docker",
            docker.to_str().unwrap(),
            "--spec-file",
            spec.to_str().unwrap(),
        ],
        &log,
    );
    let started: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(started["containerd"]["socket"], json!(ctrd));
    assert_eq!(started["containerd"]["home"], json!(home));
    assert_eq!(started["docker"]["socket"], json!(docker));
    for s in [&ctrd, &docker] {
        let mode = std::fs::metadata(s).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", s.display());
    }
    // The Docker side serves the same home (`--home` given).
    assert_eq!(
        ok(&docker, "Plugin.Activate", json!({})),
        json!({"Implements": ["GraphDriver"]})
    );
    ok(&docker, "GraphDriver.Create", json!({"ID": LAYER}));

    let out = Command::new(STRATA)
        .args(["--json", "--home", home.to_str().unwrap(), "ls"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let named = |key: &str| {
        rows.iter()
            .find(|r| r["containerd"]["key"] == key)
            .unwrap_or_else(|| panic!("no layer named {key} in {rows:?}"))
            .clone()
    };
    let base = named("default/2/base");
    assert_eq!(base["containerd"]["kind"], "committed");
    let work = named("default/3/work");
    assert_eq!(work["containerd"]["kind"], "active");
    assert_eq!(work["containerd"]["parent"], "default/2/base");
    assert_eq!(work["parent"], base["id"]);
    let docker_layer = rows.iter().find(|r| r["id"] == LAYER).unwrap();
    assert!(docker_layer.get("containerd").is_none(), "{docker_layer}");
    // The text listing shows the names too.
    let out = Command::new(STRATA)
        .args(["--home", home.to_str().unwrap(), "ls"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("default/3/work"), "{text}");

    assert!(serve.stop(rustix::process::Signal::TERM), "{}", serve.log());
    assert!(!docker.exists());
}
