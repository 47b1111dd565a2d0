//! The cases of containerd's snapshotter test suite (snapshots/testsuite,
//! v1.6.20), written anew for Strata: each talks gRPC to a server on a
//! private home and socket, mounts what it returns as containerd would,
//! and compares the trees with plain directories changed the same way.
//! Keys are containerd-style opaque strings (paths, spaces, slashes).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{Client, Mounted, Op, Server, apply, code, labels, mount_all, tree};
use strata_snapshots_api::Mount;
use strata_snapshots_api::prost_types::Timestamp;
use strata_snapshots_api::tonic::Code;

const KIND_VIEW: i32 = 1;
const KIND_ACTIVE: i32 = 2;
const KIND_COMMITTED: i32 = 3;

/// Fields drop in order: the client first, so that the server it talks
/// to stops without waiting for it, and the temp dir last.
struct Env {
    client: Client,
    server: Option<Server>,
    work: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn new(case: &str) -> Option<Env> {
        if !common::ready(case, &[]) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let server = Server::start(&tmp.path().join("home"), &tmp.path().join("s.sock"));
        let client = server.client();
        Some(Env {
            client,
            server: Some(server),
            work,
            _tmp: tmp,
        })
    }

    fn home(&self) -> PathBuf {
        self._tmp.path().join("home")
    }

    /// A key in containerd's test style: a path under the work dir.
    fn key(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn restart(&mut self) {
        let s = self.server.take().unwrap();
        let (home, sock) = (s.home.clone(), s.socket.clone());
        // The old connection goes first: a server stops once its clients
        // have hung up (or after its grace period).
        self.client.close();
        s.stop();
        let s = Server::start(&home, &sock);
        self.client = s.client();
        self.server = Some(s);
    }

    /// Prepares the key [`Env::key`] makes of `name` on `parent` and
    /// mounts it on the directory of that name: the key, the directory and
    /// the mount.
    fn prepare_mounted(&mut self, name: &str, parent: &str) -> (String, PathBuf, Mounted) {
        let key = self.key(name);
        let m = self.client.prepare(&key, parent, gc()).unwrap();
        let target = self.dir(name);
        let mnt = mount_all(&m, &target);
        (key, target, mnt)
    }

    /// Prepares `key` on `parent`, applies `ops` through its mounts and
    /// commits it as `name`.
    fn layer(&mut self, name: &str, parent: &str, ops: &[Op]) {
        let key = format!("{name}-prepare");
        let m = self.client.prepare(&key, parent, gc()).unwrap();
        {
            let _mnt = mount_all(&m, &self.dir(&format!("{name}-mnt")));
            apply(&self.work.join(format!("{name}-mnt")), ops);
        }
        self.client.commit(name, &key, gc()).unwrap();
    }

    /// containerd's checkSnapshots: a chain of layers, each checked in a
    /// view against one directory changed by all appliers so far.
    fn check_snapshots(&mut self, appliers: &[&[Op]]) {
        let flat = self.dir("flat");
        let mut parent = String::new();
        for (i, ops) in appliers.iter().enumerate() {
            let name = format!("{} layer {i} sha256:{i:064}", self.key("chain"));
            self.layer(&name, &parent, ops);
            apply(&flat, ops);
            let view = format!("{name}-view");
            let m = self.client.view(&view, &name, gc()).unwrap();
            {
                let target = self.dir(&format!("check-{i}"));
                let _mnt = mount_all(&m, &target);
                assert_eq!(tree(&target), tree(&flat), "layer {i}");
            }
            self.client.remove(&view).unwrap();
            parent = name;
        }
    }
}

/// The suite's `containerd.io/gc.root` label.
fn gc() -> common::Labels {
    labels(&[("containerd.io/gc.root", "2023-11-14T22:13:20Z")])
}

/// Prepares `key` on `parent` and commits it, unchanged, as `name`.
fn prepare_commit(c: &mut Client, name: &str, key: &str, parent: &str) {
    c.prepare(key, parent, gc()).unwrap();
    c.commit(name, key, gc()).unwrap();
}

/// Mounts `m` on `target` and checks that writing there fails with EROFS.
fn assert_read_only(m: &[Mount], target: &Path) {
    let _mnt = mount_all(m, target);
    let err = std::fs::write(target.join("testfile"), "testcontent").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error()),
        "{err}"
    );
}

