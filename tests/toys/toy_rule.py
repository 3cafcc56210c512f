"""A rule added from outside datagate, on the toy signal's column, registered once."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from datagate.rules import Context, Rule, Verdict, register
from datagate.rules.base import reasons


@register
class MaxRedness(Rule):
    """Reject images with more than ``max`` of their pixels pure red."""

    rule: Literal["toy_max_redness"]
    max: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """Largest share of pure-red pixels an image may have."""
    codes = {"too_red": "more pure-red pixels than allowed"}

    def apply(self, ctx: Context) -> Verdict:
        redness = ctx.num("redness", 0.0)
        bad = ctx.kept & (redness > self.max)
        why = reasons(ctx.n, bad, lambda r: f"redness {redness[r]:.2f} > {self.max}")
        return Verdict(rejected=bad, reasons=why, codes="too_red")
