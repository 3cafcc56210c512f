"""The signal protocol: a signal measures one family of columns, never decides."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
from PIL import Image

from datagate.scanner.decode import Decoded
from datagate.scanner.records import ImageRecord


@dataclass
class Sample:
    """Everything the signals may look at for one image, decoded once."""

    record: ImageRecord
    data: bytes | None
    decoded: Decoded | None
    error: str | None
    #: Share of images whose invisible watermark is decoded (0 off, 1 all; see watermark.py).
    watermark_rate: float = 0.0
    _sha256: str | None = field(default=None, repr=False)
    _gray: Image.Image | None = field(default=None, repr=False)
    _gray_array: np.ndarray[Any, np.dtype[np.uint8]] | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the bytes (hex), computed once and shared by signals and the cache."""
        if self._sha256 is None and self.data is not None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256

    @property
    def gray(self) -> Image.Image:
        """The analysis image in 8-bit grey, computed once and shared by signals."""
        if self._gray is None:
            assert self.decoded is not None
            self._gray = self.decoded.image.convert("L")
        return self._gray

    @property
    def gray_array(self) -> np.ndarray[Any, np.dtype[np.uint8]]:
        if self._gray_array is None:
            self._gray_array = np.asarray(self.gray, dtype=np.uint8)
        return self._gray_array


class Signal(Protocol):
    """One family of columns in the scan table.

    ``version`` is bumped whenever the values a signal computes change, so that cached
    results from an older version are recomputed instead of mixed in.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    fields: ClassVar[tuple[pa.Field, ...]]

    def compute(self, sample: Sample) -> dict[str, Any]:
        """Return a value for each of ``fields`` (``None`` where it cannot be measured)."""
        ...


def nulls(fields: tuple[pa.Field, ...]) -> dict[str, Any]:
    return {f.name: None for f in fields}
