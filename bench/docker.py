#!/usr/bin/env python3
"""Docker on Strata (issue 5): dockerd 20.10 with the Strata graph-driver
plugin against the same dockerd with its built-in overlay2, side by side.

Two private daemons of the same /usr/sbin/dockerd run at once (both with
--experimental, so they differ only in the storage driver):

* overlay2: `--storage-driver overlay2`
* strata:   `--storage-driver strata-bench`, served by `strata serve
  --docker <workdir>/strata.sock --spec-file /etc/docker/plugins/strata-bench.spec`
  (release build; `--driver overlay` unless --strata-driver says otherwise)

and each measurement alternates between them:

1. `docker load` of a docker-archive holding the Debian rootfs layer
   (bench.py's layer, cached in the workdir), cold page cache before
   every run; the image is removed (and its layers checked gone) between
   runs.
2. `docker run --rm --network none <image> true`, warm, image loaded:
   container create (the -init layer and the container layer), start
   (mount), stop, remove.

usage: bench/docker.py [--runs N] [--run-reps N] [--workdir DIR] [--strata-driver overlay|vfs]
Needs root. Builds strata in release (in $CARGO_TARGET_DIR if set).
Targets: load <= 1.0x overlay2's time, run start <= 1.2x.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the Debian layer, drop_caches, sh)
import overlay  # noqa: E402  (private dockerd, docker-archive, timing helpers)

ROOT = bench.ROOT
TAG = overlay.TAG
PLUGIN = "strata-bench"
SPEC_DIR = "/etc/docker/plugins"


def strata_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bench.sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    return os.path.join(target, "release", "strata")


class StrataPlugin:
    """`strata serve` for dockerd: a private socket and a spec file naming
    it; stopped with SIGTERM (the way an init system stops it)."""

    def __init__(self, strata, base, driver):
        self.strata, self.base, self.driver = strata, base, driver
        self.sock = os.path.join(base, "strata.sock")
        self.spec = os.path.join(SPEC_DIR, f"{PLUGIN}.spec")
        self.log = os.path.join(base, "strata.log")
        self.proc = None
        self.made_spec_dir = False

    def start(self):
        os.makedirs(self.base, exist_ok=True)
        self.made_spec_dir = not os.path.isdir(SPEC_DIR)
        log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [self.strata, "--driver", self.driver, "serve", "--docker", self.sock,
             "--spec-file", self.spec, "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        log.close()
        # `strata serve` prints one line once the socket is ready
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"strata serve did not start; log:\n{open(self.log).read()[-3000:]}")
        print(f"  {line.strip()}", flush=True)

    def stop(self):
        overlay.stop_process(self.proc)
        self.proc = None
        if self.made_spec_dir and os.path.isdir(SPEC_DIR) and not os.listdir(SPEC_DIR):
            os.rmdir(SPEC_DIR)

    def calls(self):
        """Per-endpoint (count, total ms) from the plugin's JSON log."""
        out = {}
        with open(self.log) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if "call" in e and "ms" in e:
                    n, ms = out.get(e["call"], (0, 0.0))
                    out[e["call"]] = (n + 1, ms + e["ms"])
        return out


