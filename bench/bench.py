#!/usr/bin/env python3
"""Strata import benchmark: `strata import` against GNU tar and bsdtar.

Imports a Debian rootfs layer (debootstrap --variant=minbase bookworm,
packed like an image layer: no /dev, /proc, /sys, apt caches) with each
tool, on the same disk, with a cold page cache before every run (the input
tar too), and prints medians, ratios and peak RSS. Strata syncs a layer
before it becomes visible, so the fair peer is `tar -x; sync`; plain
`tar -x` (data still in the page cache) is shown too. Strata builds each
layer in a directory that ext4 places in a block group of its own; GNU
tar into such a directory (`chattr +T`) is shown as well, so the part of
the difference that is placement can be told apart.

usage: bench/bench.py [--runs N] [--workdir DIR] [--layer FILE] [--skip-rss]
                      [--settle SECONDS]
Needs root (drop_caches, device nodes, ownership). Builds strata in release.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import namedtuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNE = ["./dev/*", "./proc/*", "./sys/*", "./var/cache/apt/archives/*.deb",
         "./var/lib/apt/lists/*", "./debootstrap"]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def drop_caches(settle=0):
    """Empties the page cache, then waits `settle` seconds. On a virtual
    machine whose balloon reports free pages, the memory the drop freed
    goes back to the host about 2 s later and costs a host fault per page
    when touched again: a wait puts every run in that state, not some runs
    in it and others not (BENCHMARKS.md)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    time.sleep(settle)


