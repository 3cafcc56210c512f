"""The pre-commit gate: a scan of the data repository with a row cache, then its rules.

Every commit re-judges the whole dataset (a human-share floor is a property of all of it),
but the scan is configured to decode only what is new: unchanged shards are skipped by the
scan's own resume, and in changed ones every image whose content was scanned before comes
from the content-addressed cache in ``.datagate/cache``. Outputs land in ``.datagate/``
too (``scan/``, ``manifests/``, ``report.*``); add ``.datagate/`` to ``.gitignore``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datagate import __version__
from datagate.contract import (
    EMBEDDINGS_FILE,
    REPORT_JSON,
    Report,
    ScanMeta,
    file_sha256,
    load_report,
)
from datagate.curation.overrides import DEFAULT_FILE, read_overrides
from datagate.gate import enforce
from datagate.io import output_lock, write_json
from datagate.rules import Policy
from datagate.rules.policy import policy_digest
from datagate.scanner.cache import Store
from datagate.scanner.defaults import DEFAULT_STATE_DIR
from datagate.scanner.engine import scan
from datagate.scanner.options import ScanOptions

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

STATE_DIR = Path(DEFAULT_STATE_DIR)


#: what the last gate judged, in the state folder: equal inputs reuse its verdict
GATE_KEY = "gate-key.json"


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
    images, computed = done.meta["counts"]["images"], done.meta["timing"].get("rows_computed", 0)
    key = gate_key(state_dir / "scan", done.meta, policy, overrides)
    with output_lock(state_dir):
        if key is not None and _last_key(state_dir) == key:
            report, reused = load_report(state_dir), True
        else:
            decisions = read_overrides(overrides) if overrides is not None else None
            report = enforce(
                state_dir / "scan", policy, source=source, out=state_dir, decisions=decisions
            ).report
            reused = False
            if key is not None:
                write_json(state_dir / GATE_KEY, key)
    seconds = time.perf_counter() - started
    return HookRun(report, images, images - computed, computed, seconds, reused)


def gate_key(
    scan_dir: Path, meta: ScanMeta, policy: Policy, overrides: Path | None
) -> dict[str, str | None] | None:
    """Everything a verdict depends on, by digest: the scan table and embeddings, the
    detector's calibration, the policy, the overrides file and datagate's version (None:
    cannot tell — a scan without a table digest, or a policy with a reference scan)."""
    table_sha256 = meta["counts"].get("table_sha256")
    if table_sha256 is None or policy.reference is not None:
        return None
    embeddings = scan_dir / EMBEDDINGS_FILE
    return {
        "datagate": __version__,
        "table": str(table_sha256),
        "embeddings": file_sha256(embeddings) if embeddings.exists() else None,
        "detector": json.dumps(meta.get("detector"), sort_keys=True),
        "policy": policy_digest(policy),
        "overrides": file_sha256(overrides) if overrides is not None else None,
    }


def _last_key(state_dir: Path) -> dict[str, str | None] | None:
    """The key of the verdict in ``state_dir``, when its report is still there."""
    try:
        if not (state_dir / REPORT_JSON).exists():
            return None
        found = json.loads((state_dir / GATE_KEY).read_text())
        return found if isinstance(found, dict) else None
    except (OSError, ValueError):
        return None
