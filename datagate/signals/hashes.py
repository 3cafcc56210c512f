"""Hashes: sha256 of the bytes (exact duplicates), pHash and dHash (near duplicates).

Perceptual hashes are 64-bit (imagehash with ``hash_size=8``) computed on a 64x64
box-filtered grey thumbnail of the analysis image (both hashes shrink further to 32x32 and
9x8, so the thumbnail changes nothing they see, and costs a fifth of resizing from full
size). They are stored as ``uint64`` with the first hash bit as the most significant bit, so
``f"{value:016x}"`` equals imagehash's own hex string.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from datagate.signals.base import Sample

HASH_INPUT = (64, 64)


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
        sha = hashlib.sha256(sample.data).hexdigest() if sample.data is not None else None
        if sample.decoded is None:
            return {"sha256": sha, "phash": None, "dhash": None}
        thumb = sample.gray.resize(HASH_INPUT, Image.Resampling.BOX)
        return {
            "sha256": sha,
            "phash": hash_to_uint64(imagehash.phash(thumb)),
            "dhash": hash_to_uint64(imagehash.dhash(thumb)),
        }