def timed(argv):
    """Runs argv; returns (seconds, peak RSS in MiB of the child tree)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    secs = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(argv)}")
    return secs, ru.ru_maxrss / 1024


# Seconds (median, min, max) and peak RSS in MiB of one tool's runs.
Timing = namedtuple("Timing", "median min max rss")


def alternated(runs, tools, before=None, progress=False):
    """Times each of `tools` (name -> argv) `runs` times, the tools taking
    turns within every run so that a slow spell of the host falls on all of
    them alike (calling `before` ahead of each; with `progress`, a line per
    run); name -> Timing."""
    secs = {k: [] for k in tools}
    rss = {k: 0.0 for k in tools}
    for run in range(runs):
        for name, argv in tools.items():
            if before:
                before()
            t, peak = timed(argv)
            secs[name].append(t)
            rss[name] = max(rss[name], peak)
        if progress:
            print(f"  run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in secs.items()), flush=True)
    return {k: Timing(statistics.median(v), min(v), max(v), rss[k]) for k, v in secs.items()}


LINUX_TAR_FLAGS = "--numeric-owner --xattrs --xattrs-include='*'"


def gnu_tar(layer, d, sync=True, top=False, flags=LINUX_TAR_FLAGS):
    """GNU tar extracting `layer` into `d` as root would (by default with
    numeric owners and every xattr), then `sync`; with `top`, into a
    subdirectory of `d` made an ext4 top directory first (`chattr +T`), so
    that the allocator spreads it as Strata spreads its layers (see
    BENCHMARKS.md)."""
    into = f"{d}/t" if top else d
    prep = f"mkdir -p {d} && chattr +T {d} && mkdir {into}" if top else f"mkdir -p {d}"
    then = " && sync" if sync else ""
    return ["sh", "-c", f"{prep} && tar {flags} -xpf {layer} -C {into}{then}"]


def ensure(commands):
    """Installs with apt-get the Debian package of every command in
    `commands` ({command or absolute path: package}) that is missing, so a
    bench on a fresh machine sets itself up instead of failing part way
    (the benches run as root anyway)."""
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if missing:
        print(f"apt-get install {' '.join(missing)} ...", flush=True)
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
           f"--no-install-recommends {' '.join(missing)} >/dev/null")


def parse_args(ap, script, needs):
    """Adds --workdir to `ap`, parses the command line, insists on root
    (`needs` says what for) and makes the work dir."""
    ap.add_argument("--workdir", default="/var/tmp/strata-bench")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit(f"{script} needs root ({needs})")
    os.makedirs(a.workdir, exist_ok=True)
    return a


def debian_layer(workdir):
    layer = os.path.join(workdir, "debian.tar")
    if os.path.exists(layer):
        return layer
    rootfs = os.path.join(workdir, "rootfs")
    if not os.path.exists(os.path.join(rootfs, "bin/bash")):
        shutil.rmtree(rootfs, ignore_errors=True)
        ensure({"debootstrap": "debootstrap"})
        print("debootstrap --variant=minbase bookworm (once) ...", flush=True)
        sh(f"debootstrap --variant=minbase bookworm {rootfs} http://deb.debian.org/debian >/dev/null")
    prune = " -o ".join(f"-path '{p}'" for p in PRUNE)
    # depth-first, siblings sorted bytewise, numeric owners, xattrs: what
    # image builders write
    sh(f"cd {rootfs} && find . -mindepth 1 \\( {prune} \\) -prune -o -printf '%P\\0' | "
       "python3 -c 'import sys; d=sys.stdin.buffer.read().split(b\"\\0\")[:-1]; "
       "d.sort(key=lambda p: p.split(b\"/\")); sys.stdout.buffer.write(b\"\".join(x+b\"\\0\" for x in d))' | "
       "tar --null --no-recursion -T - --format=pax "
       "--pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' "
       f"--numeric-owner --xattrs --xattrs-include='*' -cf {layer}")
    return layer


def big_layer(workdir, base):
    """A ~1 GiB layer: the Debian layer plus large random files."""
    layer = os.path.join(workdir, "big.tar")
    if os.path.exists(layer):
        return layer
    src = os.path.join(workdir, "bigsrc")
    os.makedirs(src, exist_ok=True)
    for i in range(7):
        with open(os.path.join(src, f"blob{i}"), "wb") as f:
            for _ in range(128):
                f.write(os.urandom(1 << 20))
    sh(f"cp {base} {layer}.tmp && tar --format=pax -C {src} -rf {layer}.tmp . && mv {layer}.tmp {layer}")
    shutil.rmtree(src)
    return layer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layer")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--settle", type=float, default=0, metavar="SECONDS",
                    help="wait after each cache drop (see BENCHMARKS.md: free page reporting)")
    a = parse_args(ap, "bench.py", "drop_caches, device nodes, ownership")
    ensure({"tar": "tar", "bsdtar": "libarchive-tools", "chattr": "e2fsprogs"})
    sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    strata = os.path.join(ROOT, "target/release/strata")
    layer = a.layer or debian_layer(a.workdir)
    entries = int(subprocess.run(f"tar -tf {layer} | wc -l", shell=True, check=True,
                                 capture_output=True, text=True).stdout)
    size = os.path.getsize(layer)
    out = os.path.join(a.workdir, "out")

    def strata_import(d, tar):
        return ["sh", "-c", f"{strata} --home {d} --driver vfs import l {tar} >/dev/null"]

    tools = {
        "strata import (vfs)": strata_import(out, layer),
        "tar -x; sync": gnu_tar(layer, out),
        # How much of the difference is placement.
        "tar -x; sync (top dir)": gnu_tar(layer, out, top=True),
        "bsdtar -x; sync": ["sh", "-c", f"mkdir -p {out} && bsdtar -xpf {layer} -C {out} && sync"],
        "tar -x (no sync)": gnu_tar(layer, out, sync=False),
        "tar -x (no sync, top)": gnu_tar(layer, out, sync=False, top=True),
    }

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        drop_caches(a.settle)

    print(f"layer: {layer} ({size / 1e6:.1f} MB, {entries} entries), {a.runs} runs, cold cache", flush=True)
    rows = alternated(a.runs, tools, fresh, progress=True)
    shutil.rmtree(out, ignore_errors=True)

    med = {k: t.median for k, t in rows.items()}
    base = med["tar -x; sync"]
    print(f"\n{'tool':<22} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13} {'vs tar -x; sync':>16}")
    for k, t in rows.items():
        print(f"{k:<22} {t.median:>9.3f} {t.min:>7.3f} {t.max:>7.3f} {t.rss:>13.1f} {t.median / base:>15.2f}x")
    s = med["strata import (vfs)"]
    print(f"\nstrata / (tar -x; sync) = {s / base:.2f}  (target <= 0.70)")
    print(f"strata / (tar -x)       = {s / med['tar -x (no sync)']:.2f}  (target <= 1.00)")
    print(f"the same against tar in a top dir: {s / med['tar -x; sync (top dir)']:.2f} and "
          f"{s / med['tar -x (no sync, top)']:.2f}")

    if not a.skip_rss:
        big = big_layer(a.workdir, layer)
        shutil.rmtree(out, ignore_errors=True)
        drop_caches()
        secs, peak = timed(strata_import(out, big))
        shutil.rmtree(out, ignore_errors=True)
        print(f"peak RSS importing {os.path.getsize(big) / 2**30:.2f} GiB layer: {peak:.1f} MiB in {secs:.2f}s (target <= 64 MiB)")


if __name__ == "__main__":
    main()
