"""Rights: honour the rights holder's declared opt-out of generative AI training."""

from __future__ import annotations

from typing import Literal

import numpy as np

from datagate.rules.base import Context, Rule, Verdict, reasons, register


@register
class RespectOptOut(Rule):
    """Reject images whose rights holder opted out of generative AI training: a C2PA/CAWG
    training-and-data-mining assertion, XMP ``plus:DataMining``, or a sidecar's
    ``ai_training`` or ``noai`` tag (scan column ``rights_training``)."""

    rule: Literal["respect_opt_out"]
    constrained: Literal["keep", "reject"] = "reject"
    """Images whose permission is ``constrained`` (granted only on conditions): reject (the
    CAWG reading when nothing more is known) or keep (the conditions were checked)."""
    columns = frozenset({"rights_training"})
    codes = {
        "opted_out": "the rights holder does not allow generative AI training",
        "constrained_use": "generative AI training is allowed only on conditions",
    }

    def apply(self, ctx: Context) -> Verdict:
        n = ctx.n
        use = ctx.text("rights_training")
        source = ctx.text("rights_source")
        not_allowed = use == "notAllowed"
        constrained = (use == "constrained") & (self.constrained == "reject")
        bad = ctx.kept & (not_allowed | constrained)

        def reason(r: int) -> str:
            what = "does not allow" if not_allowed[r] else "allows only on conditions"
            return f"the rights holder {what} generative AI training ({source[r]})"

        codes = np.where(not_allowed, "opted_out", "constrained_use").astype(object)
        return Verdict(rejected=bad, reasons=reasons(n, bad, reason), codes=codes)
