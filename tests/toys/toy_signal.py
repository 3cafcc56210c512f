"""A signal added from outside datagate: the share of pure-red pixels, registered once."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from datagate.scanner.signals import Sample, register


@register
class Redness:
    name: ClassVar[str] = "toy_redness"
    version: ClassVar[int] = 1
    fields: ClassVar[tuple[pa.Field, ...]] = (pa.field("redness", pa.float32()),)

    def compute(self, sample: Sample) -> dict[str, Any]:
        if sample.decoded is None:
            return {"redness": None}
        rgb = np.asarray(sample.decoded.image.convert("RGB"), dtype=np.int16)
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
        return {"redness": float(red.mean())}
