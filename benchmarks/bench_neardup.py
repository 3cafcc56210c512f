"""Near-duplicate lookup over N synthetic 64-bit perceptual hashes (default 1,000,000).

    .venv/bin/python benchmarks/bench_neardup.py --hashes 1000000 --max-distance 6

Random hashes plus 1% planted near copies (0-6 flipped bits). Reports index build + query
time for all pairs within the distance, the pairs found (every planted pair must be among
them), and peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np

from datagate.measures.neardup import greedy_keep, near_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--max-distance", type=int, default=6)
    args = parser.parse_args()
    n, r = args.hashes, args.max_distance
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    planted = n // 100
    src = rng.integers(0, n, planted)
    dst = rng.integers(0, n, planted)
    for a, b in zip(src.tolist(), dst.tolist()):
        v = int(hashes[a])
        for bit in rng.choice(64, int(rng.integers(0, r + 1)), replace=False).tolist():
            v ^= 1 << bit
        hashes[b] = v
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    i, j, d = near_pairs(hashes, r)
    t_pairs = time.perf_counter() - t0
    t0 = time.perf_counter()
    dropped, _, _ = greedy_keep(n, i, j, d, np.arange(n, dtype=np.int64))
    t_select = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = set(zip(i.tolist(), j.tolist()))
    missing = sum(
        1
        for a, b in zip(src.tolist(), dst.tolist())
        if a != b
        and (min(a, b), max(a, b)) not in found
        and bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= r
    )
    result = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "hashes": n,
        "max_distance": r,
        "pairs": len(i),
        "planted_pairs_missing": missing,
        "pairs_seconds": round(t_pairs, 2),
        "selection_seconds": round(t_select, 2),
        "dropped": int(dropped.sum()),
        "peak_rss_mib": round(peak, 1),
        "rss_before_mib": round(rss_before, 1),
    }
    print(json.dumps(result, indent=2))
    assert missing == 0


if __name__ == "__main__":
    main()
