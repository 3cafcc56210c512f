"""Experimental, training-free synthetic score: how much an image's embedding moves under
light perturbations.

The idea (after RIGID, He et al. 2024): real photographs sit in regions of a representation
space that small, natural perturbations do not leave, while generated images tend to be less
stable. The score of an image is ``1 - mean cosine(e(x), e(perturb(x)))`` over a fixed set
of light perturbations (Gaussian noise, JPEG re-encoding, a slight blur, a down-and-up
resize); a higher score should mean more likely synthetic. It needs no labels, but it costs
one extra forward pass per perturbation, and it only works with an embedder that represents
images well: measure it on your data (``datagate detector stability``) before trusting it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from datagate.embed.models import prepare
from datagate.scanner.decode import DecodeError, decode
from datagate.scanner.readers import discover, read_file

if TYPE_CHECKING:
    from datagate.embed.models import Embedder, Preprocessing

Pixels = np.ndarray[Any, np.dtype[np.uint8]]
PERTURBATIONS = ("noise", "jpeg", "blur", "resize")


def perturb(pixels: Pixels, kind: str, rng: np.random.Generator) -> Pixels:
    """One light perturbation of a batch of prepared uint8 images (n, s, s, 3)."""
    if kind == "noise":
        noisy = pixels.astype(np.float32) + rng.normal(0.0, 4.0, pixels.shape)
        return np.asarray(np.clip(np.rint(noisy), 0, 255), dtype=np.uint8)
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        im = Image.fromarray(image)
        if kind == "jpeg":
            buffer = io.BytesIO()
            im.save(buffer, "JPEG", quality=90)
            im = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        elif kind == "blur":
            im = im.filter(ImageFilter.GaussianBlur(0.7))
        elif kind == "resize":
            size = im.size
            small = (max(1, round(size[0] * 0.85)), max(1, round(size[1] * 0.85)))
            im = im.resize(small, Image.Resampling.BILINEAR).resize(size, Image.Resampling.BICUBIC)
        else:
            raise ValueError(f"unknown perturbation {kind!r}; known: {PERTURBATIONS}")
        out[i] = np.asarray(im, dtype=np.uint8)
    return out


def instability(
    embedder: Embedder,
    pixels: Pixels,
    *,
    perturbations: Sequence[str] = PERTURBATIONS,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``1 - mean cosine`` between each image's embedding and its perturbed embeddings."""
    rng = np.random.default_rng(seed)
    scores = np.zeros(len(pixels), dtype=np.float64)
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]
        base = embedder.embed(batch).astype(np.float64)
        moved = np.zeros(len(batch))
        for kind in perturbations:
            other = embedder.embed(perturb(batch, kind, rng)).astype(np.float64)
            moved += 1.0 - np.sum(base * other, axis=1)
        scores[start : start + len(batch)] = moved / len(perturbations)
    return scores


def prepared_images(
    paths: Sequence[Path], prep: Preprocessing
) -> Iterator[tuple[str, Pixels | None, str | None]]:
    """(absolute path, prepared pixels or None, error) for every image under ``paths``."""
    for shard in discover(list(paths)).shards:
        base = shard.location.resolve()
        for record in shard.records():
            where = record.path or str(base / record.member)
            where = str(Path(where).resolve())
            if record.error is not None:
                yield where, None, record.error
                continue
            try:
                data = record.data if record.data is not None else read_file(where)
                yield where, prepare(decode(data).image, prep), None
            except (OSError, ValueError, DecodeError) as exc:
                yield where, None, str(exc)
