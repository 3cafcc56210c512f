"""Origin: each row's origin as rules and reports count it, and the per-image provenance
rules (required evidence, rejected generators, generations) and the unknown-origin ceiling."""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from datagate.provenance.evidence import STRENGTH_RANK, Evidence, decide
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


_MISSING = {
    "none": "",
    "evidence": "no provenance evidence of origin",
    "c2pa_valid": "no valid C2PA manifest",
    "c2pa_trusted": "no valid C2PA manifest from a trusted signer",
}


@register
class ProvenanceCheck(Rule):
    """Require provenance evidence (any, a valid C2PA manifest, or one from a trusted
    signer), and reject images from generators matching ``reject_generators``."""

    rule: Literal["provenance"]
    require: Literal["none", "evidence", "c2pa_valid", "c2pa_trusted"] = "none"
    reject_generators: list[str] = Field(default_factory=list)
    """Case-insensitive shell patterns matched against the generator, e.g. ``*midjourney*``."""
    codes = {
        "provenance_missing": "the required provenance is absent",
        "generator_rejected": "made by a generator the policy rejects",
    }

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
        bad = ctx.kept & (~required | banned)

        def reason(r: int) -> str:
            if banned[r]:
                return f"generator {generator[r]!r} is rejected by the policy"
            return (
                f"{_MISSING[self.require]} (c2pa: {state[r] or 'absent'}, "
                f"origin: {origin[r] or 'unknown'})"
            )

        codes = np.where(banned, "generator_rejected", "provenance_missing").astype(object)
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
        c = origin_counts(effective_origin(ctx.table), ctx.kept)
        total = int(ctx.kept.sum())
        share = c["unknown"] / total if total else 0.0
        what = f"unknown origin {c['unknown']:,} of {total:,} kept images"
        return ceiling_verdict(self, share, self.max, what, c)
