"""Reference measures (precision, recall, density, coverage, Fréchet distance): correctness
against brute force, and time and peak memory up to 100,000 x 100,000.

Embeddings: D-dimensional, 200 seeded subjects with within-subject spread (as in
bench_diversity.py); the evaluated set draws from the first 150 subjects only (a narrower
set than the reference), so every measure is away from its trivial value. Each case runs in
a fresh process so its peak RSS is its own.

* brute force (full distance matrices, float64) vs datagate's exact path at 2,000 x 2,000;
* exact (exhaustive faiss searches) vs inverted-file at 20,000 x 20,000: time and the
  difference of each measure;
* datagate at 100,000 x 100,000 (inverted-file path): time and peak RSS.

.venv/bin/python benchmarks/bench_reference.py            # full run (several minutes)
.venv/bin/python benchmarks/bench_reference.py --quick    # small sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

MEASURES = ("precision", "recall", "density", "coverage", "frechet")


def sets(n: int, m: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(200, dim)).astype(np.float32) * 1.5
    reference = means[rng.integers(0, 200, m)] + rng.standard_normal((m, dim), dtype=np.float32)
    evaluated = means[rng.integers(0, 150, n)] + rng.standard_normal((n, dim), dtype=np.float32)
    return evaluated, reference


def brute(evaluated: np.ndarray, reference: np.ndarray, k: int) -> dict[str, float]:
    from scipy import linalg

    from datagate.measures.diversity import normalise

    y = normalise(evaluated).astype(np.float64)
    x = normalise(reference).astype(np.float64)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0))

    r_x = np.sort(dist(x, x), axis=1)[:, k]
    r_y = np.sort(dist(y, y), axis=1)[:, k]
    d = dist(y, x)
    s_y, s_x = np.cov(y, rowvar=False), np.cov(x, rowvar=False)
    root = linalg.sqrtm(s_y @ s_x).real
    return {
        "precision": float((d <= r_x[None]).any(1).mean()),
        "recall": float((r_y[None] >= d.T).any(1).mean()),
        "density": float((d <= r_x[None]).sum() / (k * len(y))),
        "coverage": float((d.min(0) <= r_x).mean()),
        "frechet": float(((y.mean(0) - x.mean(0)) ** 2).sum() + np.trace(s_y + s_x - 2 * root)),
    }


def case(kind: str, n: int, m: int, dim: int, exact_max: int | None) -> dict[str, Any]:
    """One measurement in this process."""
    import datagate.measures.reference as ref

    if exact_max is not None:
        ref.EXACT_MAX = exact_max
    evaluated, reference = sets(n, m, dim)
    started = time.perf_counter()
    if kind == "brute":
        values = brute(evaluated, reference, ref.DEFAULT_K)
    else:
        found = ref.compare(evaluated, reference)
        values = {name: getattr(found, name) for name in MEASURES}
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"kind": kind, "n": n, "m": m, "dim": dim, "seconds": round(seconds, 2)}
    return {**row, "peak_rss_mib": round(peak, 1), **{k: round(v, 6) for k, v in values.items()}}


def run(kind: str, n: int, m: int, dim: int, exact_max: int | None = None) -> dict[str, Any]:
    args = [sys.executable, __file__, "--case", kind, str(n), str(m), str(dim), str(exact_max)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, n, m, dim, exact_max = args.case
        limit = None if exact_max == "None" else int(exact_max)
        print(json.dumps(case(kind, int(n), int(m), int(dim), limit)))
        return
    small, mid, large = (500, 4000, 10000) if args.quick else (2000, 20000, 100000)
    dim = 512
    rows = [
        run("brute", small, small, dim),
        run("datagate exact", small, small, dim),
        run("datagate exact", mid, mid, dim),
        run("datagate inverted-file", mid, mid, dim, exact_max=0),
        run("datagate", large, large, dim),
    ]
    print(f"Reference measures — {platform.machine()}, Python {platform.python_version()}\n")
    print("| case | n x m | seconds | peak RSS (MiB) | " + " | ".join(MEASURES) + " |")
    print("|---|---|---|---|" + "---|" * len(MEASURES))
    for r in rows:
        values = " | ".join(f"{r[k]:.4f}" for k in MEASURES)
        size = f"{r['n']:,} x {r['m']:,}"
        print(f"| {r['kind']} | {size} | {r['seconds']} | {r['peak_rss_mib']} | {values} |")
    b, e = rows[0], rows[1]
    worst = max(abs(b[k] - e[k]) for k in MEASURES if k != "frechet")
    print(f"\nexact vs brute force at {small:,}: largest difference {worst:.2e} "
          f"(Fréchet {abs(b['frechet'] - e['frechet']):.2e})")  # fmt: skip
    x, i = rows[2], rows[3]
    diffs = ", ".join(f"{k} {i[k] - x[k]:+.4f}" for k in MEASURES)
    print(f"inverted-file minus exact at {mid:,}: {diffs}; time {i['seconds'] / x['seconds']:.2f}x")


if __name__ == "__main__":
    main()
