"""Reader for WebDataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``).

Members are grouped into samples by key (the member path up to the first dot of its base
name, as WebDataset does). Image members become records; the sample's other members
(``.json``, ``.txt``, ``.cls`` ...) are attached to each of its images as metadata. Nothing is
ever extracted to disk, and members with absolute or ``..`` paths, links and devices are
reported as error rows and never read.

Hostile shards cost bounded work: a compressed shard is read through a decompressor that
stops (with an error row) once it has produced more than ``MAX_COMPRESSION_RATIO`` times the
file's size (at least ``MIN_DECOMPRESSED_BYTES``), a sample keeps at most
``MAX_SAMPLE_META_BYTES`` of sidecar metadata (its rows say when more was dropped), and a
sample's images are handed on once they hold ``MAX_SAMPLE_IMAGE_BYTES``.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import is_image_name, too_large
from datagate.scanner.readers.remote import RemoteFile, client_errors, store_failure
from datagate.scanner.records import ImageRecord

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Sidecar text larger than this is summarised instead of stored.
MAX_SIDECAR_BYTES = 64 * 1024
#: Sidecar metadata kept per sample, in all; further sidecars are dropped (and counted).
MAX_SAMPLE_META_BYTES = 256 * 1024
#: Images of one sample held before they are handed on without waiting for later sidecars.
MAX_SAMPLE_IMAGE_BYTES = 64 * 1024 * 1024
#: A compressed shard may decompress to at most this many times its own size ...
MAX_COMPRESSION_RATIO = 100
#: ... or this many bytes, whichever is larger.
MIN_DECOMPRESSED_BYTES = 64 * 1024 * 1024
#: Bookkeeping bytes counted per stored sidecar besides its value.
_SIDECAR_OVERHEAD = 64
#: What a damaged (or unopenable) shard raises while it is read: reported as its error row.
_UNREADABLE: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)


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


class DecompressionLimit(Exception):
    """A compressed shard decompressed to more bytes than its budget."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _Budgeted:
    """A decompressed stream that refuses to produce more than ``limit`` bytes."""

    def __init__(self, stream: _Readable, limit: int) -> None:
        self._stream = stream
        self.limit = limit
        self.produced = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit + 1 - self.produced
        data = self._stream.read(min(size, self.limit + 1 - self.produced))
        self.produced += len(data)
        if self.produced > self.limit:
            raise DecompressionLimit(f"decompresses to over {self.limit:,} bytes")
        return data

    def close(self) -> None:
        self._stream.close()


