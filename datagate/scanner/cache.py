"""The cache store: one SQLite file for scan rows and embeddings, keyed by content.

A row's signal values depend only on the image bytes, its sidecar metadata and the row
configuration (:meth:`ScanOptions.row_config`); a vector only on the bytes and the
embedder. Both are kept in ``cache.sqlite`` under the cache folder:

* ``--cache-dir DIR``, else ``$DATAGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/datagate``
  (``~/.cache/datagate``); the pre-commit hook keeps its own in ``.datagate/cache``.
* ``rows``: (config, content key) -> the row's signal values as JSON; identity columns
  (key, shard, member) are not cached, so a picture moved or copied is found again.
* ``embeddings``: (embedder cache key, image SHA-256) -> float16 vector.

Every entry records when it was last written or used; ``datagate cache info`` reports the
size and ``datagate cache prune`` removes what has not been used for a while. SQLite gives
atomic commits and safe concurrent readers (worker processes read rows; only the main
process writes). A store that cannot be opened or read is reported once and skipped: it
costs time, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "DATAGATE_CACHE_DIR"
CACHE_FILE = "cache.sqlite"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rows ("
    " config TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL, used INTEGER NOT NULL,"
    " PRIMARY KEY (config, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS embeddings ("
    " model TEXT NOT NULL, sha256 BLOB NOT NULL, vector BLOB NOT NULL, used INTEGER NOT NULL,"
    " PRIMARY KEY (model, sha256)) WITHOUT ROWID",
)
_BATCH = 500  # stays under SQLite's bound-parameter limit


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datagate"


def content_key(data: bytes, meta: dict[str, Any], sha256: str | None = None) -> str:
    """The cache key of a row: SHA-256 of the bytes, then a digest of its sidecar metadata."""
    meta_digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return (sha256 or hashlib.sha256(data).hexdigest()) + meta_digest[:16]


def _batches(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


@dataclass
class CacheInfo:
    path: str
    bytes: int
    rows: dict[str, int]
    embeddings: dict[str, int]


class Store:
    """The cache file. ``readonly`` opens an existing file for lookups only (workers)."""

    def __init__(self, directory: Path | None = None, *, readonly: bool = False) -> None:
        self.directory = directory if directory is not None else default_cache_dir()
        self.path = self.directory / CACHE_FILE
        self.error: str | None = None
        self.row_hits = self.vector_hits = self.vector_misses = 0
        self._db: sqlite3.Connection | None = None
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30)
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            self._fail(f"cache {self.path} unusable ({exc}); continuing without it")

    @property
    def usable(self) -> bool:
        return self._db is not None

    def _fail(self, message: str) -> None:
        self.error = self.error or message
        if self._db is not None:
            self._db.close()
        self._db = None

    def _select(self, query: str, head: list[Any], keys: list[Any]) -> list[tuple[Any, ...]]:
        if self._db is None:
            return []
        found: list[tuple[Any, ...]] = []
        try:
            for batch in _batches(keys):
                marks = ",".join("?" * len(batch))
                found += self._db.execute(f"{query} ({marks})", [*head, *batch]).fetchall()
        except sqlite3.Error as exc:
            self._fail(f"cache {self.path} unreadable ({exc}); recomputing")
            return []
        return found

    def _write(self, statement: str, values: list[tuple[Any, ...]]) -> None:
        if self._db is None or not values:
            return
        try:
            with self._db:
                self._db.executemany(statement, values)
        except sqlite3.Error as exc:
            self._fail(f"cache {self.path} not writable ({exc}); continuing without it")

    # ------------------------------------------------------------------ rows

    def get_rows(self, config: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(keys))
        query = "SELECT key, row FROM rows WHERE config = ? AND key IN"
        found = {k: json.loads(v) for k, v in self._select(query, [config], wanted)}
        self.row_hits += len(found)
        return found

    def put_rows(self, config: str, rows: dict[str, dict[str, Any]]) -> None:
        now = int(time.time())
        values = [(config, k, json.dumps(v, default=str), now) for k, v in rows.items()]
        self._write("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)", values)

    def touch_rows(self, config: str, keys: Iterable[str]) -> None:
        now = int(time.time())
        values = [(now, config, k) for k in keys]
        self._write("UPDATE rows SET used = ? WHERE config = ? AND key = ?", values)

    # ------------------------------------------------------------------ embeddings

    def get_vectors(
        self, model: str, dim: int, digests: Iterable[bytes]
    ) -> dict[bytes, np.ndarray[Any, Any]]:
        wanted = list(dict.fromkeys(digests))
        query = "SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN"
        found: dict[bytes, np.ndarray[Any, Any]] = {}
        for digest, blob in self._select(query, [model], wanted):
            vector = np.frombuffer(blob, dtype=np.float16)
            if vector.size == dim:
                found[bytes(digest)] = vector
        self.vector_hits += len(found)
        self.vector_misses += len(wanted) - len(found)
        if found:
            now = int(time.time())
            self._write(
                "UPDATE embeddings SET used = ? WHERE model = ? AND sha256 = ?",
                [(now, model, d) for d in found],
            )
        return found

    def has_vectors(self, model: str, digests: Iterable[bytes]) -> set[bytes]:
        query = "SELECT sha256 FROM embeddings WHERE model = ? AND sha256 IN"
        return {bytes(d) for (d,) in self._select(query, [model], list(digests))}

    def put_vectors(self, model: str, items: dict[bytes, np.ndarray[Any, Any]]) -> None:
        now = int(time.time())
        values = [
            (model, d, np.asarray(v, dtype=np.float16).tobytes(), now) for d, v in items.items()
        ]
        self._write("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", values)

    # ------------------------------------------------------------------ upkeep

    def info(self) -> CacheInfo:
        def counts(query: str) -> dict[str, int]:
            if self._db is None:
                return {}
            try:
                return {str(k): int(n) for k, n in self._db.execute(query)}
            except sqlite3.Error:
                return {}

        size = sum(p.stat().st_size for p in self.directory.glob(f"{CACHE_FILE}*") if p.is_file())
        return CacheInfo(
            path=str(self.path),
            bytes=size,
            rows=counts("SELECT config, COUNT(*) FROM rows GROUP BY config"),
            embeddings=counts("SELECT model, COUNT(*) FROM embeddings GROUP BY model"),
        )

    def prune(self, older_than_days: float) -> tuple[int, int]:
        """Delete entries not written or used for ``older_than_days``; (rows, vectors) gone."""
        if self._db is None:
            return 0, 0
        cutoff = time.time() - older_than_days * 86_400
        try:
            with self._db:
                rows = self._db.execute("DELETE FROM rows WHERE used < ?", (cutoff,)).rowcount
                vectors = self._db.execute(
                    "DELETE FROM embeddings WHERE used < ?", (cutoff,)
                ).rowcount
            self._db.execute("VACUUM")
        except sqlite3.Error as exc:
            self._fail(f"cache {self.path} not writable ({exc})")
            return 0, 0
        return rows, vectors

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


_readers: dict[str, Store] = {}


def worker_store(directory: str) -> Store:
    """A read-only store for this process (opened once per worker)."""
    store = _readers.get(directory)
    if store is None:
        store = _readers[directory] = Store(Path(directory), readonly=True)
    return store
