"""The scan engine: shards -> chunks of records -> rows -> Parquet parts -> the scan folder.

This is the only way rows are computed. Work is split into chunks (a fixed number of
records, or fewer when their bytes add up) in each shard's deterministic record order.
Each chunk is handed to an executor (:mod:`.executors`) that runs the per-record compute
(:mod:`.compute`) and writes the chunk atomically as its own Parquet part under
``OUT/parts/``; a shard whose chunks are all written gets a ``.done`` marker. A re-run with
the same inputs and options skips finished shards without reading them and finished chunks
without decoding them, so a scan killed at any moment (even with SIGKILL) resumes, and its
final table equals an uninterrupted one. Only a bounded window of chunks is in flight, so
memory does not grow with dataset size.

With a cache store and ``cache_rows``, a chunk's images whose content was scanned before
(with the same row configuration) are not decoded again: that is how the pre-commit hook
re-judges a whole repository while decoding only what is new.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from datagate import __version__
from datagate.contract import (
    EMBEDDINGS_FILE,
    IMAGES_FILE,
    META_FILE,
    PARTS_DIR,
    Counts,
    MergeInfo,
    ScanMeta,
    ShardInfo,
    Timing,
)
from datagate.errors import InputError
from datagate.io import atomic_path, output_lock, write_json
from datagate.scanner.compute import CacheRef, ChunkResult, compute_chunk
from datagate.scanner.embedding import EmbedStage, attach_scores, detector_info
from datagate.scanner.executors import executor_name, make_executor, stop
from datagate.scanner.options import ScanOptions, watermark_rate
from datagate.scanner.readers import Discovery, Shard, as_url, discover, shard_path
from datagate.scanner.records import ImageRecord
from datagate.scanner.schema import (
    EMBEDDINGS_WRITE,
    SCHEMA_VERSION,
    embeddings_schema,
    images_schema,
    signal_versions,
)

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder
    from datagate.scanner.cache import Store

MERGE_ROWS = 65_536


class Progress(Protocol):
    def start(self, total: int | None) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class ScanResult:
    out: Path
    meta: ScanMeta
    skipped: list[tuple[str, str]] = field(default_factory=list)


def chunks_of(records: Iterator[ImageRecord], options: ScanOptions) -> Iterator[list[ImageRecord]]:
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


def _count_images(shard: Shard) -> int:
    if shard.size_hint is not None:
        return shard.size_hint
    return sum(1 for _ in shard.records())  # tar shards: one pass to count members


def scan(
    inputs: Sequence[Path | str],
    out: Path,
    options: ScanOptions | None = None,
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    store: Store | None = None,
    cache_rows: bool = False,
    batch_size: int = 64,
    head: Head | None = None,
) -> ScanResult:
    """Scan ``inputs`` into ``out/images.parquet`` and ``out/meta.json``; resume if possible.

    With an ``embedder``, also ``out/embeddings.parquet`` (vectors looked up in ``store``
    by image SHA-256 first). With a detector ``head`` (which needs the embedder it was trained
    on), every decodable image also gets its P(synthetic) in ``images.parquet``. With
    ``cache_rows``, rows are looked up in (and added to) ``store`` by content. ``executor``
    runs the chunks (default: ``workers`` local processes, inline for one).
    """
    options = options or ScanOptions()
    options = model_options(options, embedder, head)
    if workers is not None and workers < 0:
        raise InputError(
            f"--workers: expected 0 (one per core) or a number of worker processes, got {workers}"
        )
    if batch_size < 1:
        raise InputError(
            f"--batch-size: expected a positive number of images per model pass "
            f"(0: automatic), got {batch_size}"
        )
    out = out.resolve()
    with output_lock(out):
        return _scan_locked(
            inputs,
            out,
            options,
            workers=workers if workers is not None else (os.cpu_count() or 1),
            executor=executor,
            progress=progress or NoProgress(),
            stage=EmbedStage(embedder, store, batch_size, head) if embedder is not None else None,
            store=store,
            cache_rows=cache_rows,
            embedder=embedder,
            head=head,
        )


def _scan_locked(
    inputs: Sequence[Path | str],
    out: Path,
    options: ScanOptions,
    *,
    workers: int,
    executor: Executor | None,
    progress: Progress,
    stage: EmbedStage | None,
    store: Store | None,
    cache_rows: bool,
    embedder: Embedder | None,
    head: Head | None,
) -> ScanResult:
    """:func:`scan` once ``out`` is this process's (:func:`datagate.io.output_lock`)."""
    started = time.perf_counter()
    found, plan, options, total_hint = plan_scan(inputs, out, options)
    parts_dir = out / PARTS_DIR
    progress.start(total_hint)
    cache = None
    if cache_rows and store is not None and store.usable:
        cache = CacheRef(
            str(store.directory), options.row_config(), stage.model_key if stage else None
        )
    computed = resumed = rows_cached = rows_computed = 0
    window = max(2, 2 * workers)
    own_executor = executor is None
    # the pool starts with the first chunk to compute: a scan with nothing new starts none
    pool: Executor | None = executor
    pending: dict[Future[ChunkResult], tuple[str, Path]] = {}
    # shard prefix -> futures outstanding; prefix -> chunk count once its iteration finished
    outstanding: dict[str, set[Future[ChunkResult]]] = {}
    finished_iteration: dict[str, int] = {}

    def settle(futures: set[Future[ChunkResult]]) -> None:
        nonlocal rows_cached, rows_computed
        for fut in futures:
            prefix, part = pending.pop(fut)
            result = fut.result()  # re-raises a worker's unexpected error
            if stage is not None:
                stage.write(result, embedding_part(part))
            if cache is not None and store is not None:
                store.put_rows(cache.row_config, result.new_rows)
                store.touch_rows(cache.row_config, result.hits)
            rows_cached += len(result.hits)
            rows_computed += result.rows - len(result.hits)
            progress.advance(result.rows)
            outstanding[prefix].discard(fut)
        for prefix, n_chunks in list(finished_iteration.items()):
            if not outstanding[prefix]:
                mark_done(parts_dir, prefix, n_chunks)
                del finished_iteration[prefix]

    try:
        for shard, prefix in plan:
            if (parts_dir / f"{prefix}.done").exists():
                progress.advance(done_rows(parts_dir, prefix))
                continue
            outstanding[prefix] = set()
            n_chunks = 0
            for index, chunk in enumerate(chunks_of(shard.records(), options)):
                n_chunks = index + 1
                part = parts_dir / f"{prefix}-{index:06d}.parquet"
                if part.exists() and (stage is None or embedding_part(part).exists()):
                    resumed += 1
                    progress.advance(len(chunk))
                    continue
                computed += 1
                if pool is None:
                    pool = make_executor(workers)
                fut = pool.submit(compute_chunk, chunk, options, str(part), cache)
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
    except BaseException:  # an interrupt, or a bug: stop at once, keep what is written
        if own_executor and pool is not None:
            stop(pool)
        raise
    if own_executor and pool is not None:
        pool.shutdown()
    progress.finish()

    timing: Timing = {
        "workers": workers,
        "executor": type(pool).__name__ if pool is not None else executor_name(workers),
        "chunks_computed": computed,
        "chunks_resumed": resumed,
        "rows_cached": rows_cached,
        "rows_computed": rows_computed,
    }
    return finish_scan(
        inputs, out, options, found, plan, started, timing, stage, embedder, head, "local"
    )


