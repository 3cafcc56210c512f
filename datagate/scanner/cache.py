"""A persistent cache of embeddings by (image sha256, embedder id, preprocessing).

One SQLite file (``$DATAGATE_CACHE_DIR/embeddings.sqlite``, default
``~/.cache/datagate/``) holds float16 vectors keyed by the embedder's cache key and the
SHA-256 of the image bytes, so a re-scan, a copy of a dataset or duplicate bytes never run
the model again. SQLite gives atomic commits and safe concurrent readers. A cache that
cannot be opened is reported once and skipped: it costs time, never a wrong answer.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "DATAGATE_CACHE_DIR"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embeddings ("
    " model TEXT NOT NULL, sha256 BLOB NOT NULL, vector BLOB NOT NULL,"
    " PRIMARY KEY (model, sha256)) WITHOUT ROWID"
)
_LOOKUP_BATCH = 500  # stays under SQLite's bound-parameter limit


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datagate"


class EmbeddingCache:
    """Vectors of one embedder (``model`` is its cache key) by image SHA-256."""

    def __init__(self, model: str, dim: int, directory: Path | None = None) -> None:
        self.model, self.dim = model, dim
        self.path = (directory or default_cache_dir()) / "embeddings.sqlite"
        self.error: str | None = None
        self.hits = self.misses = 0
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            self.error = f"embedding cache {self.path} unusable ({exc}); continuing without it"
            self._db = None

    def get_many(self, digests: Iterable[bytes]) -> dict[bytes, np.ndarray[Any, Any]]:
        wanted = list(dict.fromkeys(digests))
        found: dict[bytes, np.ndarray[Any, Any]] = {}
        if self._db is not None:
            try:
                for start in range(0, len(wanted), _LOOKUP_BATCH):
                    batch = wanted[start : start + _LOOKUP_BATCH]
                    marks = ",".join("?" * len(batch))
                    query = "SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN"
                    rows = self._db.execute(f"{query} ({marks})", [self.model, *batch])
                    for digest, blob in rows:
                        vector = np.frombuffer(blob, dtype=np.float16)
                        if vector.size == self.dim:
                            found[bytes(digest)] = vector
            except sqlite3.Error as exc:
                self.error = f"embedding cache {self.path} unreadable ({exc}); recomputing"
                found = {}
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def put_many(self, items: dict[bytes, np.ndarray[Any, Any]]) -> None:
        if self._db is None or not items:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                    [
                        (self.model, digest, np.asarray(v, dtype=np.float16).tobytes())
                        for digest, v in items.items()
                    ],
                )
        except sqlite3.Error as exc:
            self.error = f"embedding cache {self.path} not writable ({exc}); continuing"

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