fn time(t: &Option<Timestamp>) -> SystemTime {
    let t = (*t).unwrap();
    SystemTime::try_from(t).unwrap()
}

#[test]
fn basic() {
    let Some(mut e) = Env::new("basic") else {
        return;
    };
    let initial = [
        Op::File("/foo", b"foo\n", 0o777),
        Op::Dir("/a", 0o755),
        Op::Dir("/a/b", 0o755),
        Op::Dir("/a/b/c", 0o755),
    ];
    let diff = [
        Op::File("/bar", b"bar\n", 0o777),
        Op::File("/foo", b"bar\n", 0o777),
        Op::RemoveAll("/a/b"),
    ];
    let preparing = e.key("preparing");
    let m = e.client.prepare(&preparing, "", gc()).unwrap();
    assert!(!m.is_empty());
    {
        let target = e.dir("preparing");
        let _mnt = mount_all(&m, &target);
        apply(&target, &initial);
    }
    let committed = e.key("committed");
    e.client.commit(&committed, &preparing, gc()).unwrap();
    let si = e.client.stat(&committed).unwrap();
    assert_eq!((si.parent.as_str(), si.kind), ("", KIND_COMMITTED));
    code(e.client.stat(&preparing), Code::NotFound);

    let next = e.key("nextlayer");
    let m = e.client.prepare(&next, &committed, gc()).unwrap();
    let flat1 = e.dir("flat1");
    apply(&flat1, &initial);
    {
        let target = e.dir("nextlayer");
        let _mnt = mount_all(&m, &target);
        assert_eq!(tree(&target), tree(&flat1));
        apply(&target, &diff);
    }
    let ni = e.client.stat(&next).unwrap();
    assert_eq!(
        (ni.parent.as_str(), ni.kind),
        (committed.as_str(), KIND_ACTIVE)
    );
    let next_committed = e.key("committed-next");
    e.client.commit(&next_committed, &next, gc()).unwrap();
    let si2 = e.client.stat(&next_committed).unwrap();
    assert_eq!(
        (si2.parent.as_str(), si2.kind),
        (committed.as_str(), KIND_COMMITTED)
    );
    code(e.client.stat(&next), Code::NotFound);

    let walked = e.client.list(&[]).unwrap();
    for want in [&si, &si2] {
        let got = walked.iter().find(|i| i.name == want.name).unwrap();
        assert_eq!(got, want, "List and Stat agree, times included");
    }

    let nextnext = e.key("nextnextlayer");
    let m = e.client.view(&nextnext, &next_committed, gc()).unwrap();
    apply(&flat1, &diff);
    {
        let target = e.dir("nextnextlayer");
        let _mnt = mount_all(&m, &target);
        assert_eq!(tree(&target), tree(&flat1));
    }
    e.client.remove(&nextnext).unwrap();
    let msg = code(e.client.remove(&committed), Code::FailedPrecondition);
    assert!(msg.contains("remove"), "{msg}");
    e.client.remove(&next_committed).unwrap();
    e.client.remove(&committed).unwrap();
    assert!(e.client.list(&[]).unwrap().is_empty());
    // every layer goes with its snapshot
    common::wait_layers(&e.home(), &[]);
}

#[test]
fn stat_active() {
    let Some(mut e) = Env::new("stat_active") else {
        return;
    };
    let (preparing, target, _mnt) = e.prepare_mounted("preparing", "");
    std::fs::write(target.join("foo"), "foo\n").unwrap();
    let si = e.client.stat(&preparing).unwrap();
    assert_eq!(si.name, preparing);
    assert_eq!(si.kind, KIND_ACTIVE);
    assert_eq!(si.parent, "");
}

