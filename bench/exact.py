#!/usr/bin/env python3
"""Exact re-export and compressed import benchmark (issue 4).

Export: `strata export` of the imported Debian layer (a replay of its
tar-split record, reading the layer's files and checking each CRC) against
`cat` of the same tar from the page cache (the limit: no file system walk,
no checksums) and `tar -c` of the extracted tree (what regenerating costs).
Warm cache for all three, medians.

Import: `strata import` of the gzip'd Debian layer (pigz -n -6, as
image builders write) against `tar -xzf; sync` and `tar -I pigz -xf; sync`,
cold cache, medians. Target: <= 0.6x of `tar -xzf; sync`.

usage: sudo python3 bench/exact.py [--runs N] [--workdir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the Debian layer builder, drop_caches, sh, timed)

ROOT = bench.ROOT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = bench.parse_args(ap, "exact.py", "drop_caches, device nodes, ownership")
    bench.sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    strata = os.path.join(ROOT, "target/release/strata")
    layer = bench.debian_layer(a.workdir)
    size = os.path.getsize(layer)
    home = os.path.join(a.workdir, "exact-home")
    tree = os.path.join(a.workdir, "exact-tree")
    for d in (home, tree):
        shutil.rmtree(d, ignore_errors=True)
    bench.sh(f"{strata} --home {home} --driver overlay import l {layer} >/dev/null")
    os.makedirs(tree)
    bench.sh(f"tar --numeric-owner --xattrs --xattrs-include='*' -xpf {layer} -C {tree}")

    # The export must be the imported bytes before it is worth timing.
    same = subprocess.run(f"{strata} --home {home} export l | cmp - {layer}", shell=True)
    if same.returncode != 0:
        raise SystemExit("strata export differs from the imported tar")

    # Warm everything once; output goes through a pipe so no tool can skip
    # reading data (GNU tar does when it sees /dev/null).
    warm = {
        "strata export (replay)": ["sh", "-c", f"{strata} --home {home} export l | cat >/dev/null"],
        "cat tar (page cache)": ["sh", "-c", f"cat {layer} | cat >/dev/null"],
        "tar -c of the tree": ["sh", "-c", f"tar --numeric-owner --xattrs --xattrs-include='*' -C {tree} -cf - . | cat >/dev/null"],
    }
    for argv in warm.values():
        bench.timed(argv)
    print(f"export of the Debian layer ({size / 1e6:.1f} MB), warm cache, {a.runs} runs")
    rows = bench.alternated(a.runs, warm)
    cat = rows["cat tar (page cache)"][0]
    print(f"{'tool':<26} {'median s':>9} {'min s':>7} {'max s':>7} {'vs cat':>8}")
    for k, (m, lo, hi, _) in rows.items():
        print(f"{k:<26} {m:>9.3f} {lo:>7.3f} {hi:>7.3f} {m / cat:>7.2f}x")

    gz = os.path.join(a.workdir, "debian.tar.gz")
    if not os.path.exists(gz):
        bench.ensure({"pigz": "pigz"})
        bench.sh(f"pigz -n -6 -c {layer} > {gz}")
    out = os.path.join(a.workdir, "exact-out")

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        bench.drop_caches()

    cold = {
        "strata import (gzip)": ["sh", "-c", f"{strata} --home {out} --driver overlay import l {gz} >/dev/null"],
        "tar -xzf; sync": ["sh", "-c", f"mkdir -p {out} && tar --numeric-owner --xattrs --xattrs-include='*' -xpzf {gz} -C {out} && sync"],
        "tar -I pigz -x; sync": ["sh", "-c", f"mkdir -p {out} && tar --numeric-owner --xattrs --xattrs-include='*' -I pigz -xpf {gz} -C {out} && sync"],
    }
    print(f"\nimport of the gzip'd Debian layer ({os.path.getsize(gz) / 1e6:.1f} MB), cold cache, {a.runs} runs")
    rows = bench.alternated(a.runs, cold, fresh)
    shutil.rmtree(out, ignore_errors=True)
    base = rows["tar -xzf; sync"][0]
    print(f"{'tool':<26} {'median s':>9} {'min s':>7} {'max s':>7} {'vs tar -xzf; sync':>18}")
    for k, (m, lo, hi, _) in rows.items():
        print(f"{k:<26} {m:>9.3f} {lo:>7.3f} {hi:>7.3f} {m / base:>17.2f}x")
    print(f"\nstrata / (tar -xzf; sync) = {rows['strata import (gzip)'][0] / base:.2f}  (target <= 0.60)")
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
