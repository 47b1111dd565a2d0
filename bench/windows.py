#!/usr/bin/env python3
"""Windows layer benchmark (issue 7): import and exact export of a
generated Windows base layer with the windowsfilter driver.

The layer is what a Windows base layer looks like to a tar reader: `Files/`
with a deep tree of directories and files, every entry with go-winio's PAX
records (LIBARCHIVE.creationtime, MSWINDOWS.fileattr, MSWINDOWS.rawsd,
atime, ctime, mtime), hard links from UtilityVM/Files into Files/, and a
utility VM with its BCD (at least 20k entries and 300 MB; written once with
Python's tarfile).

Import: `strata --driver windowsfilter import` against `tar -x; sync` of
the same tar, cold page cache before every run (the input tar too),
the three taking turns within each run.
Export: `strata export` (a replay of the import's tar-split record, each
file checked against its CRC, the BCD served from its backup) against
`cat` of the tar from the page cache, warm. Medians of --runs.

usage: sudo python3 bench/windows.py [--runs N] [--workdir DIR]
Needs root (drop_caches, mounts). Builds strata in release (honours
CARGO_TARGET_DIR).
"""
import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (drop_caches, sh, timed, ROOT)

ROOT = bench.ROOT


def descriptors(strata, workdir):
    """BuildKit's file and directory SDs, as `strata windows-layer build`
    writes them (base64 of the binary form)."""
    src = os.path.join(workdir, "sd-src")
    os.makedirs(os.path.join(src, "d"), exist_ok=True)
    with open(os.path.join(src, "f"), "w") as f:
        f.write("x")
    tar = os.path.join(workdir, "sd.tar")
    bench.sh(f"{strata} windows-layer build {src} -o {tar} >/dev/null")
    with tarfile.open(tar) as tf:
        sds = {m.name: m.pax_headers["MSWINDOWS.rawsd"] for m in tf.getmembers()}
    return sds["Files/f"], sds["Files/d"]


def records(attr, t, sds):
    return {
        "LIBARCHIVE.creationtime": f"{t}.1234567",
        "MSWINDOWS.fileattr": str(attr),
        "MSWINDOWS.rawsd": sds[1] if attr & 0x10 else sds[0],
        "atime": f"{t + 1}.5",
        "ctime": f"{t + 2}.25",
    }


