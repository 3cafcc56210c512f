"""Scan throughput and memory: datagate vs imagededup vs cleanvision vs a bare decode loop.

    .venv/bin/python benchmarks/bench_scan.py --images 20000 [--scale 200000]
    .venv/bin/python benchmarks/bench_scan.py --images 3000 --speed [--repeat 3]

Generates N distinct 512x512 JPEGs (cached under benchmarks/out/), then runs each contender
in a fresh process on the same files, measuring wall time and the peak RSS summed over the
process tree:

* ``bare-decode``: one process that only opens and decodes each image, with ``Image.draft``
  exactly as the scan uses it (the decode-bound limit per core);
* ``datagate``: ``datagate scan DIR --workers <cores> --signals integrity,hashes,quality``
  (sha256, pHash, dHash, quality; no embeddings), and ``datagate + provenance`` (the default
  signals, provenance included, watermarks off) to measure what provenance adds;
* ``imagededup``: ``PHash().encode_images`` + ``find_duplicates`` (its default workers);
* ``cleanvision-dups``: ``Imagelab.find_issues`` for exact and near duplicates only;
* ``cleanvision-default``: ``Imagelab.find_issues()`` with its default issue types.

``--speed`` runs only the three contenders the scan's speed targets compare, side by side:
the bare decode loop in as many processes as the scan has workers, the signals-only scan
(``datagate``) and the default scan (``datagate default``: ``datagate scan DIR`` as it runs
offline, i.e. every default signal with provenance, and the weight-free pixel embedder, with
an empty cache), in ``--repeat`` interleaved rounds (each contender's best round counts, so
a burst of load from other processes hurts every contender alike). It prints the ratios
(signals-only / bare loop, default / signals-only) from wall time, and again with each
contender's fixed cost (process start, imports, worker start, merge: its best time on
``--startup-images`` images) taken off, i.e. the per-image throughput a large dataset
approaches. The machine's load average before and after is printed with them.

``--scale M`` also scans M images packed in WebDataset tar shards to show that memory does
not grow with dataset size. The M images are the N generated JPEGs repeated with a unique
JPEG comment segment each, so every member has distinct bytes (distinct sha256) and the
same decode cost as a fresh photograph.

Results are printed as a Markdown table and written to benchmarks/out/scan-results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure

OUT = Path(__file__).parent / "out"
PY = sys.executable
PER_DIR = 1000
FOUNDATION = "integrity,hashes,quality"


def _make(args: tuple[int, Path]) -> None:
    i, path = args
    rng = np.random.default_rng(i)
    low = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
    im = Image.fromarray(low).resize((512, 512), Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.int16) + rng.integers(-20, 21, size=(512, 512, 3), dtype=np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def generate(n: int) -> Path:
    root = OUT / f"jpegs-{n}"
    marker = root / ".complete"
    if marker.exists():
        return root
    jobs = []
    for i in range(n):
        sub = root / f"{i // PER_DIR:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        jobs.append((i, sub / f"{i:07d}.jpg"))
    with Pool(os.cpu_count()) as pool:
        pool.map(_make, jobs, chunksize=64)
    marker.touch()
    return root


def generate_scaled(source: Path, total: int, per_shard: int = 10_000) -> Path:
    """``total`` distinct JPEGs in tar shards, built by re-commenting the source files."""
    root = OUT / f"tars-{total}"
    marker = root / ".complete"
    if marker.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    files = sorted(source.rglob("*.jpg"))
    blobs = [f.read_bytes() for f in files]
    for shard in range(0, total, per_shard):
        with tarfile.open(root / f"shard-{shard // per_shard:05d}.tar", "w") as tar:
            for k in range(shard, min(total, shard + per_shard)):
                data = blobs[k % len(blobs)]
                comment = f"datagate-bench-{k}".encode()
                segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
                member = data[:2] + segment + data[2:]  # COM segment right after SOI
                info = tarfile.TarInfo(f"{k:08d}.jpg")
                info.size = len(member)
                tar.addfile(info, io.BytesIO(member))
    marker.touch()
    return root


BARE = """
import sys, time
from pathlib import Path
from PIL import Image
from datagate.scanner.decode import ANALYSIS_SIZE
n = 0
for p in sorted(Path(sys.argv[1]).rglob('*.jpg')):
    with Image.open(p) as im:
        im.draft('RGB', (ANALYSIS_SIZE, ANALYSIS_SIZE))
        im.load()
    n += 1