#[test]
fn stat_committed() {
    let Some(mut e) = Env::new("stat_committed") else {
        return;
    };
    // Committed while still mounted, as the suite does.
    let (preparing, target, _mnt) = e.prepare_mounted("preparing", "");
    std::fs::write(target.join("foo"), "foo\n").unwrap();
    let committed = e.key("committed");
    e.client.commit(&committed, &preparing, gc()).unwrap();
    let si = e.client.stat(&committed).unwrap();
    assert_eq!(
        (si.name.as_str(), si.kind, si.parent.as_str()),
        (committed.as_str(), KIND_COMMITTED, "")
    );
}

#[test]
fn transitivity() {
    let Some(mut e) = Env::new("transitivity") else {
        return;
    };
    let (a, b) = (e.key("snapA"), e.key("snapB"));
    e.layer(&a, "", &[Op::File("/foo", b"foo\n", 0o777)]);
    e.layer(&b, &a, &[Op::File("/foo", b"foo bar\n", 0o777)]);
    let sa = e.client.stat(&a).unwrap();
    let sb = e.client.stat(&b).unwrap();
    let sp = e.client.stat(&sb.parent).unwrap();
    assert_eq!(sa.parent, "");
    assert_eq!(sb.parent, a);
    assert_eq!(sp.parent, "");
}

#[test]
fn prepare_view_same_key_fails() {
    let Some(mut e) = Env::new("prepare_view_same_key_fails") else {
        return;
    };
    let a = e.key("snapA");
    e.layer(&a, "", &[]);
    let new = e.key("newlayer");
    e.client.prepare(&new, &a, gc()).unwrap();
    code(e.client.view(&new, &a, gc()), Code::AlreadyExists);
    let prep = e.key("prepLayer");
    e.client.prepare(&prep, &a, gc()).unwrap();
    code(e.client.prepare(&prep, &a, gc()), Code::AlreadyExists);
    let view = e.key("viewLayer");
    e.client.view(&view, &a, gc()).unwrap();
    code(e.client.view(&view, &a, gc()), Code::AlreadyExists);
    // A name is a key too.
    code(e.client.prepare(&a, "", gc()), Code::AlreadyExists);
}

fn base_snapshots(c: &mut Client) {
    prepare_commit(c, "c1", "c1-a", "");
    prepare_commit(c, "c2", "c2-a", "c1");
    c.prepare("a1", "c2", gc()).unwrap();
    c.prepare("a2", "", gc()).unwrap();
    c.view("v1", "c2", gc()).unwrap();
    c.view("v2", "", gc()).unwrap();
}

#[test]
fn update() {
    let Some(mut e) = Env::new("update") else {
        return;
    };
    let t1 = SystemTime::now();
    base_snapshots(&mut e.client);
    let t2 = SystemTime::now();
    for (name, kind, parent) in [
        ("c1", KIND_COMMITTED, ""),
        ("c2", KIND_COMMITTED, "c1"),
        ("a1", KIND_ACTIVE, "c2"),
        ("a2", KIND_ACTIVE, ""),
        ("v1", KIND_VIEW, "c2"),
        ("v2", KIND_VIEW, ""),
    ] {
        let mut st = e.client.stat(name).unwrap();
        let created = time(&st.created_at);
        assert!(
            created >= t1 && created <= t2,
            "{name}: created {created:?}"
        );
        assert_eq!(st.created_at, st.updated_at, "{name}");
        assert_eq!(
            (st.kind, st.parent.as_str(), st.name.as_str()),
            (kind, parent, name)
        );

        let root = "2023-11-14T22:13:20Z";
        let expected = labels(&[
            ("l1", "v1"),
            ("l2", "v2"),
            ("l3", "v3"),
            ("containerd.io/gc.root", root),
        ]);
        st.parent = "doesnotexist".into();
        st.labels = expected.clone();
        let u1 = SystemTime::now();
        let st = e.client.update(st, &[]).unwrap();
        let u2 = SystemTime::now();
        assert_eq!(time(&st.created_at), created, "{name}");
        let updated = time(&st.updated_at);
        assert!(updated >= u1 && updated <= u2, "{name}");
        assert_eq!(
            (st.kind, st.parent.as_str(), st.name.as_str()),
            (kind, parent, name)
        );
        assert_eq!(st.labels, expected);

        let mut st2 = st.clone();
        st2.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
        let st = e.client.update(st2, &["labels.l1", "labels.l2"]).unwrap();
        assert_eq!(
            st.labels,
            labels(&[
                ("l1", "updated"),
                ("l3", "v3"),
                ("containerd.io/gc.root", root)
            ])
        );

        let mut st3 = st.clone();
        st3.labels = labels(&[("l4", "v4"), ("containerd.io/gc.root", root)]);
        let st = e.client.update(st3.clone(), &["labels"]).unwrap();
        assert_eq!(st.labels, st3.labels);
        assert_eq!(e.client.stat(name).unwrap(), st, "the update is stored");

        let mut bad = st.clone();
        bad.parent = "doesnotexist".into();
        let msg = code(e.client.update(bad, &["parent"]), Code::InvalidArgument);
        assert!(msg.contains("\"parent\""), "{msg}");
        assert_eq!(
            e.client.stat(name).unwrap(),
            st,
            "a refused update changes nothing"
        );
    }
    let mut missing = e.client.stat("c1").unwrap();
    missing.name = "nope".into();
    code(e.client.update(missing, &[]), Code::NotFound);
}

