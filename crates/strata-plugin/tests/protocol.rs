//! The plugin protocol over a real unix socket, every endpoint, with the
//! bodies dockerd 20.10 sends (no Content-Type, `{}\n` for no arguments,
//! chunked raw tars for ApplyDiff), and the ways a request can be wrong or
//! a client can fail: malformed JSON, missing fields, unknown ids, ids that
//! try to name paths, a body cut short, a client gone mid-Diff, a plugin
//! stopped mid-import. Each must give a clear error and leave the store as
//! it was.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strata_conformance::cases::{TmpHome, tar_entries};
use strata_conformance::tarbuild::TarBuilder;
use strata_plugin::Config;

/// A plugin on a private socket, initialized on a home in a temp dir.
struct Env {
    tmp: TmpHome,
    plugin: Option<TestPlugin>,
}

impl Env {
    /// A plugin started as `strata serve` starts it without `--home`:
    /// dockerd's Init names the home.
    fn new(driver: &str) -> Env {
        let env = Env::uninitialized(driver);
        env.init(json!({ "Home": env.home(), "Opts": null, "UIDMaps": null, "GIDMaps": null }));
        env
    }

    fn uninitialized(driver: &str) -> Env {
        Env::uninitialized_with_grace(driver, Duration::from_secs(5))
    }

    fn uninitialized_with_grace(driver: &str, grace: Duration) -> Env {
        let tmp = TmpHome::new();
        let mut env = Env { tmp, plugin: None };
        let config = env.config(driver);
        env.start_with(config, grace);
        env
    }

    fn config(&self, driver: &str) -> Config {
        Config {
            home: None,
            driver: Some(driver.into()),
            driver_opts: Vec::new(),
            state_file: Some(self.tmp.path().join("plugin.sock.init.json")),
        }
    }

    fn start(&mut self, driver: &str) {
        let config = self.config(driver);
        self.start_with(config, Duration::from_secs(5));
    }

    fn start_with(&mut self, config: Config, grace: Duration) {
        let socket = self.tmp.path().join("plugin.sock");
        self.plugin = Some(TestPlugin::start(&socket, config, grace));
    }

    fn stop(&mut self) {
        if let Some(p) = self.plugin.take() {
            p.stop();
        }
    }

    fn init(&self, body: Value) {
        assert_eq!(
            ok(self.sock(), "Plugin.Activate", json!({})),
            json!({"Implements": ["GraphDriver"]})
        );
        ok(self.sock(), "GraphDriver.Init", body);
    }

    fn sock(&self) -> &Path {
        &self.plugin.as_ref().unwrap().socket
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn call(&self, endpoint: &str, body: Value) -> Reply {
        call(self.sock(), endpoint, body)
    }

    fn ok(&self, endpoint: &str, body: Value) -> Value {
        ok(self.sock(), endpoint, body)
    }

    /// Whether `id` exists, as `Exists` says it.
    fn exists(&self, id: &str) -> bool {
        let reply = self.ok("GraphDriver.Exists", json!({"ID": id}));
        let exists = reply["Exists"].as_bool().unwrap();
        assert_eq!(reply, json!({"Exists": exists}));
        exists
    }

    /// A read-write layer `id` on `parent`.
    fn create_rw(&self, id: &str, parent: &str) {
        self.ok(
            "GraphDriver.CreateReadWrite",
            json!({"ID": id, "Parent": parent}),
        );
    }

    /// Mounts `id` and gives its directory.
    fn get(&self, id: &str) -> PathBuf {
        PathBuf::from(
            self.ok("GraphDriver.Get", json!({"ID": id}))["Dir"]
                .as_str()
                .unwrap(),
        )
    }

    fn put(&self, id: &str) {
        self.ok("GraphDriver.Put", json!({"ID": id}));
    }

    /// Create + ApplyDiff, as dockerd imports a layer.
    fn layer(&self, id: &str, parent: &str, tar: &[u8]) -> u64 {
        let mut body = json!({ "ID": id });
        if !parent.is_empty() {
            body["Parent"] = json!(parent);
        }
        self.ok("GraphDriver.Create", body);
        let r = apply_diff(self.sock(), id, parent, tar);
        r.assert_ok();
        r.json()["Size"].as_u64().unwrap()
    }

    /// The full tar of `id`, required to succeed.
    fn diff(&self, id: &str, parent: &str) -> Vec<u8> {
        let r = diff(self.sock(), id, parent);
        r.assert_ok();
        assert_eq!(r.header("content-type"), Some("application/x-tar"));
        r.body
    }

    /// Waits until `cond` holds (a server-side effect of a call whose
    /// client went away), failing after 10 s.
    fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Compares two tars by length and digest (a failure prints two lines,
/// not megabytes).
fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(
        (got.len(), sha256(got)),
        (want.len(), sha256(want)),
        "the layer's export differs from the tar it should be"
    );
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\n")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/ping", 0o755, b"\x7fELF ping")
        .xattr("user.comment", b"pinger")
        .hardlink("usr/bin/ping6", "usr/bin/ping")
        .symlink("bin", "usr/bin")
        .dir("tmp", 0o1777)
        .build()
}

fn child_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .whiteout("etc/group")
        .file("etc/hostname", 0o644, b"strata\n")
        .build()
}

