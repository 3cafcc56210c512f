"""The gate's dataset-wide operations on Ray Data against the local backend, at 1M and 10M rows.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_gate_ray.py --rows 1000000 10000000

A table is generated per size (in the style of ``bench_enforce.py``'s replicate()): a sha256
per row with 0.5 % exact copies (the copies share every column), a dHash with 2 % planted
near copies (up to 6 low bits flipped), a 32-dim float16 embedding (a mode per
``ROWS_PER_MODE`` rows, replicas ~0.8 cosine apart, near copies ~0.99), an origin and a kept
flag. The operations the default
policy runs go through one backend in one child process per backend and size, in the order
enforce runs them: ``equal_groups`` (sha256), ``distinct_pairs`` (r = 6, the distinct
dHashes), ``kmeans_labels`` (k = n / semantic.POINTS_PER_CLUSTER, 2 probes) and
``cluster_matches`` (threshold 0.95, no redundancy), ``group_stats`` (origin x kept) and
``counts`` (origin of kept rows). For each operation: wall seconds, CPU seconds (user +
system) of the child's whole process tree (Ray's GCS, raylet and workers included) and its
peak memory as PSS (RSS would count Ray's shared object store once per process mapping it),
sampled every 50 ms (PSS every 500 ms); Ray runs on a local Ray with 2 CPUs (its start,
and a first small operation that starts the workers, are reported apart). The results of
the two backends are compared (pairs, labels, matches) and printed with the figures.

Above ``--kmeans-max`` rows k-means is not run (k grows with n: the fit on the driver and
the assignment grow with it); ``cluster_matches`` then searches the generator's modes
(``ROWS_PER_MODE`` rows each) and one other mode per row as the two probes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIM = 32
ROWS_PER_MODE = 500  # rows drawn around each mode of the embeddings (one "picture")
OPS = ("equal_groups", "distinct_pairs", "kmeans_labels", "cluster_matches", "group_stats")
OPS += ("counts",)


def generate(rows: int, out: Path) -> Path:
    """The table of ``rows`` rows (see the module docstring), as .npy files and sha256.parquet."""
    target = out / f"table-{rows}"
    if (target / "done").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    digest = rng.integers(0, 256, (rows, 32), dtype=np.uint8)
    dh = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
    modes = rng.normal(size=(max(1, rows // ROWS_PER_MODE), DIM)).astype(np.float32)
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)  # replicas of a mode: ~0.8 cosine
    mode = rng.integers(0, len(modes), rows)
    x = modes[mode]
    x += rng.normal(0, 0.5 / np.sqrt(DIM), (rows, DIM)).astype(np.float32)
    near = rng.choice(rows, rows // 50, replace=False)
    src = rng.integers(0, rows, near.size)
    dh[near] = dh[src] ^ rng.integers(0, 2**6, near.size).astype(np.uint64)
    x[near] = x[src] + rng.normal(0, 0.05 / np.sqrt(DIM), (near.size, DIM)).astype(np.float32)
    exact = rng.choice(rows, rows // 200, replace=False)
    exact_src = rng.integers(0, rows, exact.size)
    digest[exact], dh[exact], x[exact] = digest[exact_src], dh[exact_src], x[exact_src]
    mode[near], mode[exact] = mode[src], mode[exact_src]  # a copy is of its source's mode
    hexed = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.empty((rows, 64), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = hexed[digest >> 4], hexed[digest & 15]
    offsets = np.arange(0, 64 * rows + 1, 64, dtype=np.int64)
    sha = pa.Array.from_buffers(
        pa.large_string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
    )
    pq.write_table(pa.table({"sha256": sha.cast(pa.string())}), target / "sha256.parquet")
    np.save(target / "dhash.npy", dh)
    np.save(target / "x.npy", x.astype(np.float16))
    np.save(target / "mode.npy", mode)
    np.save(target / "origin.npy", rng.choice(3, rows, p=[0.3, 0.1, 0.6]).astype(np.int64))
    np.save(target / "kept.npy", rng.random(rows) < 0.9)
    (target / "done").write_text("")
    return target


# -- the child: one backend, every operation ------------------------------------------------


def child(table: Path, engine: str, results: Path, kmeans_max: int) -> None:
    """Run every operation on ``engine`` and save what it returned (markers on stdout)."""
    from datagate.measures import semantic
    from datagate.measures.backend import LOCAL, Backend

    sha = pq.read_table(table / "sha256.parquet").column("sha256")
    dh = np.load(table / "dhash.npy")
    x = np.load(table / "x.npy")
    origin, kept = np.load(table / "origin.npy"), np.load(table / "kept.npy")
    n = len(dh)
    backend: Backend = LOCAL
    if engine == "ray":
        mark("BEGIN", "ray_start")
        import ray

        from datagate.gate_ray import RayBackend

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        backend = RayBackend()
        backend.counts(np.zeros(8, dtype=np.int64), 1)  # workers started, datagate imported
        mark("END", "ray_start")
    results.mkdir(parents=True, exist_ok=True)

    def run(op: str, fn: Any) -> Any:
        mark("BEGIN", op)
        out = fn()
        mark("END", op)
        return out

    ids = run("equal_groups", lambda: backend.equal_groups(sha))
    np.save(results / "equal_groups.npy", ids)
    keys = np.unique(dh)
    pairs = run("distinct_pairs", lambda: backend.distinct_pairs(keys, 6))
    np.save(results / "pairs.npy", np.stack(pairs))
    if n <= kmeans_max:
        k = math.ceil(n / semantic.POINTS_PER_CLUSTER)
        labels = run("kmeans_labels", lambda: backend.kmeans_labels(x, k, 0, probes=2))
    else:  # the generator's modes, and another mode, as the two clusters searched
        mode = np.load(table / "mode.npy")
        other = (mode + 1 + mode * 7919 % 97) % (mode.max() + 1)
        labels = np.stack([mode, other], axis=1)
    np.save(results / "labels.npy", labels)
    rank = np.arange(n)
    matches = run("cluster_matches", lambda: backend.cluster_matches(x, labels, rank, 0.95, False))
    np.save(results / "dup_of.npy", matches[0])
    np.save(results / "sim_to.npy", matches[1])
    groups = origin * 2 + kept
    stats = run("group_stats", lambda: backend.group_stats(x, groups, 6))
    np.save(results / "outer.npy", np.stack([s.outer for s in stats]))
    counts = run("counts", lambda: backend.counts(np.where(kept, origin, -1), 3))
    np.save(results / "counts.npy", counts)
    if engine == "ray":
        ray.shutdown()


def mark(what: str, op: str) -> None:
    print(f"{what} {op} {time.perf_counter():.6f}", flush=True)


# -- the parent: measure the child's process tree -------------------------------------------


class Tree:
    """CPU seconds and RSS of a process and all its descendants, sampled."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> last CPU seen
        self.rss = 0
        self.peak = 0
        self.lock = threading.Lock()

    def sample(self, memory: bool = True) -> None:
        """CPU times of every process; with ``memory``, their PSS too (reading smaps costs
        more than the CPU times: the sampler reads it every tenth tick)."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        with self.lock:
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self.cpu[(p.pid, p.create_time())] = t.user + t.system
                        rss += p.memory_full_info().pss if memory else 0
                except psutil.Error:
                    continue
            if memory:
                self.rss = rss
                self.peak = max(self.peak, rss)

    def cpu_total(self) -> float:
        with self.lock:
            return sum(self.cpu.values())


def measure(
    table: Path, engine: str, results: Path, kmeans_max: int
) -> dict[str, dict[str, float]]:
    cmd = [sys.executable, __file__, "--child", engine, "--table", str(table)]
    cmd += ["--results", str(results), "--kmeans-max", str(kmeans_max)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    tree = Tree(proc.pid)
    done = threading.Event()

    def sampler() -> None:
        tick = 0
        while not done.is_set():
            tree.sample(memory=tick % 10 == 0)
            tick += 1
            time.sleep(0.05)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    figures: dict[str, dict[str, float]] = {}
    began: dict[str, tuple[float, float]] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("BEGIN", "END"):
            sys.stderr.write(line)
            continue
        what, op, _ = parts
        tree.sample()
        if what == "BEGIN":
            with tree.lock:
                tree.peak = tree.rss
            began[op] = (time.perf_counter(), tree.cpu_total())
        else:
            start, cpu = began[op]
            figures[op] = {
                "wall_s": round(time.perf_counter() - start, 2),
                "cpu_s": round(tree.cpu_total() - cpu, 1),
                "peak_pss_gib": round(tree.peak / 2**30, 2),
            }
            print(f"  {engine} {op}: {json.dumps(figures[op])}", file=sys.stderr, flush=True)
    proc.wait()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} child failed ({proc.returncode})")
    return figures


def compare(local: Path, ray: Path) -> dict[str, Any]:
    """How far the Ray results are from the local ones."""

    def load(d: Path, name: str) -> Any:
        return np.load(d / f"{name}.npy")

    pairs_l, pairs_r = load(local, "pairs"), load(ray, "pairs")
    dup_l, dup_r = load(local, "dup_of"), load(ray, "dup_of")
    outer_l, outer_r = load(local, "outer"), load(ray, "outer")
    return {
        "equal_groups_identical": bool(
            np.array_equal(load(local, "equal_groups"), load(ray, "equal_groups"))
        ),
        "pairs": int(pairs_l.shape[1]),
        "pairs_identical": bool(np.array_equal(pairs_l, pairs_r)),
        "labels_differing": int((load(local, "labels") != load(ray, "labels")).any(axis=1).sum()),
        "duplicates": int((dup_l >= 0).sum()),
        "dup_of_differing": int((dup_l != dup_r).sum()),
        "outer_max_rel_diff": float(np.abs(outer_l - outer_r).max() / np.abs(outer_l).max()),
        "counts_identical": bool(np.array_equal(load(local, "counts"), load(ray, "counts"))),
    }


def _cells(a: dict[str, float] | None, b: dict[str, float] | None) -> list[str]:
    """The table's figures of one operation: local, Ray and their ratio, per measure."""
    out = []
    for key, unit in (("wall_s", ""), ("cpu_s", ""), ("peak_pss_gib", " GiB")):
        out += ["-" if a is None else f"{a[key]}{unit}", "-" if b is None else f"{b[key]}{unit}"]
        if key != "peak_pss_gib":
            out.append("-" if a is None or b is None or not a[key] else f"{b[key] / a[key]:.1f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "gate-ray")
    parser.add_argument("--kmeans-max", type=int, default=10_000_000)
    parser.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.table, args.child, args.results, args.kmeans_max)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    figures: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
    checks: dict[int, dict[str, Any]] = {}
    for rows in args.rows:
        t0 = time.perf_counter()
        table = generate(rows, args.out)
        print(f"{rows:,} rows ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        figures[rows] = {}
        for engine in args.engines:
            results = args.out / f"results-{rows}-{engine}"
            figures[rows][engine] = measure(table, engine, results, args.kmeans_max)
        if {"local", "ray"} <= set(args.engines):
            checks[rows] = compare(
                args.out / f"results-{rows}-local", args.out / f"results-{rows}-ray"
            )
            print(f"  {rows:,} rows, ray vs local: {json.dumps(checks[rows])}", file=sys.stderr)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average at start {load[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    print("| rows | operation | local wall s | ray wall s | ray/local | local CPU s | ray CPU s |"
          " ray/local | local peak PSS | ray peak PSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rows, by_engine in figures.items():
        local, ray = by_engine.get("local", {}), by_engine.get("ray", {})
        for op in ("ray_start", *OPS):
            print(f"| {rows:,} | {op} | " + " | ".join(_cells(local.get(op), ray.get(op))) + " |")
    for rows, check in checks.items():
        print(f"\n{rows:,} rows, ray against local: {json.dumps(check)}")


if __name__ == "__main__":
    main()
