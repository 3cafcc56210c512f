"""The scan pipeline: shards -> chunks of records -> signals -> Parquet parts -> scan table.

Work is split into chunks (a fixed number of records, or fewer when their bytes add up) in
each shard's deterministic record order. Each chunk is computed in a worker process and
written atomically as its own Parquet part under ``OUT/parts/``; a shard whose chunks are all
written gets a ``.done`` marker. A re-run with the same inputs and options skips finished
shards without reading them and finished chunks without decoding them, so a scan killed at
any moment (even with SIGKILL) resumes, and its final table equals an uninterrupted one.
Only a bounded window of chunks is in flight, so memory does not grow with dataset size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datagate import __version__
from datagate.scanner.decode import (
    ANALYSIS_SIZE,
    DEFAULT_MAX_PIXELS,
    Decoded,
    DecodeError,
    configure_pillow,
    decode,
)
from datagate.detect.head import attach_scores
from datagate.embed.models import Preprocessing, prepare
from datagate.errors import InputError
from datagate.io import atomic_path, write_json, write_table
from datagate.scanner.readers import Shard, discover, read_file
from datagate.scanner.readers.base import DEFAULT_MAX_BYTES
from datagate.scanner.records import ImageRecord
from datagate.scanner.schema import SCHEMA_VERSION, embeddings_schema, images_schema, signal_versions
from datagate.scanner.signals import DEFAULT_SIGNALS, SIGNALS, Sample
from datagate.scanner.signals.base import nulls

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.scanner.cache import EmbeddingCache
    from datagate.embed.models import Embedder

IMAGES_FILE = "images.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
META_FILE = "meta.json"
PARTS_DIR = "parts"
MERGE_ROWS = 65_536


@dataclass(frozen=True)
class ScanOptions:
    """Everything that changes what a scan computes (hashed into ``config_hash``)."""

    signals: tuple[str, ...] = DEFAULT_SIGNALS
    image_column: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    analysis_size: int = ANALYSIS_SIZE
    chunk_size: int = 256
    chunk_bytes: int = 64 * 1024 * 1024
    watermark: str = "off"  # off | all | sample:N
    #: Derived at scan start from ``watermark`` and the dataset size; not part of the hash.
    watermark_rate: float = 0.0
    #: The embedder's id and its input preprocessing (None: no embeddings).
    embedder: str | None = None
    preprocessing: Preprocessing | None = None
    #: The id of the detector head applied to the embeddings (None: no synthetic score).
    detector: str | None = None

    def config_hash(self) -> str:
        payload = {
            **{k: v for k, v in asdict(self).items() if k != "watermark_rate"},
            "schema_version": SCHEMA_VERSION,
            "signal_versions": signal_versions(self.signals),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class Progress(Protocol):
    def start(self, total: int | None) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def start(self, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class ScanResult:
    out: Path
    meta: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- per image


def identity(record: ImageRecord) -> dict[str, Any]:
    """The identity columns of a record's row (everything but the signals and error)."""
    return {
        "key": record.key,
        "shard": record.shard,
        "member": record.member,
        "reader": record.reader,
        "meta": json.dumps(record.meta, sort_keys=True, default=str) if record.meta else None,
    }


def compute_row(record: ImageRecord, options: ScanOptions) -> dict[str, Any]:
    """Read, decode once and run every signal on one record. Never raises."""
    return _compute(record, options)[0]


def _compute(
    record: ImageRecord, options: ScanOptions
) -> tuple[dict[str, Any], Decoded | None, bytes | None]:
    data, error, decoded = record.data, record.error, None
    if error is None and data is None and record.path is not None:
        try:
            data = read_file(record.path, options.max_bytes)
        except (OSError, ValueError) as exc:
            error = f"cannot read file: {exc}"
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
    return row, decoded, data


@dataclass
class ChunkResult:
    """What a worker hands back: its row count and, when embedding, the prepared pixels."""

    rows: int
    keys: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    pixels: np.ndarray[Any, np.dtype[np.uint8]] | None = None


