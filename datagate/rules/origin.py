"""Origin: each row's origin as rules and reports count it, and the per-image provenance
rules (required evidence, rejected generators, tampered manifests, generations) and the
unknown-origin ceiling.

The scan stores every piece of evidence as read and a verdict weighed the default way
(unsigned human claims weak); :func:`weigh_origins` decides the verdict columns again from
the evidence under a policy's ``unsigned_human``, and :func:`effective_origin` re-decides
human claims from the evidence so that a scan written before that default counts the same.
"""

from __future__ import annotations

import fnmatch
import json
import weakref
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from datagate.contract import value_codes
from datagate.measures.backend import LOCAL, Backend
from datagate.provenance.evidence import STRENGTH_RANK, Evidence, UnsignedHuman, decide
from datagate.rules.base import (
    BoolArray,
    Context,
    Fraction,
    ObjArray,
    Rule,
    Verdict,
    ceiling_verdict,
    reasons,
    register,
)

if TYPE_CHECKING:
    from datagate.rules.human import MinHuman


def _column(t: pa.Table, name: str) -> ObjArray:
    if name not in t.column_names:
        return np.full(t.num_rows, None, dtype=object)
    return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=object)


#: Table metadata key recording the ``unsigned_human`` a table's verdicts were weighed with.
WEIGHED_KEY = b"datagate.unsigned_human"


def weighing(t: pa.Table) -> UnsignedHuman:
    """The ``unsigned_human`` the table's verdict columns were decided with."""
    value = (t.schema.metadata or {}).get(WEIGHED_KEY, b"weak").decode()
    return cast(UnsignedHuman, value if value in ("weak", "strong") else "weak")


#: the provenance signal version from which scans decide unsigned human claims as weak
WEIGHED_SINCE = 3


def _decided_with_weighing(t: pa.Table) -> bool:
    """Whether the verdict columns were decided with the table's weighing: by
    :func:`weigh_origins`, or by a scan whose provenance signal already weighed claims."""
    metadata = t.schema.metadata or {}
    if WEIGHED_KEY in metadata:
        return True
    try:
        versions = json.loads(metadata.get(b"datagate.signals", b"{}"))
        return int(versions.get("provenance", 0)) >= WEIGHED_SINCE
    except (ValueError, TypeError, AttributeError):
        return False


def _evidence(raw: Any) -> list[Evidence]:
    fields = set(Evidence.__dataclass_fields__)
    return [Evidence(**{k: v for k, v in e.items() if k in fields}) for e in json.loads(raw)]


def weigh_origins(t: pa.Table, unsigned_human: UnsignedHuman) -> pa.Table:
    """Decide each row's verdict columns again from its evidence under ``unsigned_human``
    (a policy's key): origin, origin_strength, generator, provenance_conflict, and a
    generation read from human provenance. Applied before the rules judge a scan."""
    if "evidence" not in t.column_names or "origin" not in t.column_names:
        return t
    evidence = _column(t, "evidence")
    names = ("origin", "origin_strength", "generator", "provenance_conflict")
    columns = {name: _objects(t, name) for name in names}
    generation = _objects(t, "generation")
    generation_source = _objects(t, "generation_source")
    rows = [r for r, raw in enumerate(evidence.tolist()) if raw and '"human"' in raw]
    for row in rows:
        verdict = decide(_evidence(evidence[row]), unsigned_human)
        columns["origin"][row], columns["origin_strength"][row] = verdict.origin, verdict.strength
        columns["generator"][row] = verdict.generator
        columns["provenance_conflict"][row] = verdict.conflict
        strong = STRENGTH_RANK.get(verdict.strength or "", 0) >= STRENGTH_RANK["strong"]
        from_human = generation_source[row] == "human provenance"
        if verdict.origin == "human" and strong and generation[row] is None:
            generation[row], generation_source[row] = 0, "human provenance"
        elif from_human and not (verdict.origin == "human" and strong):
            generation[row], generation_source[row] = None, None
    out = t
    updates: list[tuple[str, ObjArray]] = [(n, columns[n]) for n in names]
    if "generation" in t.column_names and "generation_source" in t.column_names:
        updates += [("generation", generation), ("generation_source", generation_source)]
    for name, values in updates:
        index = out.column_names.index(name)
        field = out.schema.field(name)
        out = out.set_column(index, field, pa.array(values.tolist(), field.type))
    metadata = {**(out.schema.metadata or {}), WEIGHED_KEY: unsigned_human.encode()}
    return out.replace_schema_metadata(metadata)


def _objects(t: pa.Table, name: str) -> ObjArray:
    """A column as Python objects with None for nulls (to_numpy turns null ints into NaN)."""
    out = np.full(t.num_rows, None, dtype=object)
    if name in t.column_names:
        out[:] = t.column(name).to_pylist()
    return out


