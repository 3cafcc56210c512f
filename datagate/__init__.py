"""datagate: a data-quality gate for image datasets.

The Python API mirrors the command line, for pipelines that call datagate from code::

    import datagate

    result = datagate.scan(["./shards"], "datagate-out/scan", model="pixel")
    gate = datagate.enforce("datagate-out/scan", min_human=0.7)
    print(gate.passed, gate.report["counts"])
    table, meta = datagate.load_scan("datagate-out/scan")

Heavy modules are imported on first use, so ``import datagate`` stays cheap.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datagate.scanner.defaults import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SCAN_DIR,
    DEFAULT_SIGNALS,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from datagate.contract import ScanMeta
    from datagate.gate import EnforceResult
    from datagate.ledger.attest import Verified
    from datagate.ledger.chain import Ledger
    from datagate.measures.backend import Backend
    from datagate.rules import Policy
    from datagate.scanner.engine import Progress, ScanResult
    from datagate.scanner.options import ScanOptions

__version__ = "0.1.0"

__all__ = ["__version__", "enforce", "load_scan", "open_ledger", "scan", "verify_attestation"]

PathLike = str | os.PathLike[str]


def scan(
    inputs: PathLike | Sequence[PathLike],
    out: PathLike = DEFAULT_SCAN_DIR,
    *,
    signals: Sequence[str] | None = None,
    watermark: str = "off",
    model: str | None = None,
    detector: PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 0,
    workers: int | None = None,
    cache_dir: PathLike | None = None,
    cache_rows: bool = False,
    image_column: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> ScanResult:
    """Scan images into ``out`` (``images.parquet``, ``embeddings.parquet``, ``meta.json``),
    as ``datagate scan`` does; resumes an interrupted scan of the same inputs.

    ``model``: an embedder spec (``auto``, ``pixel``, ``ViT-B-32:openai``, ``local-dir:PATH``,
    ``none``...; default ``$DATAGATE_MODEL``, else the detector head's, else ``auto``).
    Fallbacks (e.g. ``auto`` offline) and cache problems go to ``warn`` (default:
    :mod:`warnings`). ``batch_size`` 0 means 256 on a GPU, 64 on the CPU.

    ``engine``: ``local`` (processes on this machine) or ``ray`` (Ray Data: decode and
    signals as tasks, the embedder as an actor pool; ``ray_address`` ``auto`` or HOST:PORT
    joins a cluster, None starts a local Ray with ``workers`` CPUs). Inputs may be fsspec
    URLs (``s3://``, ``gs://``, ``hf://``) for either engine.
    """
    from datagate.detect.head import load_head
    from datagate.embed.models import MODEL_ENV, load_embedder, model_spec
    from datagate.errors import InputError
    from datagate.scanner.cache import Store
    from datagate.scanner.engine import scan as run
    from datagate.scanner.options import ScanOptions, parse_signals
    from datagate.scanner.readers import as_url

    say = warn if warn is not None else _warn
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[Path | str] = [as_url(os.fspath(p)) or Path(p) for p in given]
    if engine not in ENGINES:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise InputError("--ray-address applies to --engine ray", hint="add --engine ray")
    if engine == "ray" and cache_rows:
        raise InputError(
            "--cache-rows: the row cache lives on this machine's disk, out of the Ray "
            "cluster's reach",
            hint="scan with --engine local to use it",
        )
    options = ScanOptions(
        signals=parse_signals(",".join(signals)) if signals is not None else DEFAULT_SIGNALS,
        image_column=image_column,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        chunk_size=chunk_size,
        watermark=watermark,
    )
    options.check()  # before a model is loaded
    if engine == "ray":
        return _scan_on_ray(
            paths,
            Path(out),
            options,
            say,
            model=model,
            detector=detector,
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            ray_address=ray_address,
            progress=progress,
        )
    head = load_head(Path(detector)) if detector is not None else None
    if head is not None and model is None and not os.environ.get(MODEL_ENV):
        model = head.model_spec
    choice = load_embedder(model_spec(model), device=device, precision=precision)
    if choice.warning:
        say(choice.warning)
    embedder = choice.embedder
    store = None
    if embedder is not None or cache_rows:
        store = Store(Path(cache_dir) if cache_dir is not None else None)
        if store.error:
            say(store.error)
    if not batch_size:
        batch_size = 256 if embedder is not None and embedder.device.startswith("cuda") else 64
    try:
        return run(
            paths,
            Path(out),
            options,
            workers=workers,
            progress=progress,
            embedder=embedder,
            store=store,
            cache_rows=cache_rows,
            batch_size=batch_size,
            head=head,
        )
    finally:
        if store is not None:
            store.close()


ENGINES = ("local", "ray")


def _scan_on_ray(
    paths: Sequence[Path | str],
    out: Path,
    options: ScanOptions,
    say: Callable[[str], None],
    *,
    model: str | None,
    detector: PathLike | None,
    device: str,
    precision: str,
    batch_size: int,
    workers: int | None,
    ray_address: str | None,
    progress: Progress | None,
) -> ScanResult:
    """The scan on Ray: connected first (no model is loaded without a cluster); the driver
    loads the embedder only to name it, each actor loads its own on its device."""
    from datagate.detect.head import load_head
    from datagate.embed.models import MODEL_ENV, load_embedder, model_spec
    from datagate.scanner.ray_engine import RayOptions, connect, shutdown
    from datagate.scanner.ray_engine import scan as run

    ray_options = RayOptions(
        address=ray_address, num_cpus=workers, device=device, precision=precision
    )
    started_ray = connect(ray_options)
    try:
        head = load_head(Path(detector)) if detector is not None else None
        if head is not None and model is None and not os.environ.get(MODEL_ENV):
            model = head.model_spec
        choice = load_embedder(model_spec(model), device="cpu", precision="fp32")
        if choice.warning:
            say(choice.warning)
        return run(
            paths,
            out,
            options,
            ray_options=ray_options,
            progress=progress,
            embedder=choice.embedder,
            batch_size=batch_size or 64,
            head=head,
        )
    finally:
        if started_ray:
            shutdown()


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def enforce(
    scan_dir: PathLike = DEFAULT_SCAN_DIR,
    rules: PathLike | Policy | None = None,
    *,
    out: PathLike | None = None,
    min_human: float | None = None,
    max_rejected_fraction: float | None = None,
    reference: PathLike | None = None,
    overrides: PathLike | None = None,
    reserves: Sequence[PathLike] = (),
    ledger: PathLike | None = None,
    key: PathLike | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    intermediates: PathLike | None = None,
) -> EnforceResult:
    """Judge a scan folder with a policy (a rules file, a :class:`~datagate.rules.Policy`, or
    the default policy), as ``datagate enforce`` does: writes the manifests and reports and
    returns the verdict (``.passed``), the report and the per-row decision. ``reference``: a
    scan folder of the preserved human baseline (the policy's ``reference:`` otherwise);
    ``overrides``: an overrides file of reviewed decisions, applied before the rules;
    ``reserves``: scan folders to top up from when a human-share or diversity floor fails.
    ``ledger``: a ledger folder to record the run in (default ``.datagate/ledger`` when it
    exists), whose recorded models also set their outputs' generation; ``key``: the signing
    key for the ledger entry and the run's attestation (default: the key file, if any).
    ``engine``: ``local``, or ``ray`` to run the dataset-wide work (duplicate groups and
    pairs, clusters, diversity sums, counts) as Ray Data operations on the cluster at
    ``ray_address`` (``auto``, ``HOST:PORT``; default: a local Ray). ``intermediates``: a
    folder that keeps that work's results between runs, updated with what changed (what the
    pre-commit hook does in ``.datagate/gate-cache``)."""
    from datagate.curation.overrides import read_overrides
    from datagate.gate import enforce as run
    from datagate.ledger import default_paths
    from datagate.rules import Policy, default_rules_path, load_policy
    from datagate.rules.policy import with_overrides

    if isinstance(rules, Policy):
        policy, source = rules, "<python>"
    else:
        path = Path(rules) if rules is not None else default_rules_path()
        policy, source = load_policy(path), str(path)
    decisions = read_overrides(Path(overrides)) if overrides is not None else None
    flags: dict[str, Any] = {
        k: v
        for k, v in {"min_human": min_human, "max_rejected_fraction": max_rejected_fraction}.items()
        if v is not None
    }
    policy = with_overrides(policy, **flags)
    ledger_dir, key_path = default_paths(
        Path(ledger) if ledger is not None else None, Path(key) if key is not None else None
    )
    return run(
        Path(scan_dir),
        policy,
        source=source,
        out=Path(out) if out is not None else None,
        overrides=flags,
        reference=Path(reference) if reference is not None else None,
        decisions=decisions,
        reserves=[Path(r) for r in reserves],
        ledger=ledger_dir,
        key=key_path,
        backend=_backend(engine, ray_address),
        intermediates=Path(intermediates) if intermediates is not None else None,
    )


def _backend(engine: str, ray_address: str | None) -> Backend:
    """Where enforce's dataset-wide work runs (exit 2 for an unknown engine)."""
    from datagate.errors import InputError
    from datagate.measures.backend import LOCAL

    if engine not in ENGINES:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise InputError("--ray-address applies to --engine ray", hint="add --engine ray")
    if engine == "local":
        return LOCAL
    from datagate.gate_ray import ray_backend

    return ray_backend(ray_address)


def open_ledger(ledger: PathLike = ".datagate/ledger", pub: PathLike | None = None) -> Ledger:
    """A ledger folder, verified entry by entry (:class:`datagate.ledger.LedgerError`, an
    input error, names the first bad entry); ``pub`` defaults to the ledger's own key."""
    from datagate.ledger.chain import open_ledger as load

    return load(Path(ledger), Path(pub) if pub is not None else None)


def verify_attestation(gate_dir: PathLike, pub: PathLike) -> Verified:
    """Check a gate folder's ``attestation.intoto.json``: its DSSE signature with ``pub`` and
    every subject's sha256 against the files (an input error says what does not match)."""
    from datagate.ledger.attest import verify_gate

    return verify_gate(Path(gate_dir), Path(pub))


def load_scan(scan_dir: PathLike = DEFAULT_SCAN_DIR) -> tuple[pa.Table, ScanMeta]:
    """A scan folder's table (pyarrow) and its ``meta.json``, validated."""
    from datagate.contract import load_scan as load

    return load(Path(scan_dir))
