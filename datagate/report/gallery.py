"""Thumbnails for report galleries, read back from the shards a scan recorded.

Only the few images a report shows are read again (never extracted to disk), each through
the same bounded decoder as the scan, shrunk to a small JPEG and inlined as a data URI, so a
report stays one self-contained file of bounded size. Images whose shard moved or vanished
are shown as missing, never an error.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datagate.scanner.decode import DecodeError, decode
from datagate.errors import InputError
from datagate.scanner.readers import ParquetShard, WebDatasetShard, read_file

THUMB_PX = 112
THUMB_QUALITY = 70


def thumbnail(data: bytes) -> str | None:
    """A data-URI JPEG thumbnail, or None when the bytes do not decode."""
    try:
        image = decode(data, analysis_size=THUMB_PX).image
    except DecodeError:
        return None
    image.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_thumbnails(
    scan_meta: dict[str, Any], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """Thumbnails for (shard, member) pairs, reading each shard at most once."""
    wanted: dict[str, set[str]] = {}
    for shard, member in keys:
        wanted.setdefault(shard, set()).add(member)
    shards = {s["id"]: s for s in scan_meta.get("shards", [])}
    image_column = scan_meta.get("config", {}).get("image_column")
    found: dict[tuple[str, str], str | None] = {}
    for shard_id, members in wanted.items():
        info = shards.get(shard_id, {})
        path = Path(info["path"]) if info.get("path") else None
        for member, data in _read(info.get("kind"), shard_id, path, members, image_column):
            found[(shard_id, member)] = thumbnail(data) if data else None
        for member in members:
            found.setdefault((shard_id, member), None)
    return found


def _read(
    kind: str | None, shard_id: str, path: Path | None, members: set[str], image_column: str | None
) -> Iterable[tuple[str, bytes | None]]:
    if path is None or not path.exists():
        return
    try:
        if kind == "folder":
            for member in members:
                try:
                    yield member, read_file(str(path / member))
                except (OSError, ValueError):
                    yield member, None
        elif kind in ("webdataset", "parquet"):
            shard = (
                WebDatasetShard(shard_id, path)
                if kind == "webdataset"
                else ParquetShard(shard_id, path, image_column)
            )
            remaining = set(members)
            for record in shard.records():
                if record.member in remaining:
                    remaining.discard(record.member)
                    yield record.member, record.data
                    if not remaining:
                        break
    except (InputError, OSError):
        return
