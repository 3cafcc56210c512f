"""A floor on the kept set's diversity, measured on its embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from datagate.measures import diversity, semantic
from datagate.rules.base import NO_VECTORS, Context, Fraction, Rule, Verdict, register
from datagate.rules.origin import effective_origin


@register
class MinDiversity(Rule):
    """Fail when the kept set's diversity (index, Vendi score or mean cosine distance of the
    embeddings) is below ``min``. With ``action: filter``, first drop the most redundant
    kept images (never one with human evidence), up to ``max_drop``."""

    rule: Literal["min_diversity"]
    metric: Literal["index", "vendi", "mean_cosine_distance"] = "index"
    min: Annotated[float, Field(ge=0.0)]
    q: Annotated[float, Field(gt=0.0)] = 1.0
    """Order of the Vendi score (1: Shannon; larger weighs dominant modes more)."""
    action: Literal["fail", "filter"] = "fail"
    """fail: only judge; filter: first drop the most redundant kept images (never one with
    human evidence) until the metric reaches ``min`` or ``max_drop`` is spent."""
    max_drop: Fraction = 0.5
    """With action filter: at most this share of the kept images may be dropped."""
    scope = "dataset"
    needs = frozenset({"vectors"})
    codes = {
        "min_diversity.ok": "the diversity reaches the floor",
        "min_diversity.below_min": "the diversity is below the floor",
        "min_diversity.unmeasurable": "no embeddings, or fewer than 2 kept images have one",
        "redundant": "filtered: the most redundant kept images",
    }

    def apply(self, ctx: Context) -> Verdict:
        label = {"index": "diversity index", "vendi": "Vendi score"}.get(self.metric, self.metric)
        verdict = Verdict(threshold=self.min)
        if ctx.vectors is None:
            verdict.passed, verdict.code = False, "min_diversity.unmeasurable"
            verdict.message = f"{label} cannot be measured: {NO_VECTORS}"
            return verdict
        rows, x = ctx.vectors.subset(ctx.kept)
        verdict.details = {"embedder": ctx.vectors.embedder, "metric": self.metric, "q": self.q}
        if self.action == "filter" and len(rows) > 2:
            found = semantic.semantic_duplicates(x, 1.0)  # only the per-image redundancy
            human = effective_origin(ctx.table)[rows] == "human"
            candidates = np.flatnonzero(~human)
            order = candidates[np.argsort(-found.redundancy[candidates], kind="stable")]
            order = order[: int(self.max_drop * len(rows))]
            count, _ = diversity.drop_until(x, order, self.metric, self.min, self.q)
            drop = order[:count]
            mask = np.zeros(ctx.n, dtype=bool)
            mask[rows[drop]] = True
            keys = ctx.text("key")
            why = ctx.none()
            for i in drop.tolist():
                why[rows[i]] = (
                    f"redundant: cosine {found.redundancy[i]:.3f} to "
                    f"{keys[rows[found.nearest[i]]]} (dropped to raise the {label} toward "
                    f"{self.min})"
                )
            verdict.rejected, verdict.reasons, verdict.codes = mask, why, "redundant"
            verdict.details["filtered"] = int(count)
            keep_local = np.ones(len(rows), dtype=bool)
            keep_local[drop] = False
            x = x[keep_local]
        value = diversity.Running(x).value(self.metric, self.q) if len(x) >= 2 else None
        verdict.value = value
        verdict.details["images"] = len(x)
        if value is None:
            verdict.passed, verdict.code = False, "min_diversity.unmeasurable"
            verdict.message = (
                f"{label} cannot be measured: fewer than 2 kept images have embeddings"
            )
            return verdict
        verdict.passed = value >= self.min
        verdict.code = "min_diversity.ok" if verdict.passed else "min_diversity.below_min"
        dropped = verdict.details.get("filtered")
        verdict.message = (
            f"{label} {value:.3f} {'>=' if verdict.passed else '<'} {self.min} over "
            f"{len(x):,} kept images ({ctx.vectors.embedder}"
            + (f"; {dropped:,} redundant images dropped" if dropped else "")
            + ")"
        )
        return verdict
