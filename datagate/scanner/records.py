"""The unit that flows from readers to signals: one image and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image as found in a shard.

    ``data`` holds the bytes when the reader already had them (tar members, Parquet cells);
    folder readers leave it ``None`` and set ``path`` so that worker processes read the file
    themselves instead of shipping bytes between processes. ``error`` is set when the reader
    refused the member (unsafe tar path, oversized member); such a record is still written as
    a row so that nothing is dropped silently. ``whole`` marks a record that is its entire
    shard (an image file given as an input by itself): its key is the shard id alone.
    """

    shard: str
    member: str
    reader: str
    data: bytes | None = None
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    whole: bool = False

    @property
    def key(self) -> str:
        """Stable identity of the image: shard id and member name (the shard id alone when
        the image is its whole shard)."""
        return self.shard if self.whole else f"{self.shard}/{self.member}"

    def size_hint(self) -> int:
        """Bytes this record holds in memory (used to bound chunk sizes)."""
        return len(self.data) if self.data is not None else 256