print(n)
"""

BARE_PARALLEL = """
import os, sys
from multiprocessing import Pool
from pathlib import Path
from PIL import Image
from datagate.scanner.decode import ANALYSIS_SIZE

def work(paths):
    for p in paths:
        with Image.open(p) as im:
            im.draft('RGB', (ANALYSIS_SIZE, ANALYSIS_SIZE))
            im.load()
    return len(paths)

if __name__ == '__main__':
    files = sorted(Path(sys.argv[1]).rglob('*.jpg'))
    k = os.cpu_count() or 1
    with Pool(k) as pool:
        print(sum(pool.map(work, [files[i::k] for i in range(k)])))
"""

IMAGEDEDUP = """
import sys
from datagate.embed.torchvision_compat import ensure_torchvision
ensure_torchvision()  # imagededup imports torchvision (a CUDA build on PyPI)
from imagededup.methods import PHash
ph = PHash(verbose=False)
enc = ph.encode_images(image_dir=sys.argv[1], recursive=True)
dups = ph.find_duplicates(encoding_map=enc, max_distance_threshold=6)
print(len(enc))
"""

CLEANVISION = """
import sys
from cleanvision import Imagelab
lab = Imagelab(data_path=sys.argv[1])
issues = None if sys.argv[2] == 'default' else {'exact_duplicates': {}, 'near_duplicates': {}}
lab.find_issues(issues, verbose=False)
print(len(lab.issues))
"""


def run(name: str, cmd: list[str], n: int, rows: list[dict[str, Any]]) -> None:
    print(f"running {name} on {n:,} images ...", file=sys.stderr, flush=True)
    m = measure(cmd)
    rows.append(
        {
            "contender": name,
            "images": n,
            "seconds": round(m.seconds, 2),
            "images_per_s": round(n / m.seconds, 1),
            "peak_rss_mib": round(m.peak_rss_mib, 1),
            "ok": m.returncode == 0,
        }
    )
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)


def render(rows: list[dict[str, Any]], cores: int) -> str:
    """The results as a Markdown table plus the ratios the targets are stated in."""
    machine = f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"
    lines = [
        f"Scan benchmark — {machine}",
        "",
        "| contender | images | seconds | images/s | images/s per core | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = float(r["images_per_s"])
        per_core = rate if "(1 process)" in str(r["contender"]) else rate / cores
        lines.append(
            f"| {r['contender']} | {r['images']:,} | {r['seconds']} | {rate:.1f} | "
            f"{per_core:.1f} | {r['peak_rss_mib']} |"
        )
    by = {r["contender"]: float(r["images_per_s"]) for r in rows}
    if "datagate" in by and "datagate + provenance" in by:
        overhead = by["datagate"] / by["datagate + provenance"] - 1
        lines.append(f"provenance adds {overhead:.0%} to the scan's time per image")
    if "datagate" in by and "imagededup" in by:
        lines.append(
            f"\ndatagate / imagededup throughput: {by['datagate'] / by['imagededup']:.2f}x"
        )
    if "datagate" in by and "bare-decode (1 process)" in by:
        ratio = by["datagate"] / cores / by["bare-decode (1 process)"]
        lines.append(f"datagate per core / bare decode loop in 1 process: {ratio:.0%}")
    parallel = f"bare-decode ({cores} processes)"
    if "datagate" in by and parallel in by:
        ratio = by["datagate"] / by[parallel]
        lines.append(f"datagate / bare decode loop in {cores} processes: {ratio:.0%}")
    return "\n".join(lines)


DEFAULT_SCAN = "datagate default"


def measure_cpu(cmd: list[str], interval: float = 0.02) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the whole process tree, exit code) of ``cmd``.

    CPU time is what other processes' load changes least, so the suite's ratios are also
    given from it. Each process's user + system time is sampled until it exits (the last
    ``interval`` of each is lost: a few hundredths of a second per process).
    """
    import psutil  # type: ignore[import-untyped]

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[int, float] = {}
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    seen[p.pid] = max(seen.get(p.pid, 0.0), t.user + t.system)
        time.sleep(interval)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr is not None else b""
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-4000:])
    return wall, sum(seen.values()), proc.returncode