def _category_codes(
    t: pa.Table, name: str, null: Any = None
) -> tuple[ObjArray, np.ndarray[Any, Any]]:
    """A column of few distinct strings as its distinct values (as Python objects, ``null``
    for nulls, and for every row of an absent column) and each row's position among them."""
    if name not in t.column_names:
        return np.array([null], dtype=object), np.zeros(t.num_rows, dtype=np.int64)
    found, codes = value_codes(t.column(name))
    return np.array([null if v is None else v for v in found], dtype=object), codes


def _categories(t: pa.Table, name: str, null: Any = None) -> ObjArray:
    """A column of few distinct strings as Python objects (``null`` where null or absent),
    one object per distinct value: 8 bytes a row, not a string each (a million rows)."""
    values, codes = _category_codes(t, name, null)
    out: ObjArray = values[codes]
    return out


#: The last table's origins (:func:`effective_origin` without a rule): duplicate rules,
#: diversity and the report ask for them of one table several times a run.
_LAST_ORIGIN: list[tuple[weakref.ref[pa.Table], ObjArray]] = []


def _stored_origin(t: pa.Table) -> ObjArray:
    """Each row's stored origin (``unknown`` where null or empty), read-only, cached for
    the last table asked about."""
    if _LAST_ORIGIN and _LAST_ORIGIN[0][0]() is t:
        return _LAST_ORIGIN[0][1]
    origin = _categories(t, "origin", "unknown")
    origin[origin == ""] = "unknown"
    origin.setflags(write=False)
    _LAST_ORIGIN[:] = [(weakref.ref(t), origin)]
    return origin


def effective_origin(t: pa.Table, rule: MinHuman | None = None) -> ObjArray:
    """Each row's origin: ``human``, ``synthetic`` or ``unknown``.

    Until a provenance signal is in the scan there is no ``origin`` column and every image
    is of unknown origin. ``rule`` may discount claims resting on untrusted C2PA signers and
    human claims weaker than ``human_evidence``; human claims are then decided again from
    the evidence with the table's weighing (unsigned human claims weak unless a policy's
    ``unsigned_human: strong`` was applied by :func:`weigh_origins`), so a scan stored
    before that default was introduced counts the same as a new one.

    Without ``rule`` the array is shared (read-only): copy it to change it.
    """
    n = t.num_rows
    if "origin" not in t.column_names:
        return np.full(n, "unknown", dtype=object)
    if rule is None:
        return _stored_origin(t)
    origin = _stored_origin(t).copy()
    values, codes = _category_codes(t, "origin_strength")
    strength_rank = np.array([STRENGTH_RANK.get(v or "", 0) for v in values], dtype=np.int64)
    rank = strength_rank[codes]
    unsigned = weighing(t)
    ignore = np.zeros(n, dtype=bool)
    if rule.untrusted_c2pa == "ignore" and "c2pa_trusted" in t.column_names:
        trusted = np.asarray(t.column("c2pa_trusted").fill_null(False).to_numpy(), dtype=bool)
        ignore = (_categories(t, "c2pa_state") == "valid") & ~trusted
    if _decided_with_weighing(t) or "evidence" not in t.column_names:
        claims_human = np.zeros(n, dtype=bool)  # stored verdicts are current
    else:  # a scan stored before unsigned claims weighed weak: decide its human claims again
        found = pc.fill_null(pc.match_substring(t.column("evidence"), '"human"'), False)
        claims_human = np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)
    redo = np.flatnonzero(ignore | claims_human)
    if redo.size:  # only these rows' evidence is read into Python
        texts = (
            t.column("evidence").take(pa.array(redo)).to_pylist()
            if "evidence" in t.column_names
            else [None] * redo.size
        )
        for row, text in zip(redo.tolist(), texts):
            items = _evidence(text or "[]")
            if ignore[row]:
                items = [e for e in items if not (e.source == "c2pa" and e.says)]
            verdict = decide(items, unsigned)
            origin[row] = verdict.origin
            rank[row] = STRENGTH_RANK.get(verdict.strength or "", 0)
    weak_human = (origin == "human") & (rank < STRENGTH_RANK[rule.human_evidence])
    origin[weak_human] = "unknown"
    return origin


def origin_counts(origin: ObjArray, kept: BoolArray, backend: Backend = LOCAL) -> dict[str, int]:
    """Counts of human / synthetic / unknown origin among kept rows."""
    code = np.select([origin == "human", origin == "synthetic"], [0, 1], 2)
    human, synthetic, unknown = backend.counts(np.where(kept, code, -1), 3).tolist()
    return {"human": human, "synthetic": synthetic, "unknown": unknown}


_MISSING = {
    "none": "",
    "evidence": "no provenance evidence of origin",
    "c2pa_valid": "no valid C2PA manifest",
    "c2pa_trusted": "no valid C2PA manifest from a trusted signer",
}


