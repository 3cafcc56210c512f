"""Embedding throughput: model forward alone, and end to end from WebDataset JPEG shards.

Random weights are used (``NAME:random``): speed does not depend on the weights, and none
can be downloaded here. On a machine with a GPU the same script measures the GPU path and
samples GPU utilisation with nvidia-smi.

.venv/bin/python benchmarks/bench_embed.py --models tiny ViT-B-32:random --images 2000
.venv/bin/python benchmarks/bench_embed.py --models ViT-B-32:random ViT-L-14:random \\
    --images 50000 --device cuda            # on a GPU machine
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def make_shards(root: Path, images: int, size: int = 256, per_shard: int = 1000) -> Path:
    """Distinct size x size JPEGs in WebDataset tar shards (cached between runs)."""
    shards = root / f"wds-{images}-{size}"
    if (shards / ".complete").exists():
        return shards
    shards.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for start in range(0, images, per_shard):
        with tarfile.open(shards / f"shard-{start // per_shard:05d}.tar", "w") as tar:
            for i in range(start, min(images, start + per_shard)):
                low = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                im = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
                noise = rng.normal(0, 10, (size, size, 3))
                arr = np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, "JPEG", quality=90)
                info = tarfile.TarInfo(f"{i:08d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    (shards / ".complete").write_text("ok")
    return shards


class GpuSampler:
    """Mean and peak GPU utilisation from nvidia-smi while a block runs (None without)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return self

        def read() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                if line.strip().isdigit():
                    self.values.append(float(line))

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def summary(self) -> dict[str, float] | None:
        if not self.values:
            return None
        return {"mean_pct": round(float(np.mean(self.values)), 1), "max_pct": max(self.values)}


def forward(model: str, device: str, batch: int, batches: int) -> dict[str, object]:
    """Model forward alone on prepared uint8 batches (includes host-to-device copies)."""
    from datagate.embed.models import load_embedder

    embedder = load_embedder(model, device=device).embedder
    assert embedder is not None
    size = embedder.preprocessing.size
    pixels = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    embedder.embed(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        embedder.embed(pixels)
    seconds = time.perf_counter() - started
    return {
        "model": model,
        "embedder": embedder.id,
        "device": embedder.device,
        "input": size,
        "batch": batch,
        "forward_images_per_s": round(batch * batches / seconds, 1),
    }


def end_to_end(model: str, device: str, shards: Path, images: int, batch: int) -> dict[str, object]:
    out = OUT / "embed-scan"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [
        sys.executable,
        "-m",
        "datagate",
        "scan",
        str(shards),
        "--out",
        str(out),
        "--model",
        model,
        "--device",
        device,
        "--no-progress",
        "--json",
        "--cache-dir",
        str(OUT / "embed-cache-off"),
    ]
    if batch:
        cmd += ["--batch-size", str(batch)]
    subprocess.run(["rm", "-rf", str(OUT / "embed-cache-off")], check=True)
    with GpuSampler() as gpu:
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"model": model, "error": proc.stderr[-500:]}
    meta = json.loads(proc.stdout)
    return {
        "model": model,
        "images": meta["counts"]["images"],
        "embedded": meta["embedder"]["computed"],
        "end_to_end_images_per_s": round(images / seconds, 1),
        "scan_images_per_s": meta["timing"]["images_per_second"],
        "gpu_utilisation": gpu.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "ViT-B-32:random"])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=0, help="default: 256 GPU, 64 CPU")
    parser.add_argument("--forward-batches", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    shards = make_shards(OUT, args.images)
    results = []
    for model in args.models:
        from datagate.embed.models import resolve_device

        device = resolve_device(args.device)
        batch = args.batch or (256 if device.startswith("cuda") else 64)
        row = {**forward(model, device, batch, args.forward_batches)}
        row.update(end_to_end(model, args.device, shards, args.images, args.batch))
        print(json.dumps(row), flush=True)
        results.append(row)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    (OUT / "embed.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
