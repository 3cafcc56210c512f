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
    """A float32 buffer reused across images in one process.

    Fresh per-image temporaries of this size (~128-512 KiB) sit at glibc's mmap threshold,
    so each image would pay page faults for new memory: measured 0.46 ms per image against
    0.08 ms with a reused buffer.
    """

    def __init__(self) -> None:
        self._buffer = np.empty(0, dtype=np.float32)

    def get(self, size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self._buffer.size < size:
            self._buffer = np.empty(size, dtype=np.float32)
        return self._buffer[:size]


_workspace = _Workspace()


def _laplacian_variance(g: np.ndarray[Any, np.dtype[np.uint8]]) -> float:
    """Variance of the 4-neighbour Laplacian of an 8-bit image."""
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    n = int((h - 2) * (w - 2))
    buffer = _workspace.get(2 * n)
    lap = buffer[:n].reshape(h - 2, w - 2)
    centre = buffer[n:].reshape(h - 2, w - 2)
    np.add(g[:-2, 1:-1], g[2:, 1:-1], out=lap, dtype=np.float32)
    np.add(lap, g[1:-1, :-2], out=lap)
    np.add(lap, g[1:-1, 2:], out=lap)
    np.multiply(g[1:-1, 1:-1], 4.0, out=centre, dtype=np.float32)
    np.subtract(lap, centre, out=lap)
    flat = buffer[:n]
    mean = float(flat.sum(dtype=np.float64)) / n
    square_sum = float(np.dot(flat, flat))
    return max(0.0, square_sum / n - mean * mean)
