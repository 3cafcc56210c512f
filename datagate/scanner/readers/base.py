"""The reader protocol: a shard is a stable id plus an iterator of image records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from datagate.scanner.records import ImageRecord

#: Image file suffixes read from folders and recognised as images inside tar shards.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
)


class Shard(Protocol):
    """One unit of input: a folder's images, a tar file, or a Parquet file.

    ``id`` is stable across runs (relative to the scanned root), ``fingerprint`` changes when
    the shard's content may have changed, and ``records`` yields images in a deterministic
    order, so that a resumed scan can skip work by position.
    """

    id: str
    kind: str
    fingerprint: str
    size_hint: int | None
    #: The shard's fsspec URL when it lives on a remote filesystem (None: a local path).
    url: str | None

    @property
    def location(self) -> Path:
        """Where the shard lives (a folder, or the tar/Parquet file; on a remote filesystem,
        its path there: :func:`shard_path` gives the URL)."""
        ...

    def records(self) -> Iterator[ImageRecord]: ...


def shard_path(shard: Shard) -> str:
    """Where a shard lives, as meta.json records it: its URL, or its resolved local path."""
    return shard.url if shard.url is not None else str(shard.location.resolve())


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def too_large(size: int, max_bytes: int) -> str:
    return (
        f"file is {size:,} bytes, over the {max_bytes:,}-byte limit for one image "
        "(raise --max-bytes to read it)"
    )