#[test]
fn remove_and_key_reuse() {
    let Some(mut e) = Env::new("remove_and_key_reuse") else {
        return;
    };
    let c = &mut e.client;
    prepare_commit(c, "committed-1", "committed-a", "");
    c.prepare("reuse-1", "committed-1", gc()).unwrap();
    c.remove("reuse-1").unwrap();
    c.view("reuse-1", "committed-1", gc()).unwrap();
    c.remove("reuse-1").unwrap();
    c.prepare("reuse-1", "", gc()).unwrap();
    c.remove("committed-1").unwrap();
    c.commit("committed-1", "reuse-1", gc()).unwrap();
    code(c.remove("reuse-1"), Code::NotFound);
    assert_eq!(c.names(&[]), ["committed-1"]);
    let names = strata_snapshotter::names(&e.home()).unwrap();
    let left: Vec<&str> = names.keys().map(String::as_str).collect();
    assert_eq!(left.len(), 1);
    common::wait_layers(&e.home(), &left);
}

#[test]
fn walk_filters() {
    let Some(mut e) = Env::new("walk_filters") else {
        return;
    };
    let c = &mut e.client;
    let root = labels(&[("containerd.io/gc.root", "check-walk")]);
    let with = |l: &str| labels(&[("containerd.io/gc.root", "check-walk"), ("l", l)]);
    c.prepare("a-np", "", root.clone()).unwrap();
    c.prepare("p-tmp", "", root.clone()).unwrap();
    c.commit("p", "p-tmp", root.clone()).unwrap();
    c.prepare("a", "p", root.clone()).unwrap();
    c.view("v", "p", root.clone()).unwrap();
    c.prepare("p-wl-tmp", "", root.clone()).unwrap();
    c.commit("p-wl", "p-wl-tmp", with("1")).unwrap();
    c.prepare("a-wl", "p-wl", with("2")).unwrap();
    c.view("v-wl", "p-wl", with("3")).unwrap();
    c.prepare("a-np-wl", "", with("2")).unwrap();
    for (matches, filters) in [
        (
            &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"][..],
            &[r#"labels."containerd.io/gc.root"==check-walk"#][..],
        ),
        (
            &["a-np", "a", "a-wl", "a-np-wl"],
            &[r#"kind==active,labels."containerd.io/gc.root"==check-walk"#],
        ),
        (
            &["v", "v-wl"],
            &[r#"kind==view,labels."containerd.io/gc.root"==check-walk"#],
        ),
        (
            &["p", "p-wl"],
            &[r#"kind==committed,labels."containerd.io/gc.root"==check-walk"#],
        ),
        (&["p", "a-np-wl"], &["name==p", "name==a-np-wl"]),
        (&["a-wl"], &["name==a-wl,labels.l"]),
        (&["a", "v"], &["parent==p"]),
        (
            &["a", "v", "a-wl", "v-wl"],
            &[r#"parent!="",labels."containerd.io/gc.root"==check-walk"#],
        ),
        (&["p-wl", "a-wl", "v-wl", "a-np-wl"], &["labels.l"]),
        (&["a-wl", "a-np-wl"], &["labels.l==2"]),
        // the remote-snapshotter lookup containerd makes
        (&["a-wl"], &[r#"labels."l"==2,parent=="p-wl""#]),
        (&["a", "a-np", "a-np-wl", "a-wl"], &["name~=/^a/"]),
    ] {
        let mut want: Vec<String> = matches.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(c.names(filters), want, "{filters:?}");
    }
    let msg = code(c.list(&["kind=active"]), Code::InvalidArgument);
    assert!(msg.contains("kind=active"), "{msg}");
}

#[test]
fn layer_file_update() {
    let Some(mut e) = Env::new("layer_file_update") else {
        return;
    };
    let l1 = [
        Op::Dir("/etc", 0o700),
        Op::File("/etc/hosts", b"mydomain 10.0.0.1", 0o644),
        Op::File("/etc/profile", b"PATH=/usr/bin", 0o644),
    ];
    let l2 = [
        Op::File("/etc/hosts", b"mydomain 10.0.0.2", 0o644),
        Op::File("/etc/profile", b"PATH=/usr/bin", 0o666),
        Op::Dir("/root", 0o700),
        Op::File("/root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644),
    ];
    e.check_snapshots(&[&l1, &l2]);
}

#[test]
fn remove_directory_in_lower_layer() {
    let Some(mut e) = Env::new("remove_directory_in_lower_layer") else {
        return;
    };
    e.check_snapshots(&[
        &[Op::Dir("/lib", 0o700), Op::File("/lib/hidden", b"", 0o644)],
        &[
            Op::RemoveAll("/lib"),
            Op::Dir("/lib", 0o700),
            Op::File("/lib/not-hidden", b"", 0o644),
        ],
        &[Op::File("/lib/newfile", b"", 0o644)],
    ]);
}

#[test]
fn chown() {
    let Some(mut e) = Env::new("chown") else {
        return;
    };
    e.check_snapshots(&[
        &[
            Op::Dir("/opt", 0o700),
            Op::Dir("/opt/a", 0o700),
            Op::Dir("/opt/a/b", 0o700),
            Op::File("/opt/a/b/file.txt", b"hello", 0o644),
        ],
        &[
            Op::Chown("/opt", 1, 1),
            Op::Chown("/opt/a", 1, 1),
            Op::Chown("/opt/a/b", 1, 1),
            Op::Chown("/opt/a/b/file.txt", 1, 1),
        ],
    ]);
}

#[test]
fn directory_permission_on_commit() {
    let Some(mut e) = Env::new("directory_permission_on_commit") else {
        return;
    };
    e.check_snapshots(&[
        &[
            Op::Dir("/dir1", 0o700),
            Op::Dir("/dir2", 0o700),
            Op::Dir("/dir3", 0o700),
            Op::Dir("/dir4", 0o700),
            Op::File("/dir4/f1", b"...", 0o644),
            Op::Dir("/dir5", 0o700),
            Op::File("/dir5/f1", b"...", 0o644),
            Op::Chown("/dir1", 1, 1),
            Op::Chown("/dir2", 1, 1),
            Op::Chown("/dir3", 1, 1),
            Op::Chown("/dir5", 1, 1),
            Op::Chown("/dir5/f1", 1, 1),
        ],
        &[
            Op::Chown("/dir2", 0, 0),
            Op::RemoveAll("/dir3"),
            Op::Chown("/dir4", 1, 1),
            Op::Chown("/dir4/f1", 1, 1),
        ],
        &[
            Op::Dir("/dir3", 0o700),
            Op::Chown("/dir3", 1, 1),
            Op::RemoveAll("/dir5"),
            Op::Dir("/dir5", 0o700),
            Op::Chown("/dir5", 1, 1),
        ],
    ]);
}

#[test]
fn remove_intermediate_snapshot() {
    let Some(mut e) = Env::new("remove_intermediate_snapshot") else {
        return;
    };
    let base = e.key("base");
    let m = e.client.prepare(&base, "", gc()).unwrap();
    let mnt = mount_all(&m, &e.dir("base"));
    let committed_base = e.key("committed-base");
    e.client.commit(&committed_base, &base, gc()).unwrap();
    let (inter, committed_inter) = (e.key("intermediate"), e.key("committed-inter"));
    prepare_commit(&mut e.client, &committed_inter, &inter, &committed_base);
    let top = e.key("toplayer");
    e.client.prepare(&top, &committed_inter, gc()).unwrap();
    let msg = code(e.client.remove(&committed_inter), Code::FailedPrecondition);
    assert!(msg.contains("child") && msg.contains(&top), "{msg}");
    e.client.remove(&top).unwrap();
    e.client.remove(&committed_inter).unwrap();
    drop(mnt);
    e.client.remove(&committed_base).unwrap();
    common::wait_layers(&e.home(), &[]);
}

#[test]
fn deleted_files_in_child_snapshot() {
    let Some(mut e) = Env::new("deleted_files_in_child_snapshot") else {
        return;
    };
    e.check_snapshots(&[
        &[
            Op::File("/foo", b"foo\n", 0o777),
            Op::File("/foobar", b"foobar\n", 0o777),
        ],
        &[Op::RemoveAll("/foobar")],
        &[],
    ]);
}

#[test]
fn move_file_from_lower_layer() {
    let Some(mut e) = Env::new("move_file_from_lower_layer") else {
        return;
    };
    e.check_snapshots(&[
        &[
            Op::Dir("/dir1", 0o700),
            Op::File("/dir1/f1", b"Hello", 0o644),
            Op::Dir("dir2", 0o700),
            Op::File("dir2/f2", b"...", 0o644),
        ],
        &[
            Op::Dir("/dir3", 0o700),
            Op::File("/dir3/f1", b"Hello", 0o644),
            Op::RemoveAll("/dir1"),
            Op::Link("dir2/f2", "dir3/f2"),
            Op::RemoveAll("dir2/f2"),
        ],
    ]);
}

/// containerd skips its Rename case ("still fails on some kernels with
/// overlay": renaming a lower directory gives EXDEV without redirect_dir).
/// Renames of files from the lower layer are checked here; the directory
/// rename must either work or fail with EXDEV, the kernel's answer.
#[test]
fn rename() {
    let Some(mut e) = Env::new("rename") else {
        return;
    };
    let l1 = [
        Op::Dir("/dir1", 0o700),
        Op::Dir("/somefiles", 0o700),
        Op::File("/somefiles/f1", b"was here first!", 0o644),
        Op::File("/somefiles/f2", b"nothing interesting", 0o644),
    ];
    let l2 = [
        Op::File("/somefiles/f1-overwrite", b"new content 1", 0o644),
        Op::Rename("/somefiles/f1-overwrite", "/somefiles/f1"),
        Op::Rename("/somefiles/f2", "/somefiles/f3"),
    ];
    e.check_snapshots(&[&l1, &l2]);
    let top = e.client.list(&["kind==committed"]).unwrap();
    let top = top
        .iter()
        .find(|i| !i.parent.is_empty())
        .unwrap()
        .name
        .clone();
    let m = e.client.prepare("rename-dir", &top, gc()).unwrap();
    let target = e.dir("rename-dir");
    let _mnt = mount_all(&m, &target);
    match std::fs::rename(target.join("dir1"), target.join("dir2")) {
        Ok(()) => assert!(target.join("dir2").is_dir() && !target.join("dir1").exists()),
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc_exdev()), "{err}"),
    }
}

fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

#[test]
fn view_readonly() {
    let Some(mut e) = Env::new("view_readonly") else {
        return;
    };
    let (preparing, committed) = (e.key("preparing"), e.key("committed"));
    prepare_commit(&mut e.client, &committed, &preparing, "");
    let view = e.key("view");
    let m = e.client.view(&view, &committed, gc()).unwrap();
    assert_read_only(&m, &e.dir("view-mount"));
    // A view of a chain is an overlay without upper: read-only as well.
    let (next, committed2) = (e.key("next"), e.key("committed2"));
    prepare_commit(&mut e.client, &committed2, &next, &committed);
    let view2 = e.key("view2");
    let m = e.client.view(&view2, &committed2, gc()).unwrap();
    assert_eq!(m[0].r#type, "overlay");
    assert_read_only(&m, &e.dir("view2-mount"));
    e.client.remove(&view).unwrap();
    e.client.remove(&view2).unwrap();
    e.client.remove(&committed2).unwrap();
    e.client.remove(&committed).unwrap();
}

#[test]
fn stat_in_walk() {
    let Some(mut e) = Env::new("stat_in_walk") else {
        return;
    };
    let k = |name: &str| format!("stats-in-walk-{name}");
    let c = &mut e.client;
    prepare_commit(c, &k("c1"), &k("c1-a"), "");
    prepare_commit(c, &k("c2"), &k("c2-a"), &k("c1"));
    c.prepare(&k("a1"), &k("c2"), gc()).unwrap();
    c.view(&k("v1"), &k("c2"), gc()).unwrap();
    let all = c.list(&[]).unwrap();
    assert_eq!(all.len(), 4);
    for i in all {
        assert_eq!(c.stat(&i.name).unwrap(), i);
    }
}

/// containerd's CloseTwice, for a server: stopping it and opening the
/// store again (twice) keeps every snapshot.
#[test]
fn close_and_reopen() {
    let Some(mut e) = Env::new("close_and_reopen") else {
        return;
    };
    prepare_commit(&mut e.client, "n", "n-prepare", "");
    e.client.remove("n").unwrap();
    e.client.prepare("kept-a", "", gc()).unwrap();
    e.client
        .commit("kept", "kept-a", labels(&[("x", "1")]))
        .unwrap();
    e.client.prepare("active", "kept", gc()).unwrap();
    let before = e.client.list(&[]).unwrap();
    e.restart();
    e.restart();
    assert_eq!(e.client.list(&[]).unwrap(), before);
    let m = e.client.mounts("active").unwrap();
    assert_eq!(m[0].r#type, "overlay");
}

#[test]
fn root_permission() {
    let Some(mut e) = Env::new("root_permission") else {
        return;
    };
    let (_, target, _mnt) = e.prepare_mounted("preparing", "");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&target).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn layers_128_mount() {
    let Some(mut e) = Env::new("layers_128_mount") else {
        return;
    };
    let flat = e.dir("flat");
    let mut parent = String::new();
    for i in 0..128 {
        let ops: Vec<Op> = if i == 0 {
            vec![
                Op::File("/bottom", b"way at the bottom\n", 0o777),
                Op::File("/overwriteme", b"FIRST!\n", 0o777),
                Op::Dir("/ADDHERE", 0o755),
                Op::Dir("/ONLYME", 0o755),
                Op::File("/ONLYME/bottom", b"bye!\n", 0o777),
            ]
        } else {
            vec![
                Op::Owned(
                    "/overwriteme".into(),
                    format!("{i} WAS HERE!\n").into_bytes(),
                    0o777,
                ),
                Op::Owned(format!("/ADDHERE/file-{i}"), b"same\n".to_vec(), 0o755),
                Op::RemoveAll("/ONLYME"),
                Op::Dir("/ONLYME", 0o755),
                Op::Owned(format!("/ONLYME/file-{i}"), b"only me!\n".to_vec(), 0o777),
            ]
        };
        let preparing = e.key(&format!("prepare-layer-{i}"));
        let m = e.client.prepare(&preparing, &parent, gc()).unwrap();
        {
            let target = e.dir(&format!("prepare-layer-{i}"));
            let _mnt = mount_all(&m, &target);
            assert_eq!(tree(&target), tree(&flat), "layer {i} before");
            apply(&flat, &ops);
            apply(&target, &ops);
            assert_eq!(tree(&target), tree(&flat), "layer {i} after");
        }
        parent = e.key(&format!("committed-{i}"));
        e.client.commit(&parent, &preparing, gc()).unwrap();
    }
    let m = e.client.view(&e.key("fullview"), &parent, gc()).unwrap();
    let lowerdir = m[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert_eq!(lowerdir.split(':').count(), 128);
    let target = e.dir("fullview");
    let _mnt = mount_all(&m, &target);
    assert_eq!(tree(&target), tree(&flat));
}
