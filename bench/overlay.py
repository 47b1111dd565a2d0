#!/usr/bin/env python3
"""Strata overlay driver benchmark (issue 3), three tables in one run.

1. get+put: `strata mount` + `strata unmount` of the top of chains of 1,
   128 and 500 one-file layers (each mount is a real overlayfs mount: the
   CLI process that unmounts adopts the mount and drops the last
   reference). The CLI's fixed cost (process start, driver open with its
   overlay probes) is measured with `strata status` on an empty home.
2. changes / diff-size of a container layer with one new file on top of the
   Debian rootfs, native (the layer's own upper dir) against the naive walk
   (`--driver-opt native_diff=false`: compare the mounted views), on the
   same home, warm and cold page cache.
   Tables 1 and 2 also time the driver calls in-process (a small program
   built out of tree against crates/strata-driver, in the workdir), since
   the CLI's fixed cost is larger than the native operations themselves.
3. `strata import` (overlay driver) of the Debian layer against Docker
   20.10's `docker load` with overlay2 of a docker-archive holding the same
   layer, cold page cache before every run; a private dockerd is started
   for this and stopped (its data removed) at the end, even on failure.

usage: bench/overlay.py [--runs N] [--reps N] [--workdir DIR] [--skip-docker]
Needs root (mounts, drop_caches, device nodes). Builds strata in release;
installs docker.io with apt-get when dockerd is missing. Reuses bench.py's
Debian layer (cached in the workdir).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the Debian layer builder, drop_caches, sh)

ROOT = bench.ROOT
DEPTHS = (1, 128, 500)
DOCKER = "/usr/bin/docker"     # Debian's 20.10 CLI, not whatever else is in PATH
DOCKERD = "/usr/sbin/dockerd"
TAG = "strata-bench/debian:latest"
# paths dockerd 20.10 (and its containerd) create outside its own dirs
DOCKER_HOST_PATHS = ["/etc/docker/key.json", "/opt/containerd", "/run/docker"]


def run_timed(argv, env=None):
    """Runs argv with stdout to /dev/null; returns wall seconds. Spawned
    with posix_spawn so the measuring process adds as little as it can."""
    fa = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, env if env is not None else os.environ, file_actions=fa)
    _, status = os.waitpid(pid, 0)
    secs = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(argv)}")
    return secs


def out(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def stop_process(proc):
    """Stops `proc` (started in its own session) with SIGTERM, the way an
    init system would; its whole group gets SIGKILL after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def mounts_under(path):
    path = path.rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        pts = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in pts if (p + "/").startswith(path)]


def is_mount(path):
    return path.rstrip("/") in mounts_under(path) and os.path.ismount(path)


