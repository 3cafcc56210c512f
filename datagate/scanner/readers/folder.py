"""Reader for loose image files: one shard per directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import too_large
from datagate.scanner.records import ImageRecord


@dataclass
class FolderShard:
    """The image files directly inside one directory (sub-directories are shards of their own).

    Records carry paths, not bytes: the worker that decodes an image also reads it.
    """

    id: str
    directory: Path
    files: list[str]
    max_bytes: int = DEFAULT_MAX_BYTES
    kind: str = "folder"
    fingerprint: str = field(init=False)
    size_hint: int | None = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in self.files:
            try:
                st = os.stat(self.directory / name)
                digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name}\0missing\n".encode())
        self.fingerprint = digest.hexdigest()
        self.size_hint = len(self.files)

    @property
    def location(self) -> Path:
        return self.directory

    def records(self) -> Iterator[ImageRecord]:
        for name in self.files:
            path = self.directory / name
            error = None
            try:
                size = path.stat().st_size
                if size > self.max_bytes:
                    error = too_large(size, self.max_bytes)
            except OSError as exc:
                error = f"cannot read file: {exc.strerror or exc}"
            yield ImageRecord(
                shard=self.id, member=name, reader=self.kind, path=str(path), error=error
            )


def read_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read an image file, refusing anything over ``max_bytes``."""
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(too_large(os.path.getsize(path), max_bytes))
    return data