/// A tar with `n` bytes of incompressible data in one file.
fn big_tar(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    TarBuilder::new().file("big", 0o644, &data).build()
}

fn every_endpoint(driver: &str) {
    if !root("every_endpoint") {
        return;
    }
    let env = Env::new(driver);
    let (base, child, rw) = (hex(1), hex(2), hex(3));
    let init = format!("{rw}-init");

    // Activate takes an empty body (dockerd sends Content-Length 0).
    let r = post(env.sock(), "/Plugin.Activate", b"");
    assert_eq!(r.json(), json!({"Implements": ["GraphDriver"]}));
    assert_eq!(
        env.ok("GraphDriver.Capabilities", json!({})),
        json!({"Capabilities": {"ReproducesExactDiffs": true}})
    );
    let status = env.ok("GraphDriver.Status", json!({}));
    let pairs = status["Status"].as_array().unwrap();
    assert!(pairs.contains(&json!(["Driver", driver])), "{status}");

    // An image layer: Create, then ApplyDiff; its size is what DiffSize says.
    let tar = base_tar();
    let size = env.layer(&base, "", &tar);
    assert_eq!(
        env.ok("GraphDriver.DiffSize", json!({"ID": base}))["Size"].as_u64(),
        Some(size)
    );
    // Diff of an imported layer gives back its exact bytes (what
    // ReproducesExactDiffs promises).
    assert_same(&env.diff(&base, ""), &tar);
    env.layer(&child, &base, &child_tar());
    assert_same(&env.diff(&child, &base), &child_tar());
    let changes = env.ok("GraphDriver.Changes", json!({"ID": child, "Parent": base}));
    assert_eq!(
        changes,
        json!({"Changes": [
            {"Path": "/etc", "Kind": 0},
            {"Path": "/etc/group", "Kind": 2},
            {"Path": "/etc/hostname", "Kind": 1},
        ]})
    );
    let all = env.ok("GraphDriver.Changes", json!({"ID": base}));
    assert!(
        all["Changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["Kind"] == json!(1)),
        "{all}"
    );

    // A container: the -init layer, then its own layer on top.
    env.create_rw(&init, &child);
    let dir = env.get(&init);
    assert!(dir.is_absolute(), "{dir:?}");
    std::fs::write(dir.join(".dockerenv"), b"").unwrap();
    env.put(&init);
    env.ok(
        "GraphDriver.CreateReadWrite",
        json!({"ID": rw, "Parent": init, "MountLabel": "", "StorageOpt": {}}),
    );
    let dir = PathBuf::from(
        env.ok("GraphDriver.Get", json!({"ID": rw, "MountLabel": ""}))["Dir"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        std::fs::read(dir.join("etc/hostname")).unwrap(),
        b"strata\n"
    );
    assert_eq!(
        std::fs::read(dir.join("bin/ping6")).unwrap(),
        b"\x7fELF ping"
    );
    assert!(dir.join(".dockerenv").exists());
    assert!(!dir.join("etc/group").exists());
    std::fs::write(dir.join("hello.txt"), b"hello\n").unwrap();
    std::fs::remove_file(dir.join("etc/passwd")).unwrap();
    env.put(&rw);
    let changes = env.ok("GraphDriver.Changes", json!({"ID": rw, "Parent": init}));
    assert_eq!(
        changes,
        json!({"Changes": [
            {"Path": "/etc", "Kind": 0},
            {"Path": "/etc/passwd", "Kind": 2},
            {"Path": "/hello.txt", "Kind": 1},
        ]})
    );
    assert_eq!(
        env.ok("GraphDriver.DiffSize", json!({"ID": rw, "Parent": init}))["Size"],
        json!(6)
    );
    let delta = env.diff(&rw, &init);
    let names = tar_names(&delta);
    assert_eq!(names, ["etc/", "etc/.wh.passwd", "hello.txt"], "{names:?}");

    assert!(env.exists(&rw));
    assert!(!env.exists(&hex(9)));
    let meta = env.ok("GraphDriver.GetMetadata", json!({"ID": rw}));
    assert!(!meta["Metadata"].as_object().unwrap().is_empty(), "{meta}");
    env.ok("GraphDriver.Cleanup", json!({}));

    // Removal, top down as dockerd does it.
    for id in [&rw, &init, &child, &base] {
        env.ok("GraphDriver.Remove", json!({"ID": id}));
        assert!(!env.exists(id));
    }
    assert!(layer_dirs(&env.home()).is_empty());
    assert!(mounts_under(&env.home()).is_empty());
}

/// The endpoints whose body names a layer by `ID`.
const ID_ENDPOINTS: [&str; 10] = [
    "GraphDriver.Create",
    "GraphDriver.CreateReadWrite",
    "GraphDriver.Remove",
    "GraphDriver.Get",
    "GraphDriver.Put",
    "GraphDriver.Exists",
    "GraphDriver.GetMetadata",
    "GraphDriver.Diff",
    "GraphDriver.Changes",
    "GraphDriver.DiffSize",
];

fn tar_names(tar: &[u8]) -> Vec<String> {
    tar_entries(tar)
        .iter()
        .map(|(h, _)| String::from_utf8_lossy(&h.path).into_owned())
        .collect()
}

#[test]
fn every_endpoint_overlay() {
    every_endpoint("overlay");
}

#[test]
fn every_endpoint_vfs() {
    every_endpoint("vfs");
}

#[test]
fn unknown_endpoints_methods_and_malformed_bodies() {
    if !root("unknown_endpoints_methods_and_malformed_bodies") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    for path in [
        "/GraphDriver.Nope",
        "/VolumeDriver.Create",
        "/",
        "/Plugin.Activate/x",
    ] {
        let r = post(s, path, b"{}");
        r.assert_refused(404, "unknown endpoint", path);
    }
    let r = request(s, "GET", "/GraphDriver.Status", b"");
    r.assert_refused(405, "POST", "");

    let json_endpoints = ["GraphDriver.Init", "GraphDriver.Capabilities"]
        .into_iter()
        .chain(["GraphDriver.Status", "GraphDriver.Cleanup"])
        .chain(ID_ENDPOINTS);
    for ep in json_endpoints {
        // A field of the wrong type is malformed too, where the call has
        // fields.
        let mistyped: &[u8] = match ep {
            "GraphDriver.Init" => b"{\"Home\": 5}",
            "GraphDriver.Capabilities" | "GraphDriver.Status" | "GraphDriver.Cleanup" => b"[",
            _ => b"{\"ID\": 5}",
        };
        for body in [&b"{"[..], mistyped, b"not json", b"{\"ID\":\"a\"} trailing"] {
            let r = post(s, &format!("/{ep}"), body);
            let what = format!("{ep} {:?}", String::from_utf8_lossy(body));
            r.assert_refused(400, "malformed JSON", &what);
        }
    }
    let big = vec![b' '; (1 << 20) + 1];
    let r = post(s, "/GraphDriver.Get", &big);
    r.assert_refused(400, "larger than", "");

    // Missing fields.
    for ep in ID_ENDPOINTS {
        let r = env.call(ep, json!({"Parent": hex(1)}));
        assert_eq!(r.status, 400, "{ep}");
        assert_eq!(r.err(), "bad request: missing field ID", "{ep}");
    }
    let r = post(s, "/GraphDriver.ApplyDiff?parent=", b"");
    r.assert_refused(400, "missing field id", "");
    let r = env.call("GraphDriver.Init", json!({"Opts": []}));
    assert_eq!(
        (r.status, r.err()),
        (400, "bad request: missing field Home".into())
    );
    let r = env.call("GraphDriver.Init", json!({"Home": "relative/home"}));
    assert!(r.err().contains("not an absolute path"), "{}", r.err());
    let r = env.call(
        "GraphDriver.Init",
        json!({"Home": env.home(), "UIDMaps": [{"container_id": 0, "host_id": 100000, "size": 65536}]}),
    );
    r.assert_refused(501, "userns-remap", "");
    let r = env.call(
        "GraphDriver.Init",
        json!({"Home": env.home(), "Opts": ["size=lots"]}),
    );
    r.assert_refused(400, "size=lots", "");
    // The refused Inits changed nothing: the driver still serves.
    env.layer(&hex(1), "", &base_tar());
    assert_same(&env.diff(&hex(1), ""), &base_tar());
}

#[test]
fn ids_that_name_paths_are_refused() {
    if !root("ids_that_name_paths_are_refused") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    let good = hex(1);
    env.layer(&good, "", &base_tar());
    let before = std::fs::read_dir(env.tmp.path()).unwrap().count();
    let bad_ids = [
        "..",
        ".",
        "../x",
        "a/b",
        "/etc",
        "/",
        "x/../../y",
        "",
        "abc-removing",
        "staging",
        "a\u{0}b",
        " a",
    ];
    for bad in bad_ids {
        for ep in ID_ENDPOINTS {
            let r = env.call(ep, json!({"ID": bad}));
            r.assert_refused(400, "invalid layer id", &format!("{ep} {bad:?}"));
            if !bad.is_empty() {
                // As a parent, too.
                let r = env.call(ep, json!({"ID": hex(7), "Parent": bad}));
                if matches!(
                    ep,
                    "GraphDriver.Create"
                        | "GraphDriver.CreateReadWrite"
                        | "GraphDriver.Diff"
                        | "GraphDriver.Changes"
                        | "GraphDriver.DiffSize"
                ) {
                    r.assert_refused(400, "invalid layer id", &format!("{ep} parent {bad:?}"));
                }
            }
        }
    }
    // The ApplyDiff query, plain and percent-escaped.
    for q in [
        "id=..&parent=",
        "id=../x&parent=",
        "id=a/b&parent=",
        "id=%2E%2E&parent=",
        "id=a%2Fb&parent=",
        "id=%2Fetc&parent=",
        &format!("id={good}&parent=../x"),
        &format!("id={good}&parent=%2E%2E%2Fx"),
    ] {
        let r = post(s, &format!("/GraphDriver.ApplyDiff?{q}"), &base_tar());
        r.assert_refused(400, "invalid layer id", q);
    }
    // Nothing was created beside the home, nor inside it, and the good
    // layer is untouched.
    assert_eq!(std::fs::read_dir(env.tmp.path()).unwrap().count(), before);
    assert_eq!(layer_dirs(&env.home()), [good.as_str()]);
    assert_same(&env.diff(&good, ""), &base_tar());
}

#[test]
fn unknown_ids() {
    if !root("unknown_ids") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    let (known, unknown) = (hex(1), hex(0xee));
    env.layer(&known, "", &base_tar());
    for ep in [
        "GraphDriver.Get",
        "GraphDriver.GetMetadata",
        "GraphDriver.Diff",
        "GraphDriver.Changes",
        "GraphDriver.DiffSize",
    ] {
        let r = env.call(ep, json!({"ID": unknown}));
        assert_eq!(r.status, 404, "{ep}");
        assert_eq!(r.err(), format!("layer {unknown}: not found"), "{ep}");
    }
    let r = apply_diff(s, &unknown, "", &base_tar());
    r.assert_refused(404, &unknown, "");
    let r = env.call(
        "GraphDriver.Create",
        json!({"ID": hex(2), "Parent": unknown}),
    );
    r.assert_refused(404, "missing parent", "");
    let r = env.call("GraphDriver.Create", json!({"ID": known}));
    r.assert_refused(409, "already exists", "");
    // dockerd removes half-created layers and releases what it may not
    // hold: both are harmless for an unknown id.
    env.ok("GraphDriver.Remove", json!({"ID": unknown}));
    env.ok("GraphDriver.Put", json!({"ID": unknown}));
    assert!(!env.exists(&unknown));
    assert_eq!(layer_dirs(&env.home()), [known.as_str()]);
    assert_same(&env.diff(&known, ""), &base_tar());
}

#[test]
fn calls_before_init_are_refused() {
    if !root("calls_before_init_are_refused") {
        return;
    }
    let env = Env::uninitialized("overlay");
    let s = env.sock();
    assert_eq!(
        ok(s, "Plugin.Activate", json!({})),
        json!({"Implements": ["GraphDriver"]})
    );
    for ep in [
        "GraphDriver.Capabilities",
        "GraphDriver.Status",
        "GraphDriver.Get",
    ] {
        let r = env.call(ep, json!({"ID": hex(1)}));
        r.assert_refused(503, "not initialized", ep);
    }
    // The import body is read and the error still arrives.
    let r = apply_diff(s, &hex(1), "", &big_tar(1 << 20));
    assert_eq!(r.status, 503);
    assert!(!env.home().exists());
}

#[test]
fn truncated_apply_diff_leaves_the_layer_as_it_was() {
    if !root("truncated_apply_diff_leaves_the_layer_as_it_was") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    let id = hex(1);
    let v1 = base_tar();
    env.layer(&id, "", &v1);
    let v2 = big_tar(4 << 20);

    // 1. The body ends cleanly but the tar inside it is cut short: the
    //    call fails at once, naming the layer.
    let r = apply_diff(s, &id, "", &v2[..v2.len() / 2]);
    assert_ne!(r.status, 200);
    assert!(r.err().contains(&id), "{}", r.err());
    assert_same(&env.diff(&id, ""), &v1);

    // 2. A chunked body whose client hangs up mid-stream.
    let mut c = start_apply_diff(s, &id, "");
    send_chunk(&mut c, &v2[..v2.len() / 3]);
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    env.eventually("the cut-off import is discarded", || {
        staging_entries(&env.home()).is_empty()
    });
    assert_same(&env.diff(&id, ""), &v1);

    // 2b. The same, cut exactly where an entry ends: the tar read so far
    //     is well formed (a tar may lack its end blocks), so only the
    //     broken body tells that it is not the whole layer.
    let mut c = start_apply_diff(s, &id, "");
    let boundary = 512 + (4 << 20);
    for chunk in v2[..boundary].chunks(64 << 10) {
        send_chunk(&mut c, chunk);
    }
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    env.eventually("the import cut at an entry boundary is discarded", || {
        staging_entries(&env.home()).is_empty()
    });
    assert_same(&env.diff(&id, ""), &v1);

    // 3. A Content-Length body that stops early.
    let mut c = UnixStream::connect(s).unwrap();
    write!(
        c,
        "POST /GraphDriver.ApplyDiff?id={id}&parent= HTTP/1.1\r\nHost: x\r\n\
         Content-Length: {}\r\n\r\n",
        v2.len()
    )
    .unwrap();
    c.write_all(&v2[..100_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The connection gets no usable reply (it is already half closed);
    // what matters is what the store holds afterwards.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    env.eventually("the short import is discarded", || {
        staging_entries(&env.home()).is_empty()
    });
    assert_same(&env.diff(&id, ""), &v1);
    assert_eq!(layer_dirs(&env.home()), [id.as_str()]);
    // And a full import still works afterwards.
    let r = apply_diff(s, &id, "", &v2);
    r.assert_ok();
    assert_same(&env.diff(&id, ""), &v2);
}

#[test]
fn client_gone_mid_diff() {
    if !root("client_gone_mid_diff") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    let id = hex(1);
    // Far more than the chunks and socket buffers in flight, so the
    // export is still running when the client hangs up.
    let tar = big_tar(32 << 20);
    env.layer(&id, "", &tar);
    for _ in 0..3 {
        let mut c = UnixStream::connect(s).unwrap();
        let body = format!("{{\"ID\":\"{id}\"}}\n");
        write!(
            c,
            "POST /GraphDriver.Diff HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut head = [0u8; 4096];
        c.read_exact(&mut head).unwrap();
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head[..64])
        );
        drop(c);
    }
    // The aborted exports let go of the layer: it exports whole and can
    // be removed.
    assert_same(&env.diff(&id, ""), &tar);
    env.ok("GraphDriver.Remove", json!({"ID": id}));
    assert!(layer_dirs(&env.home()).is_empty());
    assert!(mounts_under(&env.home()).is_empty());
}

#[test]
fn a_slow_import_does_not_block_other_layers() {
    if !root("a_slow_import_does_not_block_other_layers") {
        return;
    }
    let env = Env::new("overlay");
    let s = env.sock();
    let (slow, other) = (hex(1), hex(2));
    env.layer(&other, "", &base_tar());
    env.ok("GraphDriver.Create", json!({"ID": slow}));
    let tar = big_tar(8 << 20);
    let mut c = start_apply_diff(s, &slow, "");
    send_chunk(&mut c, &tar[..1 << 20]);
    // The import now waits for the rest of its body, which is only sent
    // once the calls below are done: if they queued behind the import,
    // they would never finish.
    let socket = s.to_path_buf();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other2 = other.clone();
    std::thread::spawn(move || {
        for i in 0..5 {
            let rw = format!("{}-{i}", hex(3));
            ok(
                &socket,
                "GraphDriver.CreateReadWrite",
                json!({"ID": rw, "Parent": other2}),
            );
            let dir = ok(&socket, "GraphDriver.Get", json!({"ID": rw}))["Dir"].clone();
            assert!(Path::new(dir.as_str().unwrap()).join("etc/passwd").exists());
            ok(&socket, "GraphDriver.Put", json!({"ID": rw}));
            ok(&socket, "GraphDriver.Changes", json!({"ID": other2}));
            ok(&socket, "GraphDriver.Remove", json!({"ID": rw}));
        }
        let _ = done_tx.send(());
    });
    let served = done_rx.recv_timeout(Duration::from_secs(60));
    for chunk in tar[1 << 20..].chunks(64 << 10) {
        send_chunk(&mut c, chunk);
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    assert!(
        served.is_ok(),
        "calls on other layers waited for the import (or failed)"
    );
    let r = read_reply(&mut std::io::BufReader::new(c));
    r.assert_ok();
    assert_same(&env.diff(&slow, ""), &tar);
}

#[test]
fn stop_finishes_imports_in_flight() {
    if !root("stop_finishes_imports_in_flight") {
        return;
    }
    let mut env = Env::new("overlay");
    let id = hex(1);
    env.ok("GraphDriver.Create", json!({"ID": id}));
    let tar = big_tar(4 << 20);
    let mut c = start_apply_diff(env.sock(), &id, "");
    send_chunk(&mut c, &tar[..1 << 20]);
    let rest = tar[1 << 20..].to_vec();
    let sender = std::thread::spawn(move || {
        // Sent after the stop began: the call still completes.
        std::thread::sleep(Duration::from_millis(500));
        for chunk in rest.chunks(64 << 10) {
            send_chunk(&mut c, chunk);
        }
        c.write_all(b"0\r\n\r\n").unwrap();
        read_reply(&mut std::io::BufReader::new(c))
    });
    env.stop();
    let r = sender.join().unwrap();
    r.assert_ok();
    assert!(
        !env.tmp.path().join("plugin.sock").exists(),
        "socket left behind"
    );
    // Restarted without a new Init: the plugin remembers the home.
    env.start("overlay");
    assert_same(&env.diff(&id, ""), &tar);
}

#[test]
fn restart_keeps_mounts_and_sweeps_abandoned_imports() {
    if !root("restart_keeps_mounts_and_sweeps_abandoned_imports") {
        return;
    }
    // A short grace period, so that the stop abandons the import below.
    let mut env = Env::uninitialized_with_grace("overlay", Duration::from_millis(200));
    env.init(json!({ "Home": env.home() }));
    let (base, rw, cut) = (hex(1), hex(2), hex(3));
    env.layer(&base, "", &base_tar());
    env.create_rw(&rw, &base);
    let dir = env.get(&rw);
    std::fs::write(dir.join("running.txt"), b"a container writes\n").unwrap();
    // An import that the stop cuts off: its client never finishes.
    env.ok("GraphDriver.Create", json!({"ID": cut}));
    let mut c = start_apply_diff(env.sock(), &cut, "");
    send_chunk(&mut c, &big_tar(4 << 20)[..2 << 20]);
    env.eventually("the import is under way", || {
        !staging_entries(&env.home()).is_empty()
    });
    env.stop();
    drop(c);
    env.start("overlay");
    // The container's root filesystem stayed mounted and usable.
    assert!(strata_fs::mount::is_overlay_mount(&dir).unwrap());
    assert_eq!(
        std::fs::read(dir.join("running.txt")).unwrap(),
        b"a container writes\n"
    );
    // The new process (no Init: it reopens the remembered home) swept the
    // abandoned import; the layer is as Create left it.
    assert!(staging_entries(&env.home()).is_empty());
    assert_eq!(
        env.ok("GraphDriver.Changes", json!({"ID": cut})),
        json!({"Changes": []})
    );
    // It adopted the mount: dockerd's Put at container stop releases it.
    assert_eq!(env.get(&rw), dir);
    env.put(&rw);
    assert!(strata_fs::mount::is_overlay_mount(&dir).unwrap());
    env.put(&rw);
    assert!(!strata_fs::mount::is_overlay_mount(&dir).unwrap());
    let changes = env.ok("GraphDriver.Changes", json!({"ID": rw, "Parent": base}));
    assert_eq!(
        changes,
        json!({"Changes": [{"Path": "/running.txt", "Kind": 1}]})
    );
    for id in [&rw, &cut, &base] {
        env.ok("GraphDriver.Remove", json!({"ID": id}));
    }
    assert!(layer_dirs(&env.home()).is_empty());
}

#[test]
fn init_options() {
    if !root("init_options") {
        return;
    }
    // size: the default limit of read-write layers.
    let env = Env::uninitialized("overlay");
    env.init(json!({"Home": env.home(), "Opts": ["size=64M"]}));
    let base = hex(1);
    env.layer(&base, "", &base_tar());
    let limit = |id: &str| {
        let st = rustix::fs::statvfs(env.get(id)).unwrap();
        env.put(id);
        st.f_blocks * st.f_frsize
    };
    env.create_rw(&hex(2), &base);
    let total = limit(&hex(2));
    assert!(
        (60 << 20..=80 << 20).contains(&total),
        "default size gave {total} bytes"
    );
    env.ok(
        "GraphDriver.CreateReadWrite",
        json!({"ID": hex(3), "Parent": base, "StorageOpt": {"size": "32M"}}),
    );
    let total = limit(&hex(3));
    assert!(
        (28 << 20..=40 << 20).contains(&total),
        "size=32M gave {total} bytes"
    );
    let r = env.call(
        "GraphDriver.CreateReadWrite",
        json!({"ID": hex(4), "Parent": base, "StorageOpt": {"sizzle": "1G"}}),
    );
    r.assert_refused(400, "sizzle", "");

    // driver: chooses the Strata driver for a new home.
    let other = Env::uninitialized("overlay");
    other.init(json!({"Home": other.home(), "Opts": ["strata.driver=vfs"]}));
    let status = other.ok("GraphDriver.Status", json!({}));
    assert!(
        status["Status"]
            .as_array()
            .unwrap()
            .contains(&json!(["Driver", "vfs"])),
        "{status}"
    );
    // exact_diffs=false: dockerd is told to keep its own tar-split.
    let third = Env::uninitialized("vfs");
    third.init(json!({"Home": third.home(), "Opts": ["exact_diffs=false"]}));
    assert_eq!(
        third.ok("GraphDriver.Capabilities", json!({})),
        json!({"Capabilities": {"ReproducesExactDiffs": false}})
    );
}
