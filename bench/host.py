#!/usr/bin/env python3
"""What this host charges for overlap: the cost of reading a layer while
files are being created on another core.

Strata's read-ahead thread reads and hashes the layer tar (cold cache) on
one core while the applier creates files on the other. This script does the
same reading and hashing (1 MiB reads into 16 rotating buffers, sha256),
with a cold cache each time, (a) alone and (b) while GNU tar extracts a
copy of the same layer, already in the page cache, into a scratch dir on
the same disk, so that tar reads nothing from the disk and only its
creates and writes run beside the reader, and (c) alone again, but only
`--settle` seconds after the cache drop. It prints the reader's wall, user
and system time; the cases take turns within each run.
On a machine where the two cores do not disturb each other, (b) costs the
reader what (a) does. On a virtual machine whose balloon device reports
free pages to the host, (c) costs more than (a): the memory the drop freed
has gone back to the host by then, and every page the read fills again
takes a fault on the host.

usage: bench/host.py [--runs N] [--workdir DIR] [--settle SECONDS]
Needs root (drop_caches). Uses the Debian layer of bench.py.
"""
import argparse
import hashlib
import os
import shutil
import statistics
import subprocess

from bench import debian_layer, drop_caches, parse_args

CHUNK = 1 << 20
BUFFERS = 16


def read_and_hash(path):
    """Reads `path` to the end as the read-ahead thread does; returns this
    process's (wall, user, system) seconds for it."""
    bufs = [bytearray(CHUNK) for _ in range(BUFFERS)]
    h = hashlib.sha256()
    t0 = os.times()
    with open(path, "rb", buffering=0) as f:
        i = 0
        while n := f.readinto(bufs[i % BUFFERS]):
            h.update(memoryview(bufs[i % BUFFERS])[:n])
            i += 1
    t1 = os.times()
    return t1.elapsed - t0.elapsed, t1.user - t0.user, t1.system - t0.system


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--settle", type=float, default=10, metavar="SECONDS",
                    help="wait between the cache drop and the read in case (c)")
    a = parse_args(ap, "host.py", "drop_caches")
    layer = debian_layer(a.workdir)
    # A second copy, so that tar's input and the reader's are different
    # files: tar's is warmed after each cache drop, the reader's is not.
    other = os.path.join(a.workdir, "host-copy.tar")
    if not os.path.exists(other):
        shutil.copyfile(layer, other)
    scratch = os.path.join(a.workdir, "host-scratch")
    settled = f"alone, {a.settle:g}s later"
    cases = {"alone": [], "beside tar -x": [], settled: []}
    for run in range(a.runs):
        for case, got in cases.items():
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            drop_caches(a.settle if case == settled else 0)
            tar = None
            if case == "beside tar -x":
                subprocess.run(["cat", other], stdout=subprocess.DEVNULL, check=True)
                tar = subprocess.Popen(["tar", "-xpf", other, "-C", scratch])
            got.append(read_and_hash(layer))
            if tar and tar.wait() != 0:
                raise SystemExit("tar -x failed")
        print(f"  run {run + 1}: " + ", ".join(
            f"{c} {v[-1][0]:.3f}s (sys {v[-1][2]:.3f}s)" for c, v in cases.items()), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nreading and hashing {os.path.getsize(layer) / 1e6:.1f} MB, cold cache, {a.runs} runs")
    # The slow-down comes in some runs and not others, so the spread
    # matters as much as the median.
    print(f"{'case':<20}{'wall med':>9}{'min':>7}{'max':>7}{'user med':>10}{'sys med':>9}{'max':>7}")
    for case, v in cases.items():
        wall, user, syst = ([x[k] for x in v] for k in range(3))
        print(f"{case:<20}{statistics.median(wall):>9.3f}{min(wall):>7.3f}{max(wall):>7.3f}"
              f"{statistics.median(user):>10.3f}{statistics.median(syst):>9.3f}{max(syst):>7.3f}")


if __name__ == "__main__":
    main()
