"""The pre-commit gate: a scan of the data repository with a row cache, then its rules.

Every commit re-judges the whole dataset (a human-share floor is a property of all of it),
but the scan is configured to decode only what is new: unchanged shards are skipped by the
scan's own resume, and in changed ones every image whose content was scanned before comes
from the content-addressed cache in ``.datagate/cache``. Outputs land in ``.datagate/``
too (``scan/``, ``manifests/``, ``report.*``); add ``.datagate/`` to ``.gitignore``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datagate.curation.overrides import DEFAULT_FILE, read_overrides
from datagate.gate import EnforceResult, enforce
from datagate.rules import Policy
from datagate.scanner.cache import Store
from datagate.scanner.defaults import DEFAULT_STATE_DIR
from datagate.scanner.engine import scan
from datagate.scanner.options import ScanOptions

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

STATE_DIR = Path(DEFAULT_STATE_DIR)


@dataclass
class HookRun:
    result: EnforceResult
    images: int
    cached: int
    computed: int
    seconds: float


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

    ``embedder`` is used only when the policy has rules that need embeddings, or a detector
    ``head`` is given (its scores feed the min_human estimate). ``overrides``: reviewed
    decisions (default: the repository's ``datagate-overrides.jsonl`` when it exists).
    """
    started = time.perf_counter()
    store = Store(state_dir / "cache")
    try:
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
    finally:
        store.close()
    if overrides is None and Path(DEFAULT_FILE).exists():
        overrides = Path(DEFAULT_FILE)
    decisions = read_overrides(overrides) if overrides is not None else None
    result = enforce(state_dir / "scan", policy, source=source, out=state_dir, decisions=decisions)
    images, computed = done.meta["counts"]["images"], done.meta["timing"].get("rows_computed", 0)
    return HookRun(result, images, images - computed, computed, time.perf_counter() - started)
