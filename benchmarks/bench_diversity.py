"""Diversity and semantic duplicates on N x D embeddings: time and peak memory per case.

Each case runs in a fresh process (peak RSS of that process alone), on the same seeded
embeddings: 200 subjects with within-subject spread, plus 2 % planted near-copies.

* datagate Vendi (q=1) and the index, from the d x d covariance, at 10k .. 1M rows;
* the ``vendi-score`` package: ``score_K`` (n x n kernel, eigendecomposition) at the sizes
  it reaches here, and ``score_dual`` (X^T X) up to 1M rows; values are compared;
* datagate semantic duplicates (k-means + multi-probe blocked search) at 1M rows, with the
  recall of the planted copies.

.venv/bin/python benchmarks/bench_diversity.py            # full run (~10 min on 2 cores)
.venv/bin/python benchmarks/bench_diversity.py --quick    # small sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def embeddings(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Seeded embeddings; the last 2 % are near-copies of earlier rows."""
    rng = np.random.default_rng(seed)
    copies = rows // 50
    base_rows = rows - copies
    means = rng.normal(size=(200, dim)).astype(np.float32)
    x = means[rng.integers(0, 200, base_rows)]
    x += rng.standard_normal((base_rows, dim), dtype=np.float32)
    source = rng.integers(0, base_rows, copies)
    noise = rng.standard_normal((copies, dim), dtype=np.float32)
    scale = np.linalg.norm(x[source], axis=1, keepdims=True) * (0.1 / dim**0.5)
    near = (x[source] + noise * scale).astype(np.float32)
    return np.concatenate([x, near]), copies


def run_case(case: str, rows: int, dim: int) -> dict[str, object]:
    x, copies = embeddings(rows, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    extra: dict[str, object] = {}
    if case == "datagate_vendi":
        from datagate.measures.diversity import Running

        running = Running(x)
        value = running.value("vendi")
        extra["index"] = round(running.value("index"), 4)
    elif case == "vendi_score_K":
        from sklearn import preprocessing
        from vendi_score import vendi

        u = preprocessing.normalize(x, axis=1)
        value = vendi.score_K(u @ u.T)
    elif case == "vendi_score_dual":
        from vendi_score import vendi

        value = vendi.score_dual(x)
    elif case == "datagate_semantic":
        from datagate.measures.semantic import semantic_duplicates

        found = semantic_duplicates(x, 0.95)
        planted = found.dropped[rows - copies :]
        value = float(found.dropped.sum())
        extra.update(
            clusters=found.clusters,
            planted=copies,
            planted_found=int(planted.sum()),
            recall=round(float(planted.mean()), 4),
            other_flagged=int(found.dropped[: rows - copies].sum()),
        )
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": case,
        "rows": rows,
        "dim": dim,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak),
        "peak_before_mib": round(before),
        "input_mib": round(x.nbytes / 2**20),
        "value": round(float(value), 4),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.rows, args.dim)))
        return
    import subprocess

    plan = (
        [
            ("datagate_vendi", 2_000),
            ("vendi_score_K", 2_000),
            ("vendi_score_dual", 2_000),
            ("datagate_semantic", 20_000),
        ]
        if args.quick
        else [
            *(("datagate_vendi", n) for n in (2_000, 10_000, 100_000, 1_000_000)),
            *(("vendi_score_K", n) for n in (2_000, 5_000, 10_000)),
            *(("vendi_score_dual", n) for n in (10_000, 100_000, 1_000_000)),
            ("datagate_semantic", 100_000),
            ("datagate_semantic", 1_000_000),
        ]
    )
    results = []
    for case, rows in plan:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--rows",
            str(rows),
            "--dim",
            str(args.dim),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"case": case, "rows": rows, "error": proc.stderr.strip()[-300:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    report = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "results": results,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "diversity.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