@register
class ProvenanceCheck(Rule):
    """Require provenance evidence (any, a valid C2PA manifest, or one from a trusted
    signer), reject images from generators matching ``reject_generators``, and optionally
    images whose C2PA manifest shows the file changed after signing."""

    rule: Literal["provenance"]
    require: Literal["none", "evidence", "c2pa_valid", "c2pa_trusted"] = "none"
    reject_generators: list[str] = Field(default_factory=list)
    """Case-insensitive shell patterns matched against the generator, e.g. ``*midjourney*``;
    the generator is any the file or sidecar names, even where its origin says human."""
    tampered: Literal["keep", "reject"] = "keep"
    """Images whose C2PA manifest fails an integrity check (e.g. assertion.dataHash.mismatch:
    changed after signing). Kept by default, their human claims count as weak evidence."""
    codes = {
        "provenance_missing": "the required provenance is absent",
        "generator_rejected": "made by a generator the policy rejects",
        "c2pa_tampered": "the C2PA manifest shows the file changed after signing",
    }

    def required_columns(self) -> frozenset[str]:
        needed = {"origin", "c2pa_state", "generator"}
        return frozenset(needed | ({"c2pa_tampered"} if self.tampered == "reject" else set()))

    def apply(self, ctx: Context) -> Verdict:
        n = ctx.n
        origin = ctx.text("origin")
        state = ctx.text("c2pa_state")
        generator = ctx.text("generator")
        required = np.ones(n, dtype=bool)
        if self.require == "evidence":
            required = np.array([o in ("human", "synthetic") for o in origin], dtype=bool)
        elif self.require == "c2pa_valid":
            required = state == "valid"
        elif self.require == "c2pa_trusted":
            required = (state == "valid") & ctx.flag("c2pa_trusted")
        patterns = [p.lower() for p in self.reject_generators]
        banned = np.array(
            [
                g is not None and any(fnmatch.fnmatchcase(str(g).lower(), p) for p in patterns)
                for g in generator
            ],
            dtype=bool,
        )
        tampered = ctx.flag("c2pa_tampered") & (self.tampered == "reject")
        bad = ctx.kept & (~required | banned | tampered)
        c2pa_codes = ctx.text("c2pa_codes")

        def reason(r: int) -> str:
            if banned[r]:
                return f"generator {generator[r]!r} is rejected by the policy"
            if tampered[r]:
                codes = [] if c2pa_codes[r] is None else list(c2pa_codes[r])
                failed = ", ".join(c for c in codes if "untrusted" not in c)
                return f"C2PA manifest fails its integrity checks ({failed}): changed after signing"
            return (
                f"{_MISSING[self.require]} (c2pa: {state[r] or 'absent'}, "
                f"origin: {origin[r] or 'unknown'})"
            )

        codes = np.where(
            banned, "generator_rejected", np.where(tampered, "c2pa_tampered", "provenance_missing")
        ).astype(object)
        return Verdict(rejected=bad, reasons=reasons(n, bad, reason), codes=codes)


@register
class MaxGeneration(Rule):
    """Reject images more than ``max`` model generations away from human data (0: human-made
    only; 1: also outputs of models trained on human data); ``unknown`` says what to do with
    images whose generation is not recorded."""

    rule: Literal["max_generation"]
    max: Annotated[int, Field(ge=0)]
    unknown: Literal["keep", "reject"]
    """Images whose generation is not recorded: keep or reject (required: no default)."""
    codes = {
        "generation_too_high": "more generations from human data than allowed",
        "generation_unknown": "generation not recorded, and the policy rejects unknown",
    }

    def apply(self, ctx: Context) -> Verdict:
        n, t = ctx.n, ctx.table
        if "generation" in t.column_names:
            column = t.column("generation")
            known = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            gen = column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        else:  # a scan without the provenance signal (or from before generations were read)
            known, gen = np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)
        too_far = ctx.kept & known & (gen > self.max)
        unknown = ctx.kept & ~known
        bad = too_far | (unknown if self.unknown == "reject" else np.zeros(n, dtype=bool))

        def reason(r: int) -> str:
            if known[r]:
                return f"generation {gen[r]} > {self.max}"
            return "generation unknown (the policy rejects unknown generations)"

        details = {
            "unknown": int(unknown.sum()),
            "unknown_policy": self.unknown,
            "over_max": int(too_far.sum()),
        }
        codes = np.where(known, "generation_too_high", "generation_unknown").astype(object)
        return Verdict(rejected=bad, reasons=reasons(n, bad, reason), codes=codes, details=details)


@register
class MaxUnknownOrigin(Rule):
    """Fail when more than ``max`` of the kept images have no evidence of their origin."""

    rule: Literal["max_unknown_origin"]
    max: Fraction
    scope = "dataset"
    codes = {
        "max_unknown_origin.ok": "the unknown-origin share is within the limit",
        "max_unknown_origin.exceeded": "too many kept images of unknown origin",
    }

    def apply(self, ctx: Context) -> Verdict:
        c = origin_counts(effective_origin(ctx.table), ctx.kept, ctx.backend)
        total = int(ctx.kept.sum())
        share = c["unknown"] / total if total else 0.0
        what = f"unknown origin {c['unknown']:,} of {total:,} kept images"
        return ceiling_verdict(self, share, self.max, what, c)