def process_chunk(records: list[ImageRecord], part: str, options: ScanOptions) -> ChunkResult:
    """Worker entry point: compute a chunk and write it atomically as one Parquet part.

    When the scan embeds, the decoded images are also prepared to the model's input size
    here, in the worker, so the main process only stacks them and runs the model.
    """
    rows: list[dict[str, Any]] = []
    result = ChunkResult(0)
    prepared: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
    for record in records:
        row, decoded, data = _compute(record, options)
        rows.append(row)
        if options.preprocessing is not None and decoded is not None and data is not None:
            prepared.append(prepare(decoded.image, options.preprocessing))
            result.keys.append(record.key)
            sha = row.get("sha256")  # the hashes signal's, when it ran
            result.digests.append(bytes.fromhex(sha) if sha else hashlib.sha256(data).digest())
    table = pa.Table.from_pylist(rows, schema=images_schema(options.signals))
    write_table(Path(part), table)
    result.rows = len(rows)
    if prepared:
        result.pixels = np.stack(prepared)
    return result


class EmbedStage:
    """Runs in the main process: cached vectors by SHA-256, the model for the rest."""

    def __init__(
        self,
        embedder: Embedder,
        cache: EmbeddingCache | None,
        batch_size: int,
        head: Head | None = None,
    ) -> None:
        self.embedder, self.cache, self.batch_size = embedder, cache, max(1, batch_size)
        self.head = head
        self.computed = 0

    def vectors(
        self, digests: list[bytes], pixels: np.ndarray[Any, np.dtype[np.uint8]] | None
    ) -> np.ndarray[Any, np.dtype[np.float16]]:
        out = np.zeros((len(digests), self.embedder.dim), dtype=np.float16)
        if not digests or pixels is None:
            return out
        known = self.cache.get_many(digests) if self.cache is not None else {}
        first: dict[bytes, int] = {}
        for i, digest in enumerate(digests):
            if digest not in known:
                first.setdefault(digest, i)  # duplicate bytes in a chunk: computed once
        todo = list(first.values())
        fresh: dict[bytes, np.ndarray[Any, Any]] = {}
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start : start + self.batch_size]
            batch = self.embedder.embed(pixels[rows]).astype(np.float16)
            fresh.update({digests[i]: v for i, v in zip(rows, batch)})
        self.computed += len(todo)
        if self.cache is not None:
            self.cache.put_many(fresh)
        for i, digest in enumerate(digests):
            out[i] = known[digest] if digest in known else fresh[digest]
        return out

    def write(self, result: ChunkResult, path: Path) -> None:
        """Write a chunk's vectors (and, with a head, their scores: the same forward pass)."""
        vectors = self.vectors(result.digests, result.pixels)
        scores = None
        if self.head is not None:
            scores = self.head.proba(vectors.astype(np.float32)).astype(np.float32)
        write_table(path, embeddings_table(result.keys, vectors, self.embedder, scores))