def speed_commands(src: Path, cores: int) -> dict[str, list[str]]:
    """The three contenders of the speed targets (``--speed``), on the images in ``src``."""
    scan_cmd = [PY, "-m", "datagate", "scan", str(src), "--workers", str(cores), "--no-progress"]
    out = ["--out", str(OUT / "scan-folder")]
    return {
        f"bare-decode ({cores} processes)": [PY, "-c", BARE_PARALLEL, str(src)],
        "datagate": [*scan_cmd, "--model", "none", "--signals", FOUNDATION, *out],
        # what ``datagate scan DIR`` runs offline, computing every vector (empty cache)
        DEFAULT_SCAN: [*scan_cmd, "--model", "pixel", "--cache-dir", str(OUT / "embed-cache-off"),
                       *out],
    }  # fmt: skip


def speed(args: argparse.Namespace, cores: int) -> None:
    """The speed suite: bare loop, signals-only and default scan, interleaved, as ratios."""
    load_before = os.getloadavg()
    sets = {"large": (args.images, generate(args.images))}
    if args.startup_images:
        sets["small"] = (args.startup_images, generate(args.startup_images))
    best: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}
    rows: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        for label, (n, src) in sets.items():
            for name, cmd in speed_commands(src, cores).items():
                shutil.rmtree(OUT / "scan-folder", ignore_errors=True)
                shutil.rmtree(OUT / "embed-cache-off", ignore_errors=True)
                print(f"round {round_ + 1}: {name} on {n:,} images", file=sys.stderr, flush=True)
                wall, seconds_cpu, code = measure_cpu(cmd)
                if code != 0:
                    raise SystemExit(f"{name} failed (exit {code})")
                key = (label, name)
                best[key] = min(best.get(key, float("inf")), wall)
                cpu[key] = min(cpu.get(key, float("inf")), seconds_cpu)
                rows.append(
                    {
                        **{"set": label, "contender": name, "images": n, "round": round_ + 1},
                        **{"seconds": round(wall, 3), "cpu_seconds": round(seconds_cpu, 3)},
                    }
                )
    text = render_speed(best, sets, cores, load_before, os.getloadavg(), args.repeat)
    text += "\n" + render_cpu(cpu, sets, cores)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "scan-speed.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))


def render_speed(
    best: dict[tuple[str, str], float],
    sets: dict[str, tuple[int, Path]],
    cores: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    repeat: int,
) -> str:
    """The speed suite's table and ratios (raw, and with each contender's fixed cost off)."""
    bare = f"bare-decode ({cores} processes)"
    names = [bare, "datagate", DEFAULT_SCAN]
    n = sets["large"][0]
    rate = {name: n / best[("large", name)] for name in names}
    lines = [
        f"Scan speed — {platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"{n:,} images, best of {repeat} interleaved rounds",
        f"load average (1, 5, 15 min) before: {_load(load_before)}; after: {_load(load_after)}",
        "",
        "| contender | seconds | images/s | fixed cost (s) | images/s without it |",
        "|---|---|---|---|---|",
    ]
    steady: dict[str, float] = {}
    for name in names:
        fixed = None
        if "small" in sets:
            small_n = sets["small"][0]
            # the small run's time less its own per-image share at the large run's pace
            per_image = (best[("large", name)] - best[("small", name)]) / (n - small_n)
            fixed = max(0.0, best[("small", name)] - small_n * per_image)
            steady[name] = n / (best[("large", name)] - fixed)
        lines.append(
            f"| {name} | {best[('large', name)]:.2f} | {rate[name]:.1f} | "
            f"{'' if fixed is None else f'{fixed:.2f}'} | "
            f"{'' if name not in steady else f'{steady[name]:.1f}'} |"
        )
    lines.append("")
    for label, values in (("wall time", rate), ("fixed cost off", steady)):
        if not values:
            continue
        lines.append(
            f"{label}: signals-only / bare decode loop = {values['datagate'] / values[bare]:.0%}"
            f" (target ≥ 70 %); default / signals-only = "
            f"{values[DEFAULT_SCAN] / values['datagate']:.0%} (target ≥ 85 %)"
        )
    return "\n".join(lines)


