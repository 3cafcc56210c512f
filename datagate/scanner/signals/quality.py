"""Cheap quality measures from the same decode: exposure, contrast, sharpness, information.

All are computed on the analysis image in 8-bit grey (shorter side 256-511 px), so values
are comparable across resolutions:

* ``brightness``: mean grey level / 255, in [0, 1];
* ``contrast``: standard deviation of grey levels / 255, in [0, 0.5];
* ``blur``: variance of the 4-neighbour Laplacian (higher is sharper; below ~10 is usually
  blurred or flat);
* ``entropy``: Shannon entropy of the grey-level histogram in bits, in [0, 8];
* ``aspect_ratio``: displayed width / height.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from datagate.scanner.signals.base import Sample


class Quality:
    name: ClassVar[str] = "quality"
    version: ClassVar[int] = 1
    fields: ClassVar[tuple[pa.Field, ...]] = (
        pa.field("brightness", pa.float32()),
        pa.field("contrast", pa.float32()),
        pa.field("blur", pa.float32()),
        pa.field("entropy", pa.float32()),
        pa.field("aspect_ratio", pa.float32()),
    )

    def compute(self, sample: Sample) -> dict[str, Any]:
        d = sample.decoded
        if d is None:
            return {f.name: None for f in self.fields}
        g = sample.gray_array
        n = g.size
        # exposure, contrast and entropy from one 256-bin histogram
        hist = np.asarray(sample.gray.histogram(), dtype=np.float64)
        mean = float(hist @ _LEVELS) / n
        variance = max(0.0, float(hist @ _LEVELS_SQ) / n - mean * mean)
        p = hist[hist > 0] / n
        return {
            "brightness": mean / 255.0,
            "contrast": variance**0.5 / 255.0,
            "blur": _laplacian_variance(g),
            "entropy": float(-(p * np.log2(p)).sum()),
            "aspect_ratio": d.width / d.height,
        }


_LEVELS = np.arange(256, dtype=np.float64)
_LEVELS_SQ = _LEVELS * _LEVELS


class _Workspace:
    """Buffers reused across images in one process.

    Fresh per-image temporaries of this size (~128-512 KiB) sit at glibc's mmap threshold,
    so each image would pay page faults for new memory: measured 0.46 ms per image against
    0.08 ms with a reused buffer.
    """

    def __init__(self) -> None:
        self._int16 = np.empty(0, dtype=np.int16)
        self._float32 = np.empty(0, dtype=np.float32)

    def int16(self, size: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        if self._int16.size < size:
            self._int16 = np.empty(size, dtype=np.int16)
        return self._int16[:size]

    def float32(self, size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self._float32.size < size:
            self._float32 = np.empty(size, dtype=np.float32)
        return self._float32[:size]


_workspace = _Workspace()


def _laplacian_variance(g: np.ndarray[Any, np.dtype[np.uint8]]) -> float:
    """Variance of the 4-neighbour Laplacian of an 8-bit image.

    The Laplacian is computed in int16 on the flattened image (one contiguous pass per
    neighbour; the two border columns of each row are computed and dropped), then copied to
    float32 for the sum of squares. Its sum is exact from the border alone: the second
    differences telescope.
    """
    h, w = int(g.shape[0]), int(g.shape[1])
    if h < 3 or w < 3:
        return 0.0
    n = (h - 2) * (w - 2)
    m = (h - 2) * w  # rows 1..h-2, every column
    buffer = _workspace.int16(h * w + m)
    pixels = buffer[: h * w]
    np.copyto(pixels, np.ascontiguousarray(g).reshape(-1), casting="unsafe")
    lap = buffer[h * w :]
    np.add(pixels[:m], pixels[2 * w :], out=lap)
    lap += pixels[w - 1 : w - 1 + m]
    lap += pixels[w + 1 : w + 1 + m]
    lap -= pixels[w : w + m] << 2
    flat = _workspace.float32(n)
    np.copyto(flat.reshape(h - 2, w - 2), lap.reshape(h - 2, w)[:, 1:-1], casting="unsafe")
    mean = _laplacian_sum(g) / n
    square_sum = float(np.dot(flat, flat))
    return max(0.0, square_sum / n - mean * mean)


def _laplacian_sum(g: np.ndarray[Any, np.dtype[np.uint8]]) -> int:
    """Sum of the 4-neighbour Laplacian over the interior, from the border rows and columns."""

    def total(a: np.ndarray[Any, Any]) -> int:
        return int(a.sum(dtype=np.int64))

    rows = total(g[0, 1:-1]) - total(g[1, 1:-1]) + total(g[-1, 1:-1]) - total(g[-2, 1:-1])
    columns = total(g[1:-1, 0]) - total(g[1:-1, 1]) + total(g[1:-1, -1]) - total(g[1:-1, -2])
    return rows + columns
