#!/usr/bin/env python3
"""Strata as a containerd snapshotter (issue 6) against containerd's own
overlayfs snapshotter, side by side in one private containerd 1.6:

1. `ctr images import --snapshotter X` of a docker-archive holding the
   Debian rootfs layer (bench.py's, cached in the workdir), cold page
   cache before every run, the image and its content removed
   (`ctr images rm --sync`) between runs, the two snapshotters taking
   turns (order flipped every run).
2. `ctr run --rm --snapshotter X IMAGE ID true`: container start, run and
   removal, warm cache, taking turns.

Strata's side is `strata serve --containerd SOCKET` (release build).

usage: bench/containerd.py [--runs N] [--reps N] [--workdir DIR]
Needs root, containerd, ctr and runc (Debian's containerd and runc).
Builds in release (into $CARGO_TARGET_DIR when set).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Debian layer, drop_caches, sh)
import overlay  # noqa: E402  (docker_archive, run_timed, unmount_all_under, load_note)

ROOT = bench.ROOT
IMAGE = "docker.io/" + overlay.TAG
NS = "strata-bench"
TARGETS = {"import": 1.05, "run": 1.05}


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def strata_server(workdir):
    """The argv prefix that serves the snapshotter, and what it is."""
    bench.sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    strata = os.path.join(target_dir(), "release/strata")
    return (lambda home, sock: [strata, "--home", home, "serve", "--containerd", sock],
            "strata serve --containerd")


class Daemon:
    """A process started in its own session, stopped with SIGTERM."""

    def __init__(self, argv, log, ready):
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=dict(os.environ, STRATA_LOG="warn"))
        for _ in range(600):
            if ready():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{argv[0]} did not come up; see {log.name}")

    def stop(self):
        overlay.stop_process(self.proc)


class Bench:
    def __init__(self, workdir):
        self.base = os.path.join(workdir, "containerd-bench")
        self.home = os.path.join(self.base, "strata-home")
        self.sock = os.path.join(self.base, "strata.sock")
        self.csock = os.path.join(self.base, "containerd.sock")
        self.fifo = os.path.join(self.base, "fifo")
        self.strata = None
        self.containerd = None
        self.made_run_dir = not os.path.exists("/run/containerd")

    def ctr(self, *args):
        return ["ctr", "--address", self.csock, "-n", NS, *args]

    def ok(self, *args):
        r = subprocess.run(self.ctr(*args), capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def start(self, serve_argv):
        self.cleanup_dirs()
        os.makedirs(self.fifo)
        b = self.base
        with open(os.path.join(b, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.csock}"
[ttrpc]
  address = "{self.csock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"
[proxy_plugins]
  [proxy_plugins.strata]
    type = "snapshot"
    address = "{self.sock}"
""")
        with open(os.path.join(b, "strata.log"), "w") as log:
            self.strata = Daemon(serve_argv(self.home, self.sock), log,
                                 lambda: os.path.exists(self.sock))
        with open(os.path.join(b, "containerd.log"), "w") as log:
            self.containerd = Daemon(
                ["containerd", "--config", os.path.join(b, "config.toml")], log,
                lambda: subprocess.run(self.ctr("version"), capture_output=True).returncode == 0)

    def stop(self):
        for d in (self.containerd, self.strata):
            if d is not None:
                d.stop()
        self.cleanup_dirs()
        shutil.rmtree(os.path.join("/run/containerd/runc", NS), ignore_errors=True)
        if self.made_run_dir:
            for d in ("runc", "s", "fifo", ""):
                try:
                    os.rmdir(os.path.join("/run/containerd", d))
                except OSError:
                    pass

    def cleanup_dirs(self):
        if os.path.exists(self.base):
            overlay.unmount_all_under(self.base)
            shutil.rmtree(self.base)
        os.makedirs(self.base)

    def snapshots(self, snapshotter):
        out = self.ok("snapshots", "--snapshotter", snapshotter, "ls")
        return len(out.splitlines()) - 1

    def remove_image(self):
        subprocess.run(self.ctr("images", "rm", "--sync", IMAGE), capture_output=True)
        left = {s: self.snapshots(s) for s in ("strata", "overlayfs")}
        content = self.ok("content", "ls", "-q").split()
        if any(left.values()) or content:
            raise SystemExit(f"after images rm: snapshots {left}, content {content}")


