"""Hashes: sha256 of the bytes (exact duplicates), pHash and dHash (near duplicates).

Perceptual hashes are 64-bit (imagehash's ``phash`` and ``dhash`` with ``hash_size=8``)
computed on a grey thumbnail of the analysis image, box-reduced by integer factors to 64-127 px
a side (both hashes shrink further to 32x32 and 9x8, so the thumbnail changes nothing they
see, and costs a twentieth of resizing from full size). They are stored as ``uint64`` with the
first hash bit as the most significant bit, so ``f"{value:016x}"`` equals imagehash's own hex
string.

The values are imagehash's, computed without its per-call overhead (and without importing
scipy): the same Pillow Lanczos resizes, then pHash's 8x8 low-frequency DCT-II coefficients
as two products with a precomputed 8x32 cosine matrix (imagehash computes the full 32x32 DCT
with scipy's FFT and keeps the corner). The two computations of a coefficient agree to
~1e-10, so a bit can differ only where a coefficient lies within :data:`PHASH_TIE` of the
median: a tie that only rounding decides (flat images, exact symmetries). Such an image's
pHash is computed by imagehash itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image

from datagate.scanner.signals.base import Sample

HASH_INPUT = 64
#: imagehash's hash_size and pHash's highfreq_factor (its defaults).
HASH_SIZE = 8
PHASH_INPUT = HASH_SIZE * 4
#: A pHash coefficient this close to its median is decided by imagehash itself (the matrix
#: and FFT computations of the DCT agree to ~1e-10 on coefficients up to ~1e6).
PHASH_TIE = 1e-6
_LANCZOS = Image.Resampling.LANCZOS
#: scipy.fftpack.dct's unnormalised DCT-II, rows 0-7: X[k] = 2 sum_n x[n] cos(pi k (2n+1) / 2N).
_DCT = 2.0 * np.cos(
    np.pi
    * np.arange(HASH_SIZE)[:, None]
    * (2 * np.arange(PHASH_INPUT)[None, :] + 1)
    / (2 * PHASH_INPUT)
)
_DCT_T = np.ascontiguousarray(_DCT.T)


def hash_thumbnail(gray: Image.Image) -> Image.Image:
    """Box-reduce by integer factors until each side is HASH_INPUT to 2*HASH_INPUT-1 px."""
    fx, fy = max(1, gray.width // HASH_INPUT), max(1, gray.height // HASH_INPUT)
    return gray.reduce((fx, fy)) if fx > 1 or fy > 1 else gray


def bits_to_uint64(bits: np.ndarray[Any, np.dtype[np.bool_]]) -> int:
    """64 hash bits (row-major) as an integer, the first bit most significant."""
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def hash_to_uint64(h: Any) -> int:
    """An ``imagehash.ImageHash`` as :func:`bits_to_uint64` stores it."""
    return bits_to_uint64(np.asarray(h.hash, dtype=bool))


def phash(gray: Image.Image) -> int:
    """``imagehash.phash(gray)`` as an integer."""
    gray = gray if gray.mode == "L" else gray.convert("L")
    pixels = np.asarray(gray.resize((PHASH_INPUT, PHASH_INPUT), _LANCZOS), dtype=np.float64)
    low = _DCT @ pixels @ _DCT_T
    ordered = np.sort(low, axis=None)
    median = (ordered[31] + ordered[32]) / 2.0
    if float(np.abs(low - median).min()) <= PHASH_TIE:
        import imagehash  # a tie: let imagehash's own arithmetic decide

        return hash_to_uint64(imagehash.phash(gray))
    return bits_to_uint64(low > median)


def dhash(gray: Image.Image) -> int:
    """``imagehash.dhash(gray)`` as an integer."""
    gray = gray if gray.mode == "L" else gray.convert("L")
    pixels = np.asarray(gray.resize((HASH_SIZE + 1, HASH_SIZE), _LANCZOS), dtype=np.uint8)
    return bits_to_uint64(pixels[:, 1:] > pixels[:, :-1])


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
        return {"sha256": sha, "phash": phash(thumb), "dhash": dhash(thumb)}
