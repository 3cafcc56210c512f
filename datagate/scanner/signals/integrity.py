"""Integrity: does the image decode, and what did its header say."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from datagate.scanner.signals.base import Sample


class Integrity:
    name: ClassVar[str] = "integrity"
    version: ClassVar[int] = 1
    fields: ClassVar[tuple[pa.Field, ...]] = (
        pa.field("decodable", pa.bool_(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("animated", pa.bool_()),
        pa.field("exif_orientation", pa.int8()),
        pa.field("n_bytes", pa.int64()),
    )

    def compute(self, sample: Sample) -> dict[str, Any]:
        d = sample.decoded
        return {
            "decodable": d is not None,
            "format": d.format if d else None,
            "width": d.width if d else None,
            "height": d.height if d else None,
            "mode": d.mode if d else None,
            "animated": d.animated if d else None,
            "exif_orientation": d.orientation if d else None,
            "n_bytes": len(sample.data) if sample.data is not None else None,
        }
