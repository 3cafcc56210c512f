"""A ceiling on how much of the scanned set the rules may reject."""

from __future__ import annotations

from typing import Literal

from datagate.rules.base import Context, Fraction, Rule, Verdict, register


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
        passed = share <= self.max
        return Verdict(
            passed=passed,
            code=f"max_rejected_fraction.{'ok' if passed else 'exceeded'}",
            value=share,
            threshold=self.max,
            message=(
                f"rejected {rejected:,} of {n:,} images ({share:.1%}) "
                f"{'<=' if passed else '>'} {self.max:.0%}"
            ),
        )