def unmount_all_under(path):
    for m in sorted(mounts_under(path), reverse=True):
        if subprocess.run(["umount", m], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", m], check=False)


def remove_home(strata, home):
    if os.path.exists(home):
        subprocess.run([strata, "--home", home, "cleanup"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        unmount_all_under(home)
        shutil.rmtree(home)


def fresh_home(strata, home):
    remove_home(strata, home)
    os.makedirs(home)
    return home


def one_file_layer(i):
    """An uncompressed layer tar holding one small file, `layer-NNN`."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = f"layer {i}\n".encode()
        ti = tarfile.TarInfo(f"layer-{i:03d}")
        ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
        t.addfile(ti, io.BytesIO(data))
    return b.getvalue()


def ms(v):
    return f"{v * 1000:.1f}"


def med(v):
    return statistics.median(v)


def load_note():
    l1, l5, _ = os.getloadavg()
    return f"load average {l1:.2f} (1 min), {l5:.2f} (5 min)"


# ------------------------------------------------- in-process measurement
#
# The CLI pays a process start and a driver open (with its overlay probe
# mounts) on every call, which hides what the operations themselves cost.
# crates/strata/examples/driver_timer.rs opens the driver once and times
# the driver calls themselves (what an engine calling the driver pays).


def inproc_tool(workdir):
    """Builds the in-process timer; returns its path, or None (and says
    why) when it does not build."""
    print("building the in-process timer (example driver_timer) ...", flush=True)
    r = subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "strata", "--example", "driver_timer"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  in-process timer did not build; CLI figures only:\n{r.stderr[-2000:]}", flush=True)
        return None
    return os.path.join(ROOT, "target/release/examples/driver_timer")


def inproc(tool, home, op, lid, parent, reps, cache="warm", opts=()):
    """Per-call seconds of `op` timed inside one process (tuples for getput)."""
    o = out([tool, home, op, lid, parent or "-", str(reps), cache, *opts])
    rows = [tuple(int(x) / 1e9 for x in line.split()) for line in o.splitlines()]
    return rows if op == "getput" else [r[0] for r in rows]


# --------------------------------------------------------------- get + put

def bench_get_put(strata, tool, workdir, reps):
    home = fresh_home(strata, os.path.join(workdir, "ovl-chain"))
    empty = fresh_home(strata, os.path.join(workdir, "ovl-empty"))
    try:
        return get_put_in(strata, tool, home, empty, reps)
    finally:
        remove_home(strata, home)
        remove_home(strata, empty)


def get_put_in(strata, tool, home, empty, reps):
    st = lambda *a: [strata, "--home", home, *a]  # noqa: E731
    top = max(DEPTHS)
    print(f"building a chain of {top} one-file layers (strata import, overlay) ...", flush=True)
    t0 = time.perf_counter()
    for i in range(top):
        parent = ["--parent", f"l{i - 1:03d}"] if i else []
        subprocess.run(st("--driver", "overlay", "import", f"l{i:03d}", *parent, "-"),
                       input=one_file_layer(i), check=True, stdout=subprocess.DEVNULL)
    print(f"  built in {time.perf_counter() - t0:.1f}s", flush=True)
    subprocess.run([strata, "--home", empty, "--driver", "overlay", "status"],
                   check=True, stdout=subprocess.DEVNULL)
    # the top of a chain of d layers is l(d-1); the chains share their
    # bottom layers, which changes nothing for a read-only layer's mount
    tops = {d: f"l{d - 1:03d}" for d in DEPTHS}
    for d, lid in tops.items():
        path = out(st("mount", lid)).strip()
        if d > 1:
            if not is_mount(path):
                raise SystemExit(f"strata mount {lid}: {path} is not a mount")
            missing = [f for f in ("layer-000", f"layer-{d - 1:03d}")
                       if not os.path.exists(os.path.join(path, f))]
            if missing:
                raise SystemExit(f"strata mount {lid}: {missing} missing from the merged view")
        out(st("unmount", lid))
        if d > 1 and is_mount(path):
            raise SystemExit(f"strata unmount {lid}: {path} still mounted")
    r = {"floor": []}
    for d in DEPTHS:
        r[("cli", d)] = []
    for _ in range(reps):
        r["floor"].append(run_timed([strata, "--home", empty, "status"]))
        for d, lid in tops.items():
            r[("cli", d)].append((run_timed(st("mount", lid)), run_timed(st("unmount", lid))))
    if tool:
        for d, lid in tops.items():
            inproc(tool, home, "getput", lid, None, 3)  # warm-up
            r[("inproc", d)] = inproc(tool, home, "getput", lid, None, reps)
    if mounts_under(home):
        raise SystemExit(f"mounts left under {home}: {mounts_under(home)}")
    return r


def print_get_put(r, reps):
    f = med(r["floor"])
    print(f"\n== get+put of the top of a chain, median of {reps} (ms)")
    print("CLI: `strata mount` + `strata unmount`, one process each; in-process: Driver::get + "
          "Driver::put, driver opened once")
    print(f"{'layers':>6} {'CLI mount':>10} {'CLI unmount':>12} {'CLI get+put':>12} "
          f"{'in-proc get':>12} {'in-proc put':>12} {'in-proc get+put':>16}")
    for d in DEPTHS:
        c = r[("cli", d)]
        cols = [med([g for g, _ in c]), med([p for _, p in c]), med([g + p for g, p in c])]
        line = f"{d:>6} {ms(cols[0]):>10} {ms(cols[1]):>12} {ms(cols[2]):>12}"
        if ("inproc", d) in r:
            i = r[("inproc", d)]
            line += (f" {med([g for g, _ in i]) * 1000:>12.3f} {med([p for _, p in i]) * 1000:>12.3f}"
                     f" {med([g + p for g, p in i]) * 1000:>16.3f}")
        print(line)
    print(f"CLI floor: `strata status` on an empty overlay home (process start + driver open with "
          f"its overlay probe mounts) takes {ms(f)} ms (min {ms(min(r['floor']))}), so a CLI call "
          f"costs at least that: the CLI columns are mostly process start")
    print("(1 layer: get returns the layer's own dir, no mount; 128 and 500: one read-only "
          "overlayfs mount, one lowerdir+ per layer)")


# -------------------------------------------------------- changes, diff-size

def bench_changes(strata, tool, workdir, layer, runs):
    home = fresh_home(strata, os.path.join(workdir, "ovl-changes"))
    try:
        return changes_in(strata, tool, home, layer, runs)
    finally:
        remove_home(strata, home)


def changes_in(strata, tool, home, layer, runs):
    st = lambda *a: [strata, "--home", home, *a]  # noqa: E731
    naive = ["--driver-opt", "native_diff=false"]
    out(st("--driver", "overlay", "import", "base", layer))
    out(st("create-rw", "ctr", "--parent", "base"))
    merged = out(st("mount", "ctr")).strip()
    with open(os.path.join(merged, "bench-one-file"), "w") as f:
        f.write("one changed file\n")
    out(st("unmount", "ctr"))
    stat_native = out(st("status"))
    stat_naive = out(st(*naive, "status"))
    if "Native Overlay Diff: true" not in stat_native or "Native Overlay Diff: false" not in stat_naive:
        raise SystemExit(f"unexpected status:\n{stat_native}\n{stat_naive}")
    ops = {
        "changes": ["changes", "ctr", "--parent", "base"],
        "diff-size": ["diff-size", "ctr", "--parent", "base"],
    }
    for name, args in ops.items():
        a, b = out(st(*args)), out(st(*naive, *args))
        if a != b:
            raise SystemExit(f"{name}: native and naive disagree:\n{a}\n---\n{b}")
        print(f"  {name}: {a.strip()!r} (native and naive agree)", flush=True)
    modes = {"native": [], "naive": naive}
    floor_argv = st("status")
    res = {}
    for cache in ("warm", "cold"):
        t = {"floor": []}
        for op, args in ops.items():
            for mode, opt in modes.items():
                run_timed(st(*opt, *args))  # warm-up
                t[("cli", op, mode)] = []
        for _ in range(runs):
            for op, args in ops.items():
                for mode, opt in modes.items():
                    if cache == "cold":
                        drop_store_caches(strata)
                    t[("cli", op, mode)].append(run_timed(st(*opt, *args)))
            if cache == "cold":
                drop_store_caches(strata)
            t["floor"].append(run_timed(floor_argv))
        if tool:
            for op in ops:
                for mode, opt in modes.items():
                    inproc(tool, home, op, "ctr", "base", 2, "warm", opt[1:])  # warm-up
                    t[("inproc", op, mode)] = inproc(tool, home, op, "ctr", "base", runs, cache, opt[1:])
        res[cache] = t
    return res


def drop_store_caches(strata):
    """Drops the page cache, then reads strata's binary back, so that only
    the store is cold."""
    bench.drop_caches()
    with open(strata, "rb") as f:
        while f.read(1 << 20):
            pass


def print_changes(res, runs):
    print(f"\n== changes / diff-size of a container layer with one new file on the Debian rootfs, "
          f"median of {runs} (ms)")
    print("native: the layer's own upper dir; naive: `--driver-opt native_diff=false` (both "
          "mounted views walked and compared); same home. cold: page cache dropped before each "
          "call (the CLI's binary read back first)")
    print(f"{'op':<10} {'cache':<5} {'CLI native':>11} {'CLI naive':>10} {'CLI ratio':>10} "
          f"{'in-proc native':>15} {'in-proc naive':>14} {'in-proc ratio':>14}")
    for cache, t in res.items():
        for op in ("changes", "diff-size"):
            n, v = med(t[("cli", op, "native")]), med(t[("cli", op, "naive")])
            line = f"{op:<10} {cache:<5} {ms(n):>11} {ms(v):>10} {v / n:>9.1f}x"
            if ("inproc", op, "native") in t:
                ni, vi = med(t[("inproc", op, "native")]), med(t[("inproc", op, "naive")])
                line += f" {ni * 1000:>15.3f} {vi * 1000:>14.1f} {vi / ni:>13.0f}x"
            print(line)
    print("CLI floor (`strata status`, same home): " + ", ".join(
        f"{c} {ms(med(t['floor']))} ms" for c, t in res.items())
        + ": the CLI's native figures are almost all process start and driver open")


# ------------------------------------------------------------- docker load

def docker_archive(workdir, layer):
    """A docker-archive (`docker save` format) of one image whose only
    layer is `layer`: manifest.json, the image config, <id>/layer.tar."""
    path = os.path.join(workdir, "debian-docker.tar")
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(layer):
        return path
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    layer_hex = h.hexdigest()
    created = "2023-11-14T22:13:20Z"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Cmd": ["/bin/bash"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
        "history": [{"created": created, "created_by": "strata bench/overlay.py"}],
    }
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [TAG],
                            "Layers": [f"{layer_hex}/layer.tar"]}]).encode()

    def add_bytes(t, name, data):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
        t.addfile(ti, io.BytesIO(data))

    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo(layer_hex)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        t.addfile(d)
        ti = tarfile.TarInfo(f"{layer_hex}/layer.tar")
        ti.size, ti.mtime, ti.mode = os.path.getsize(layer), 1700000000, 0o644
        with open(layer, "rb") as f:
            t.addfile(ti, f)
        add_bytes(t, cfg_name, cfg)
        add_bytes(t, "manifest.json", manifest)
    os.rename(tmp, path)
    return path


class Dockerd:
    """A private dockerd 20.10 (overlay2 unless `storage_driver` names
    another, e.g. a graph-driver plugin): own data-root, exec-root and
    socket under `base`, no bridge, no iptables."""

    def __init__(self, base, storage_driver="overlay2"):
        self.base = base
        self.storage_driver = storage_driver
        self.data = os.path.join(base, "data")
        self.sock = os.path.join(base, "docker.sock")
        self.proc = None
        self.created = []
        self.env = dict(os.environ, DOCKER_CONFIG=os.path.join(base, "cli"))

    def cli(self, *args):
        return [DOCKER, "-H", f"unix://{self.sock}", *args]

    def run(self, *args, check=True):
        return subprocess.run(self.cli(*args), env=self.env, check=check,
                              capture_output=True, text=True)

    def start(self):
        if os.path.exists(self.base):
            unmount_all_under(self.base)
            shutil.rmtree(self.base)
        for d in ("data", "exec", "cli"):
            os.makedirs(os.path.join(self.base, d))
        with open(os.path.join(self.base, "daemon.json"), "w") as f:
            f.write("{}\n")
        self.created = [p for p in DOCKER_HOST_PATHS if not os.path.exists(p)]
        log = open(os.path.join(self.base, "dockerd.log"), "w")
        self.proc = subprocess.Popen(
            [DOCKERD, "--config-file", os.path.join(self.base, "daemon.json"),
             "--data-root", self.data, "--exec-root", os.path.join(self.base, "exec"),
             "-H", f"unix://{self.sock}", "--pidfile", os.path.join(self.base, "dockerd.pid"),
             "--storage-driver", self.storage_driver, "--experimental", "--bridge", "none", "--iptables=false",
             "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        for _ in range(300):
            if self.run("version", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = open(os.path.join(self.base, "dockerd.log")).read()[-3000:]
        raise SystemExit(f"dockerd did not come up; log tail:\n{tail}")

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if os.path.exists(self.base):
            unmount_all_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)
        for p in self.created:
            if os.path.isfile(p):
                os.remove(p)
            elif os.path.isdir(p):
                subprocess.run(["find", p, "-depth", "-type", "d", "-empty", "-delete"], check=False)

    def layers_on_disk(self):
        """overlay2's layer dirs (everything but its `l` link dir)."""
        d = os.path.join(self.data, "overlay2")
        return [e for e in os.listdir(d) if e != "l"] if os.path.isdir(d) else []

    def remove_image(self):
        self.run("rmi", "-f", TAG, check=False)
        self.run("image", "prune", "-f")
        left = self.layers_on_disk()
        if left:
            raise SystemExit(f"overlay2 still holds {left} after rmi + prune")


def bench_docker(strata, workdir, layer, runs):
    bench.ensure({DOCKERD: "docker.io", DOCKER: "docker.io"})
    archive = docker_archive(workdir, layer)
    home = os.path.join(workdir, "ovl-import")
    dk = Dockerd(os.path.join(workdir, "dockerd"))
    tools = {
        "strata import (overlay)": lambda: [
            "sh", "-c", f"{strata} --home {home} --driver overlay import base {layer} >/dev/null"],
        "docker load (overlay2)": lambda: dk.cli("load", "-q", "-i", archive),
        "docker load; sync": lambda: [
            "sh", "-c", " ".join(dk.cli("load", "-q", "-i", archive)) + " >/dev/null && sync"],
    }
    results = {k: [] for k in tools}
    try:
        dk.start()
        info = dk.run("info", "--format", "{{.ServerVersion}} {{.Driver}} {{json .DriverStatus}}").stdout
        print(f"dockerd {info.strip()}", flush=True)
        if " overlay2 " not in info:
            raise SystemExit("dockerd is not using overlay2")

        def prepare(name):
            if name.startswith("docker"):
                dk.remove_image()
            else:
                fresh_home(strata, home)

        def check(name):
            if name.startswith("docker"):
                if len(dk.layers_on_disk()) != 1 or dk.run("image", "inspect", TAG, check=False).returncode:
                    raise SystemExit(f"{name}: image or layer missing after load")

        # one untimed round: first-use costs of the daemon, and a check
        for name, argv in tools.items():
            prepare(name)
            run_timed(argv(), env=dk.env)
            check(name)
        print(f"archive: {archive} ({os.path.getsize(archive) / 1e6:.1f} MB), {runs} runs, cold cache",
              flush=True)
        for run in range(runs):
            order = list(tools) if run % 2 == 0 else list(reversed(tools))
            for name in order:
                prepare(name)
                bench.drop_caches()
                results[name].append(run_timed(tools[name](), env=dk.env))
                check(name)
            print(f"  run {run + 1}: " + ", ".join(f"{k} {results[k][-1]:.2f}s" for k in tools), flush=True)
        dk.remove_image()
    finally:
        dk.stop()
        remove_home(strata, home)
    return results


def print_docker(results, runs):
    print(f"\n== import of the Debian layer: strata (overlay) vs Docker 20.10 `docker load` (overlay2), "
          f"cold cache, {runs} runs")
    base = med(results["docker load (overlay2)"])
    print(f"{'tool':<24} {'median s':>9} {'min s':>7} {'max s':>7} {'vs docker load':>15}")
    for k, v in results.items():
        print(f"{k:<24} {med(v):>9.3f} {min(v):>7.3f} {max(v):>7.3f} {med(v) / base:>14.2f}x")
    s = med(results["strata import (overlay)"])
    print(f"\nstrata / docker load         = {s / base:.2f}  (target <= 0.50)")
    print(f"strata / (docker load; sync) = {s / med(results['docker load; sync']):.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5, help="runs of changes/diff-size and of the imports")
    ap.add_argument("--reps", type=int, default=25, help="repetitions of each mount/unmount")
    ap.add_argument("--skip-docker", action="store_true")
    a = bench.parse_args(ap, "overlay.py", "mounts, drop_caches, device nodes")
    print(f"start: {load_note()}", flush=True)
    t0 = time.perf_counter()
    bench.sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    strata = os.path.join(ROOT, "target/release/strata")
    layer = bench.debian_layer(a.workdir)

    tool = inproc_tool(a.workdir)
    gp = bench_get_put(strata, tool, a.workdir, a.reps)
    print_get_put(gp, a.reps)
    print(flush=True)
    ch = bench_changes(strata, tool, a.workdir, layer, a.runs)
    print_changes(ch, a.runs)
    if not a.skip_docker:
        print(flush=True)
        dk = bench_docker(strata, a.workdir, layer, a.runs)
        print_docker(dk, a.runs)
    print(f"\nend: {load_note()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
