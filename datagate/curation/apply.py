"""Apply reviewed decisions to a scan table before the rules judge it.

``human`` / ``synthetic`` add an evidence item of source ``review`` (strength from the
policy's ``review_strength``) and re-decide the row's origin by the usual precedence, so
a review weighs like any other evidence (a definitive C2PA claim still outranks a strong
review; conflicts are recorded). ``keep`` exempts a row from every rule; ``reject`` drops it
before the rules run (rule id ``review``, reason code ``review_reject``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from datagate.curation.overrides import Overrides
from datagate.errors import InputError
from datagate.provenance.evidence import STRENGTH_RANK, Evidence, decide

REVIEW_RULE = "review"
REVIEW_REJECT = "review_reject"


@dataclass
class Applied:
    """The table with reviewed origins, and per row: the decision in force (or None)."""

    table: pa.Table
    decision: np.ndarray[Any, np.dtype[np.object_]]
    keep: np.ndarray[Any, np.dtype[np.bool_]]
    reject: np.ndarray[Any, np.dtype[np.bool_]]
    reasons: np.ndarray[Any, np.dtype[np.object_]]
    counts: dict[str, int]


def _column(table: pa.Table, name: str) -> np.ndarray[Any, np.dtype[np.object_]]:
    if name not in table.column_names:
        return np.full(table.num_rows, None, dtype=object)
    values = np.empty(table.num_rows, dtype=object)
    values[:] = table.column(name).to_pylist()  # nulls stay None (to_numpy makes them NaN)
    return values


def _replace(table: pa.Table, name: str, values: Any, kind: pa.DataType) -> pa.Table:
    array = pa.array(list(values), kind)
    if name in table.column_names:
        index = table.column_names.index(name)
        return table.set_column(
            index, table.schema.field(name), array.cast(table.schema.field(name).type)
        )
    return table.append_column(pa.field(name, kind), array)


def apply_decisions(table: pa.Table, overrides: Overrides, strength: str) -> Applied:
    n = table.num_rows
    none = np.full(n, None, dtype=object)
    if not len(overrides):
        flags = np.zeros(n, dtype=bool)
        return Applied(table, none, flags, flags.copy(), none.copy(), {})
    if "sha256" not in table.column_names:
        raise InputError(
            "overrides are keyed by sha256, but this scan has no hashes signal",
            hint="re-scan with the default --signals (or include hashes)",
        )
    sha = _column(table, "sha256")
    decision = np.array([overrides.by_sha[s].decision if s in overrides.by_sha else None
                         for s in sha], dtype=object)  # fmt: skip
    keep = decision == "keep"
    reject = decision == "reject"
    reasons = np.full(n, None, dtype=object)
    for row in np.flatnonzero(reject).tolist():
        o = overrides.by_sha[sha[row]]
        who = f" by {o.reviewer}" if o.reviewer else ""
        note = f": {o.note}" if o.note else ""
        reasons[row] = f"rejected in review{who}{note}"
    origin_rows = np.flatnonzero((decision == "human") | (decision == "synthetic"))
    if origin_rows.size:
        origin = _column(table, "origin")
        level = _column(table, "origin_strength")
        generator = _column(table, "generator")
        conflict = _column(table, "provenance_conflict")
        evidence = _column(table, "evidence")
        generation = _column(table, "generation")
        generation_source = _column(table, "generation_source")
        for row in origin_rows.tolist():
            o = overrides.by_sha[sha[row]]
            items = [Evidence(**e) for e in json.loads(evidence[row] or "[]")]
            detail = "; ".join(x for x in (o.reviewer, o.time, o.note) if x) or "reviewed"
            items.append(Evidence("review", o.decision, strength, detail))
            verdict = decide(items)
            origin[row], level[row] = verdict.origin, verdict.strength
            generator[row], conflict[row] = verdict.generator, verdict.conflict
            evidence[row] = verdict.evidence_json()
            strong = STRENGTH_RANK.get(verdict.strength or "", 0) >= STRENGTH_RANK["strong"]
            if verdict.origin == "human" and strong and generation[row] is None:
                generation[row], generation_source[row] = 0, "review"
        for name, values, kind in (
            ("origin", origin, pa.string()),
            ("origin_strength", level, pa.string()),
            ("generator", generator, pa.string()),
            ("provenance_conflict", conflict, pa.bool_()),
            ("evidence", evidence, pa.string()),
            ("generation", generation, pa.int32()),
            ("generation_source", generation_source, pa.string()),
        ):
            table = _replace(table, name, values, kind)
    counts: dict[str, int] = {}
    for value in decision[decision != None].tolist():  # noqa: E711 - elementwise
        counts[value] = counts.get(value, 0) + 1
    return Applied(table, decision, keep, reject, reasons, counts)
