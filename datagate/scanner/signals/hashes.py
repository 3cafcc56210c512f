"""Hashes: sha256 of the bytes (exact duplicates), pHash and dHash (near duplicates).

Perceptual hashes are 64-bit (imagehash with ``hash_size=8``) computed on a grey thumbnail
of the analysis image, box-reduced by integer factors to 64-127 px a side (both hashes
shrink further to 32x32 and 9x8, so the thumbnail changes nothing they see, and costs a
twentieth of resizing from full size). They are stored as ``uint64`` with the first hash
bit as the most significant bit, so ``f"{value:016x}"`` equals imagehash's own hex string.
"""

from __future__ import annotations

from typing import Any, ClassVar

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from datagate.scanner.signals.base import Sample

HASH_INPUT = 64


def hash_thumbnail(gray: Image.Image) -> Image.Image:
    """Box-reduce by integer factors until each side is HASH_INPUT to 2*HASH_INPUT-1 px."""
    fx, fy = max(1, gray.width // HASH_INPUT), max(1, gray.height // HASH_INPUT)
    return gray.reduce((fx, fy)) if fx > 1 or fy > 1 else gray


def hash_to_uint64(h: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(h.hash.ravel()).tobytes(), "big")


class Hashes:
    name: ClassVar[str] = "hashes"
    version: ClassVar[int] = 1
    fields: ClassVar[tuple[pa.Field, ...]] = (
        pa.field("sha256", pa.string()),
        pa.field("phash", pa.uint64()),
        pa.field("dhash", pa.uint64()),
    )

    def compute(self, sample: Sample) -> dict[str, Any]:
        sha = sample.sha256
        if sample.decoded is None:
            return {"sha256": sha, "phash": None, "dhash": None}
        thumb = hash_thumbnail(sample.gray)
        return {
            "sha256": sha,
            "phash": hash_to_uint64(imagehash.phash(thumb)),
            "dhash": hash_to_uint64(imagehash.dhash(thumb)),
        }
