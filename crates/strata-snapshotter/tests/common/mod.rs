//! Test harness shared by the snapshotter's integration tests: a server on
//! a private home and socket (in this process, on its own tokio runtime,
//! stopped on drop), a blocking gRPC client that talks to it over the
//! socket, mounting what the server returns the way containerd does, and
//! small tree builders to compare a snapshot with a plain directory.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use strata_driver::overlay::OverlayDriver;
use strata_fs::mount::{OverlaySpec, mount_overlay};
use strata_snapshots_api::tonic::transport::{Channel, Endpoint, Uri};
use strata_snapshots_api::tonic::{Code, Status};
use strata_snapshots_api::{self as api, SnapshotsClient};
use strata_snapshotter::Snapshotter;

/// True when the test may run: root, and every tool in `tools` installed.
/// Otherwise prints a loud SKIP, or panics under `CI=true`.
pub fn ready(case: &str, tools: &[&str]) -> bool {
    if !strata_conformance::require_root(case) {
        return false;
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
        if !found {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{case}: {t} is not installed, and CI must not skip");
            }
            eprintln!("SKIP: {case}: {t} is not installed");
            return false;
        }
    }
    true
}

/// A snapshotter server in this process, serving `home` on `socket`.
pub struct Server {
    pub home: PathBuf,
    pub socket: PathBuf,
    pub snap: Option<Arc<Snapshotter>>,
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), strata_snapshotter::ServeError>>>,
}

impl Server {
    pub fn start(home: &Path, socket: &Path) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let driver = OverlayDriver::open_shared(home, &[]).unwrap();
        let snap = Arc::new(Snapshotter::open(driver).unwrap());
        let listener = rt
            .block_on(async { strata_snapshotter::bind(socket) })
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(strata_snapshotter::serve(
            listener,
            Arc::clone(&snap),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            home: home.to_path_buf(),
            socket: socket.to_path_buf(),
            snap: Some(snap),
            rt: Some(rt),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn snap(&self) -> &Snapshotter {
        self.snap.as_ref().unwrap()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// Stops serving and releases the store (as a process exit would).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let (Some(rt), Some(task)) = (self.rt.as_ref(), self.task.take()) {
            let r = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(20), task).await
            });
            if let Ok(Ok(Err(e))) = r {
                eprintln!("server ended with: {e}");
            }
        }
        self.snap = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A blocking gRPC client of the Snapshots service on a unix socket.
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: SnapshotsClient<Channel>,
    socket: PathBuf,
}

pub type Labels = HashMap<String, String>;

pub fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            })
            .unwrap();
        Client {
            rt,
            inner: SnapshotsClient::new(channel),
            socket: socket.to_path_buf(),
        }
    }

    /// Hangs up (the connection's task lives on this client's runtime,
    /// which only runs inside calls, so it is replaced to drop it). The
    /// client connects again on its next call.
    pub fn close(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let old = std::mem::replace(&mut self.rt, rt);
        old.shutdown_background();
        let path = self.socket.clone();
        let _rt = self.rt.enter();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        self.inner = SnapshotsClient::new(channel);
    }

    pub fn prepare(
        &mut self,
        key: &str,
        parent: &str,
        l: Labels,
    ) -> Result<Vec<api::Mount>, Status> {
        let req = api::PrepareSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
            parent: parent.into(),
            labels: l,
        };
        self.rt
            .block_on(self.inner.prepare(req))
            .map(|r| r.into_inner().mounts)
    }

    pub fn view(&mut self, key: &str, parent: &str, l: Labels) -> Result<Vec<api::Mount>, Status> {
        let req = api::ViewSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
            parent: parent.into(),
            labels: l,
        };
        self.rt
            .block_on(self.inner.view(req))
            .map(|r| r.into_inner().mounts)
    }

    pub fn mounts(&mut self, key: &str) -> Result<Vec<api::Mount>, Status> {
        let req = api::MountsRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.inner.mounts(req))
            .map(|r| r.into_inner().mounts)
    }

    pub fn commit(&mut self, name: &str, key: &str, l: Labels) -> Result<(), Status> {
        let req = api::CommitSnapshotRequest {
            snapshotter: "strata".into(),
            name: name.into(),
            key: key.into(),
            labels: l,
        };
        self.rt.block_on(self.inner.commit(req)).map(|_| ())
    }

    pub fn remove(&mut self, key: &str) -> Result<(), Status> {
        let req = api::RemoveSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        self.rt.block_on(self.inner.remove(req)).map(|_| ())
    }

    pub fn stat(&mut self, key: &str) -> Result<api::Info, Status> {
        let req = api::StatSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.inner.stat(req))
            .map(|r| r.into_inner().info.unwrap())
    }

    pub fn update(&mut self, info: api::Info, paths: &[&str]) -> Result<api::Info, Status> {
        let req = api::UpdateSnapshotRequest {
            snapshotter: "strata".into(),
            info: Some(info),
            update_mask: (!paths.is_empty()).then(|| api::prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        };
        self.rt
            .block_on(self.inner.update(req))
            .map(|r| r.into_inner().info.unwrap())
    }

    /// Every info `List` streams, and the number of messages.
    pub fn list_msgs(&mut self, filters: &[&str]) -> Result<(Vec<api::Info>, usize), Status> {
        let req = api::ListSnapshotsRequest {
            snapshotter: "strata".into(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        let inner = &mut self.inner;
        self.rt.block_on(async move {
            let mut stream = inner.list(req).await?.into_inner();
            let mut out = Vec::new();
            let mut msgs = 0;
            while let Some(m) = stream.message().await? {
                msgs += 1;
                out.extend(m.info);
            }
            Ok((out, msgs))
        })
    }

    pub fn list(&mut self, filters: &[&str]) -> Result<Vec<api::Info>, Status> {
        self.list_msgs(filters).map(|(i, _)| i)
    }

    /// Names `List` returns for `filters`, sorted.
    pub fn names(&mut self, filters: &[&str]) -> Vec<String> {
        let mut n: Vec<String> = self
            .list(filters)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        n.sort();
        n
    }

    pub fn usage(&mut self, key: &str) -> Result<api::UsageResponse, Status> {
        let req = api::UsageRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.inner.usage(req))
            .map(|r| r.into_inner())
    }

    pub fn cleanup(&mut self) -> Result<(), Status> {
        let req = api::CleanupRequest {
            snapshotter: "strata".into(),
        };
        self.rt.block_on(self.inner.cleanup(req)).map(|_| ())
    }
}

/// Asserts that `r` failed with `code`; returns the message.
#[track_caller]
pub fn code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> String {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{}", s.message());
            s.message().to_string()
        }
    }
}