def strata_layers(dk):
    home = os.path.join(dk.data, PLUGIN)
    if not os.path.isdir(home):
        return []
    return [e for e in os.listdir(home) if e != "staging" and not e.startswith(".")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5, help="cold-cache docker loads per daemon")
    ap.add_argument("--run-reps", type=int, default=15, help="docker run --rm ... true per daemon")
    ap.add_argument("--strata-driver", default="overlay", choices=["overlay", "vfs"])
    a = bench.parse_args(ap, "docker.py", "daemons, mounts, drop_caches")
    bench.ensure({overlay.DOCKERD: "docker.io", overlay.DOCKER: "docker.io",
                  "containerd": "containerd", "runc": "runc"})
    print(f"start: {overlay.load_note()}", flush=True)
    t0 = time.perf_counter()
    strata = strata_binary()
    layer = bench.debian_layer(a.workdir)
    archive = overlay.docker_archive(a.workdir, layer)
    base = os.path.join(a.workdir, "docker-bench")
    plugin = StrataPlugin(strata, os.path.join(base, "plugin"), a.strata_driver)
    daemons = {
        "overlay2": overlay.Dockerd(os.path.join(base, "overlay2")),
        "strata": overlay.Dockerd(os.path.join(base, "strata"), storage_driver=PLUGIN),
    }
    load = {k: [] for k in daemons}
    run = {k: [] for k in daemons}
    try:
        daemons["overlay2"].start()
        plugin.start()
        daemons["strata"].start()
        for name, dk in daemons.items():
            info = dk.run("info", "--format", "{{.ServerVersion}} {{.Driver}} {{json .DriverStatus}}").stdout
            print(f"  {name}: dockerd {info.strip()}", flush=True)

        def remove_image(name):
            dk = daemons[name]
            dk.run("rmi", "-f", TAG, check=False)
            left = dk.layers_on_disk() if name == "overlay2" else strata_layers(dk)
            if left:
                raise SystemExit(f"{name}: layers left after rmi: {left}")

        def loaded(name):
            if daemons[name].run("image", "inspect", TAG, check=False).returncode:
                raise SystemExit(f"{name}: image missing after load")

        # one untimed round: first-use costs of each daemon, and a check
        for name, dk in daemons.items():
            remove_image(name)
            overlay.run_timed(dk.cli("load", "-q", "-i", archive), env=dk.env)
            loaded(name)
        print(f"archive: {archive} ({os.path.getsize(archive) / 1e6:.1f} MB), {a.runs} cold loads each",
              flush=True)
        for i in range(a.runs):
            order = list(daemons) if i % 2 == 0 else list(reversed(daemons))
            for name in order:
                dk = daemons[name]
                remove_image(name)
                bench.drop_caches()
                load[name].append(overlay.run_timed(dk.cli("load", "-q", "-i", archive), env=dk.env))
                loaded(name)
            print(f"  load {i + 1}: " + ", ".join(f"{k} {load[k][-1]:.3f}s" for k in daemons), flush=True)

        argv = lambda dk: dk.cli("run", "--rm", "--network", "none", TAG, "true")  # noqa: E731
        for name, dk in daemons.items():
            for _ in range(2):  # warm-up
                overlay.run_timed(argv(dk), env=dk.env)
        for i in range(a.run_reps):
            order = list(daemons) if i % 2 == 0 else list(reversed(daemons))
            for name in order:
                run[name].append(overlay.run_timed(argv(daemons[name]), env=daemons[name].env))
        for name in daemons:
            remove_image(name)
    finally:
        daemons["strata"].stop()
        plugin.stop()
        daemons["overlay2"].stop()

    med = overlay.med
    print(f"\n== Docker 20.10 on Strata ({a.strata_driver} driver, graph-driver plugin) vs built-in overlay2, "
          f"same dockerd binary and flags")
    print(f"{'step':<44} {'overlay2 s':>11} {'strata s':>9} {'ratio':>7} {'target':>7}")
    for step, res, n, target in (
        (f"docker load, Debian layer, cold cache ({a.runs} runs)", load, a.runs, 1.0),
        (f"docker run --rm ... true, warm ({a.run_reps} runs)", run, a.run_reps, 1.2),
    ):
        o, s = med(res["overlay2"]), med(res["strata"])
        verdict = "met" if s / o <= target else "NOT met"
        print(f"{step:<44} {o:>11.3f} {s:>9.3f} {s / o:>6.2f}x {target:>6.1f}x  {verdict}")
        print(f"{'':<44} min/max overlay2 {min(res['overlay2']):.3f}/{max(res['overlay2']):.3f}, "
              f"strata {min(res['strata']):.3f}/{max(res['strata']):.3f}")
    calls = plugin.calls()
    if calls:
        print("\nplugin time per endpoint (from its JSON log, all runs incl. warm-up):")
        for call, (n, ms) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
            print(f"  {call:<30} {n:>5} calls {ms:>10.1f} ms total {ms / n:>8.2f} ms mean")
    print(f"\nend: {overlay.load_note()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
