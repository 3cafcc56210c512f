"""Diversity measures on N x D embeddings (default 1,000,000 x 512), time and peak memory.

.venv/bin/python benchmarks/bench_diversity.py --rows 1000000 --dim 512
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from datagate.diversity import diversity_index, mean_cosine_distance, vendi_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    means = rng.normal(size=(200, args.dim)).astype(np.float32)
    x = means[rng.integers(0, 200, args.rows)]
    x += 0.5 * rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings = {}
    for name, fn in (
        ("vendi_q1", vendi_score),
        ("index", diversity_index),
        ("mean_cosine_distance", mean_cosine_distance),
    ):
        t0 = time.perf_counter()
        value = fn(x)
        timings[name] = {"seconds": round(time.perf_counter() - t0, 2), "value": round(value, 4)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": args.rows,
                "dim": args.dim,
                "input_mib": round(x.nbytes / 2**20),
                "peak_rss_mib": round(peak),
                "rss_with_input_mib": round(base),
                **timings,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
