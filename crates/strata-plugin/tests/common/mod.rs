//! Test harness shared by the protocol and dockerd tests: the plugin
//! served in-process on a private socket (stopped on drop), and a small
//! blocking HTTP/1.1 client that can also misbehave (cut a body short,
//! hang up mid-reply) the way a real client's crash would.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use strata_plugin::{Config, Plugin, PluginError};

/// The plugin, served by `strata_plugin::serve` on its own runtime in a
/// background thread, as `strata serve` runs it.
pub struct TestPlugin {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestPlugin {
    /// Serves `config` on `socket`; panics if the plugin cannot start.
    pub fn start(socket: &Path, config: Config, grace: Duration) -> TestPlugin {
        Self::try_start(socket, config, grace).unwrap()
    }

    /// Serves `config` on `socket`, or says why it could not start.
    pub fn try_start(
        socket: &Path,
        config: Config,
        grace: Duration,
    ) -> Result<TestPlugin, PluginError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let path = socket.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let setup = strata_plugin::socket::bind(&path).and_then(|mut bound| {
                    let plugin = Plugin::new(config)?;
                    Ok((bound.take_listener().unwrap(), bound, plugin))
                });
                let (listener, bound, plugin) = match setup {
                    Ok(s) => s,
                    Err(e) => {
                        ready_tx.send(Err(e)).unwrap();
                        return;
                    }
                };
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                ready_tx.send(Ok(())).unwrap();
                let stop = async move {
                    let _ = stop_rx.await;
                };
                strata_plugin::serve(listener, Arc::new(plugin), stop, grace)
                    .await
                    .unwrap();
                drop(bound);
            });
            // As `strata serve` does: abandoned driver calls get a moment
            // to notice their connection is gone and clean up.
            rt.shutdown_timeout(Duration::from_secs(5));
        });
        ready_rx.recv().unwrap()?;
        Ok(TestPlugin {
            socket: socket.to_path_buf(),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the plugin (as SIGTERM does) and waits until it is gone.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A reply as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Err` text (panics if the call succeeded).
    pub fn err(&self) -> String {
        assert_ne!(self.status, 200, "expected a failure: {self:?}");
        self.json()["Err"].as_str().unwrap_or_default().to_string()
    }

    /// Asserts the call succeeded, printing the body if it did not.
    pub fn assert_ok(&self) {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
    }

    /// Asserts the call failed with `status` and an `Err` containing
    /// `needle`; `what` names the call in the failure message.
    pub fn assert_refused(&self, status: u16, needle: &str, what: &str) {
        let err = self.err();
        assert_eq!(self.status, status, "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
    }
}

/// Sends `POST path` with `body` (Content-Length, as dockerd sends JSON)
/// and reads the whole reply.
pub fn post(socket: &Path, path: &str, body: &[u8]) -> Reply {
    request(socket, "POST", path, body)
}

/// Sends any method.
pub fn request(socket: &Path, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\n\
         Accept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    read_reply(&mut BufReader::new(s))
}

/// Calls a JSON endpoint with `body` (serialized with a trailing newline,
/// as Go's json.Encoder writes it).
pub fn call(socket: &Path, endpoint: &str, body: Value) -> Reply {
    let mut b = serde_json::to_vec(&body).unwrap();
    b.push(b'\n');
    post(socket, &format!("/{endpoint}"), &b)
}

/// Calls a JSON endpoint and requires success.
pub fn ok(socket: &Path, endpoint: &str, body: Value) -> Value {
    let r = call(socket, endpoint, body);
    assert_eq!(
        r.status,
        200,
        "{endpoint}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// `ApplyDiff` with a chunked body, as dockerd sends it.
pub fn apply_diff(socket: &Path, id: &str, parent: &str, tar: &[u8]) -> Reply {
    let mut s = start_apply_diff(socket, id, parent);
    for chunk in tar.chunks(32 << 10) {
        send_chunk(&mut s, chunk);
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    read_reply(&mut BufReader::new(s))
}

/// Opens an `ApplyDiff` call and sends its headers; the body follows with
/// [`send_chunk`].
pub fn start_apply_diff(socket: &Path, id: &str, parent: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST /GraphDriver.ApplyDiff?id={id}&parent={parent} HTTP/1.1\r\n\
         Host: plugin.moby.localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    s
}

/// Sends one chunk of a chunked body.
pub fn send_chunk(s: &mut UnixStream, data: &[u8]) {
    write!(s, "{:x}\r\n", data.len()).unwrap();
    s.write_all(data).unwrap();
    s.write_all(b"\r\n").unwrap();
}

/// `Diff` of `id` against `parent` (empty: none); the reply body is the
/// tar (or the error JSON).
pub fn diff(socket: &Path, id: &str, parent: &str) -> Reply {
    let mut body = json!({ "ID": id });
    if !parent.is_empty() {
        body["Parent"] = json!(parent);
    }
    call(socket, "GraphDriver.Diff", body)
}

/// Reads a reply: status line, headers, then a body by Content-Length,
/// chunked encoding, or to the end of the stream.
pub fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if n == 0 {
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..]).unwrap();
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).unwrap();
        }
    } else if let Some(n) = get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Reply {
        status,
        headers,
        body,
    }
}

pub use strata_conformance::images::sha256;

/// True when running as root; prints a loud SKIP otherwise (and fails
/// under CI=true).
pub fn root(case: &str) -> bool {
    strata_conformance::require_root(case)
}

/// Directories in `dir` other than Strata's own (`staging`, dot files):
/// the layers a home holds.
pub fn layer_dirs(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "staging" && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Entries left in a home's staging dir (interrupted imports).
pub fn staging_entries(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("staging"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let m = strata_fs::mountinfo::read_self().unwrap();
    strata_fs::mountinfo::mounts_under(&m, dir)
        .into_iter()
        .map(|e| e.mount_point.clone())
        .collect()
}