def embeddings_table(
    keys: Sequence[str],
    vectors: np.ndarray[Any, Any],
    embedder: Embedder,
    scores: np.ndarray[Any, Any] | None = None,
) -> pa.Table:
    schema = embeddings_schema(
        embedder.dim, embedder.id, embedder.preprocessing.id, scored=scores is not None
    )
    flat = pa.array(np.asarray(vectors, dtype=np.float16).ravel(), type=pa.float16())
    column = pa.FixedSizeListArray.from_arrays(flat, embedder.dim)
    arrays = [pa.array(list(keys), pa.string()), column]
    if scores is not None:
        arrays.append(pa.array(np.asarray(scores, dtype=np.float32), pa.float32()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _init_worker() -> None:
    configure_pillow()


# --------------------------------------------------------------------------- planning


def _chunks(records: Iterator[ImageRecord], options: ScanOptions) -> Iterator[list[ImageRecord]]:
    chunk: list[ImageRecord] = []
    size = 0
    for record in records:
        chunk.append(record)
        size += record.size_hint()
        if len(chunk) >= options.chunk_size or size >= options.chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _shard_prefix(shard: Shard, config_hash: str) -> str:
    text = f"{config_hash}\0{shard.id}\0{shard.fingerprint}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class _InlineExecutor(Executor):
    """Runs submitted work immediately in this process (``--workers 1``, and tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def make_executor(workers: int) -> Executor:
    if workers <= 1:
        configure_pillow()
        return _InlineExecutor()
    if sys.platform.startswith("linux"):
        # forkserver: no fork of a process that runs threads (the progress bar); the server
        # imports the signal stack once, so workers start without paying for it again
        context: multiprocessing.context.BaseContext = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)


# --------------------------------------------------------------------------- scan


def scan(
    inputs: Sequence[Path],
    out: Path,
    options: ScanOptions | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    head: Head | None = None,
) -> ScanResult:
    """Scan ``inputs`` into ``out/images.parquet`` and ``out/meta.json``; resume if possible.

    With an ``embedder``, also ``out/embeddings.parquet`` (vectors looked up in ``cache``
    by image SHA-256 first). With a detector ``head`` (which needs the embedder it was trained
    on), every decodable image also gets its P(synthetic) in ``images.parquet``.
    """
    options = options or ScanOptions()
    if head is not None:
        if embedder is None:
            raise InputError(
                "a detector head scores embeddings, but this scan computes none",
                hint=f"pass --model {head.model or head.embedder} (the head's embedder)",
            )
        head.check(embedder.id, embedder.preprocessing.id, embedder.dim)
    if embedder is not None:
        options = replace(
            options,
            embedder=embedder.id,
            preprocessing=embedder.preprocessing,
            detector=head.id if head is not None else None,
        )
    stage = EmbedStage(embedder, cache, batch_size, head) if embedder is not None else None
    workers = workers if workers is not None else (os.cpu_count() or 1)
    progress = progress or _NoProgress()
    unknown = [s for s in options.signals if s not in SIGNALS]
    if unknown:
        raise InputError(f"unknown signal(s) {unknown}; known: {sorted(SIGNALS)}")
    out = out.resolve()
    found = discover(
        list(inputs), image_column=options.image_column, exclude=[out], max_bytes=options.max_bytes
    )
    parts_dir = out / PARTS_DIR
    parts_dir.mkdir(parents=True, exist_ok=True)
    config_hash = options.config_hash()
    started = time.perf_counter()

    hints = [s.size_hint for s in found.shards]
    options = replace(options, watermark_rate=watermark_rate(options.watermark, found.shards))
    progress.start(None if any(h is None for h in hints) else sum(h or 0 for h in hints))
    plan: list[tuple[Shard, str]] = [(s, _shard_prefix(s, config_hash)) for s in found.shards]
    computed = resumed = 0
    window = max(2, 2 * workers)
    executor = make_executor(workers)
    pending: dict[Future[ChunkResult], tuple[str, Path]] = {}
    # shard prefix -> futures outstanding; prefix -> chunk count once its iteration finished
    outstanding: dict[str, set[Future[ChunkResult]]] = {}
    finished_iteration: dict[str, int] = {}

    def settle(futures: set[Future[ChunkResult]]) -> None:
        for fut in futures:
            prefix, part = pending.pop(fut)
            result = fut.result()  # re-raises a worker's unexpected error
            if stage is not None:
                stage.write(result, _embedding_part(part))
            progress.advance(result.rows)
            outstanding[prefix].discard(fut)
        for prefix, n_chunks in list(finished_iteration.items()):
            if not outstanding[prefix]:
                write_json(parts_dir / f"{prefix}.done", {"chunks": n_chunks})
                del finished_iteration[prefix]

    try:
        for shard, prefix in plan:
            if (parts_dir / f"{prefix}.done").exists():
                n_done = sum(pq.read_metadata(p).num_rows for p in _parts_of(parts_dir, prefix))
                progress.advance(n_done)
                continue
            outstanding[prefix] = set()
            n_chunks = 0
            for index, chunk in enumerate(_chunks(shard.records(), options)):
                n_chunks = index + 1
                part = parts_dir / f"{prefix}-{index:06d}.parquet"
                if part.exists() and (stage is None or _embedding_part(part).exists()):
                    resumed += 1
                    progress.advance(len(chunk))
                    continue
                computed += 1
                fut = executor.submit(process_chunk, chunk, str(part), options)
                pending[fut] = (prefix, part)
                outstanding[prefix].add(fut)
                if len(pending) >= window:
                    done, _ = wait(set(pending), return_when=FIRST_COMPLETED)
                    settle(done)
            finished_iteration[prefix] = n_chunks
            settle(set())
        while pending:
            done, _ = wait(set(pending), return_when=FIRST_COMPLETED)
            settle(done)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    progress.finish()

    meta = _merge(out, plan, options, found.skipped, embedder)
    finish_meta(
        meta,
        options,
        inputs,
        time.perf_counter() - started,
        {"workers": workers, "chunks_computed": computed, "chunks_resumed": resumed},
    )
    if embedder is not None and stage is not None:
        meta["embedder"] = embedder_meta(embedder, stage, cache)
    if head is not None:
        meta["detector"] = detector_meta(head)
    write_json(out / META_FILE, meta)
    return ScanResult(out=out, meta=meta, skipped=found.skipped)


def embedder_meta(
    embedder: Embedder, stage: EmbedStage, cache: EmbeddingCache | None
) -> dict[str, Any]:
    """What meta.json records of the embedder: identity, and how much was computed."""
    return {
        "id": embedder.id,
        "dim": embedder.dim,
        "preprocessing": asdict(embedder.preprocessing),
        "device": embedder.device,
        "computed": stage.computed,
        "cache": None if cache is None else str(cache.path),
        "cache_hits": 0 if cache is None else cache.hits,
    }


def detector_meta(head: Head) -> dict[str, Any]:
    """What meta.json records of the detector head (enforce reads the calibration here)."""
    return {
        "id": head.id,
        "embedder": head.embedder,
        "preprocessing": head.preprocessing,
        "model": head.model,
        "calibration": asdict(head.calibration),
        "training": head.training,
    }


def finish_meta(
    meta: dict[str, Any],
    options: ScanOptions,
    inputs: Sequence[Path],
    seconds: float,
    timing: dict[str, Any],
) -> None:
    """Add what every scan's meta.json records: versions, options, inputs, timing."""
    images = meta["counts"]["images"]
    meta.update(
        {
            "datagate_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "signals": signal_versions(options.signals),
            "config": {**asdict(options), "signals": list(options.signals)},
            "config_hash": options.config_hash(),
            "inputs": [str(p) for p in inputs],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timing": {
                "seconds": round(seconds, 3),
                "images_per_second": round(images / seconds, 1) if seconds > 0 else None,
                **timing,
            },
        }
    )


def watermark_rate(mode: str, shards: Sequence[Shard]) -> float:
    """Share of images to check for invisible watermarks under ``off | all | sample:N``."""
    if mode == "off":
        return 0.0
    if mode == "all":
        return 1.0
    kind, _, number = mode.partition(":")
    if kind != "sample" or not number.isdigit() or int(number) <= 0:
        raise InputError(
            f"--watermark: expected off, all or sample:N (N a positive integer), got {mode!r}"
        )
    total = sum(_count_images(s) for s in shards)
    return min(1.0, int(number) / total) if total else 1.0


def _count_images(shard: Shard) -> int:
    if shard.size_hint is not None:
        return shard.size_hint
    return sum(1 for _ in shard.records())  # tar shards: one pass to count members


def _embedding_part(part: Path) -> Path:
    return part.with_suffix(".emb.parquet")


def _parts_of(parts_dir: Path, prefix: str) -> list[Path]:
    done = json.loads((parts_dir / f"{prefix}.done").read_text())
    return [parts_dir / f"{prefix}-{i:06d}.parquet" for i in range(int(done["chunks"]))]


def _merge(
    out: Path,
    plan: list[tuple[Shard, str]],
    options: ScanOptions,
    skipped: list[tuple[str, str]],
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Concatenate the parts in plan order into ``images.parquet`` (atomically)."""
    schema = images_schema(options.signals)
    final_schema = images_schema(options.signals, options.detector)
    parts_dir = out / PARTS_DIR
    keep: set[str] = set()
    shards_meta: list[dict[str, Any]] = []
    n_images = n_errors = 0
    with (
        atomic_path(out / IMAGES_FILE) as tmp,
        pq.ParquetWriter(tmp, final_schema, compression="zstd") as writer,
    ):
        buffer: list[pa.Table] = []
        buffered = 0
        for shard, prefix in plan:
            keep.add(f"{prefix}.done")
            shard_images = shard_errors = 0
            for part in _parts_of(parts_dir, prefix):
                keep.add(part.name)
                table = pq.read_table(part, schema=schema)
                if options.detector is not None:
                    scored = pq.read_table(_embedding_part(part), columns=["key", "detector_score"])
                    table = attach_scores(
                        table,
                        scored.column("key").to_numpy(),
                        scored.column("detector_score").to_numpy(),
                        final_schema,
                    )
                shard_images += table.num_rows
                shard_errors += table.num_rows - table.column("error").null_count
                buffer.append(table)
                buffered += table.num_rows
                if buffered >= MERGE_ROWS:
                    writer.write_table(pa.concat_tables(buffer))
                    buffer, buffered = [], 0
            shards_meta.append(
                {
                    "id": shard.id,
                    "kind": shard.kind,
                    "path": str(shard.location.resolve()),
                    "images": shard_images,
                    "errors": shard_errors,
                }
            )
            n_images += shard_images
            n_errors += shard_errors
        if buffer:
            writer.write_table(pa.concat_tables(buffer))
    if embedder is not None:
        keep |= _merge_embeddings(out, plan, embedder)
    else:
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)  # never leave another scan's vectors
    for stale in parts_dir.iterdir():
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return {
        "counts": {
            "images": n_images,
            "errors": n_errors,
            "shards": len(plan),
            "skipped_files": len(skipped),
        },
        "shards": shards_meta,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }


def _merge_embeddings(out: Path, plan: list[tuple[Shard, str]], embedder: Embedder) -> set[str]:
    schema = embeddings_schema(embedder.dim, embedder.id, embedder.preprocessing.id)
    parts_dir = out / PARTS_DIR
    names: set[str] = set()
    with (
        atomic_path(out / EMBEDDINGS_FILE) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
    ):
        for _, prefix in plan:
            for part in _parts_of(parts_dir, prefix):
                emb = _embedding_part(part)
                names.add(emb.name)
                writer.write_table(pq.read_table(emb, columns=schema.names).cast(schema))
    return names


@dataclass(frozen=True)
class Embeddings:
    """A scan's vectors: ``keys[i]`` has ``vectors[i]`` (unit length, float16)."""

    keys: np.ndarray[Any, np.dtype[np.object_]]
    vectors: np.ndarray[Any, np.dtype[np.float16]]
    embedder: str
    preprocessing: str


def load_embeddings(scan_dir: Path) -> Embeddings | None:
    """Read ``embeddings.parquet`` into numpy without per-row Python; None if absent."""
    path = scan_dir / EMBEDDINGS_FILE
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: unreadable: {exc}") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    flat = column.values.to_numpy(zero_copy_only=False)
    return Embeddings(
        keys=table.column("key").to_numpy(),
        vectors=flat.reshape(-1, dim),
        embedder=meta.get("datagate.embedder", "?"),
        preprocessing=meta.get("datagate.preprocessing", "?"),
    )


def load_scan(scan_dir: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Read a scan directory's table and metadata, with a clear error if it is not one."""
    images = scan_dir / IMAGES_FILE
    meta_path = scan_dir / META_FILE
    if not images.exists() or not meta_path.exists():
        raise InputError(
            f"{scan_dir}: not a datagate scan (expected {IMAGES_FILE} and {META_FILE})",
            hint="run `datagate scan PATH` first, or pass the folder it wrote to",
        )
    try:
        table = pq.read_table(images)
        meta = json.loads(meta_path.read_text())
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{scan_dir}: scan files are unreadable: {exc}") from exc
    version = (table.schema.metadata or {}).get(b"datagate.schema_version", b"?").decode()
    if version != str(SCHEMA_VERSION):
        raise InputError(
            f"{images}: scan table schema version {version}, this datagate reads "
            f"version {SCHEMA_VERSION}",
            hint="re-run `datagate scan` with this version of datagate",
        )
    return table, meta
