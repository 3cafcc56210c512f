"""The Ray engine: the scan's chunks computed on a Ray cluster, with Ray Data.

Same plan, parts, resume and merge as the local engine (:func:`.engine.plan_scan`,
:func:`.engine.finish_scan`), and the same per-record compute (:func:`.compute.compute_chunk`);
only where the chunks run differs::

    unfinished shards --read (tasks)--> chunks of records --compute_chunk (tasks)--> rows
      --embed (actor pool; a GPU each when the cluster has GPUs)--> vectors, detector scores
      --driver--> OUT/parts/ (atomic, one part per chunk) --merge--> the scan folder

* **read**: one task per unfinished shard streams its records (bytes for tar members and
  Parquet cells; the URL or path of a folder image, which the compute task reads itself)
  and cuts them into the engine's chunks, leaving out chunks whose part is already written.
  Nothing is decoded here (no ``read_images``): the SHA-256 is of the original bytes, and an
  undecodable file stays a row with its error.
* **compute**: :func:`~datagate.scanner.compute.compute_chunk` on each chunk, as a task
  (decode once, every signal, the embedder input).
* **embed**: a pool of actors holding the embedder (and the detector head), loaded once
  per actor; with GPUs in the cluster each actor takes one, so a GPU node embeds while CPU
  nodes decode. ``batch_size`` images per forward pass.
* the driver writes each chunk's part as it arrives, and a shard's ``.done`` marker once
  all its chunks are written. A killed driver loses only the chunks in flight: a re-run
  (with either engine) resumes from the written parts.

The row cache (``--cache-rows``) and the vector cache are the local engine's: they live on
the driver's disk, where the cluster's workers cannot reach them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datagate.contract import PARTS_DIR, Timing
from datagate.errors import InputError
from datagate.io import output_lock, write_table
from datagate.scanner.compute import compute_chunk
from datagate.scanner.embedding import EmbedStage, embeddings_table
from datagate.scanner.engine import (
    NoProgress,
    Progress,
    ScanResult,
    chunks_of,
    done_rows,
    embedding_part,
    finish_scan,
    mark_done,
    model_options,
    plan_scan,
)
from datagate.scanner.options import ScanOptions

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

INSTALL_HINT = "pip install 'datagate[ray]'"
#: CPU shares of a read task and (on a cluster without GPUs) of an embedder actor.
READ_CPUS = 0.25
EMBED_CPUS = 0.5
#: Rows of the stream between stages: a chunk (index >= 0) or a shard's end (index -1).
_STREAM = pa.schema(
    [
        ("prefix", pa.string()),
        ("index", pa.int64()),
        ("count", pa.int64()),  # end: the shard's chunks; chunk: its images
        ("rows", pa.int64()),  # end: images in chunks resumed; chunk: model passes
        ("payload", pa.large_binary()),
    ]
)


def _stream(rows: list[tuple[str, int, int, int, bytes]]) -> pa.Table:
    columns: list[Any] = list(zip(*rows)) if rows else [[] for _ in _STREAM]
    return pa.Table.from_arrays(
        [pa.array(list(c), f.type) for c, f in zip(columns, _STREAM)], schema=_STREAM
    )


def _read(batch: pa.Table, options: ScanOptions) -> Iterator[pa.Table]:
    """Stage 1 (task): a shard's records, cut into the engine's chunks."""
    for task in batch.column("payload").to_pylist():
        shard, prefix, written = pickle.loads(task)
        n_chunks = resumed_rows = 0
        for index, chunk in enumerate(chunks_of(shard.records(), options)):
            n_chunks = index + 1
            if index in written:
                resumed_rows += len(chunk)
                continue
            yield _stream([(prefix, index, len(chunk), 0, pickle.dumps(chunk))])
        yield _stream([(prefix, -1, n_chunks, resumed_rows, b"")])


def _compute(batch: pa.Table, options: ScanOptions) -> pa.Table:
    """Stage 2 (task): rows of each chunk, and what its embedding needs."""
    _configure_worker()
    out = []
    for row in batch.to_pylist():
        if row["index"] >= 0:
            result = compute_chunk(pickle.loads(row["payload"]), options)
            table, result.table = result.table, None
            row["payload"] = pickle.dumps((table, result, None))
        out.append(tuple(row.values()))
    return _stream(out)


_CONFIGURED = False


def _configure_worker() -> None:
    """What the local engine's workers do at start (:mod:`.executors`), once per Ray worker."""
    global _CONFIGURED
    if not _CONFIGURED:
        from datagate.scanner.decode import configure_pillow

        configure_pillow()
        _CONFIGURED = True


