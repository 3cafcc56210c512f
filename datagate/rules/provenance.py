"""Per-image provenance rules, and the dataset's share of unknown origin."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from datagate.rules.base import Context, Rule, Verdict, reasons, register
from datagate.rules.origin import effective_origin, origin_counts

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

_NEED = {
    "none": "",
    "evidence": "provenance evidence of origin",
    "c2pa_valid": "a valid C2PA manifest",
    "c2pa_trusted": "a valid C2PA manifest from a trusted signer",
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
                f"no {_NEED[self.require]} (c2pa: {state[r] or 'absent'}, "
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
        passed = share <= self.max
        return Verdict(
            passed=passed,
            code=f"max_unknown_origin.{'ok' if passed else 'exceeded'}",
            value=share,
            threshold=self.max,
            details=c,
            message=(
                f"unknown origin {c['unknown']:,} of {total:,} kept images ({share:.1%}) "
                f"{'<=' if passed else '>'} {self.max:.0%}"
            ),
        )
