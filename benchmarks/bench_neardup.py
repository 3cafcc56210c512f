"""Near-duplicate search at a million images: speed and memory against faiss, and precision.

    .venv/bin/python benchmarks/bench_neardup.py --hashes 1000000

Hashes come from *real-like* pictures: 1/f² random fields (the power spectrum of natural
photographs) with a random vertical light gradient (the layout bias of photographs), hashed
like the scanner does (dHash of a 9x8 and pHash of a 32x32 grey thumbnail). The first lines
of the output compare their pairwise-distance distribution with real photographs'
(``../shared/evaldata``, when present). 1 % of the pictures get a planted near copy
(re-rendered with noise, a contrast change and a small shift), the true pairs.

1. **Speed**: ``near_duplicates`` (sorted multi-index search over distinct hashes, greedy
   selection) against faiss's ``IndexBinaryMultiHash`` range search (3 x 21-bit tables, the
   peer) on the same hashes at ``--max-distance`` 6, each in its own process: wall and CPU
   seconds and peak RSS, as ratios, and the 15 s / 1 GiB limits.
2. **Precision at scale**: pairs found at the default (6) and strict (8) radius with dHash
   alone and confirmed by pHash (``confirm_distance``), against the planted truth.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
BITS = 2 ** np.arange(63, -1, -1, dtype=np.uint64)


def _area_matrix(out: int, size: int) -> np.ndarray:
    m = np.zeros((out, size))
    for o in range(out):
        lo, hi = o * size / out, (o + 1) * size / out
        for i in range(int(lo), int(np.ceil(hi))):
            m[o, i] = min(hi, i + 1) - max(lo, i)
    return m / m.sum(1, keepdims=True)


ROWS, COLS = _area_matrix(8, 32), _area_matrix(9, 32)


def hashes(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dHash (9x8 thumbnail) and pHash (low 8x8 DCT of 32x32 vs its median), MSB first."""
    import scipy.fft

    small = np.einsum("oi,bij,pj->bop", ROWS, img, COLS)
    dbits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(img), 64)
    dct = scipy.fft.dct(scipy.fft.dct(img, axis=1), axis=2)[:, :8, :8].reshape(len(img), 64)
    pbits = dct > np.median(dct, axis=1, keepdims=True)
    pack = lambda b: (b.astype(np.uint64) * BITS).sum(1, dtype=np.uint64)  # noqa: E731
    return pack(dbits), pack(pbits)


def fields(rng: np.random.Generator, count: int) -> np.ndarray:
    fy, fx = np.fft.fftfreq(32)[:, None], np.fft.fftfreq(32)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1
    z = (rng.normal(size=(count, 32, 32)) + 1j * rng.normal(size=(count, 32, 32))) / f
    img = np.fft.ifft2(z).real
    light = np.linspace(1, -1, 32)[None, :, None] * rng.uniform(0, 1.5, (count, 1, 1))
    return img + light * img.std(axis=(1, 2), keepdims=True)