def model_options(
    options: ScanOptions, embedder: Embedder | None, head: Head | None
) -> ScanOptions:
    """``options`` checked, with the embedder and detector head the scan computes recorded
    (they are part of its configuration); a head without its embedder is an input error."""
    options.check()
    if head is not None:
        if embedder is None:
            raise InputError(
                "a detector head scores embeddings, but this scan computes none",
                hint=f"pass --model {head.model_spec} (the head's embedder)",
            )
        head.check(embedder.id, embedder.preprocessing.id, embedder.dim)
    if embedder is None:
        return options
    return replace(
        options,
        embedder=embedder.id,
        preprocessing=embedder.preprocessing,
        detector=head.id if head is not None else None,
    )


def plan_scan(
    inputs: Sequence[Path | str], out: Path, options: ScanOptions
) -> tuple[Discovery, list[tuple[Shard, str]], ScanOptions, int | None]:
    """Find the shards, settle the options that depend on them (the watermark sample rate),
    and name each shard's parts by its prefix: (discovery, plan, options, images if known).

    Every engine (local, Ray) plans with this and merges with :func:`finish_scan`, so their
    parts are interchangeable and each resumes the other's work.
    """
    found = discover(
        list(inputs), image_column=options.image_column, exclude=[out], max_bytes=options.max_bytes
    )
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    hints = [s.size_hint for s in found.shards]
    sampled = options.watermark.startswith("sample:")
    total = sum(_count_images(s) for s in found.shards) if sampled else 0
    options = replace(options, watermark_rate=watermark_rate(options.watermark, total))
    config_hash = options.config_hash()
    plan: list[tuple[Shard, str]] = [(s, _shard_prefix(s, config_hash)) for s in found.shards]
    total_hint = None if any(h is None for h in hints) else sum(h or 0 for h in hints)
    return found, plan, options, total_hint