def bench_import(b, archive, runs):
    tools = ("overlayfs", "strata")
    res = {t: [] for t in tools}
    # one untimed round each: first-use costs, and a check
    for t in tools:
        b.remove_image()
        b.ok("images", "import", "--snapshotter", t, archive)
        if b.snapshots(t) != 1:
            raise SystemExit(f"{t}: expected one snapshot after the import")
    print(f"archive: {archive} ({os.path.getsize(archive) / 1e6:.1f} MB), {runs} runs, cold cache",
          flush=True)
    for run in range(runs):
        order = tools if run % 2 == 0 else tuple(reversed(tools))
        for t in order:
            b.remove_image()
            bench.drop_caches()
            res[t].append(overlay.run_timed(b.ctr("images", "import", "--snapshotter", t, archive)))
            if b.snapshots(t) != 1:
                raise SystemExit(f"{t}: expected one snapshot after the import")
        print(f"  run {run + 1}: " + ", ".join(f"{t} {res[t][-1]:.2f}s" for t in tools), flush=True)
    return res


def bench_run(b, archive, reps):
    tools = ("overlayfs", "strata")
    b.remove_image()
    for t in tools:
        b.ok("images", "import", "--snapshotter", t, archive)
    res = {t: [] for t in tools}
    n = 0

    def one(t):
        nonlocal n
        n += 1
        return overlay.run_timed(b.ctr("run", "--rm", "--snapshotter", t, "--fifo-dir", b.fifo,
                                       IMAGE, f"bench-{n}", "true"))

    for t in tools:  # warm-up
        one(t)
        one(t)
    for rep in range(reps):
        for t in (tools if rep % 2 == 0 else tuple(reversed(tools))):
            res[t].append(one(t))
    print(f"  {reps} runs each: " + ", ".join(f"{t} median {overlay.med(res[t]) * 1000:.1f} ms" for t in tools),
          flush=True)
    b.remove_image()
    return res


def report(imp, run, server, runs, reps):
    print(f"\n== containerd 1.6: strata ({server}) vs the built-in overlayfs snapshotter")
    print(f"{'operation':<44} {'snapshotter':<10} {'median':>9} {'min':>8} {'max':>8} {'ratio':>7}")
    rows = [(f"ctr images import (Debian, cold, {runs} runs) [s]", imp, 1, "import"),
            (f"ctr run --rm ... true (warm, {reps} runs) [ms]", run, 1000, "run")]
    for name, res, scale, key in rows:
        base = overlay.med(res["overlayfs"])
        for t in ("overlayfs", "strata"):
            v = res[t]
            fmt = ".3f" if scale == 1 else ".1f"
            print(f"{name:<44} {t:<10} {overlay.med(v) * scale:>9{fmt}} {min(v) * scale:>8{fmt}} "
                  f"{max(v) * scale:>8{fmt}} {overlay.med(v) / base:>6.2f}x")
    for name, res, _, key in rows:
        r = overlay.med(res["strata"]) / overlay.med(res["overlayfs"])
        verdict = "met" if r <= TARGETS[key] else "NOT met"
        print(f"strata / overlayfs, {key:<6} = {r:.3f}  (target <= {TARGETS[key]:.2f}: {verdict})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5, help="cold imports per snapshotter")
    ap.add_argument("--reps", type=int, default=40, help="container runs per snapshotter")
    a = bench.parse_args(ap, "containerd.py", "containerd, mounts, drop_caches")
    bench.ensure({"containerd": "containerd", "ctr": "containerd", "runc": "runc"})
    print(f"start: {overlay.load_note()}", flush=True)
    t0 = time.perf_counter()
    serve_argv, server = strata_server(a.workdir)
    layer = bench.debian_layer(a.workdir)
    archive = overlay.docker_archive(a.workdir, layer)
    b = Bench(a.workdir)
    try:
        b.start(serve_argv)
        imp = bench_import(b, archive, a.runs)
        run = bench_run(b, archive, a.reps)
    finally:
        b.stop()
        shutil.rmtree(b.base, ignore_errors=True)
    report(imp, run, server, a.runs, a.reps)
    print(f"\nend: {overlay.load_note()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
