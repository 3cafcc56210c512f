"""Rules against a preserved human baseline: does the kept set still cover what it covered?

They compare the kept set's embeddings with a frozen reference scan (``enforce --reference
REF_SCAN`` or the policy's ``reference:``) through :mod:`datagate.measures.reference`; the
measures are computed once per run and shared by every rule and the report.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from datagate.measures.reference import DEFAULT_K, ReferenceMeasures, compare
from datagate.rules.base import (
    NO_VECTORS,
    BoolArray,
    Context,
    Fraction,
    Reference,
    RowVectors,
    Rule,
    Verdict,
    register,
)

NO_REFERENCE = (
    "no reference scan: pass `datagate enforce --reference REF_SCAN` or set `reference:` in "
    "the policy (a scan folder of the preserved human baseline, same embedder)"
)
K = Annotated[int, Field(ge=1, le=100)]


def shared_measures(
    shared: dict[Any, Any], vectors: RowVectors, reference: Reference, mask: BoolArray, k: int
) -> ReferenceMeasures | None:
    """The rows in ``mask`` against the reference, computed once per run, mask and k (rules
    and the report share ``shared``); None when no selected row has an embedding."""
    rows, x = vectors.subset(mask)
    if len(rows) == 0:
        return None
    key = ("reference", k, hashlib.sha1(mask.tobytes()).hexdigest())
    if key not in shared:
        shared[key] = compare(x, reference.vectors, k)
    found: ReferenceMeasures = shared[key]
    return found


def measures_of(ctx: Context, k: int) -> ReferenceMeasures | str:
    """The kept set against the reference, or why it cannot be measured."""
    if ctx.vectors is None:
        return NO_VECTORS
    if ctx.reference is None:
        return NO_REFERENCE
    found = shared_measures(ctx.shared, ctx.vectors, ctx.reference, ctx.kept, k)
    return "no kept image has an embedding" if found is None else found


class _ReferenceRule(Rule):
    scope = "dataset"
    needs = frozenset({"vectors", "reference"})
    #: the ReferenceMeasures field judged, and which way is better
    measure: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True

    def judge(self, ctx: Context, limit: float, k: int) -> Verdict:
        name = self.rule_name
        found = measures_of(ctx, k)
        if isinstance(found, str):
            return Verdict(
                passed=False,
                code=f"{name}.unmeasurable",
                threshold=limit,
                message=f"{self.measure} cannot be measured: {found}",
            )
        value = float(getattr(found, self.measure))
        passed = value >= limit if self.higher_is_better else value <= limit
        sign = (">=" if passed else "<") if self.higher_is_better else ("<=" if passed else ">")
        bad = "below_min" if self.higher_is_better else "above_max"
        assert ctx.reference is not None
        return Verdict(
            passed=passed,
            code=f"{name}.{'ok' if passed else bad}",
            value=value,
            threshold=limit,
            details=found.as_dict() | {"reference": ctx.reference.source},
            message=(
                f"{self.measure} {value:.3f} {sign} {limit:g} against the reference "
                f"({found.n:,} kept vs {found.n_reference:,} reference images, k={k})"
            ),
        )


@register
class MinCoverage(_ReferenceRule):
    """Fail when the kept set covers less than ``min`` of the reference (Naeem et al.'s
    coverage: the share of reference images whose k-NN ball holds a kept image)."""

    rule: Literal["min_coverage"]
    min: Fraction
    k: K = DEFAULT_K
    """Neighbours that set each reference image's ball radius."""
    measure = "coverage"
    codes = {
        "min_coverage.ok": "the kept set covers enough of the reference",
        "min_coverage.below_min": "the kept set covers too little of the reference",
        "min_coverage.unmeasurable": "no reference scan or no embeddings",
    }

    def apply(self, ctx: Context) -> Verdict:
        return self.judge(ctx, self.min, self.k)


@register
class MinRecall(_ReferenceRule):
    """Fail when the kept set's recall against the reference is below ``min``
    (Kynkäänniemi et al.: the share of reference images inside the kept set's k-NN balls)."""

    rule: Literal["min_recall"]
    min: Fraction
    k: K = DEFAULT_K
    """Neighbours that set each kept image's ball radius."""
    measure = "recall"
    codes = {
        "min_recall.ok": "the kept set reaches enough of the reference",
        "min_recall.below_min": "the kept set misses too much of the reference",
        "min_recall.unmeasurable": "no reference scan or no embeddings",
    }

    def apply(self, ctx: Context) -> Verdict:
        return self.judge(ctx, self.min, self.k)


@register
class MaxFrechet(_ReferenceRule):
    """Fail when the Fréchet distance between the kept set's and the reference's embedding
    distributions (Gaussians fitted to each) exceeds ``max``."""

    rule: Literal["max_frechet"]
    max: Annotated[float, Field(ge=0.0)]
    measure = "frechet"
    higher_is_better = False
    codes = {
        "max_frechet.ok": "the kept set's distribution is close enough to the reference's",
        "max_frechet.above_max": "the kept set's distribution drifted from the reference's",
        "max_frechet.unmeasurable": "no reference scan or no embeddings",
    }

    def apply(self, ctx: Context) -> Verdict:
        return self.judge(ctx, self.max, DEFAULT_K)