def finish_scan(
    inputs: Sequence[Path | str],
    out: Path,
    options: ScanOptions,
    found: Discovery,
    plan: list[tuple[Shard, str]],
    started: float,
    timing: Timing,
    stage: EmbedStage | None,
    embedder: Embedder | None,
    head: Head | None,
    engine: str,
) -> ScanResult:
    """Merge the finished parts into the scan folder and write meta.json (``engine``: which
    engine ran the chunks)."""
    config_hash = options.config_hash()
    parts = _finished_parts(out / PARTS_DIR, plan)
    key = _merge_key(parts, options, embedder)
    reused = _merged_before(out, key)
    if reused is None:
        counts, shards_meta = _merge(out, parts, options, embedder)
    else:
        counts, shards_meta = reused
    counts["skipped_files"] = len(found.skipped)
    _remove_stale(out / PARTS_DIR, parts, embedder is not None)
    merged: MergeInfo = {"key": key, "files": _file_stamps(out, embedder is not None)}
    timing = {**timing, "merge": "reused" if reused is not None else "merged"}
    seconds = time.perf_counter() - started
    timing = {
        "seconds": round(seconds, 3),
        "images_per_second": round(counts["images"] / seconds, 1) if seconds > 0 else None,
        **timing,
    }
    meta: ScanMeta = {
        "counts": counts,
        "shards": shards_meta,
        "skipped": [{"path": p, "reason": r} for p, r in found.skipped],
        "datagate_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "signals": signal_versions(options.signals),
        "config": {**asdict(options), "signals": list(options.signals)},
        "config_hash": config_hash,
        "inputs": [as_url(p) or str(p) for p in inputs],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing": timing,
        "engine": engine,
    }
    if stage is not None:
        meta["embedder"] = stage.info()
    if head is not None:
        meta["detector"] = detector_info(head)
    meta["merged"] = merged
    write_json(out / META_FILE, meta)
    return ScanResult(out=out, meta=meta, skipped=found.skipped)


def _read_part(part: Path, columns: list[str]) -> pa.Table:
    """A part file's columns, through the plain Parquet reader (``pq.read_table`` loads the
    dataset layer and, with it, pandas: half a second of every scan's end)."""
    return pq.ParquetFile(part).read(columns=columns)


def embedding_part(part: Path) -> Path:
    return part.with_suffix(".emb.parquet")


def parts_of(parts_dir: Path, prefix: str) -> list[Path]:
    done = json.loads((parts_dir / f"{prefix}.done").read_text())
    return [parts_dir / f"{prefix}-{i:06d}.parquet" for i in range(int(done["chunks"]))]


def mark_done(parts_dir: Path, prefix: str, chunks: int) -> None:
    """Mark a shard finished: all ``chunks`` of its parts are written (and how many rows they
    hold, so that a resumed scan counts them without opening every part)."""
    parts = [parts_dir / f"{prefix}-{i:06d}.parquet" for i in range(chunks)]
    rows = sum(pq.read_metadata(p).num_rows for p in parts)
    write_json(parts_dir / f"{prefix}.done", {"chunks": chunks, "rows": rows})


def done_rows(parts_dir: Path, prefix: str) -> int:
    """Rows of a finished shard (from its marker; markers without the count read the parts)."""
    done = json.loads((parts_dir / f"{prefix}.done").read_text())
    if "rows" in done:
        return int(done["rows"])
    return sum(pq.read_metadata(p).num_rows for p in parts_of(parts_dir, prefix))


#: (shard, its parts' prefix, its part files in order) for every shard of a finished scan
Parts = list[tuple[Shard, str, list[Path]]]


def _finished_parts(parts_dir: Path, plan: list[tuple[Shard, str]]) -> Parts:
    return [(shard, prefix, parts_of(parts_dir, prefix)) for shard, prefix in plan]


