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
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from datagate import __version__
from datagate.decode import ANALYSIS_SIZE, DEFAULT_MAX_PIXELS, DecodeError, configure_pillow, decode
from datagate.errors import InputError
from datagate.io import atomic_path, write_json, write_table
from datagate.readers import Shard, discover, read_file
from datagate.readers.base import DEFAULT_MAX_BYTES
from datagate.records import ImageRecord
from datagate.schema import SCHEMA_VERSION, images_schema, signal_versions
from datagate.signals import DEFAULT_SIGNALS, SIGNALS, Sample
from datagate.signals.base import nulls

IMAGES_FILE = "images.parquet"
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
    return row


def process_chunk(records: list[ImageRecord], part: str, options: ScanOptions) -> int:
    """Worker entry point: compute a chunk and write it atomically as one Parquet part."""
    rows = [compute_row(r, options) for r in records]
    table = pa.Table.from_pylist(rows, schema=images_schema(options.signals))
    write_table(Path(part), table)
    return len(rows)


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
) -> ScanResult:
    """Scan ``inputs`` into ``out/images.parquet`` and ``out/meta.json``; resume if possible."""
    options = options or ScanOptions()
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
    pending: dict[Future[int], str] = {}
    # shard prefix -> (chunks submitted, iteration finished, futures outstanding)
    outstanding: dict[str, set[Future[int]]] = {}
    finished_iteration: dict[str, int] = {}

    def settle(futures: set[Future[int]]) -> None:
        for fut in futures:
            prefix = pending.pop(fut)
            progress.advance(fut.result())  # re-raises a worker's unexpected error
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
                if part.exists():
                    resumed += 1
                    progress.advance(len(chunk))
                    continue
                computed += 1
                fut = executor.submit(process_chunk, chunk, str(part), options)
                pending[fut] = prefix
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

    meta = _merge(out, plan, options, found.skipped)
    finish_meta(
        meta,
        options,
        inputs,
        time.perf_counter() - started,
        {"workers": workers, "chunks_computed": computed, "chunks_resumed": resumed},
    )
    write_json(out / META_FILE, meta)
    return ScanResult(out=out, meta=meta, skipped=found.skipped)


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


def _parts_of(parts_dir: Path, prefix: str) -> list[Path]:
    done = json.loads((parts_dir / f"{prefix}.done").read_text())
    return [parts_dir / f"{prefix}-{i:06d}.parquet" for i in range(int(done["chunks"]))]


def _merge(
    out: Path, plan: list[tuple[Shard, str]], options: ScanOptions, skipped: list[tuple[str, str]]
) -> dict[str, Any]:
    """Concatenate the parts in plan order into ``images.parquet`` (atomically)."""
    schema = images_schema(options.signals)
    parts_dir = out / PARTS_DIR
    keep: set[str] = set()
    shards_meta: list[dict[str, Any]] = []
    n_images = n_errors = 0
    with (
        atomic_path(out / IMAGES_FILE) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
    ):
        buffer: list[pa.Table] = []
        buffered = 0
        for shard, prefix in plan:
            keep.add(f"{prefix}.done")
            shard_images = shard_errors = 0
            for part in _parts_of(parts_dir, prefix):
                keep.add(part.name)
                table = pq.read_table(part, schema=schema)
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
