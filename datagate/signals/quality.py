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

from datagate.signals.base import Sample


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


def _laplacian_variance(g: np.ndarray[Any, np.dtype[np.uint8]]) -> float:
    """Variance of the 4-neighbour Laplacian, in int16 arithmetic (exact for 8-bit input)."""
    if min(g.shape) < 3:
        return 0.0
    i = g.astype(np.int16)
    lap = i[:-2, 1:-1] + i[2:, 1:-1] + i[1:-1, :-2] + i[1:-1, 2:] - 4 * i[1:-1, 1:-1]
    flat = lap.ravel().astype(np.float32)
    mean = float(flat.sum(dtype=np.float64)) / flat.size
    return max(0.0, float(np.dot(flat, flat)) / flat.size - mean * mean)
