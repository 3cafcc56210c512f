"""A content-addressed cache of scan rows, for incremental scans (the pre-commit hook).

A row's signal values depend only on the image bytes, its sidecar metadata and the scan
options, so they are cached under ``sha256(bytes) + sha256(metadata)`` in one Parquet file
per options hash. Identity columns (key, shard, member) are not cached: the same picture
moved or copied is found again. Files are replaced atomically; an unreadable cache is
ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datagate.io import write_table
from datagate.scanner.schema import IDENTITY_FIELDS

CACHE_KEY = "cache_key"
_IDENTITY = {f.name for f in IDENTITY_FIELDS} - {"error"}


def content_key(data: bytes, meta: dict[str, Any]) -> str:
    meta_digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return hashlib.sha256(data).hexdigest() + meta_digest[:16]


class ContentCache:
    """Rows by content key for one scan configuration."""

    def __init__(self, directory: Path, config_hash: str, schema: pa.Schema) -> None:
        self.path = directory / f"rows-{config_hash}.parquet"
        self._fields = [f for f in schema if f.name not in _IDENTITY]
        self._schema = pa.schema([pa.field(CACHE_KEY, pa.string(), nullable=False), *self._fields])
        self._rows: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if self.path.exists():
            try:
                for row in pq.read_table(self.path, schema=self._schema).to_pylist():
                    self._rows[row.pop(CACHE_KEY)] = row
            except (pa.ArrowException, OSError, ValueError):
                self._rows = {}  # a damaged cache costs a re-scan, never a wrong answer

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> None:
        self._rows[key] = {f.name: row.get(f.name) for f in self._fields}
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        rows = [{CACHE_KEY: k, **v} for k, v in self._rows.items()]
        write_table(self.path, pa.Table.from_pylist(rows, schema=self._schema))
        self._dirty = False