class _Embed:
    """Stage 3 (actor): the embedder and head, loaded once; vectors of each chunk.

    Its arguments are class attributes of a subclass made per scan (:func:`_embed_class`),
    shipped with the class itself: Ray keeps constructor arguments in the object store,
    where an actor restarted after a failure may no longer find them.
    """

    spec: str = "pixel"
    device: str = "auto"
    precision: str = "auto"
    batch: int = 64
    head: Any = None

    def __init__(self) -> None:
        from datagate.embed.models import load_embedder

        embedder = load_embedder(self.spec, device=self.device, precision=self.precision).embedder
        assert embedder is not None
        self.stage = EmbedStage(embedder, None, self.batch, self.head)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for row in batch.to_pylist():
            if row["index"] >= 0:
                table, result, _ = pickle.loads(row["payload"])
                before = self.stage.computed
                vectors, found = self.stage.vectors(result.digests, result.pixels)
                keys = [k for k, ok in zip(result.keys, found) if ok]
                vectors = vectors[found]
                scores = None
                if self.stage.head is not None:
                    scores = self.stage.head.proba(vectors.astype(np.float32))
                emb = embeddings_table(keys, vectors, self.stage.embedder, scores)
                row["rows"] = self.stage.computed - before
                row["payload"] = pickle.dumps((table, None, emb))
            out.append(tuple(row.values()))
        return _stream(out)


