"""The pre-commit gate: an incremental scan of a data repository, then its rules.

Every commit re-judges the whole dataset (a human-share floor is a property of all of it),
but only images whose content is new are decoded: everything else comes from the
content-addressed cache under the repository's ``.datagate/`` folder. Outputs land there
too (``.datagate/scan``, ``.datagate/manifests``, ``.datagate/report.*``); add
``.datagate/`` to the repository's ``.gitignore``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datagate.scanner.rowcache import ContentCache, content_key
from datagate.detect.head import attach_scores
from datagate.gate import EnforceResult, enforce
from datagate.io import write_json, write_table
from datagate.scanner.engine import (
    EMBEDDINGS_FILE,
    IMAGES_FILE,
    META_FILE,
    EmbedStage,
    ScanOptions,
    _compute,
    compute_row,
    detector_meta,
    embedder_meta,
    embeddings_table,
    finish_meta,
    identity,
    make_executor,
)
from datagate.rules.policy import Policy
from datagate.scanner.readers import discover, read_file
from datagate.scanner.records import ImageRecord
from datagate.scanner.schema import images_schema

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

Prepared = np.ndarray[Any, np.dtype[np.uint8]]

STATE_DIR = Path(".datagate")
#: Below this many new images the work runs in-process (no worker start-up cost).
PARALLEL_FROM = 64
#: New images held in memory at most before their rows are computed.
FLUSH_EVERY = 1024


@dataclass
class HookRun:
    result: EnforceResult
    images: int
    cached: int
    computed: int
    seconds: float


def compute_rows(
    records: list[ImageRecord], options: ScanOptions
) -> list[tuple[dict[str, Any], Prepared | None]]:
    """Worker entry point: rows (and model-ready pixels when embedding) for records that
    already hold their bytes."""
    from datagate.embed.models import prepare

    out: list[tuple[dict[str, Any], Prepared | None]] = []
    for record in records:
        row, decoded, _ = _compute(record, options)
        pixels = None
        if options.preprocessing is not None and decoded is not None:
            pixels = prepare(decoded.image, options.preprocessing)
        out.append((row, pixels))
    return out


def incremental_scan(
    inputs: Sequence[Path],
    out: Path,
    options: ScanOptions,
    cache_dir: Path,
    workers: int,
    embedder: Embedder | None = None,
    head: Head | None = None,
) -> tuple[dict[str, Any], int, int]:
    """Scan ``inputs`` into ``out`` reusing cached rows; returns (meta, cached, computed).

    With an ``embedder``, also ``out/embeddings.parquet``, its vectors cached by image
    SHA-256 in the same cache folder; with a detector ``head`` too, every embedded image's
    P(synthetic), scored from those vectors as in a full scan.
    """
    from datagate.scanner.cache import EmbeddingCache
    from datagate.embed.models import cache_key

    started = time.perf_counter()
    stage = vectors_cache = None
    if embedder is not None:
        options = replace(options, embedder=embedder.id, preprocessing=embedder.preprocessing)
        vectors_cache = EmbeddingCache(cache_key(embedder), embedder.dim, cache_dir)
        stage = EmbedStage(embedder, vectors_cache, 64)
    vectors: dict[int, np.ndarray[Any, Any]] = {}  # row index -> embedding
    found = discover(
        list(inputs),
        image_column=options.image_column,
        exclude=[out.parent],
        max_bytes=options.max_bytes,
    )
    schema = images_schema(options.signals)
    cache = ContentCache(cache_dir, options.config_hash(), schema)
    rows: list[dict[str, Any] | None] = []
    misses: list[tuple[int, ImageRecord, str]] = []
    n_computed = 0
    shards_meta = []
    computer = _Computer(options, workers)

    def flush() -> None:
        nonlocal misses, n_computed
        computed = computer.rows([r for _, r, _ in misses])
        if stage is not None:
            ready = [(i, k, px) for (i, _, k), (_, px) in zip(misses, computed) if px is not None]
            if ready:
                new = stage.vectors(
                    [_digest(k) for _, k, _ in ready], np.stack([px for _, _, px in ready])
                )
                vectors.update(zip((i for i, _, _ in ready), new))
        for (index, _, key), (row, _) in zip(misses, computed):
            rows[index] = row
            cache.put(key, row)
        n_computed += len(misses)
        misses = []  # drop the bytes: memory stays bounded by one batch

    for shard in found.shards:
        count = 0
        for record in shard.records():
            count += 1
            data = record.data
            if record.error is None and data is None and record.path is not None:
                try:
                    data = read_file(record.path, options.max_bytes)
                except (OSError, ValueError):
                    data = None  # compute_row records the read error
            if record.error is not None or data is None:
                rows.append(compute_row(record, options))
                continue
            key = content_key(data, record.meta)
            hit = cache.get(key)
            if vectors_cache is not None and hit is not None and hit.get("decodable") is not False:
                known = vectors_cache.get_many([_digest(key)])
                if known:
                    vectors[len(rows)] = next(iter(known.values()))
                else:
                    hit = None  # its vector is not in the cache: compute both again
            if hit is not None:
                rows.append({**hit, **identity(record)})
            else:
                misses.append((len(rows), replace(record, data=data), key))
                rows.append(None)
                if len(misses) >= FLUSH_EVERY:
                    flush()
        shards_meta.append(
            {
                "id": shard.id,
                "kind": shard.kind,
                "path": str(shard.location.resolve()),
                "images": count,
            }
        )
    flush()
    computer.close()
    table = pa.Table.from_pylist(rows, schema=schema)
    if embedder is not None and vectors_cache is not None:
        order = sorted(vectors)
        keys = table.column("key").take(pa.array(order, pa.int64())).to_pylist()
        matrix = (
            np.stack([vectors[i] for i in order])
            if order
            else np.zeros((0, embedder.dim), dtype=np.float16)
        )
        write_table(out / EMBEDDINGS_FILE, embeddings_table(keys, matrix, embedder))
        vectors_cache.close()
        if head is not None:
            head.check(embedder.id, embedder.preprocessing.id, embedder.dim)
            scores = head.proba(matrix.astype(np.float32))
            final = images_schema(options.signals, head.id)
            table = attach_scores(table, np.array(keys, dtype=object), scores, final)
    else:
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)
    write_table(out / IMAGES_FILE, table)
    cache.save()
    errors = table.num_rows - table.column("error").null_count
    meta: dict[str, Any] = {
        "counts": {
            "images": table.num_rows,
            "errors": errors,
            "shards": len(found.shards),
            "skipped_files": len(found.skipped),
        },
        "shards": shards_meta,
        "skipped": [{"path": p, "reason": r} for p, r in found.skipped],
    }
    n_cached = table.num_rows - n_computed
    finish_meta(
        meta,
        options,
        inputs,
        time.perf_counter() - started,
        {"workers": workers, "rows_cached": n_cached, "rows_computed": n_computed},
    )
    if embedder is not None and stage is not None:
        meta["embedder"] = embedder_meta(embedder, stage, vectors_cache)
    if head is not None and embedder is not None:
        meta["detector"] = detector_meta(head)
    write_json(out / META_FILE, meta)
    return meta, n_cached, n_computed


def _digest(key: str) -> bytes:
    """The image bytes' SHA-256, the first half of a content key."""
    return bytes.fromhex(key[:64])