def _open_stream(raw: IO[bytes], compressed_size: int) -> tuple[_Readable, str]:
    """The shard's tar bytes, decompressed within budget; and the compression found.

    The decompressors read from ``raw`` and are closed with it by the caller.
    """
    magic = raw.read(6)
    raw.seek(0)
    stream: _Readable
    if magic.startswith(b"\x1f\x8b"):
        stream, kind = gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"
    elif magic.startswith(b"BZh"):
        stream, kind = bz2.BZ2File(raw), "bzip2"
    elif magic.startswith(b"\xfd7zXZ\x00"):
        stream, kind = lzma.LZMAFile(raw), "xz"  # noqa: SIM115 (closed with raw)
    else:
        return raw, "none"
    limit = max(MIN_DECOMPRESSED_BYTES, MAX_COMPRESSION_RATIO * compressed_size)
    return _Budgeted(stream, limit), kind


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
    """A tar file's image members. On a remote filesystem (:mod:`.remote`), ``url`` is the
    object's URL and ``remote`` its listing entry; the tar is streamed through fsspec, and an
    object the store refuses or no longer has is the shard's error row, in the store's words
    (:func:`.remote.store_failure`), as a local file that cannot be opened is."""

    id: str
    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    kind: str = "webdataset"
    fingerprint: str = field(init=False)
    size_hint: int | None = None
    url: str | None = None
    remote: RemoteFile | None = None

    def __post_init__(self) -> None:
        if self.remote is not None:
            self.fingerprint = f"{self.remote.size}:{self.remote.tag}"
            return
        st = os.stat(self.path)
        self.fingerprint = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"  # as git's index

    def _open(self) -> tuple[IO[bytes], int]:
        """The tar file, opened for reading, and its size in bytes."""
        if self.url is not None:
            from datagate.scanner.readers.remote import filesystem

            fs, path = filesystem(self.url)
            return fs.open(path, "rb"), int(fs.size(path) or 0)
        raw = open(self.path, "rb")  # noqa: SIM115 (closed by the caller)
        return raw, os.fstat(raw.fileno()).st_size

    @property
    def location(self) -> Path:
        return self.path

    def records(self) -> Iterator[ImageRecord]:
        sample_key: str | None = None
        images: list[ImageRecord] = []
        image_bytes = 0
        sidecars: dict[str, Any] = {}
        meta_bytes = dropped = 0
        n_members = 0

        def flush() -> Iterator[ImageRecord]:
            meta = dict(sidecars)
            if dropped:
                meta["_truncated"] = (
                    f"{dropped} sidecars not stored: a sample keeps at most "
                    f"{MAX_SAMPLE_META_BYTES:,} bytes of metadata"
                )
            for rec in images:
                yield ImageRecord(
                    shard=rec.shard,
                    member=rec.member,
                    reader=rec.reader,
                    data=rec.data,
                    meta=dict(meta),
                    error=rec.error,
                )

        compression = "none"
        try:
            opened, size = self._open()
            with opened as raw:
                stream, compression = _open_stream(raw, size)
                with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                    for info in tar:
                        n_members += 1
                        tar.members = []  # streaming: keep no list of every member seen
                        if info.isdir():
                            continue
                        reason = unsafe_reason(info)
                        key, ext = split_key(info.name)
                        if key != sample_key:
                            yield from flush()
                            sample_key, images, sidecars = key, [], {}
                            image_bytes = meta_bytes = dropped = 0
                        if reason is not None:
                            images.append(self._record(info.name, error=reason))
                            continue
                        if is_image_name(info.name):
                            if info.size > self.max_bytes:
                                error = too_large(info.size, self.max_bytes)
                                images.append(self._record(info.name, error=error))
                                continue
                            fh = tar.extractfile(info)
                            data = fh.read() if fh is not None else b""
                            images.append(self._record(info.name, data=data))
                            image_bytes += len(data)
                            if image_bytes > MAX_SAMPLE_IMAGE_BYTES:
                                yield from flush()
                                images, image_bytes = [], 0
                            continue
                        cost = min(info.size, MAX_SIDECAR_BYTES) + len(ext) + _SIDECAR_OVERHEAD
                        if meta_bytes + cost > MAX_SAMPLE_META_BYTES:
                            dropped += 1
                            continue
                        meta_bytes += cost
                        if info.size > MAX_SIDECAR_BYTES:
                            sidecars[ext] = f"<{info.size} bytes, not stored>"
                        elif (fh := tar.extractfile(info)) is not None:
                            sidecars[ext] = _sidecar_value(ext, fh.read())
        except DecompressionLimit as exc:
            yield from flush()
            yield self._record(
                f"<tar:{n_members}>",
                error=f"{compression}-compressed tar shard {exc} (over "
                f"{MAX_COMPRESSION_RATIO}x its size: decompression-bomb guard); stopped "
                f"after {n_members} members",
            )
            return
        except (*_UNREADABLE, *client_errors()) as exc:
            yield from flush()
            yield self._record(
                f"<tar:{n_members}>",
                error=f"tar shard unreadable after {n_members} members: {self._why(exc)}",
            )
            return
        yield from flush()

    def _why(self, exc: BaseException) -> str:
        """What stopped the read: the store's answer for a remote object, else the error."""
        failure = store_failure(self.url, exc) if self.url is not None else None
        return str(exc) if failure is None else str(failure)

    def _record(
        self, member: str, *, data: bytes | None = None, error: str | None = None
    ) -> ImageRecord:
        return ImageRecord(shard=self.id, member=member, reader=self.kind, data=data, error=error)
