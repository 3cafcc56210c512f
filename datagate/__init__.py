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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from datagate.contract import ScanMeta
    from datagate.gate import EnforceResult
    from datagate.rules import Policy
    from datagate.scanner.engine import ScanResult

__version__ = "0.1.0"

__all__ = ["__version__", "enforce", "load_scan", "scan"]

PathLike = str | os.PathLike[str]


def scan(
    inputs: PathLike | Sequence[PathLike],
    out: PathLike = "datagate-out/scan",
    *,
    signals: Sequence[str] | None = None,
    watermark: str = "off",
    model: str | None = "auto",
    detector: PathLike | None = None,
    device: str = "auto",
    workers: int | None = None,
    cache_dir: PathLike | None = None,
    cache_rows: bool = False,
    image_column: str | None = None,
) -> ScanResult:
    """Scan images into ``out`` (``images.parquet``, ``embeddings.parquet``, ``meta.json``),
    as ``datagate scan`` does; resumes an interrupted scan of the same inputs.

    ``model``: an embedder spec (``auto``, ``pixel``, ``ViT-B-32:openai``, ``local-dir:PATH``,
    ``none``...); a fallback (e.g. ``auto`` offline) is reported with :mod:`warnings`.
    """
    from datagate.detect.head import load_head
    from datagate.embed.models import load_embedder, model_spec
    from datagate.scanner.cache import Store
    from datagate.scanner.defaults import DEFAULT_SIGNALS
    from datagate.scanner.engine import scan as run
    from datagate.scanner.options import ScanOptions, parse_signals

    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    names = parse_signals(",".join(signals)) if signals is not None else DEFAULT_SIGNALS
    options = ScanOptions(signals=names, image_column=image_column, watermark=watermark)
    head = load_head(Path(detector)) if detector is not None else None
    if head is not None and model == "auto":
        model = head.model or head.embedder.removeprefix("open_clip:")
    choice = load_embedder(model_spec(model), device=device)
    if choice.warning:
        warnings.warn(choice.warning, stacklevel=2)
    store = None
    if choice.embedder is not None or cache_rows:
        store = Store(Path(cache_dir) if cache_dir is not None else None)
        if store.error:
            warnings.warn(store.error, stacklevel=2)
    try:
        return run(
            paths,
            Path(out),
            options,
            workers=workers,
            embedder=choice.embedder,
            store=store,
            cache_rows=cache_rows,
            head=head,
        )
    finally:
        if store is not None:
            store.close()


def enforce(
    scan_dir: PathLike = "datagate-out/scan",
    rules: PathLike | Policy | None = None,
    *,
    out: PathLike | None = None,
    min_human: float | None = None,
    max_rejected_fraction: float | None = None,
    reference: PathLike | None = None,
    overrides: PathLike | None = None,
    reserves: Sequence[PathLike] = (),
) -> EnforceResult:
    """Judge a scan folder with a policy (a rules file, a :class:`~datagate.rules.Policy`, or
    the default policy), as ``datagate enforce`` does: writes the manifests and reports and
    returns the verdict (``.passed``), the report and the per-row decision. ``reference``: a
    scan folder of the preserved human baseline (the policy's ``reference:`` otherwise);
    ``overrides``: an overrides file of reviewed decisions, applied before the rules;
    ``reserves``: scan folders to top up from when a human-share or diversity floor fails."""
    from datagate.gate import enforce as run
    from datagate.rules import Policy, default_rules_path, load_policy
    from datagate.rules.policy import with_overrides

    if isinstance(rules, Policy):
        policy, source = rules, "<python>"
    else:
        path = Path(rules) if rules is not None else default_rules_path()
        policy, source = load_policy(path), str(path)
    from datagate.curation.overrides import read_overrides

    decisions = read_overrides(Path(overrides)) if overrides is not None else None
    flags: dict[str, Any] = {
        k: v
        for k, v in {"min_human": min_human, "max_rejected_fraction": max_rejected_fraction}.items()
        if v is not None
    }
    policy = with_overrides(policy, **flags)
    return run(
        Path(scan_dir),
        policy,
        source=source,
        out=Path(out) if out is not None else None,
        overrides=flags,
        reference=Path(reference) if reference is not None else None,
        decisions=decisions,
        reserves=[Path(r) for r in reserves],
    )


def load_scan(scan_dir: PathLike = "datagate-out/scan") -> tuple[pa.Table, ScanMeta]:
    """A scan folder's table (pyarrow) and its ``meta.json``, validated."""
    from datagate.contract import load_scan as load

    return load(Path(scan_dir))
