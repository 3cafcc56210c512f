"""Labelled images for detector heads: read any input the scan reads, embed, attach labels.

Labels come from the folders they are given in (``--real`` / ``--synthetic``) or from a CSV
with a ``path`` and a ``label`` column (``ai``, ``synthetic``, ``fake``, ``generated`` or
``1`` for synthetic; ``real``, ``human`` or ``0`` for human-made). A CSV path is relative to
the CSV's folder and names an image file, or for images inside a tar or Parquet shard, the
shard's path followed by ``/`` and the member name.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from datagate.errors import InputError

if TYPE_CHECKING:
    from datagate.embed.models import Embedder
    from datagate.scanner.cache import Store
    from datagate.scanner.engine import Progress

SYNTHETIC_LABELS = frozenset({"ai", "synthetic", "fake", "generated", "1"})
REAL_LABELS = frozenset({"real", "human", "0"})


@dataclass
class Labelled:
    """Embedded images with labels (1 synthetic, 0 real), in input order."""

    paths: list[str] = field(default_factory=list)
    vectors: np.ndarray[Any, np.dtype[np.float32]] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float32)
    )
    labels: np.ndarray[Any, np.dtype[np.int64]] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    #: (path, why) for images that could not be used: undecodable, or no label in the CSV.
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Labelled) -> None:
        if len(other.paths):
            self.vectors = (
                other.vectors if not len(self.paths) else np.vstack([self.vectors, other.vectors])
            )
            self.labels = np.r_[self.labels, other.labels].astype(np.int64)
            self.paths += other.paths
        self.skipped += other.skipped


def parse_label(value: str, where: str) -> int:
    text = value.strip().lower()
    if text in SYNTHETIC_LABELS:
        return 1
    if text in REAL_LABELS:
        return 0
    raise InputError(
        f"{where}: label {value!r} is neither synthetic nor real",
        hint=f"use one of {sorted(SYNTHETIC_LABELS)} or {sorted(REAL_LABELS)}",
    )


def read_labels(path: Path) -> dict[str, int]:
    """Absolute image path -> label, from a CSV with ``path`` and ``label`` columns."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if "path" not in columns or "label" not in columns:
                raise InputError(
                    f"{path}: expected a CSV with 'path' and 'label' columns, found {columns}"
                )
            base = path.parent.resolve()
            return {
                str((base / row["path"]).resolve()): parse_label(row["label"], f"{path}:{line}")
                for line, row in enumerate(reader, start=2)
            }
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read labels: {exc}") from exc


def embed_inputs(
    paths: Sequence[Path],
    embedder: Embedder,
    store: Store | None,
    *,
    workers: int,
    progress: Progress | None = None,
    batch_size: int = 64,
) -> tuple[list[str], np.ndarray[Any, np.dtype[np.float32]], list[tuple[str, str]]]:
    """Embed every image under ``paths`` with the scan's own readers, decoding and cache.

    Returns each embedded image's absolute path, its vector, and (path, error) for images
    that could not be embedded.
    """
    from datagate.contract import IMAGES_FILE, load_embeddings, load_meta
    from datagate.scanner.engine import scan
    from datagate.scanner.options import ScanOptions

    with tempfile.TemporaryDirectory(prefix="datagate-embed-") as tmp:
        out = Path(tmp)
        scan(
            list(paths),
            out,
            ScanOptions(signals=("integrity",)),
            workers=workers,
            progress=progress,
            embedder=embedder,
            store=store,
            batch_size=batch_size,
        )
        meta = load_meta(out)
        table = pq.read_table(out / IMAGES_FILE, columns=["key", "shard", "member", "error"])
        found = load_embeddings(out)
    shard_path = {s["id"]: s["path"] for s in meta["shards"]}
    where = {
        key: str(Path(shard_path[shard]) / member)
        for key, shard, member in zip(
            table.column("key").to_pylist(),
            table.column("shard").to_pylist(),
            table.column("member").to_pylist(),
        )
    }
    errors = [
        (where[k], e)
        for k, e in zip(table.column("key").to_pylist(), table.column("error").to_pylist())
        if e is not None
    ]
    if found is None or not len(found.keys):
        return [], np.zeros((0, embedder.dim), dtype=np.float32), errors
    return [where[k] for k in found.keys], found.vectors.astype(np.float32), errors


def collect(
    embedder: Embedder,
    store: Store | None,
    *,
    real: Sequence[Path] = (),
    synthetic: Sequence[Path] = (),
    labels: Path | None = None,
    labelled: Sequence[Path] = (),
    workers: int,
    progress: Progress | None = None,
    batch_size: int = 64,
) -> Labelled:
    """Embed labelled images: folders of one class each, and/or paths labelled by a CSV."""
    data = Labelled()
    kw: dict[str, Any] = {"workers": workers, "progress": progress, "batch_size": batch_size}
    for group, label in ((real, 0), (synthetic, 1)):
        if group:
            found, vectors, errors = embed_inputs(group, embedder, store, **kw)
            data.extend(Labelled(found, vectors, np.full(len(found), label), errors))
    if labels is not None:
        table = read_labels(labels)
        found, vectors, errors = embed_inputs(labelled or [labels.parent], embedder, store, **kw)
        have = np.array([p in table for p in found], dtype=bool)
        missing = [(p, f"no label in {labels}") for p, ok in zip(found, have) if not ok]
        chosen = [p for p, ok in zip(found, have) if ok]
        data.extend(
            Labelled(
                chosen,
                vectors[have],
                np.array([table[p] for p in chosen], dtype=np.int64),
                errors + missing,
            )
        )
    if not len(data.paths):
        raise InputError(
            "no labelled images could be embedded",
            hint="give --real and --synthetic folders, or --labels CSV with the images' paths",
        )
    return data