def _embed_class(spec: str, device: str, precision: str, batch: int, head: Any) -> type[_Embed]:
    attrs = {"spec": spec, "device": device, "precision": precision, "batch": batch, "head": head}
    return type("EmbedActor", (_Embed,), attrs)


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray engine runs (none of it changes the scan's output)."""

    address: str | None = None  # None: a local Ray on this machine; "auto" or HOST:PORT
    num_cpus: int | None = None  # for a local Ray
    embed_actors: int | None = None  # default: one per GPU, else one
    model_spec: str | None = None  # what each actor loads (default: the embedder's id)
    device: str = "auto"
    precision: str = "auto"


def ray_modules() -> tuple[Any, Any]:
    """The ``ray`` and ``ray.data`` modules, untyped (their stubs do not cover our use)."""
    import importlib

    return importlib.import_module("ray"), importlib.import_module("ray.data")


def shutdown() -> None:
    """Stop the Ray that :func:`connect` started; every process of it ends before this
    returns (the reaper stops what ``ray.shutdown()`` leaves)."""
    try:
        ray_modules()[0].shutdown()
    finally:
        _stop_reaper()


#: The watchdog of the local Ray :func:`connect` started (:mod:`.ray_reaper`), if any.
_REAPER: subprocess.Popen[bytes] | None = None
#: How long :func:`shutdown` waits for the reaper's last sweep (it finishes on its own).
REAPER_WAIT_S = 15.0


def _start_reaper(ray: Any) -> None:
    """Start the process that ends this Ray's processes once this one ends, however it ends
    (a SIGKILL included): Ray's agents outlive a killed driver by a minute otherwise."""
    global _REAPER
    _stop_reaper()
    if not sys.platform.startswith("linux"):
        return  # it reads /proc; elsewhere Ray's own reaper process does what it can
    from datagate.scanner import ray_reaper

    command = [sys.executable, "-I", ray_reaper.__file__, str(os.getpid())]
    _REAPER = subprocess.Popen(
        [*command, os.path.dirname(ray.__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal is the scan's to handle
    )


def _tell_reaper(session_dir: str) -> None:
    """Name the session directory of the Ray started to the reaper."""
    if _REAPER is not None and _REAPER.stdin is not None:
        with contextlib.suppress(OSError):  # gone: nothing to tell
            _REAPER.stdin.write(f"{session_dir}\n".encode())
            _REAPER.stdin.flush()


def _stop_reaper() -> None:
    """Let the reaper sweep now (Ray was shut down) and wait for it."""
    global _REAPER
    reaper, _REAPER = _REAPER, None
    if reaper is None:
        return
    if reaper.stdin is not None:
        with contextlib.suppress(OSError):
            reaper.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        reaper.wait(REAPER_WAIT_S)


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a HOST:PORT address (Ray itself would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return None  # "auto", or a ray:// client address: Ray's own checks apply
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers there ({exc.strerror or exc})"


def connect(ray_options: RayOptions) -> bool:
    """Join (or start) Ray; True when this call started it (and must shut it down)."""
    try:
        ray, _ = ray_modules()
    except ImportError as exc:
        raise InputError(
            f"--engine ray needs Ray, which is not installed here ({exc})", hint=INSTALL_HINT
        ) from exc
    # errors reach the user as exceptions; Ray's own notices would cover our progress bar
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    address = ray_options.address
    hint = (
        "start one with `ray start --head` (then --ray-address auto), or leave "
        "--ray-address out to run a local Ray on this machine"
    )
    if address is not None and (problem := _unreachable(address)) is not None:
        raise InputError(f"--ray-address {address}: {problem}", hint=hint)
    if ray.is_initialized():
        return False
    if address is not None:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise InputError(
                f"--ray-address {address}: cannot connect to a Ray cluster: {exc}", hint=hint
            ) from exc
        return True
    _start_reaper(ray)  # first: a driver killed inside ray.init() leaves nothing either
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        context = ray.init(num_cpus=ray_options.num_cpus, include_dashboard=False, **quiet)
        _tell_reaper(str(context.address_info["session_dir"]))
        if callable(on_term) and threading.current_thread() is threading.main_thread():
            # ray.init() replaces it with its own (a stack dump, then an abort): put back
            # the command's, which stops the scan, shuts Ray down and exits 143
            signal.signal(signal.SIGTERM, on_term)
    except BaseException as exc:  # an error, or Ctrl-C while Ray starts: stop what started
        shutdown()
        if isinstance(exc, ConnectionError | RuntimeError | ValueError | TimeoutError):
            raise InputError(
                f"a local Ray: cannot connect to a Ray cluster: {exc}", hint=hint
            ) from exc
        raise
    return True


def scan(
    inputs: Sequence[Path | str],
    out: Path,
    options: ScanOptions | None = None,
    *,
    ray_options: RayOptions | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    batch_size: int = 64,
    head: Head | None = None,
) -> ScanResult:
    """:func:`datagate.scanner.engine.scan` with the chunks computed on Ray."""
    options = options or ScanOptions()
    ray_options = ray_options or RayOptions()
    options = model_options(options, embedder, head)
    if batch_size < 1:
        raise InputError(f"--batch-size: expected a positive number of images, got {batch_size}")
    out = out.resolve()
    with output_lock(out):
        started = time.perf_counter()
        found, plan, options, total_hint = plan_scan(inputs, out, options)
        started_ray = connect(ray_options)
        try:
            return _run(
                inputs,
                out,
                options,
                found,
                plan,
                total_hint,
                started,
                ray_options,
                progress or NoProgress(),
                embedder,
                batch_size,
                head,
            )
        finally:
            if started_ray:
                shutdown()


def _embed_cpus(resources: dict[str, float]) -> float:
    """The CPU share an embedder actor reserves on a cluster without GPUs: none on a
    one-core cluster, where a reservation would leave no whole core for a compute task."""
    return EMBED_CPUS if resources.get("CPU", 0) >= 1 + EMBED_CPUS + READ_CPUS else 0.0


def _written(parts_dir: Path, prefix: str, embeds: bool) -> set[int]:
    """Chunks of a shard whose parts (and vectors) are already written."""
    done = set()
    for part in parts_dir.glob(f"{prefix}-*.parquet"):
        index = part.name.removeprefix(f"{prefix}-").removesuffix(".parquet")
        if index.isdigit() and (not embeds or embedding_part(part).exists()):
            done.add(int(index))
    return done


def _run(
    inputs: Sequence[Path | str],
    out: Path,
    options: ScanOptions,
    found: Any,
    plan: list[tuple[Any, str]],
    total_hint: int | None,
    started: float,
    ray_options: RayOptions,
    progress: Progress,
    embedder: Embedder | None,
    batch_size: int,
    head: Head | None,
) -> ScanResult:
    from datagate.embed.models import spec_for

    ray, data = ray_modules()
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is on the terminal, not Ray's as well
    context.print_on_execution_start = False
    parts_dir = out / PARTS_DIR
    progress.start(total_hint)
    tasks: list[dict[str, Any]] = []
    computed = resumed = model_passes = rows_computed = 0
    written: dict[str, set[int]] = {}
    for shard, prefix in plan:
        if (parts_dir / f"{prefix}.done").exists():
            progress.advance(done_rows(parts_dir, prefix))
            continue
        written[prefix] = _written(parts_dir, prefix, embedder is not None)
        resumed += len(written[prefix])
        tasks.append({"payload": pickle.dumps((shard, prefix, written[prefix]))})
    resources = ray.cluster_resources()
    if tasks:
        ds = data.from_items(tasks, override_num_blocks=len(tasks))
        # distinct CPU shares keep Ray from fusing the stages into one process: reading
        # is mostly waiting on I/O, the compute takes a core, and the embedder's actors
        # (a GPU each when there are GPUs) run beside the compute tasks
        ds = ds.map_batches(
            _read,
            fn_kwargs={"options": options},
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=READ_CPUS,
        )
        ds = ds.map_batches(
            _compute,
            fn_kwargs={"options": options},
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=1,
        )
        if embedder is not None:
            gpus = int(resources.get("GPU", 0))
            spec = ray_options.model_spec or spec_for(embedder.id)
            actor = _embed_class(spec, ray_options.device, ray_options.precision, batch_size, head)
            with warnings.catch_warnings():  # max_restarts has no named parameter yet
                warnings.simplefilter("ignore")
                ds = ds.map_batches(
                    actor,
                    batch_size=1,
                    batch_format="pyarrow",
                    compute=data.ActorPoolStrategy(size=ray_options.embed_actors or max(1, gpus)),
                    num_gpus=1 if gpus else 0,
                    num_cpus=1 if gpus else _embed_cpus(resources),
                    # Ray Data keeps a map actor's own constructor arguments in the object
                    # store, so a restart is not reliable: a lost actor fails the scan, and
                    # the re-run resumes from the written parts
                    max_restarts=0,
                )
        expected: dict[str, int] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                prefix, index = row["prefix"], row["index"]
                if index < 0:
                    expected[prefix] = row["count"]
                    progress.advance(row["rows"])
                else:
                    table, _, emb = pickle.loads(row["payload"])
                    part = parts_dir / f"{prefix}-{index:06d}.parquet"
                    write_table(part, table)
                    if emb is not None:
                        write_table(embedding_part(part), emb)
                    written[prefix].add(index)
                    computed += 1
                    rows_computed += row["count"]
                    model_passes += row["rows"]
                    progress.advance(row["count"])
                n = expected.get(prefix)
                if n is not None and written[prefix] >= set(range(n)):
                    mark_done(parts_dir, prefix, n)
                    del expected[prefix]
    progress.finish()
    stage = None
    if embedder is not None:
        stage = EmbedStage(embedder, None, batch_size, head)
        stage.computed = model_passes
    timing: Timing = {
        "workers": int(resources.get("CPU", 0)),
        "executor": "ray",
        "chunks_computed": computed,
        "chunks_resumed": resumed,
        "rows_cached": 0,
        "rows_computed": rows_computed,
    }
    return finish_scan(
        inputs, out, options, found, plan, started, timing, stage, embedder, head, "ray"
    )
