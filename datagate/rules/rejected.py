"""A ceiling on how much of the scanned set the rules may reject."""

from __future__ import annotations

from typing import Literal

from datagate.rules.base import Context, Fraction, Rule, Verdict, ceiling_verdict, register


@register
class MaxRejectedFraction(Rule):
    """Fail when the rules rejected more than ``max`` of the scanned images."""

    rule: Literal["max_rejected_fraction"]
    max: Fraction
    scope = "dataset"
    codes = {
        "max_rejected_fraction.ok": "the rejected share is within the limit",
        "max_rejected_fraction.exceeded": "too many images rejected",
    }

    def apply(self, ctx: Context) -> Verdict:
        n = ctx.n
        rejected = n - int(ctx.kept.sum())
        share = rejected / n if n else 0.0
        return ceiling_verdict(self, share, self.max, f"rejected {rejected:,} of {n:,} images")