class _Computer:
    """Computes rows for new images: in-process for a few, on a worker pool for many."""

    def __init__(self, options: ScanOptions, workers: int) -> None:
        self.options = options
        self.workers = workers
        self._executor: Executor | None = None

    def rows(self, records: list[ImageRecord]) -> list[tuple[dict[str, Any], Prepared | None]]:
        if len(records) < PARALLEL_FROM or self.workers <= 1:
            return compute_rows(records, self.options)
        if self._executor is None:
            self._executor = make_executor(self.workers)
        size = max(16, len(records) // (4 * self.workers))
        batches = [records[i : i + size] for i in range(0, len(records), size)]
        done = self._executor.map(compute_rows, batches, [self.options] * len(batches))
        return [row for batch in done for row in batch]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()


def run_hook(
    inputs: Sequence[Path],
    policy: Policy,
    *,
    source: str,
    state_dir: Path = STATE_DIR,
    options: ScanOptions | None = None,
    workers: int | None = None,
    embedder: Embedder | None = None,
    head: Head | None = None,
) -> HookRun:
    """Incrementally scan ``inputs`` and enforce ``policy``; outputs go to ``state_dir``.

    ``embedder`` is used only when the policy has rules that need embeddings, or a detector
    ``head`` is given (its scores feed the min_human estimate).
    """
    started = time.perf_counter()
    options = options or ScanOptions()
    workers = workers if workers is not None else (os.cpu_count() or 1)
    scan_dir = state_dir / "scan"
    meta, cached, computed = incremental_scan(
        inputs,
        scan_dir,
        options,
        state_dir / "cache",
        workers,
        embedder if policy.needs_embeddings() or head is not None else None,
        head,
    )
    result = enforce(scan_dir, policy, source=source, out=state_dir)
    return HookRun(
        result, meta["counts"]["images"], cached, computed, time.perf_counter() - started
    )