def _merge_key(parts: Parts, options: ScanOptions, embedder: Embedder | None) -> str:
    """What the merged files are made of: the part files in order (their names carry each
    shard's fingerprint and the configuration), the shards as meta.json lists them, the
    table's schema and the embedder's."""
    content = {
        "datagate": __version__,
        "shards": [[s.id, s.kind, shard_path(s), [p.name for p in ps]] for s, _, ps in parts],
        "schema": str(images_schema(options.signals, options.detector)),
        "embeddings": None
        if embedder is None
        else str(embeddings_schema(embedder.dim, embedder.id, embedder.preprocessing.id)),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _merged_files(out: Path, embeddings: bool) -> list[Path]:
    return [out / IMAGES_FILE, *([out / EMBEDDINGS_FILE] if embeddings else [])]


def _file_stamps(out: Path, embeddings: bool) -> dict[str, list[int]]:
    stamps = {}
    for path in _merged_files(out, embeddings):
        st = path.stat()
        stamps[path.name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return stamps


def _merged_before(out: Path, key: str) -> tuple[Counts, list[ShardInfo]] | None:
    """The counts and shards of the last merge when it merged exactly these parts and its
    files are untouched since (size, modification time and inode, as recorded): the files
    are reused without being read. None: merge."""
    try:
        meta = json.loads((out / META_FILE).read_text())
        merged = meta.get("merged") or {}
        if merged.get("key") != key:
            return None
        embeddings = EMBEDDINGS_FILE in merged["files"]
        if _file_stamps(out, embeddings) != merged["files"]:
            return None
        return meta["counts"], meta["shards"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(parts_dir: Path, parts: Parts, embeddings: bool) -> None:
    """Delete the parts no shard of this scan uses (another configuration's, a changed
    shard's previous ones), and never leave another scan's vectors."""
    keep: set[str] = set()
    for _, prefix, files in parts:
        keep.add(f"{prefix}.done")
        for part in files:
            keep.add(part.name)
            if embeddings:
                keep.add(embedding_part(part).name)
    for stale in parts_dir.iterdir():
        if stale.name not in keep:
            stale.unlink(missing_ok=True)


def _merge(
    out: Path, parts: Parts, options: ScanOptions, embedder: Embedder | None = None
) -> tuple[Counts, list[ShardInfo]]:
    """Concatenate the parts in plan order into ``images.parquet`` (atomically)."""
    from datagate.contract import file_sha256

    schema = images_schema(options.signals)
    final_schema = images_schema(options.signals, options.detector)
    shards_meta: list[ShardInfo] = []
    n_images = n_errors = 0
    with (
        atomic_path(out / IMAGES_FILE) as tmp,
        pq.ParquetWriter(tmp, final_schema, compression="zstd") as writer,
    ):
        buffer: list[pa.Table] = []
        buffered = 0
        for shard, _, files in parts:
            shard_images = shard_errors = 0
            for part in files:
                table = _read_part(part, schema.names).cast(schema)
                if options.detector is not None:
                    scored = _read_part(embedding_part(part), ["key", "detector_score"])
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
                    "path": shard_path(shard),
                    "images": shard_images,
                    "errors": shard_errors,
                }
            )
            n_images += shard_images
            n_errors += shard_errors
        if buffer:
            writer.write_table(pa.concat_tables(buffer))
    counts: Counts = {
        "images": n_images,
        "errors": n_errors,
        "shards": len(parts),
        "skipped_files": 0,
        # what contract.load_scan checks the table against: rows above, and its bytes
        "table_sha256": file_sha256(out / IMAGES_FILE),
    }
    if embedder is not None:
        _merge_embeddings(out, parts, embedder)
        counts["embeddings_sha256"] = file_sha256(out / EMBEDDINGS_FILE)
    else:
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)
    return counts, shards_meta


def _merge_embeddings(out: Path, parts: Parts, embedder: Embedder) -> None:
    schema = embeddings_schema(embedder.dim, embedder.id, embedder.preprocessing.id)
    with (
        atomic_path(out / EMBEDDINGS_FILE) as tmp,
        pq.ParquetWriter(tmp, schema, **EMBEDDINGS_WRITE) as writer,
    ):
        for _, _, files in parts:
            for part in files:
                writer.write_table(_read_part(embedding_part(part), schema.names).cast(schema))
