"""The rule engine: per-image rules reject rows, dataset rules judge the kept set.

Per-image rules run in policy order over the rows no earlier rule rejected; each returns a
boolean mask and a reason per rejected row (vectorised over the table, duplicate rules via
indexes). Dataset rules then measure the kept set against thresholds. Only thresholds live
here: the signals were measured at scan time, so changing a rule never needs a re-scan.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagate.measures import diversity, neardup, semantic
from datagate.detect.head import Calibration
from datagate.rules.policy import (
    Decodable,
    Dimensions,
    ExactDuplicates,
    Formats,
    MaxGeneration,
    MaxRejectedFraction,
    MaxUnknownOrigin,
    MinDiversity,
    MinHuman,
    NearDuplicates,
    Policy,
    ProvenanceRule,
    Quality,
    SemanticDuplicates,
    _Rule,
)
from datagate.detect.prevalence import ShareModel
from datagate.provenance.evidence import STRENGTH_RANK, Evidence, decide

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
ObjArray = np.ndarray[Any, np.dtype[np.object_]]

FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


@dataclass
class RuleOutcome:
    id: str
    rule: str
    scope: str  # "image" or "dataset"
    params: dict[str, Any]
    rejected: int = 0
    passed: bool | None = None  # dataset rules only
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    kept: BoolArray
    rule_id: ObjArray
    reason: ObjArray
    duplicate_of: ObjArray  # key of the kept original, for rows rejected as duplicates
    outcomes: list[RuleOutcome]

    @property
    def passed(self) -> bool:
        return all(o.passed is not False for o in self.outcomes)


@dataclass(frozen=True)
class RowVectors:
    """A scan's embeddings aligned to its table: ``vectors[i]`` belongs to row ``rows[i]``."""

    rows: np.ndarray[Any, np.dtype[np.int64]]
    vectors: np.ndarray[Any, np.dtype[Any]]
    embedder: str

    @classmethod
    def align(cls, table: pa.Table, keys: Any, vectors: Any, embedder: str) -> RowVectors:
        position = pc.index_in(pa.array(keys, pa.string()), value_set=table.column("key"))
        rows = np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), np.int64)
        found = rows >= 0  # vectors of rows no longer in the table are ignored
        return cls(rows=rows[found], vectors=np.asarray(vectors)[found], embedder=embedder)

    def subset(self, mask: BoolArray) -> tuple[np.ndarray[Any, np.dtype[np.int64]], Any]:
        """(table rows, vectors) of the rows selected by a table-length mask."""
        pick = mask[self.rows]
        return self.rows[pick], self.vectors[pick]


NO_VECTORS = (
    "the scan has no embeddings (it ran with --model none, or before embeddings existed): "
    "re-run `datagate scan` with an embedder (--model auto, pixel, or an open_clip model)"
)


# --------------------------------------------------------------------------- columns


def _num(table: pa.Table, name: str, fill: float = np.nan) -> np.ndarray[Any, np.dtype[Any]]:
    if name not in table.column_names:
        return np.full(table.num_rows, fill)
    return np.asarray(pc.fill_null(table.column(name).cast(pa.float64()), fill).to_numpy())


def _bool(table: pa.Table, name: str) -> BoolArray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return np.asarray(pc.fill_null(table.column(name), False).to_numpy(zero_copy_only=False))


def _str(table: pa.Table, name: str) -> ObjArray:
    if name not in table.column_names:
        return np.full(table.num_rows, None, dtype=object)
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object)


def _reasons(n: int, mask: BoolArray, make: Callable[[int], str]) -> ObjArray:
    out = np.full(n, None, dtype=object)
    for row in np.flatnonzero(mask).tolist():
        out[row] = make(row)
    return out


# --------------------------------------------------------------------------- image rules

#: Duplicate rules also return, under this key of their details, the key of each dropped
#: row's original; the engine moves it to ``Decision.duplicate_of``.
DUPLICATE_OF = "duplicate_of"

