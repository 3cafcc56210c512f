"""Reader for loose image files: one shard per directory."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import too_large
from datagate.scanner.readers.remote import RemoteFile, as_url, join_url, read_url
from datagate.scanner.records import ImageRecord


@dataclass
class FolderShard:
    """The image files directly inside one directory (sub-directories are shards of their own).

    Records carry paths, not bytes: the worker that decodes an image also reads it. With a
    ``root``, a file that is a symbolic link resolving outside it, or that is not a regular
    file, becomes an error row and is never read. ``single``: the shard is one image file
    given as an input, whose key is the shard id alone.

    On a remote filesystem (:mod:`.remote`), ``url`` is the directory's URL and ``remote``
    the listing of its files (sizes and version tags from one ``find``); records then carry
    each object's URL, which the worker reads through fsspec.
    """

    id: str
    directory: Path
    files: list[str]
    max_bytes: int = DEFAULT_MAX_BYTES
    single: bool = False
    root: Path | None = None
    kind: str = "folder"
    url: str | None = None
    remote: dict[str, RemoteFile] | None = None
    fingerprint: str = field(init=False)
    size_hint: int | None = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in self.files:
            if self.remote is not None:
                obj = self.remote[name]
                digest.update(f"{name}\0{obj.size}\0{obj.tag}\n".encode())
                continue
            try:
                # what git's index compares (size, mtime, inode): a file replaced by
                # another of the same size and time (cp -p, a restore) is still seen
                st = os.stat(self.directory / name)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
                digest.update(f"{name}\0{stamp}\n".encode())
            except OSError:
                digest.update(f"{name}\0missing\n".encode())
        self.fingerprint = digest.hexdigest()
        self.size_hint = len(self.files)

    @property
    def location(self) -> Path:
        return self.directory

    def records(self) -> Iterator[ImageRecord]:
        if self.url is not None and self.remote is not None:
            yield from self._remote_records(self.url, self.remote)
            return
        for name in self.files:
            path = self.directory / name
            error = outside_reason(path, self.root) if self.root is not None else None
            if error is None:
                try:
                    st = path.stat()
                    if not stat.S_ISREG(st.st_mode):
                        error = "not a regular file (not read)"
                    elif st.st_size > self.max_bytes:
                        error = too_large(st.st_size, self.max_bytes)
                except OSError as exc:
                    error = f"cannot read file: {exc.strerror or exc}"
            yield ImageRecord(
                shard=self.id,
                member=name,
                reader=self.kind,
                path=None if error else str(path),
                error=error,
                whole=self.single,
            )

    def _remote_records(self, url: str, remote: dict[str, RemoteFile]) -> Iterator[ImageRecord]:
        for name in self.files:
            size = remote[name].size
            error = too_large(size, self.max_bytes) if size > self.max_bytes else None
            yield ImageRecord(
                shard=self.id,
                member=name,
                reader=self.kind,
                path=None if error else join_url(url, name),
                error=error,
                whole=self.single,
            )


def outside_reason(path: Path, root: Path) -> str | None:
    """Why ``path`` (a symbolic link, or reached through one) must not be read: it resolves
    outside ``root`` (a resolved path). None for a path that stays inside."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links
        return f"symbolic link that cannot be resolved ({exc}; not followed)"
    if target == root or target.is_relative_to(root):
        return None
    return f"symbolic link to {os.readlink(path)!r}, outside the input (not followed)"


def read_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read an image file (or an fsspec URL), refusing anything over ``max_bytes``."""
    if as_url(path) is not None:
        return read_url(path, max_bytes)
    with open(path, "rb") as fh:
        # sized by the file (a buffer of max_bytes per read costs every image ~0.3 ms), read
        # to the end in case it grows, never past max_bytes + 1
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(min(size, max_bytes) + 1)
        while len(data) <= max_bytes and (more := fh.read(max_bytes + 1 - len(data))):
            data += more
    if len(data) > max_bytes:
        raise ValueError(too_large(os.path.getsize(path), max_bytes))
    return data
