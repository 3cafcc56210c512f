"""The per-record compute: read, decode once, run every signal. Knows nothing of scheduling.

:func:`compute_chunk` is what every executor runs (inline, a local process pool, Ray): it
turns a list of records into rows, consulting the content-addressed row cache first when
the scan has one, writes them as one Parquet part when given a path, and, when the scan
embeds, hands back each image's vector or embedder input. A weight-free embedder (pixel,
forensic, and their stack: :func:`datagate.embed.models.worker_embedder`) runs here, as part
of the per-record compute, so the scan process only merges its vectors; for a model, the
input is prepared here (the pixels at the model's input size, or the features a feature
embedder computes from the decoded sample and the file bytes) and the embedding stage only
stacks the inputs and runs the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datagate.embed.models import Embedder, prepare_input, worker_embedder
from datagate.io import write_table
from datagate.scanner.cache import content_key, worker_store
from datagate.scanner.decode import Decoded, DecodeError, decode
from datagate.scanner.options import ScanOptions
from datagate.scanner.readers import read_file
from datagate.scanner.records import ImageRecord
from datagate.scanner.schema import IDENTITY_FIELDS, images_schema
from datagate.scanner.signals import SIGNALS, Sample
from datagate.scanner.signals.base import nulls

Pixels = np.ndarray[Any, np.dtype[np.uint8]]
_IDENTITY = {f.name for f in IDENTITY_FIELDS} - {"error"}
#: Images a worker embeds at once with a weight-free embedder (the scan's default batch).
WORKER_BATCH = 64


def identity(record: ImageRecord) -> dict[str, Any]:
    """The identity columns of a record's row (everything but the signals and error)."""
    return {
        "key": record.key,
        "shard": record.shard,
        "member": record.member,
        "reader": record.reader,
        "meta": json.dumps(record.meta, sort_keys=True, default=str) if record.meta else None,
    }


@dataclass
class Computed:
    """One record's row, and what the embedding stage may need of it."""

    row: dict[str, Any]
    decoded: Decoded | None
    data: bytes | None
    sha256: str | None


def read_record(record: ImageRecord, max_bytes: int) -> tuple[bytes | None, str | None]:
    """The record's bytes (read from its path when the reader left them there), or an error."""
    if record.error is not None:
        return None, record.error
    if record.data is None and record.path is not None:
        try:
            return read_file(record.path, max_bytes), None
        except (OSError, ValueError) as exc:
            return None, f"cannot read file: {exc}"
    return record.data, None


def compute_record(record: ImageRecord, options: ScanOptions) -> Computed:
    """Read, decode once and run every signal on one record. Never raises."""
    data, error = read_record(record, options.max_bytes)
    decoded = None
    if error is None and data is not None:
        try:
            decoded = decode(
                data, max_pixels=options.max_pixels, analysis_size=options.analysis_size
            )
        except DecodeError as exc:
            error = str(exc)
    sample = Sample(record, data, decoded, error, options.watermark_rate)
    row: dict[str, Any] = {**identity(record), "error": error}
    for name in options.signals:
        signal = SIGNALS[name]
        try:
            row.update(signal().compute(sample))
        except Exception as exc:  # a signal bug must not lose the row
            row.update(nulls(signal.fields))
            note = f"signal {name} failed: {type(exc).__name__}: {exc}"
            row["error"] = note if row["error"] is None else f"{row['error']}; {note}"
    if "decodable" in row and decoded is None:
        row["decodable"] = False
    return Computed(row, decoded, data, sample.sha256)


@dataclass(frozen=True)
class CacheRef:
    """What a worker needs to consult the row cache: where it is, and the two keys' spaces."""

    directory: str
    row_config: str
    vectors: str | None  # the embedder's cache key, when the scan embeds


@dataclass
class ChunkResult:
    """What a worker hands back for one chunk."""

    rows: int
    #: key, SHA-256 digest and vector or embedder input of each image the scan embeds: its
    #: float32 vector when the embedder ran here, else its uint8 embedder input, or None
    #: when its vector is cached; when the embedder ran here on every image, ``pixels`` is
    #: one float32 array (images, dim), pickled as one buffer rather than a list of arrays
    keys: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    pixels: list[np.ndarray[Any, Any] | None] | np.ndarray[Any, Any] = field(default_factory=list)
    #: rows computed here for the cache (content key -> values), and cache keys that hit
    new_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    table: pa.Table | None = None  # when no part path was given


