"""Each row's origin as the dataset rules and the reports count it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from datagate.provenance.evidence import STRENGTH_RANK, Evidence, decide
from datagate.rules.base import BoolArray, ObjArray

if TYPE_CHECKING:
    from datagate.rules.human import MinHuman


def _column(t: pa.Table, name: str) -> ObjArray:
    if name not in t.column_names:
        return np.full(t.num_rows, None, dtype=object)
    return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=object)


def effective_origin(t: pa.Table, rule: MinHuman | None = None) -> ObjArray:
    """Each row's origin: ``human``, ``synthetic`` or ``unknown``.

    Until a provenance signal is in the scan there is no ``origin`` column and every image
    is of unknown origin. ``rule`` may discount claims resting on untrusted C2PA signers and
    human claims weaker than ``human_evidence``.
    """
    n = t.num_rows
    if "origin" not in t.column_names:
        return np.full(n, "unknown", dtype=object)
    origin = np.array([o or "unknown" for o in _column(t, "origin")], dtype=object)
    if rule is None:
        return origin
    strength = _column(t, "origin_strength").copy()
    if rule.untrusted_c2pa == "ignore" and "c2pa_trusted" in t.column_names:
        trusted = np.asarray(t.column("c2pa_trusted").fill_null(False).to_numpy(), dtype=bool)
        untrusted = (_column(t, "c2pa_state") == "valid") & ~trusted
        evidence = _column(t, "evidence")
        for row in np.flatnonzero(untrusted).tolist():
            items = [Evidence(**e) for e in json.loads(evidence[row] or "[]")]
            verdict = decide([e for e in items if not (e.source == "c2pa" and e.says)])
            origin[row], strength[row] = verdict.origin, verdict.strength
    floor = STRENGTH_RANK[rule.human_evidence]
    weak_human = np.array(
        [o == "human" and STRENGTH_RANK.get(s or "", 0) < floor for o, s in zip(origin, strength)],
        dtype=bool,
    )
    origin[weak_human] = "unknown"
    return origin


def origin_counts(origin: ObjArray, kept: BoolArray) -> dict[str, int]:
    """Counts of human / synthetic / unknown origin among kept rows."""
    chosen = origin[kept]
    human = int(np.sum(chosen == "human"))
    synthetic = int(np.sum(chosen == "synthetic"))
    return {"human": human, "synthetic": synthetic, "unknown": int(kept.sum()) - human - synthetic}
