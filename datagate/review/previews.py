"""Previews: the image of a manifest row, read back from the shard the scan recorded, decoded
by the scan's bounded decoder and re-encoded as a JPEG at most ``PREVIEW_PX`` on a side.

Only shards named in ``meta.json`` are opened, and only members a manifest names: a request
names an image key, never a path. Folder images are read directly (a member that is not a
plain file name is refused); uncompressed tar shards through an index of member offsets
built once per shard; Parquet shards one row group at a time; compressed tars by streaming,
in one pass that also reads the other images of the pages being reviewed (``expect``).
Previews live in a bounded in-memory cache; nothing is written to disk.
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datagate.contract import ScanMeta
from datagate.errors import InputError
from datagate.scanner.compute import read_record
from datagate.scanner.decode import DEFAULT_MAX_PIXELS, DecodeError, decode
from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers import ParquetShard, read_file, reopen

PREVIEW_PX = 512
PREVIEW_QUALITY = 85
CACHE_BYTES = 64 * 1024 * 1024
CACHE_ENTRIES = 4096
TAR_INDEXES = 16
#: images of the pages being reviewed, read alongside a miss in the same shard pass
UPCOMING = 600
BATCH = 64

Pair = tuple[str, str]


def encode(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """A preview JPEG of image bytes, or None when they do not decode (bounded decode)."""
    if not data:
        return None
    try:
        image = decode(data, max_pixels=max_pixels, analysis_size=PREVIEW_PX).image
    except DecodeError:
        return None
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def _plain_name(member: str) -> bool:
    return bool(member) and member not in (".", "..") and Path(member).name == member


class Previews:
    """Preview JPEGs of the images of one scan, read on demand and cached."""

    def __init__(self, meta: ScanMeta) -> None:
        self._shards = {s["id"]: s for s in meta["shards"]}
        config = meta.get("config", {})
        self._image_column: str | None = config.get("image_column")
        self._max_bytes = int(config.get("max_bytes") or DEFAULT_MAX_BYTES)
        self._max_pixels = int(config.get("max_pixels") or DEFAULT_MAX_PIXELS)
        self._cache: OrderedDict[Pair, bytes | None] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.Lock()
        self._shard_locks: dict[str, threading.Lock] = {}
        self._tar_indexes: OrderedDict[str, dict[str, tuple[int, int]] | None] = OrderedDict()
        self._upcoming: deque[Pair] = deque(maxlen=UPCOMING)

    def expect(self, pairs: Iterable[Pair]) -> None:
        """Images about to be asked for: a shard pass made for one of them reads them too."""
        with self._lock:
            self._upcoming.extend(pairs)

    def get(self, shard: str, member: str) -> bytes | None:
        """The preview of one image, or None when it cannot be read or does not decode."""
        found, preview = self._cached((shard, member))
        if found:
            return preview
        with self._lock:
            shard_lock = self._shard_locks.setdefault(shard, threading.Lock())
        with shard_lock:
            found, preview = self._cached((shard, member))  # read meanwhile by another request
            if found:
                return preview
            for name, data in self._read(shard, member):
                self._store((shard, name), encode(data, self._max_pixels))
            found, preview = self._cached((shard, member))
            if not found:
                self._store((shard, member), None)
            return preview

    # ------------------------------------------------------------------ cache

    def _cached(self, pair: Pair) -> tuple[bool, bytes | None]:
        with self._lock:
            if pair not in self._cache:
                return False, None
            self._cache.move_to_end(pair)
            return True, self._cache[pair]

    def _store(self, pair: Pair, preview: bytes | None) -> None:
        with self._lock:
            old = self._cache.pop(pair, None)
            self._cache_bytes -= len(old or b"")
            self._cache[pair] = preview
            self._cache_bytes += len(preview or b"")
            while self._cache and (
                self._cache_bytes > CACHE_BYTES or len(self._cache) > CACHE_ENTRIES
            ):
                _, dropped = self._cache.popitem(last=False)
                self._cache_bytes -= len(dropped or b"")

    def _siblings(self, shard: str, member: str) -> set[str]:
        """``member`` and up to BATCH other expected, not yet cached members of ``shard``."""
        with self._lock:
            upcoming = [m for s, m in self._upcoming if s == shard and (s, m) not in self._cache]
        return {member, *list(dict.fromkeys(upcoming))[:BATCH]}

    # ------------------------------------------------------------------ shards

    def _read(self, shard_id: str, member: str) -> Iterator[tuple[str, bytes | None]]:
        info = self._shards.get(shard_id)
        if info is None or not info.get("path"):
            return
        path = Path(info["path"])
        if not path.exists():
            return
        kind = info.get("kind")
        try:
            if kind == "folder":
                if _plain_name(member):  # never a path outside the shard's folder
                    yield member, self._file(path / member)
            elif kind == "webdataset":
                index = self._tar_index(shard_id, path)
                if index is not None:
                    yield member, self._tar_member(path, index, member)
                else:
                    yield from self._stream(shard_id, path, self._siblings(shard_id, member))
            elif kind == "parquet":
                yield from self._parquet(shard_id, path, member)
        except (InputError, OSError, ValueError, pa.ArrowException, tarfile.TarError):
            return

    def _file(self, path: Path) -> bytes | None:
        try:
            return read_file(str(path), self._max_bytes)
        except (OSError, ValueError):
            return None

    def _tar_index(self, shard_id: str, path: Path) -> dict[str, tuple[int, int]] | None:
        """Offsets of an uncompressed tar's files, or None for a tar that must be streamed."""
        with self._lock:
            if shard_id in self._tar_indexes:
                self._tar_indexes.move_to_end(shard_id)
                return self._tar_indexes[shard_id]
        index: dict[str, tuple[int, int]] | None
        try:
            with tarfile.open(path, mode="r:") as tar:  # headers only: seeks over the data
                index = {i.name: (i.offset_data, i.size) for i in tar if i.isfile()}
        except (tarfile.TarError, OSError, EOFError):
            index = None  # compressed (or damaged): streamed like the scan read it
        with self._lock:
            self._tar_indexes[shard_id] = index
            while len(self._tar_indexes) > TAR_INDEXES:
                self._tar_indexes.popitem(last=False)
        return index

    def _tar_member(
        self, path: Path, index: dict[str, tuple[int, int]], member: str
    ) -> bytes | None:
        where = index.get(member)
        if where is None or where[1] > self._max_bytes:
            return None
        with open(path, "rb") as fh:
            fh.seek(where[0])
            return fh.read(where[1])

    def _stream(self, shard_id: str, path: Path, wanted: set[str]) -> Iterator[tuple[str, Any]]:
        remaining = set(wanted)
        for record in reopen("webdataset", shard_id, path, [], self._image_column).records():
            if record.member in remaining:
                remaining.discard(record.member)
                data, _ = read_record(record, self._max_bytes)
                yield record.member, data
                if not remaining:
                    return

    def _parquet(self, shard_id: str, path: Path, member: str) -> Iterator[tuple[str, Any]]:
        """``member`` (a row number) and the expected rows in the same row group."""
        if not member.isdigit():
            return
        shard = ParquetShard(shard_id, path, self._image_column)  # chooses the image column
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        starts = np.concatenate(
            [[0], np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])]
        )
        row = int(member)
        if row >= starts[-1]:
            return
        group = int(np.searchsorted(starts, row, side="right") - 1)
        lo, hi = int(starts[group]), int(starts[group + 1])
        rows = {
            int(m) for m in self._siblings(shard_id, member) if m.isdigit() and lo <= int(m) < hi
        }
        column = pf.read_row_group(group, columns=[shard.image_column]).column(0)
        for r in sorted(rows):
            value = column[r - lo].as_py()
            if isinstance(value, dict):  # {"bytes": ..., "path": ...} (Hugging Face images)
                value = value.get("bytes")
            ok = isinstance(value, bytes) and len(value) <= self._max_bytes
            yield str(r), value if ok else None