def compute_chunk(
    records: list[ImageRecord],
    options: ScanOptions,
    part: str | None = None,
    cache: CacheRef | None = None,
) -> ChunkResult:
    """Rows for ``records`` (cached rows first), written to ``part`` when given."""
    store = worker_store(cache.directory) if cache is not None else None
    result = ChunkResult(len(records))
    pending: list[tuple[int, ImageRecord, str | None]] = []
    rows: list[dict[str, Any] | None] = [None] * len(records)
    cached: dict[int, tuple[str, dict[str, Any]]] = {}
    if store is not None and cache is not None:
        keyed: dict[int, tuple[ImageRecord, str]] = {}
        for i, record in enumerate(records):
            data, error = read_record(record, options.max_bytes)
            if error is None and data is not None:
                keyed[i] = (replace(record, data=data, path=None), content_key(data, record.meta))
            else:
                pending.append((i, record, None))
        found = store.get_rows(cache.row_config, (k for _, k in keyed.values()))
        embeds = cache.vectors is not None
        digests = {k[:64] for _, k in keyed.values() if k in found} if embeds else set()
        present = (
            store.has_vectors(cache.vectors, (bytes.fromhex(d) for d in digests))
            if embeds and cache.vectors is not None
            else set()
        )
        for i, (record, content) in keyed.items():
            hit = found.get(content)
            vector_ok = not embeds or hit is None or hit.get("decodable") is False
            vector_ok = vector_ok or bytes.fromhex(content[:64]) in present
            if hit is not None and vector_ok:
                cached[i] = (content, hit)
            else:
                pending.append((i, record, content))
        pending.sort(key=lambda p: p[0])
    else:
        pending = [(i, r, None) for i, r in enumerate(records)]
    prepared: dict[int, np.ndarray[Any, Any] | None] = {}
    digest_of: dict[int, bytes] = {}
    for i, record, key in pending:
        done = compute_record(record, options)
        rows[i] = done.row
        if key is not None:
            result.new_rows[key] = {k: v for k, v in done.row.items() if k not in _IDENTITY}
        if options.preprocessing is not None and done.decoded is not None and done.sha256:
            try:
                prepared[i] = prepare_input(done.decoded, done.data, options.preprocessing)
            except Exception as exc:  # a feature bug loses the vector, never the row
                note = f"embedder input failed: {type(exc).__name__}: {exc}"
                done.row["error"] = (
                    note if done.row["error"] is None else f"{done.row['error']}; {note}"
                )
                continue
            digest_of[i] = bytes.fromhex(done.sha256)
    for i, (key, hit) in cached.items():
        rows[i] = {**hit, **identity(records[i])}
        result.hits.append(key)
        if options.preprocessing is not None and hit.get("decodable") is not False:
            prepared[i] = None
            digest_of[i] = bytes.fromhex(key[:64])
    order = sorted(prepared)
    result.keys = [records[i].key for i in order]
    result.digests = [digest_of[i] for i in order]
    result.pixels = [prepared[i] for i in order]
    embedder = worker_embedder(options.embedder, options.preprocessing)
    if embedder is not None:
        result.pixels = _embed_here(embedder, result.pixels)
    table = pa.Table.from_pylist(rows, schema=images_schema(options.signals))
    if part is not None:
        write_table(Path(part), table)
    else:
        result.table = table
    return result


def _embed_here(
    embedder: Embedder, inputs: list[np.ndarray[Any, Any] | None]
) -> list[np.ndarray[Any, Any] | None] | np.ndarray[Any, Any]:
    """Each input's float32 vector, embedding in batches; one (n, dim) array when no input
    is None (a cached vector), else a list with None kept where it was."""
    todo = [i for i, x in enumerate(inputs) if x is not None]
    vectors = np.empty((len(todo), embedder.dim), dtype=np.float32)
    for start in range(0, len(todo), WORKER_BATCH):
        batch = [inputs[i] for i in todo[start : start + WORKER_BATCH]]
        vectors[start : start + len(batch)] = embedder.embed(np.stack(batch))  # type: ignore[arg-type]
    if len(todo) == len(inputs):
        return vectors
    out: list[np.ndarray[Any, Any] | None] = [None] * len(inputs)
    for i, vector in zip(todo, vectors):
        out[i] = vector
    return out