def copies(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Near copies: a contrast and brightness change and re-encoding noise."""
    scale = img.std(axis=(1, 2), keepdims=True)
    out = img * rng.uniform(0.85, 1.15, (len(img), 1, 1)) + rng.normal(0, 0.2, (len(img), 1, 1))
    return out + rng.normal(size=img.shape) * rng.uniform(0.01, 0.05, (len(img), 1, 1)) * scale


def build(n: int, out: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dh = np.empty(n, dtype=np.uint64)
    ph = np.empty(n, dtype=np.uint64)
    planted = n // 100
    originals = n - planted
    sources = np.sort(rng.choice(originals, planted, replace=False))
    done = 0
    for start in range(0, originals, 20_000):
        count = min(20_000, originals - start)
        img = fields(rng, count)
        dh[start : start + count], ph[start : start + count] = hashes(img)
        chosen = sources[(sources >= start) & (sources < start + count)]
        if chosen.size:
            d, p = hashes(copies(rng, img[chosen - start]))
            dh[originals + done : originals + done + len(chosen)] = d
            ph[originals + done : originals + done + len(chosen)] = p
            done += len(chosen)
    np.savez(out, dhash=dh, phash=ph, truth_a=sources, truth_b=np.arange(originals, n))
    return {"images": n, "planted_pairs": planted}


def calibration(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pairwise distances among distinct pictures: real photographs vs these hashes."""

    def stats(h: np.ndarray) -> dict[str, float]:
        x = np.bitwise_count(h[:, None] ^ h[None, :])[np.triu_indices(len(h), 1)]
        return {"mean": round(float(x.mean()), 2), "std": round(float(x.std()), 2)}

    result: dict[str, Any] = {"real_like": {k: stats(data[k][:300]) for k in ("dhash", "phash")}}
    real = HERE.parent.parent / "shared" / "evaldata" / "detect"
    if real.is_dir():
        import imagehash
        from PIL import Image

        from datagate.scanner.signals.hashes import hash_thumbnail, hash_to_uint64

        found: dict[str, list[int]] = {"dhash": [], "phash": []}
        for path in sorted(real.rglob("*")):
            if path.suffix.lower() not in {".jpg", ".jpeg", ".png", ".webp"}:
                continue
            with Image.open(path) as im:
                thumb = hash_thumbnail(im.convert("L"))
            found["dhash"].append(hash_to_uint64(imagehash.dhash(thumb)))
            found["phash"].append(hash_to_uint64(imagehash.phash(thumb)))
        result["real_photographs"] = {
            k: {**stats(np.array(v, dtype=np.uint64)), "images": len(v)} for k, v in found.items()
        }
    return result


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def search(path: Path, engine: str, radius: int) -> dict[str, Any]:
    data = np.load(path)
    h = data["dhash"]
    t0, c0 = time.perf_counter(), time.process_time()
    if engine == "datagate":
        from datagate.measures.neardup import near_duplicates

        dropped, _, _ = near_duplicates(h, radius, np.arange(len(h), dtype=np.int64))
        found = f"{int(dropped.sum())} dropped"
    else:
        import faiss

        codes = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
        index = faiss.IndexBinaryMultiHash(64, 3, 21)
        index.nflip = radius // 3
        index.add(codes)
        pairs = 0
        for start in range(0, len(h), 65_536):
            lims, _, ids = index.range_search(codes[start : start + 65_536], radius + 1)
            counts = np.diff(lims).astype(np.int64)
            query = np.repeat(np.arange(start, start + len(counts)), counts)
            pairs += int((ids < query).sum())
        found = f"{pairs} pairs"
    return {
        "engine": engine,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "found": found,
        "peak_rss_mib": _peak_mib(),
    }


def precision(path: Path) -> list[dict[str, Any]]:
    from datagate.measures.neardup import near_duplicates

    data = np.load(path)
    dh, ph = data["dhash"], data["phash"]
    truth = set(zip(data["truth_a"].tolist(), data["truth_b"].tolist()))
    rows = []
    for radius in (6, 8):
        for confirm in (None, 10):
            dropped, dup_of, _ = near_duplicates(
                dh, radius, np.arange(len(dh), dtype=np.int64),
                confirm=None if confirm is None else ph, confirm_distance=confirm or 0,
            )  # fmt: skip
            pairs = {
                (int(min(a, b)), int(max(a, b)))
                for a, b in zip(dup_of[dropped].tolist(), np.flatnonzero(dropped).tolist())
            }
            true = len(pairs & truth)
            rows.append({
                "max_distance": radius,
                "confirm_distance": confirm,
                "pairs": len(pairs),
                "false_pairs": len(pairs) - true,
                "precision": round(true / max(len(pairs), 1), 4),
                "recall": round(true / len(truth), 4),
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--max-distance", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--no-peer", action="store_true", help="skip the faiss comparison")
    parser.add_argument("--phase", choices=["search"], help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="datagate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_path = args.out / f"neardup-{args.hashes}.npz"
    if args.phase == "search":
        print(json.dumps(search(data_path, args.engine, args.max_distance)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if data_path.exists():  # deterministic (seed 0): built once per size
        info = {"images": args.hashes, "planted_pairs": args.hashes // 100, "reused": True}
    else:
        info = build(args.hashes, data_path)
        info["build_s"] = round(time.perf_counter() - t0, 1)
    data = dict(np.load(data_path))
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        **info,
        "calibration": calibration(data),
    }
    engines = ["datagate"] if args.no_peer else ["datagate", "faiss-multihash"]
    runs = {}
    for engine in engines:
        cmd = [sys.executable, __file__, "--hashes", str(args.hashes), "--out", str(args.out),
               "--max-distance", str(args.max_distance), "--phase", "search",
               "--engine", engine]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    report["search"] = runs
    ours = runs["datagate"]
    report["limits"] = {
        "wall_s_vs_15": round(ours["wall_s"] / 15, 2),
        "peak_vs_1GiB": round(ours["peak_rss_mib"] / 1024, 2),
    }
    if "faiss-multihash" in runs:
        peer = runs["faiss-multihash"]
        report["ratios_vs_faiss"] = {
            k: round(ours[k] / peer[k], 3) for k in ("wall_s", "cpu_s", "peak_rss_mib")
        }
    report["precision"] = precision(data_path)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