ImageRuleFn = Callable[[Any, pa.Table, BoolArray], tuple[BoolArray, ObjArray, dict[str, Any]]]


def _decodable(
    rule: Decodable, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    bad = alive & ~_bool(t, "decodable")
    errors = _str(t, "error")
    return (
        bad,
        _reasons(t.num_rows, bad, lambda r: f"not decodable: {errors[r] or 'unknown error'}"),
        {},
    )


@dataclass(frozen=True)
class _Bound:
    """One threshold check, described as e.g. ``width 32 < min_width 64``."""

    label: str
    values: np.ndarray[Any, np.dtype[Any]]
    op: str  # "<" fails below the limit, ">" above it
    limit: float
    limit_name: str
    value_format: str = ".3g"

    def failing(self) -> BoolArray:
        return (self.values < self.limit) if self.op == "<" else (self.values > self.limit)

    def describe(self, row: int) -> str:
        return (
            f"{self.label} {self.values[row]:{self.value_format}} {self.op} "
            f"{self.limit_name} {self.limit:g}"
        )


def _bounds_rule(
    t: pa.Table, alive: BoolArray, bounds: list[_Bound]
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    """Reject rows failing any bound; the reason lists every bound a row fails."""
    if not bounds:
        return np.zeros(t.num_rows, dtype=bool), np.full(t.num_rows, None, dtype=object), {}
    masks = [b.failing() for b in bounds]
    bad = alive & np.logical_or.reduce(masks)

    def reason(row: int) -> str:
        return "; ".join(b.describe(row) for b, m in zip(bounds, masks) if m[row])

    return bad, _reasons(t.num_rows, bad, reason), {}


def _dimensions(
    rule: Dimensions, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    sizes = {"width": _num(t, "width"), "height": _num(t, "height")}
    bounds = [
        _Bound(label, sizes[label], op, limit, key, ".0f")
        for label, op, key in (
            ("width", "<", "min_width"),
            ("height", "<", "min_height"),
            ("width", ">", "max_width"),
            ("height", ">", "max_height"),
        )
        if (limit := getattr(rule, key)) is not None
    ]
    return _bounds_rule(t, alive, bounds)


def _formats(
    rule: Formats, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    allow = {FORMAT_ALIASES.get(f.upper(), f.upper()) for f in rule.allow}
    fmt = _str(t, "format")
    known = np.array([f is not None for f in fmt], dtype=bool)
    ok = np.array([f in allow for f in fmt], dtype=bool)
    bad = alive & known & ~ok
    listed = ", ".join(sorted(allow))
    return (
        bad,
        _reasons(t.num_rows, bad, lambda r: f"format {fmt[r]} not in allowed formats [{listed}]"),
        {},
    )


def _quality(
    rule: Quality, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    bounds: list[_Bound] = []
    for name in ("brightness", "contrast", "blur", "entropy", "aspect_ratio"):
        bound = getattr(rule, name)
        if bound is None:
            continue
        values = _num(t, name)
        if bound.min is not None:
            bounds.append(_Bound(name, values, "<", bound.min, "min"))
        if bound.max is not None:
            bounds.append(_Bound(name, values, ">", bound.max, "max"))
    return _bounds_rule(t, alive, bounds)


def _exact_duplicates(
    rule: ExactDuplicates, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    n = t.num_rows
    sha = t.column("sha256")
    candidates = np.flatnonzero(alive & np.asarray(pc.is_valid(sha).to_numpy(zero_copy_only=False)))
    bad = np.zeros(n, dtype=bool)
    first_of = np.full(n, -1, dtype=np.int64)
    if candidates.size:
        codes = np.asarray(
            pc.dictionary_encode(sha.take(pa.array(candidates))).combine_chunks().indices
        )
        _, first_pos, inverse = np.unique(codes, return_index=True, return_inverse=True)
        first_rows = candidates[first_pos][inverse]
        dup = first_rows != candidates
        bad[candidates[dup]] = True
        first_of[candidates] = first_rows
    keys = _str(t, "key")
    originals = np.full(n, None, dtype=object)
    originals[bad] = keys[first_of[bad]]
    reasons = _reasons(n, bad, lambda r: f"exact duplicate of {originals[r]} (same sha256)")
    groups = len(np.unique(first_of[bad])) if bad.any() else 0
    return bad, reasons, {"groups": groups, DUPLICATE_OF: originals}


def _near_duplicates(
    rule: NearDuplicates, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    n = t.num_rows
    column = t.column(rule.hash)
    valid = alive & np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False))
    rows = np.flatnonzero(valid)
    bad = np.zeros(n, dtype=bool)
    reasons = np.full(n, None, dtype=object)
    if rows.size < 2:
        return bad, reasons, {"pairs": 0}
    hashes = np.asarray(column.take(pa.array(rows)).to_numpy(zero_copy_only=False), dtype=np.uint64)
    i, j, d = neardup.near_pairs(hashes, rule.max_distance)
    if rule.keep == "largest":
        pixels = (_num(t, "width", 0) * _num(t, "height", 0))[rows]
        preference = np.lexsort((np.arange(rows.size), -pixels))
    else:
        preference = np.arange(rows.size)
    dropped, dup_of, dist = neardup.greedy_keep(rows.size, i, j, d, preference.astype(np.int64))
    keys = _str(t, "key")
    originals = np.full(n, None, dtype=object)
    label = "dHash" if rule.hash == "dhash" else "pHash"
    for local in np.flatnonzero(dropped).tolist():
        row = rows[local]
        bad[row] = True
        originals[row] = keys[rows[dup_of[local]]]
        reasons[row] = (
            f"near duplicate of {originals[row]} ({label} distance {dist[local]} "
            f"<= {rule.max_distance})"
        )
    return bad, reasons, {"pairs": len(i), DUPLICATE_OF: originals}


def _keep_preference(t: pa.Table, rows: np.ndarray[Any, Any], keep: str) -> Any:
    """Local order of ``rows`` to keep first: human evidence, then largest (or first)."""
    human = effective_origin(t)[rows] == "human"
    pixels = (_num(t, "width", 0) * _num(t, "height", 0))[rows] if keep == "largest" else 0
    return np.lexsort((np.arange(rows.size), -pixels * np.ones(rows.size), ~human))


def _semantic_duplicates(
    rule: SemanticDuplicates,
    t: pa.Table,
    alive: BoolArray,
    vectors: RowVectors | None,
    targets: list[MinDiversity],
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    n = t.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons = np.full(n, None, dtype=object)
    if vectors is None:
        return bad, reasons, {"error": NO_VECTORS}
    rows, x = vectors.subset(alive)
    found = semantic.semantic_duplicates(
        x, rule.threshold, preference=_keep_preference(t, rows, rule.keep), clusters=rule.clusters
    )
    local = np.flatnonzero(found.dropped)
    details: dict[str, Any] = {"duplicates": int(local.size), "clusters": found.clusters}
    if rule.action == "filter":
        # most similar first, only as many as the diversity floors need
        local = local[np.argsort(-found.similarity[local], kind="stable")]
        needed = 0
        for target in targets:
            count, _ = diversity.drop_until(x, local, target.metric, target.min, target.q)
            needed = max(needed, count)
        local = local[:needed]
        details["filtered"] = int(local.size)
    keys = _str(t, "key")
    originals = np.full(n, None, dtype=object)
    for i in local.tolist():
        row = rows[i]
        bad[row] = True
        originals[row] = keys[rows[found.duplicate_of[i]]]
        reasons[row] = (
            f"semantic duplicate of {originals[row]} (cosine {found.similarity[i]:.3f} "
            f">= {rule.threshold})"
        )
    return bad, reasons, {**details, DUPLICATE_OF: originals}


def _provenance(
    rule: ProvenanceRule, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    n = t.num_rows
    origin = _str(t, "origin")
    state = _str(t, "c2pa_state")
    trusted = _bool(t, "c2pa_trusted")
    generator = _str(t, "generator")
    required = np.ones(n, dtype=bool)
    need = {
        "none": "",
        "evidence": "provenance evidence of origin",
        "c2pa_valid": "a valid C2PA manifest",
        "c2pa_trusted": "a valid C2PA manifest from a trusted signer",
    }[rule.require]
    if rule.require == "evidence":
        required = np.array([o in ("human", "synthetic") for o in origin], dtype=bool)
    elif rule.require == "c2pa_valid":
        required = state == "valid"
    elif rule.require == "c2pa_trusted":
        required = (state == "valid") & trusted
    patterns = [p.lower() for p in rule.reject_generators]
    banned = np.array(
        [
            g is not None and any(fnmatch.fnmatchcase(str(g).lower(), p) for p in patterns)
            for g in generator
        ],
        dtype=bool,
    )
    bad = alive & (~required | banned)

    def reason(r: int) -> str:
        if banned[r]:
            return f"generator {generator[r]!r} is rejected by the policy"
        return f"no {need} (c2pa: {state[r] or 'absent'}, origin: {origin[r] or 'unknown'})"

    return bad, _reasons(n, bad, reason), {}


def _max_generation(
    rule: MaxGeneration, t: pa.Table, alive: BoolArray
) -> tuple[BoolArray, ObjArray, dict[str, Any]]:
    n = t.num_rows
    if "generation" in t.column_names:
        column = t.column("generation")
        known = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        gen = column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    else:  # a scan without the provenance signal (or from before generations were read)
        known, gen = np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)
    too_far = alive & known & (gen > rule.max)
    unknown = alive & ~known
    bad = too_far | (unknown if rule.unknown == "reject" else np.zeros(n, dtype=bool))

    def reason(r: int) -> str:
        if known[r]:
            return f"generation {gen[r]} > {rule.max}"
        return "generation unknown (the policy rejects unknown generations)"

    details = {
        "unknown": int(unknown.sum()),
        "unknown_policy": rule.unknown,
        "over_max": int(too_far.sum()),
    }
    return bad, _reasons(n, bad, reason), details


IMAGE_RULES: dict[type[_Rule], ImageRuleFn] = {
    Decodable: _decodable,
    Dimensions: _dimensions,
    Formats: _formats,
    Quality: _quality,
    ExactDuplicates: _exact_duplicates,
    NearDuplicates: _near_duplicates,
    ProvenanceRule: _provenance,
    MaxGeneration: _max_generation,
}


# --------------------------------------------------------------------------- dataset rules


def effective_origin(t: pa.Table, rule: MinHuman | None = None) -> ObjArray:
    """Each row's origin as a dataset rule should count it.

    Until a provenance signal is in the scan there is no ``origin`` column and every image
    is of unknown origin. ``rule`` may discount claims resting on untrusted C2PA signers and
    human claims weaker than ``human_evidence``.
    """
    n = t.num_rows
    if "origin" not in t.column_names:
        return np.full(n, "unknown", dtype=object)
    origin = np.array([o or "unknown" for o in _str(t, "origin")], dtype=object)
    strength = _str(t, "origin_strength").copy()
    if rule is None:
        return origin
    if rule.untrusted_c2pa == "ignore" and "c2pa_trusted" in t.column_names:
        untrusted = (_str(t, "c2pa_state") == "valid") & ~_bool(t, "c2pa_trusted")
        evidence = _str(t, "evidence")
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


def _min_human(
    rule: MinHuman,
    t: pa.Table,
    kept: BoolArray,
    outcome: RuleOutcome,
    calibration: Calibration | None = None,
) -> tuple[BoolArray, ObjArray] | None:
    """Judge the kept set's human share; with ``action: filter`` first drop likely-synthetic.

    Provenance counts exactly; kept images of unknown origin that carry a detector score are
    estimated (:mod:`datagate.detect.prevalence`); the rest follow ``rule.unknown``.
    """
    origin = effective_origin(t, rule)
    c = origin_counts(origin, kept)
    unknown_rows = kept & (origin == "unknown")
    score = np.full(t.num_rows, np.nan)
    if "detector_score" in t.column_names:
        column = t.column("detector_score").cast(pa.float64()).fill_null(np.nan)
        score = column.to_numpy(zero_copy_only=False)
    scored_rows = unknown_rows & ~np.isnan(score)
    model = ShareModel(
        c["human"],
        c["synthetic"],
        score[scored_rows],
        int((unknown_rows & np.isnan(score)).sum()),
        rule.unknown,
        calibration,
    )
    estimate = model.estimate()
    filtered: tuple[BoolArray, ObjArray] | None = None
    unreachable = False
    if rule.action == "filter" and not _share_passes(rule, estimate):
        drops = model.filter_to(rule.min, rule.bound)
        unreachable = drops is None
        drop_synthetic, drop_scored = drops or (0, 0)
        if drop_synthetic or drop_scored:
            filtered = _drop_likely_synthetic(
                t, kept & (origin == "synthetic"), scored_rows, score, drop_synthetic, drop_scored
            )
            estimate = model.estimate(drop_synthetic, drop_scored)
            c = {**c, "synthetic": c["synthetic"] - drop_synthetic}
    value = estimate.share if rule.bound == "estimate" else estimate.low
    outcome.value, outcome.threshold = value, rule.min
    outcome.details = {
        **c,
        "unknown_counts_as": rule.unknown,
        "human_evidence": rule.human_evidence,
        "untrusted_c2pa": rule.untrusted_c2pa,
        "evidence": "provenance + detector" if model.usable else "provenance",
        "bound": rule.bound,
        "estimate": estimate.as_dict(),
    }
    if filtered is not None:
        outcome.details["filtered"] = int(filtered[0].sum())
    counts = f"{c['human']:,} human, {c['synthetic']:,} synthetic"
    if model.usable:
        counts += (
            f" by provenance; {estimate.scored:,} scored by the detector, of them "
            f"~{estimate.scored_human or 0:,.0f} human"
        )
        if estimate.unscored:
            counts += f"; {estimate.unscored:,} unscored unknown origin"
    else:
        counts += f", {estimate.unscored:,} unknown origin"
    if "origin" not in t.column_names:
        counts += "; the scan has no provenance signal, so every image's origin is unknown"
    if model.note:
        counts += f"; {model.note}"
    if filtered is not None:
        counts += f"; {int(filtered[0].sum()):,} likely-synthetic images dropped"
    if unreachable:
        counts += (
            "; nothing dropped: even without every synthetic and scored image the floor "
            "would not be shown"
        )
    if value is None:
        outcome.passed = False
        outcome.message = (
            f"human share cannot be measured: no kept image has known origin ({counts}); "
            f"a floor of {rule.min:.0%} cannot be shown"
        )
        return filtered
    outcome.passed = value >= rule.min
    how = {"not_human": "counted as not human", "exclude": "excluded", "human": "counted as human"}
    if not model.usable:
        lead = "human share" if rule.bound == "estimate" else "human share (exact count)"
        outcome.message = (
            f"{lead} {value:.1%} {'>=' if outcome.passed else '<'} {rule.min:.0%} "
            f"({counts}; unknown {how[rule.unknown]})"
        )
        return filtered
    assert estimate.share is not None and estimate.low is not None
    interval = (
        f"{estimate.confidence:.0%} interval {estimate.low:.1%} to {(estimate.high or 0):.1%}"
    )
    if rule.bound == "estimate":
        lead = f"estimated human share {estimate.share:.1%} ({interval})"
    else:
        lead = (
            f"lower bound of the human share {estimate.low:.1%} (estimate {estimate.share:.1%}, "
            f"{interval})"
        )
    outcome.message = (
        f"{lead} {'>=' if outcome.passed else '<'} {rule.min:.0%} "
        f"({counts}; unscored unknown {how[rule.unknown]})"
    )
    return filtered


def _share_passes(rule: MinHuman, estimate: Any) -> bool:
    value = estimate.share if rule.bound == "estimate" else estimate.low
    return value is not None and value >= rule.min


def _drop_likely_synthetic(
    t: pa.Table,
    synthetic_rows: BoolArray,
    scored_rows: BoolArray,
    score: np.ndarray[Any, Any],
    drop_synthetic: int,
    drop_scored: int,
) -> tuple[BoolArray, ObjArray]:
    """The rows a min_human filter drops: synthetic provenance first, then top scores."""
    n = t.num_rows
    mask = np.zeros(n, dtype=bool)
    reasons = np.full(n, None, dtype=object)
    generator = _str(t, "generator") if "generator" in t.column_names else np.full(n, None)
    for r in np.flatnonzero(synthetic_rows)[:drop_synthetic].tolist():
        mask[r] = True
        made = f" ({generator[r]})" if generator[r] else ""
        reasons[r] = f"synthetic by provenance{made}; dropped to raise the human share"
    candidates = np.flatnonzero(scored_rows)
    order = candidates[np.argsort(-score[candidates], kind="stable")][:drop_scored]
    for r in order.tolist():
        mask[r] = True
        reasons[r] = (
            f"likely synthetic: P(synthetic) {score[r]:.3f}; dropped to raise the human share"
        )
    return mask, reasons


def _max_rejected(
    rule: MaxRejectedFraction, t: pa.Table, kept: BoolArray, outcome: RuleOutcome
) -> None:
    n = t.num_rows
    rejected = n - int(kept.sum())
    share = rejected / n if n else 0.0
    outcome.value, outcome.threshold = share, rule.max
    outcome.passed = share <= rule.max
    outcome.message = (
        f"rejected {rejected:,} of {n:,} images ({share:.1%}) "
        f"{'<=' if outcome.passed else '>'} {rule.max:.0%}"
    )


def _max_unknown(
    rule: MaxUnknownOrigin, t: pa.Table, kept: BoolArray, outcome: RuleOutcome
) -> None:
    c = origin_counts(effective_origin(t), kept)
    total = int(kept.sum())
    share = c["unknown"] / total if total else 0.0
    outcome.value, outcome.threshold = share, rule.max
    outcome.passed = share <= rule.max
    outcome.details = c
    outcome.message = (
        f"unknown origin {c['unknown']:,} of {total:,} kept images ({share:.1%}) "
        f"{'<=' if outcome.passed else '>'} {rule.max:.0%}"
    )


def _min_diversity(
    rule: MinDiversity,
    t: pa.Table,
    kept: BoolArray,
    outcome: RuleOutcome,
    vectors: RowVectors | None,
) -> tuple[BoolArray, ObjArray] | None:
    """Judge the kept set's diversity; with ``action: filter`` first drop redundant images."""
    outcome.threshold = rule.min
    label = {"index": "diversity index", "vendi": "Vendi score"}.get(rule.metric, rule.metric)
    if vectors is None:
        outcome.passed = False
        outcome.message = f"{label} cannot be measured: {NO_VECTORS}"
        return None
    rows, x = vectors.subset(kept)
    outcome.details = {"embedder": vectors.embedder, "metric": rule.metric, "q": rule.q}
    filtered: tuple[BoolArray, ObjArray] | None = None
    if rule.action == "filter" and len(rows) > 2:
        found = semantic.semantic_duplicates(x, 1.0)  # only the per-image redundancy
        human = effective_origin(t)[rows] == "human"
        candidates = np.flatnonzero(~human)
        order = candidates[np.argsort(-found.redundancy[candidates], kind="stable")]
        order = order[: int(rule.max_drop * len(rows))]
        count, _ = diversity.drop_until(x, order, rule.metric, rule.min, rule.q)
        drop = order[:count]
        n = t.num_rows
        mask = np.zeros(n, dtype=bool)
        mask[rows[drop]] = True
        keys = _str(t, "key")
        reasons = np.full(n, None, dtype=object)
        for i in drop.tolist():
            reasons[rows[i]] = (
                f"redundant: cosine {found.redundancy[i]:.3f} to {keys[rows[found.nearest[i]]]} "
                f"(dropped to raise the {label} toward {rule.min})"
            )
        filtered = (mask, reasons)
        outcome.details["filtered"] = int(count)
        keep_local = np.ones(len(rows), dtype=bool)
        keep_local[drop] = False
        x = x[keep_local]
    value = diversity.Running(x).value(rule.metric, rule.q) if len(x) >= 2 else None
    outcome.value = value
    outcome.details["images"] = len(x)
    if value is None:
        outcome.passed = False
        outcome.message = f"{label} cannot be measured: fewer than 2 kept images have embeddings"
        return filtered
    outcome.passed = value >= rule.min
    dropped = outcome.details.get("filtered")
    outcome.message = (
        f"{label} {value:.3f} {'>=' if outcome.passed else '<'} {rule.min} over {len(x):,} kept "
        f"images ({vectors.embedder}"
        + (f"; {dropped:,} redundant images dropped" if dropped else "")
        + ")"
    )
    return filtered


DatasetRuleFn = Callable[[Any, pa.Table, BoolArray, RuleOutcome], None]
DATASET_RULES: dict[type[_Rule], DatasetRuleFn] = {
    MaxRejectedFraction: _max_rejected,
    MaxUnknownOrigin: _max_unknown,
}


# --------------------------------------------------------------------------- apply


def _params(rule: _Rule) -> dict[str, Any]:
    return rule.model_dump(exclude={"id", "rule"}, exclude_none=True)


def apply_policy(
    table: pa.Table,
    policy: Policy,
    vectors: RowVectors | None = None,
    calibration: Calibration | None = None,
) -> Decision:
    """Judge a scan table. ``vectors``: its embeddings; ``calibration``: the calibration of
    the detector head whose scores the table carries (from the scan's meta.json)."""
    n = table.num_rows
    rule_id = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)
    duplicate_of = np.full(n, None, dtype=object)
    kept = np.ones(n, dtype=bool)
    outcomes: list[RuleOutcome] = []
    floors = [r for r in policy.rules if isinstance(r, MinDiversity)]

    def reject(rule: _Rule, mask: BoolArray, reasons: ObjArray) -> int:
        newly = mask & kept
        kept[newly] = False
        rule_id[newly] = rule.rule_id
        reason[newly] = reasons[newly]
        return int(newly.sum())

    for rule in policy.image_rules():
        if isinstance(rule, SemanticDuplicates):
            mask, reasons, details = _semantic_duplicates(rule, table, kept.copy(), vectors, floors)
        else:
            mask, reasons, details = IMAGE_RULES[type(rule)](rule, table, kept.copy())
        originals = details.pop(DUPLICATE_OF, None)
        if originals is not None:
            duplicate_of[mask & kept] = originals[mask & kept]
        count = reject(rule, mask, reasons)
        outcome = RuleOutcome(
            id=rule.rule_id,
            rule=rule.rule_name,
            scope="image",
            params=_params(rule),
            rejected=count,
            message=f"rejected {count:,} image{'s' if count != 1 else ''}",
            details=details,
        )
        if "error" in details:
            outcome.passed = False
            outcome.message = f"cannot be evaluated: {details['error']}"
        outcomes.append(outcome)
    for rule in policy.dataset_rules():
        outcome = RuleOutcome(
            id=rule.rule_id, rule=rule.rule_name, scope="dataset", params=_params(rule)
        )
        if isinstance(rule, (MinDiversity, MinHuman)):
            if isinstance(rule, MinDiversity):
                filtered = _min_diversity(rule, table, kept, outcome, vectors)
            else:
                filtered = _min_human(rule, table, kept, outcome, calibration)
            if filtered is not None:
                outcome.rejected = reject(rule, *filtered)
        else:
            DATASET_RULES[type(rule)](rule, table, kept, outcome)
        outcomes.append(outcome)
    return Decision(
        kept=kept, rule_id=rule_id, reason=reason, duplicate_of=duplicate_of, outcomes=outcomes
    )