def render_cpu(
    cpu: dict[tuple[str, str], float], sets: dict[str, tuple[int, Path]], cores: int
) -> str:
    """CPU per image of each contender (best round), and the ratios it implies for equal
    process counts on an otherwise idle machine (throughput = cores / CPU per image)."""
    bare = f"bare-decode ({cores} processes)"
    n = sets["large"][0]
    lines = ["", "| contender | CPU s | CPU ms per image | CPU ms per image, fixed cost off |",
             "|---|---|---|---|"]  # fmt: skip
    per: dict[str, float] = {}
    steady: dict[str, float] = {}
    for name in (bare, "datagate", DEFAULT_SCAN):
        per[name] = cpu[("large", name)] / n
        if "small" in sets:
            small_n = sets["small"][0]
            steady[name] = (cpu[("large", name)] - cpu[("small", name)]) / (n - small_n)
        lines.append(
            f"| {name} | {cpu[('large', name)]:.2f} | {1e3 * per[name]:.3f} | "
            f"{'' if name not in steady else f'{1e3 * steady[name]:.3f}'} |"
        )
    lines.append("")
    for label, values in (("CPU", per), ("CPU, fixed cost off", steady)):
        if values:
            signals_only = values[bare] / values["datagate"]
            default = values["datagate"] / values[DEFAULT_SCAN]
            lines.append(
                f"{label}: signals-only / bare decode loop = {signals_only:.0%}; "
                f"default / signals-only = {default:.0%}"
            )
    return "\n".join(lines)


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--scale", type=int, default=0, help="also scan this many images in tars")
    parser.add_argument("--only", nargs="*", default=None, help="contenders to run")
    parser.add_argument("--speed", action="store_true", help="bare loop, signals-only, default")
    parser.add_argument("--repeat", type=int, default=3, help="--speed: interleaved rounds")
    parser.add_argument(
        "--startup-images", type=int, default=64, help="--speed: images of the fixed-cost runs"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.speed:
        speed(args, cores)
        return
    src = generate(args.images)
    n = args.images
    rows: list[dict[str, Any]] = []
    scan_cmd = [PY, "-m", "datagate", "scan", str(src), "--workers", str(cores), "--no-progress"]
    datagate = [*scan_cmd, "--model", "none"]  # embeddings are measured apart, below
    contenders = {
        "bare-decode (1 process)": [PY, "-c", BARE, str(src)],
        f"bare-decode ({cores} processes)": [PY, "-c", BARE_PARALLEL, str(src)],
        "datagate": [*datagate, "--signals", FOUNDATION, "--out", str(OUT / "scan-folder")],
        "datagate + provenance": [*datagate, "--out", str(OUT / "scan-folder")],
        "datagate + pixel embeddings": [
            *scan_cmd,
            "--model",
            "pixel",
            "--cache-dir",
            str(OUT / "embed-cache-off"),
            "--out",
            str(OUT / "scan-folder"),
        ],
        "imagededup": [PY, "-c", IMAGEDEDUP, str(src)],
        "cleanvision-dups": [PY, "-c", CLEANVISION, str(src), "dups"],
        "cleanvision-default": [PY, "-c", CLEANVISION, str(src), "default"],
    }
    for name, cmd in contenders.items():
        if args.only is not None and name not in args.only and name.split(" ")[0] not in args.only:
            continue
        if name.startswith("datagate +") and args.only is not None and name not in args.only:
            continue
        shutil.rmtree(OUT / "scan-folder", ignore_errors=True)
        shutil.rmtree(OUT / "embed-cache-off", ignore_errors=True)
        run(name, cmd, n, rows)
    if args.scale:
        for total in (n, args.scale):
            tars = generate_scaled(src, total)
            shutil.rmtree(OUT / "scan-tars", ignore_errors=True)
            run(
                f"datagate (tar shards, {total:,})",
                [
                    PY,
                    "-m",
                    "datagate",
                    "scan",
                    str(tars),
                    "--workers",
                    str(cores),
                    "--no-progress",
                    "--model",
                    "none",
                    "--out",
                    str(OUT / "scan-tars"),
                ],
                total,
                rows,
            )
    print(render(rows, cores))
    OUT.mkdir(exist_ok=True)
    (OUT / "scan-results.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
