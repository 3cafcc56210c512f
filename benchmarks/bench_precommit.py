"""The pre-commit gate on N unchanged images: cold run, then warm re-runs.

    .venv/bin/python benchmarks/bench_precommit.py --images 10000

Copies N of the scan benchmark's 512x512 JPEGs into a temporary data folder, runs
``datagate precommit`` once (everything scanned, cache filled), twice more with nothing
changed, and once after one new image was added to one folder of 1,000, and reports wall
time, CPU seconds (user + sys of the hook and its workers) and peak RSS of each, with the
shipped default policy (``--policy hashes``: a policy of hashes only).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure
from bench_scan import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument(
        "--policy",
        choices=["hashes", "shipped"],
        default="shipped",
        help="hashes: decodable + exact and near duplicates; shipped: datagate's default policy",
    )
    args = parser.parse_args()
    source = generate(max(args.images, 20_000))
    files = sorted(source.rglob("*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        data = repo / "data"
        for i, f in enumerate(files):
            sub = data / f"{i // 1000:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, sub / f.name)
        if args.policy == "hashes":
            (repo / "rules").mkdir()
            (repo / "rules" / "default.yaml").write_text(
                "rules:\n  - rule: decodable\n  - rule: exact_duplicates\n"
                "  - rule: near_duplicates\n"
            )
        cmd = [sys.executable, "-m", "datagate", "precommit", "data"]
        results = []
        runs = ("cold (cache empty)", "warm (nothing changed)", "warm again", "one new image")
        for run in runs:
            import os

            if run == "one new image":
                shutil.copy(files[0], data / "000" / "new-copy-with-a-new-name.jpg")
                with open(data / "000" / "new-copy-with-a-new-name.jpg", "ab") as fh:
                    fh.write(b"new bytes")  # same picture, new content: computed once

            cwd = os.getcwd()
            os.chdir(repo)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                m = measure(cmd)
            finally:
                os.chdir(cwd)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            results.append(
                {
                    "run": run,
                    "policy": args.policy,
                    "seconds": round(m.seconds, 2),
                    "cpu_s": round(cpu, 2),
                    "peak_rss_mib": round(m.peak_rss_mib, 1),
                    "exit": m.returncode,
                    "summary": m.output.strip().splitlines()[0] if m.output else "",
                }
            )
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
