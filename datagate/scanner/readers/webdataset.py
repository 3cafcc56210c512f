"""Reader for WebDataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``).

Members are grouped into samples by key (the member path up to the first dot of its base
name, as WebDataset does). Image members become records; the sample's other members
(``.json``, ``.txt``, ``.cls`` ...) are attached to each of its images as metadata. Nothing is
ever extracted to disk, and members with absolute or ``..`` paths, links and devices are
reported as error rows and never read.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import is_image_name, too_large
from datagate.scanner.records import ImageRecord

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Sidecar text larger than this is summarised instead of stored.
MAX_SIDECAR_BYTES = 64 * 1024


def is_tar_name(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def split_key(name: str) -> tuple[str, str]:
    """Split a member path into (sample key, extension) the WebDataset way."""
    path = PurePosixPath(name)
    base, _, ext = path.name.partition(".")
    parent = str(path.parent)
    return (base if parent == "." else f"{parent}/{base}"), ext.lower()


def unsafe_reason(info: tarfile.TarInfo) -> str | None:
    name = info.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"unsafe tar member {name!r}: absolute path (not read)"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return f"unsafe tar member {name!r}: path escapes the shard with '..' (not read)"
    if info.issym() or info.islnk():
        return f"unsafe tar member {name!r}: link to {info.linkname!r} (links are not followed)"
    if not (info.isfile() or info.isdir()):
        return f"unsafe tar member {name!r}: not a regular file (not read)"
    return None


def _sidecar_value(ext: str, data: bytes) -> Any:
    if len(data) > MAX_SIDECAR_BYTES:
        return f"<{len(data)} bytes, not stored>"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} binary bytes>"
    if ext == "json" or ext.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            return {"_error": f"invalid JSON sidecar: {exc}"}
    return text


@dataclass
class WebDatasetShard:
    id: str
    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    kind: str = "webdataset"
    fingerprint: str = field(init=False)
    size_hint: int | None = None

    def __post_init__(self) -> None:
        st = os.stat(self.path)
        self.fingerprint = f"{st.st_size}:{st.st_mtime_ns}"

    @property
    def location(self) -> Path:
        return self.path

    def records(self) -> Iterator[ImageRecord]:
        sample_key: str | None = None
        images: list[ImageRecord] = []
        sidecars: dict[str, Any] = {}
        n_members = 0

        def flush() -> Iterator[ImageRecord]:
            for rec in images:
                meta = dict(sidecars)
                yield ImageRecord(
                    shard=rec.shard,
                    member=rec.member,
                    reader=rec.reader,
                    data=rec.data,
                    meta=meta,
                    error=rec.error,
                )

        try:
            with tarfile.open(self.path, mode="r|*") as tar:
                for info in tar:
                    n_members += 1
                    if info.isdir():
                        continue
                    reason = unsafe_reason(info)
                    key, ext = split_key(info.name)
                    if key != sample_key:
                        yield from flush()
                        sample_key, images, sidecars = key, [], {}
                    if reason is not None:
                        images.append(self._record(info.name, error=reason))
                        continue
                    if is_image_name(info.name):
                        if info.size > self.max_bytes:
                            images.append(
                                self._record(info.name, error=too_large(info.size, self.max_bytes))
                            )
                            continue
                        fh = tar.extractfile(info)
                        data = fh.read() if fh is not None else b""
                        images.append(self._record(info.name, data=data))
                    else:
                        fh = tar.extractfile(info)
                        if info.size > MAX_SIDECAR_BYTES:
                            sidecars[ext] = f"<{info.size} bytes, not stored>"
                        elif fh is not None:
                            sidecars[ext] = _sidecar_value(ext, fh.read())
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            yield from flush()
            images = []
            yield self._record(
                f"<tar:{n_members}>",
                error=f"tar shard unreadable after {n_members} members: {exc}",
            )
            return
        yield from flush()

    def _record(
        self, member: str, *, data: bytes | None = None, error: str | None = None
    ) -> ImageRecord:
        return ImageRecord(shard=self.id, member=member, reader=self.kind, data=data, error=error)