/// A mount made by [`mount_all`]; unmounted on drop.
pub struct Mounted {
    pub target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = strata_fs::mount::unmount(&self.target, false) {
            eprintln!("unmount {}: {e}; detaching", self.target.display());
            let _ = strata_fs::mount::unmount(&self.target, true);
        }
    }
}

/// Performs `mounts` on `target` as containerd does (one mount each here).
pub fn mount_all(mounts: &[api::Mount], target: &Path) -> Mounted {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    std::fs::create_dir_all(target).unwrap();
    match m.r#type.as_str() {
        "bind" => {
            rustix::mount::mount_bind_recursive(m.source.as_str(), target).unwrap();
            if m.options.iter().any(|o| o == "ro") {
                rustix::mount::mount_remount(
                    target,
                    rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
                    "",
                )
                .unwrap();
            }
        }
        "overlay" => {
            let mut spec = OverlaySpec::default();
            for o in &m.options {
                match o.split_once('=') {
                    Some(("lowerdir", v)) => {
                        spec.lowers = v.split(':').map(PathBuf::from).collect()
                    }
                    Some(("upperdir", v)) => spec.upper = Some(v.into()),
                    Some(("workdir", v)) => spec.work = Some(v.into()),
                    Some(("index", "off")) => {}
                    None if o == "userxattr" => spec.userxattr = true,
                    _ => panic!("unexpected overlay option {o:?} in {m:?}"),
                }
            }
            spec.readonly = spec.upper.is_none();
            mount_overlay(&spec, target).unwrap();
        }
        t => panic!("unexpected mount type {t:?}"),
    }
    Mounted {
        target: target.to_path_buf(),
    }
}

/// One change to a tree, as the containerd suite's appliers make them.
#[derive(Clone, Debug)]
pub enum Op {
    File(&'static str, &'static [u8], u32),
    Dir(&'static str, u32),
    RemoveAll(&'static str),
    Chown(&'static str, u32, u32),
    Link(&'static str, &'static str),
    Rename(&'static str, &'static str),
    Owned(String, Vec<u8>, u32),
}

pub fn apply(root: &Path, ops: &[Op]) {
    for op in ops {
        let p = |rel: &str| root.join(rel.trim_start_matches('/'));
        match op {
            Op::File(rel, data, mode) => write_file(&p(rel), data, *mode),
            Op::Owned(rel, data, mode) => write_file(&p(rel), data, *mode),
            Op::Dir(rel, mode) => {
                std::fs::create_dir(p(rel)).unwrap();
                std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Op::RemoveAll(rel) => match std::fs::symlink_metadata(p(rel)) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(p(rel)).unwrap(),
                Ok(_) => std::fs::remove_file(p(rel)).unwrap(),
                Err(_) => {}
            },
            Op::Chown(rel, uid, gid) => {
                std::os::unix::fs::lchown(p(rel), Some(*uid), Some(*gid)).unwrap()
            }
            Op::Link(old, new) => std::fs::hard_link(p(old), p(new)).unwrap(),
            Op::Rename(old, new) => std::fs::rename(p(old), p(new)).unwrap(),
        }
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree at `root` as a manifest to compare (no times: the two trees
/// are written at different moments).
pub fn tree(root: &Path) -> String {
    strata_conformance::manifest::manifest(
        root,
        &strata_conformance::manifest::ManifestOptions {
            no_mtime: true,
            ..Default::default()
        },
    )
}

/// The ids of the complete layers in the store at `home` (those with a
/// `layer.json`), sorted, read from the directory without opening a driver.
pub fn layers(home: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("layer.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Waits (up to 20 s) until the store at `home` holds exactly the layers
/// `want`: the service frees a removed snapshot's layer after answering.
#[track_caller]
pub fn wait_layers(home: &Path, want: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let have = layers(home);
        if have == want {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "layers {have:?}, want {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs a command; panics with its output on failure; returns stdout.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
