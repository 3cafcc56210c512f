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
        f = g.astype(np.float32)
        if min(g.shape) >= 3:
            lap = (
                f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] - 4.0 * f[1:-1, 1:-1]
            )
            blur = float(lap.var())
        else:
            blur = 0.0
        counts = np.bincount(g.ravel(), minlength=256).astype(np.float64)
        p = counts[counts > 0] / g.size
        return {
            "brightness": float(f.mean()) / 255.0,
            "contrast": float(f.std()) / 255.0,
            "blur": blur,
            "entropy": float(-(p * np.log2(p)).sum()),
            "aspect_ratio": d.width / d.height,
        }
