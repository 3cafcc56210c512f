"""Ray's overhead on one machine: ``datagate scan`` with the local engine and ``--engine ray``.

Both scan the same generated JPEG folder (``bench_scan.py``'s generator: 512x512 textured
JPEGs, 1,000 per folder shard) with the default signals and the pixel embedder, each from a
cold start (Ray's start-up counts: that is what a user waits for), and each into a fresh
output folder. Prints one table, and writes ``out/bench_ray.json``; the ratio is Ray's wall
time over the local engine's.

    python benchmarks/bench_ray.py --images 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from _measure import measure
from bench_scan import OUT, generate

DATAGATE = str(Path(sys.executable).with_name("datagate"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", default="pixel")
    args = parser.parse_args()
    data = generate(args.images)
    results = {}
    for engine in ("local", "ray"):
        out = OUT / f"ray-bench-{engine}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [DATAGATE, "scan", str(data), "-o", str(out), "--engine", engine]
        cmd += ["--workers", str(args.workers), "--model", args.model, "-q", "--no-progress"]
        m = measure(cmd)
        if m.returncode != 0:
            print(m.output, file=sys.stderr)
            return 1
        meta = json.loads((out / "meta.json").read_text())
        assert meta["counts"]["images"] == args.images, meta["counts"]
        results[engine] = {
            "wall_s": round(m.seconds, 2),
            "scan_s": meta["timing"]["seconds"],
            "img_per_s": round(args.images / m.seconds, 1),
            "peak_rss_mib": round(m.peak_rss_mib),
        }
        shutil.rmtree(out, ignore_errors=True)
    ratio = results["ray"]["wall_s"] / results["local"]["wall_s"]
    report = {
        "images": args.images,
        "workers": args.workers,
        "model": args.model,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "results": results,
        "ray_over_local": round(ratio, 2),
    }
    (OUT / "bench_ray.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.images:,} images, {args.workers} workers, --model {args.model}")
    print("| engine | wall s | scan s (meta) | img/s | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for engine, r in results.items():
        print(
            f"| {engine} | {r['wall_s']} | {r['scan_s']} | {r['img_per_s']} | {r['peak_rss_mib']} |"
        )
    print(f"Ray over local (wall time): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
