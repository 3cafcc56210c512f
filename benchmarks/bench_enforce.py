"""``datagate enforce`` at a million rows with the shipped policies: CPU seconds and memory.

    .venv/bin/python benchmarks/bench_enforce.py --rows 200000 1000000

A real scan of the demo shards (``examples/make_demo_shards.py``: human, synthetic and
unknown origin, provenance evidence, the pixel embedder) is replicated to N rows with
distinct keys and content hashes: perceptual hashes drawn afresh, embeddings moved by noise
(replicas of one picture are ~0.8 cosine apart, not duplicates), and planted copies — 2 %
near copies (hashes within a few bits, embeddings within 0.99 cosine) and 0.5 % exact
copies (same sha256). Each policy is enforced in its own process; the table reports CPU
seconds (user + sys), wall seconds and peak RSS against the targets (60 CPU-s and 2 GiB at
1M rows), and the per-rule timings ``report.json`` records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _measure import measure  # noqa: E402

from datagate.scanner.schema import EMBEDDINGS_WRITE  # noqa: E402

TARGET_CPU_S, TARGET_GIB = 60.0, 2.0


def base_scan(out: Path) -> Path:
    """The demo shards, scanned once with the default options (pixel embedder offline)."""
    scan = out / "base-scan"
    if (scan / "meta.json").exists():
        return scan
    shards = out / "base-shards"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_demo_shards.py"), str(shards),
         "--per-source", "40"],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "datagate", "scan", str(shards), "--out", str(scan), "-q",
         "--model", "pixel"],
        check=True, env=env,
    )  # fmt: skip
    return scan


def replicate(base: Path, rows: int, out: Path) -> Path:
    """A scan folder of ``rows`` rows built from ``base`` (see the module docstring)."""
    target = out / f"scan-{rows}"
    if (target / "meta.json").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(base / "images.parquet")
    emb = pq.read_table(base / "embeddings.parquet")
    vec_of = dict(zip(emb.column("key").to_pylist(), emb.column("embedding").to_pylist()))
    table = table.filter(pa.array([k in vec_of for k in table.column("key").to_pylist()]))
    n0 = table.num_rows
    rng = np.random.default_rng(0)
    pick = np.arange(rows) % n0
    big = table.take(pa.array(pick))
    keys = [f"r{i // n0:05d}/{k}" for i, k in enumerate(big.column("key").to_pylist())]
    sha = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)])
    dh = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
    ph = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
    base_vecs = np.array([vec_of[k] for k in table.column("key").to_pylist()], np.float32)
    dim = base_vecs.shape[1]
    vectors = base_vecs[pick] + rng.normal(0, 0.5 / np.sqrt(dim), (rows, dim)).astype(np.float32)
    near = rng.choice(rows, rows // 50, replace=False)
    src = rng.integers(0, rows, len(near))
    flips = rng.integers(0, 2**6, len(near)).astype(np.uint64)  # up to 6 low bits
    dh[near] = dh[src] ^ flips
    ph[near] = ph[src] ^ (flips & np.uint64(0xF))
    vectors[near] = vectors[src] + rng.normal(0, 0.05 / np.sqrt(dim), (len(near), dim))
    exact = rng.choice(rows, rows // 200, replace=False)
    exact_src = rng.integers(0, rows, len(exact))
    sha[exact] = sha[exact_src]
    dh[exact], ph[exact], vectors[exact] = dh[exact_src], ph[exact_src], vectors[exact_src]

    def put(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
        i = t.schema.get_field_index(name)
        return t.set_column(i, t.schema.field(name), values)

    big = put(big, "key", pa.array(keys, pa.string()))
    big = put(big, "sha256", pa.array(sha.tolist(), pa.string()))
    big = put(big, "dhash", pa.array(dh, pa.uint64()))
    big = put(big, "phash", pa.array(ph, pa.uint64()))
    big = big.replace_schema_metadata(table.schema.metadata)
    pq.write_table(big, target / "images.parquet", row_group_size=65_536)
    field = emb.schema.field("embedding")
    flat = pa.array(vectors.astype(np.float16).ravel(), pa.float16())
    emb_out = pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim)],
        schema=pa.schema([emb.schema.field("key"), field], metadata=emb.schema.metadata),
    )
    pq.write_table(
        emb_out, target / "embeddings.parquet", row_group_size=65_536, **EMBEDDINGS_WRITE
    )  # as the scan writes it
    meta = json.loads((base / "meta.json").read_text())
    meta["counts"]["images"] = rows
    meta["counts"]["table_sha256"] = hashlib.sha256(
        (target / "images.parquet").read_bytes()
    ).hexdigest()
    (target / "meta.json").write_text(json.dumps(meta, indent=2))
    return target


def enforce(scan: Path, policy: str, out: Path) -> dict[str, Any]:
    gate = out / f"gate-{scan.name}-{policy}"
    cmd = [sys.executable, "-m", "datagate", "enforce", str(scan), "--rules",
           str(ROOT / "rules" / f"{policy}.yaml"), "--out", str(gate), "-q"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = measure(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if m.returncode not in (0, 1):
        raise SystemExit(f"enforce failed ({m.returncode}): {m.output[-2000:]}")
    report = json.loads((gate / "report.json").read_text())
    timing = report.get("timing", {})
    return {
        "rows": pq.ParquetFile(scan / "images.parquet").metadata.num_rows,
        "policy": policy,
        "verdict": report["verdict"],
        "cpu_s": round(cpu, 1),
        "wall_s": round(m.seconds, 1),
        "peak_rss_gib": round(m.peak_rss_mib / 1024, 2),
        "timing": timing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--policies", nargs="+", default=["default", "strict"])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "enforce")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = base_scan(args.out)
    results = []
    for rows in args.rows:
        t0 = time.perf_counter()
        scan = replicate(base, rows, args.out)
        print(f"{rows:,} rows ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        for policy in args.policies:
            results.append(enforce(scan, policy, args.out))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}\n")  # fmt: skip
    print("| rows | policy | verdict | CPU s | wall s | peak RSS | CPU vs 60 s | RSS vs 2 GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        scale = r["rows"] / 1_000_000
        print(
            f"| {r['rows']:,} | {r['policy']} | {r['verdict']} | {r['cpu_s']} | {r['wall_s']} | "
            f"{r['peak_rss_gib']} GiB | {r['cpu_s'] / (TARGET_CPU_S * scale):.2f}x | "
            f"{r['peak_rss_gib'] / TARGET_GIB:.2f}x |"
        )
    for r in results:
        if r["timing"]:
            print(f"\n{r['rows']:,} rows, {r['policy']}: {json.dumps(r['timing'])}")


if __name__ == "__main__":
    main()
