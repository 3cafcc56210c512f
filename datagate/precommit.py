"""The pre-commit gate: a scan of the data repository with a row cache, then its rules.

Every commit judges the whole dataset (a human-share floor is a property of all of it), but
only new content is decoded (shards resume; ``.datagate/cache``), the last verdict's
dataset-wide intermediates are updated with what changed (``.datagate/gate-cache``), and an
unchanged dataset reuses its verdict (:mod:`datagate.verdict`). Add ``.datagate/`` to
``.gitignore``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datagate.contract import Report
from datagate.curation.overrides import DEFAULT_FILE, read_overrides
from datagate.io import output_lock
from datagate.rules import Policy
from datagate.scanner.cache import Store
from datagate.scanner.defaults import DEFAULT_STATE_DIR
from datagate.scanner.engine import scan
from datagate.scanner.options import ScanOptions
from datagate.verdict import last_verdict, remember_verdict, verdict_key

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

STATE_DIR = Path(DEFAULT_STATE_DIR)
GATE_CACHE = "gate-cache"  # the gate's intermediates (datagate.measures.incremental)


@dataclass
class HookRun:
    report: Report
    images: int
    cached: int
    computed: int
    seconds: float
    #: the verdict was reused: table, embeddings, policy and overrides were unchanged
    reused: bool = False

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


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
    overrides: Path | None = None,
) -> HookRun:
    """Scan ``inputs`` into ``state_dir/scan`` through the row cache, then enforce ``policy``.
    ``embedder``: only for a policy that needs embeddings, or a detector ``head`` (min_human's
    estimate); ``overrides``: reviewed decisions (default ``datagate-overrides.jsonl``)."""
    started = time.perf_counter()
    with closing(Store(state_dir / "cache")) as store:
        done = scan(
            inputs,
            state_dir / "scan",
            options,
            workers=workers if workers is not None else (os.cpu_count() or 1),
            embedder=embedder if policy.needs("vectors") or head is not None else None,
            store=store,
            cache_rows=True,
            head=head,
        )
    if overrides is None and Path(DEFAULT_FILE).exists():
        overrides = Path(DEFAULT_FILE)
    images, computed = done.meta["counts"]["images"], done.meta["timing"].get("rows_computed", 0)
    key = verdict_key(state_dir / "scan", done.meta, policy, overrides)
    with output_lock(state_dir):
        report = last_verdict(state_dir, key)
        reused = report is not None
        if report is None:
            from datagate.gate import enforce  # the judging stack, only when judging

            report = enforce(
                state_dir / "scan",
                policy,
                source=source,
                out=state_dir,
                decisions=read_overrides(overrides) if overrides is not None else None,
                intermediates=state_dir / GATE_CACHE,
            ).report
            remember_verdict(state_dir, key)
    seconds = time.perf_counter() - started
    return HookRun(report, images, images - computed, computed, seconds, reused)