def windows_layer(workdir, sds, entries=22000, total=320 << 20):
    layer = os.path.join(workdir, "windows-base.tar")
    if os.path.exists(layer):
        return layer
    rng = random.Random(7)
    t = 1700000000
    blob = os.urandom(4 << 20)
    files = entries - entries // 20  # ~5% directories
    sizes = [rng.randint(1, 2 * total // files) for _ in range(files)]
    tmp = layer + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, kind, data=b"", attr=0x20, link=""):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = 0
            ti.mtime = t + 0.1234567
            ti.linkname = link
            ti.pax_headers = records(attr, t, sds) if kind != tarfile.LNKTYPE else {}
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data else None)

        dirs = ["Files", "Files/Windows", "Files/Windows/System32", "Files/Windows/System32/config"]
        for d in dirs:
            add(d, tarfile.DIRTYPE, attr=0x10)
        for h in ["DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"]:
            add(f"Files/Windows/System32/config/{h}", tarfile.REGTYPE, b"regf" + bytes(8188))
        made, n = 0, 0
        while made < files:
            d = f"Files/Windows/WinSxS/pkg{n // 40:04d}/sub{n % 40:02d}"
            if n % 40 == 0:
                if n == 0:
                    add("Files/Windows/WinSxS", tarfile.DIRTYPE, attr=0x10)
                add(d.rsplit("/", 1)[0], tarfile.DIRTYPE, attr=0x10)
            add(d, tarfile.DIRTYPE, attr=0x10)
            for i in range(min(19, files - made)):
                size = sizes[made]
                off = rng.randrange(0, len(blob) - size) if size < len(blob) else 0
                data = (blob * (size // len(blob) + 1))[off:off + size]
                add(f"{d}/file{i:02d}.dll", tarfile.REGTYPE, data)
                made += 1
            n += 1
        for d in ["UtilityVM", "UtilityVM/Files", "UtilityVM/Files/EFI", "UtilityVM/Files/EFI/Microsoft",
                  "UtilityVM/Files/EFI/Microsoft/Boot", "UtilityVM/Files/Windows"]:
            add(d, tarfile.DIRTYPE, attr=0x10)
        add("UtilityVM/Files/EFI/Microsoft/Boot/BCD", tarfile.REGTYPE, b"regf" + bytes(12284))
        for i in range(200):
            add(f"UtilityVM/Files/Windows/link{i:03d}.dll", tarfile.LNKTYPE,
                link=f"Files/Windows/WinSxS/pkg{i // 40:04d}/sub{i % 40:02d}/file00.dll")
    os.rename(tmp, layer)
    return layer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = bench.parse_args(ap, "windows.py", "drop_caches, mounts")
    bench.sh(f"cd {ROOT} && cargo build --release --quiet -p strata")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    strata = os.path.join(target, "release/strata")
    layer = windows_layer(a.workdir, descriptors(strata, a.workdir))
    size = os.path.getsize(layer)
    with tarfile.open(layer) as tf:
        entries = len(tf.getmembers())
    home = os.path.join(a.workdir, "win-home")
    out = os.path.join(a.workdir, "win-tree")

    def clean():
        subprocess.run(f"{strata} --home {home} --driver windowsfilter cleanup >/dev/null 2>&1", shell=True)
        for d in (home, out):
            shutil.rmtree(d, ignore_errors=True)
        bench.drop_caches()

    imp = ["sh", "-c", f"{strata} --home {home} --driver windowsfilter import base {layer} >/dev/null"]
    # The same tar through the shared Linux import path, for reference.
    vfs = ["sh", "-c", f"{strata} --home {home} --driver vfs import base {layer} >/dev/null"]
    # GNU tar ignores the Windows records (and says so unless told not to).
    tarx = bench.gnu_tar(layer, out, flags="--warning=no-unknown-keyword")
    tarx_top = bench.gnu_tar(layer, out, top=True, flags="--warning=no-unknown-keyword")
    print(f"layer: {layer} ({size / 1e6:.1f} MB, {entries} entries), {a.runs} runs", flush=True)
    rows = bench.alternated(a.runs, {
        "strata import (windowsfilter)": imp,
        "tar -x; sync": tarx,
        "tar -x; sync (top dir, reference)": tarx_top,
        "strata import (vfs, reference)": vfs,
    }, clean)

    # The export must be the imported bytes before it is worth timing.
    clean()
    bench.sh(" ".join(imp[2:]))
    same = subprocess.run(f"{strata} --home {home} --driver windowsfilter export base | cmp - {layer}", shell=True)
    if same.returncode != 0:
        raise SystemExit("strata export differs from the imported tar")
    warm = {
        "strata export (replay)": ["sh", "-c", f"{strata} --home {home} --driver windowsfilter export base | cat >/dev/null"],
        "cat tar (page cache)": ["sh", "-c", f"cat {layer} | cat >/dev/null"],
    }
    for argv in warm.values():
        bench.timed(argv)
    rows.update(bench.alternated(a.runs, warm))
    clean()

    print(f"{'tool':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for k, (m, lo, hi, _) in rows.items():
        print(f"{k:<32} {m:>9.3f} {lo:>7.3f} {hi:>7.3f}")
    imp_ratio = rows["strata import (windowsfilter)"][0] / rows["tar -x; sync"][0]
    exp_ratio = rows["strata export (replay)"][0] / rows["cat tar (page cache)"][0]
    print(f"\nimport: strata / (tar -x; sync) = {imp_ratio:.2f}  (target <= 0.70)")
    print(f"export: strata / cat            = {exp_ratio:.2f}  (target <= 1.50)")


if __name__ == "__main__":
    main()
