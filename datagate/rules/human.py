"""The floor of human data: the kept set's human share, from provenance and the detector."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from datagate.detect.prevalence import ShareModel
from datagate.rules.base import BoolArray, Context, Fraction, ObjArray, Rule, Verdict, register
from datagate.rules.origin import effective_origin, origin_counts

Strength = Literal["weak", "strong", "definitive"]
_HOW = {"not_human": "counted as not human", "exclude": "excluded", "human": "counted as human"}


@register
class MinHuman(Rule):
    """Fail when the kept set's human share is below ``min``: provenance counts exactly,
    images of unknown origin with a detector score are estimated (with a 95 % interval),
    the rest follow ``unknown``. With ``action: filter``, first drop the most likely
    synthetic images until the floor holds."""

    rule: Literal["min_human"]
    min: Fraction
    unknown: Literal["not_human", "exclude", "human"] = "not_human"
    human_evidence: Strength = "weak"
    """Weakest evidence that lets an image count as human (weaker counts as unknown)."""
    untrusted_c2pa: Literal["count", "ignore"] = "count"
    """Whether claims of valid C2PA manifests from signers not on a trust list count."""
    bound: Literal["estimate", "lower"] = "estimate"
    """Gate on the point estimate or on the lower end of its 95 % interval (the interval
    comes from the detector's scores; with provenance alone both are the exact count)."""
    action: Literal["fail", "filter"] = "fail"
    """fail: only judge; filter: first drop the most-likely-synthetic kept images (synthetic
    provenance first, then by descending P(synthetic); never an image with human evidence)
    until the estimate, or its lower bound, reaches ``min``."""
    scope = "dataset"
    needs = frozenset({"calibration"})
    codes = {
        "min_human.ok": "the human share reaches the floor",
        "min_human.below_floor": "the human share is below the floor",
        "min_human.unmeasurable": "no kept image has known origin",
        "synthetic_provenance": "filtered: synthetic by provenance",
        "likely_synthetic": "filtered: highest P(synthetic) among images of unknown origin",
    }

    def apply(self, ctx: Context) -> Verdict:
        t, kept = ctx.table, ctx.kept
        origin = effective_origin(t, self)
        c = origin_counts(origin, kept, ctx.backend)
        unknown_rows = kept & (origin == "unknown")
        score = ctx.num("detector_score")
        scored_rows = unknown_rows & ~np.isnan(score)
        model = ShareModel(
            c["human"],
            c["synthetic"],
            score[scored_rows],
            int((unknown_rows & np.isnan(score)).sum()),
            self.unknown,
            ctx.calibration,
        )
        estimate = model.estimate()
        verdict = Verdict(threshold=self.min)
        unreachable = False
        if self.action == "filter" and not self._passes(estimate):
            drops = model.filter_to(self.min, self.bound)
            unreachable = drops is None
            drop_synthetic, drop_scored = drops or (0, 0)
            if drop_synthetic or drop_scored:
                synthetic = kept & (origin == "synthetic")
                self._drop(
                    ctx, verdict, synthetic, scored_rows, score, (drop_synthetic, drop_scored)
                )
                estimate = model.estimate(drop_synthetic, drop_scored)
                c = {**c, "synthetic": c["synthetic"] - drop_synthetic}
        value = estimate.share if self.bound == "estimate" else estimate.low
        verdict.value = value
        verdict.details = {
            **c,
            "unknown_counts_as": self.unknown,
            "human_evidence": self.human_evidence,
            "untrusted_c2pa": self.untrusted_c2pa,
            "evidence": "provenance + detector" if model.usable else "provenance",
            "bound": self.bound,
            "estimate": estimate.as_dict(),
        }
        dropped = 0 if verdict.rejected is None else int(verdict.rejected.sum())
        if verdict.rejected is not None:
            verdict.details["filtered"] = dropped
        # Images with provenance that this rule does not count (weak human evidence, untrusted
        # C2PA) count as unknown here, but are not "unknown origin" (max_unknown_origin and
        # the report's composition count them by their provenance): say so apart.
        now_kept = kept if verdict.rejected is None else kept & ~verdict.rejected
        discounted = now_kept & (origin == "unknown") & (effective_origin(t) != "unknown")
        n_discounted = int(discounted.sum())
        unscored = estimate.unscored - int((discounted & np.isnan(score)).sum())
        if n_discounted:
            verdict.details["discounted"] = n_discounted
        counts = f"{c['human']:,} human, {c['synthetic']:,} synthetic"
        if model.usable:
            counts += (
                f" by provenance; {estimate.scored:,} scored by the detector, of them "
                f"~{estimate.scored_human or 0:,.0f} human"
            )
            if unscored:
                counts += f"; {unscored:,} unscored unknown origin"
            if n_discounted:
                counts += f"; {self._discounted(n_discounted)}"
        else:
            counts += f", {unscored:,} unknown origin"
            if n_discounted:
                counts += f", {self._discounted(n_discounted)}"
        if "origin" not in t.column_names:
            counts += "; the scan has no provenance signal, so every image's origin is unknown"
        if model.note:
            counts += f"; {model.note}"
        if verdict.rejected is not None:
            counts += f"; {dropped:,} likely-synthetic images dropped"
        if unreachable:
            counts += (
                "; nothing dropped: even without every synthetic and scored image the floor "
                "would not be shown"
            )
        if value is None:
            verdict.passed, verdict.code = False, "min_human.unmeasurable"
            verdict.message = (
                f"human share cannot be measured: no kept image has known origin ({counts}); "
                f"a floor of {self.min:.0%} cannot be shown"
            )
            return verdict
        verdict.passed = value >= self.min
        verdict.code = "min_human.ok" if verdict.passed else "min_human.below_floor"
        sign = ">=" if verdict.passed else "<"
        if not model.usable:
            lead = "human share" if self.bound == "estimate" else "human share (exact count)"
            verdict.message = (
                f"{lead} {value:.1%} {sign} {self.min:.0%} ({counts}; unknown {_HOW[self.unknown]})"
            )
            return verdict
        assert estimate.share is not None and estimate.low is not None
        interval = (
            f"{estimate.confidence:.0%} interval {estimate.low:.1%} to {(estimate.high or 0):.1%}"
        )
        if self.bound == "estimate":
            lead = f"estimated human share {estimate.share:.1%} ({interval})"
        else:
            lead = (
                f"lower bound of the human share {estimate.low:.1%} "
                f"(estimate {estimate.share:.1%}, {interval})"
            )
        verdict.message = (
            f"{lead} {sign} {self.min:.0%} ({counts}; unscored unknown {_HOW[self.unknown]})"
        )
        return verdict

    def _discounted(self, n: int) -> str:
        """``2 counted as unknown (human evidence weaker than strong)``."""
        why = []
        if self.human_evidence != "weak":
            why.append(f"human evidence weaker than {self.human_evidence}")
        if self.untrusted_c2pa == "ignore":
            why.append("C2PA from an untrusted signer")
        because = " or ".join(why) or "provenance without a strength"
        return f"{n:,} with provenance counted as unknown ({because})"

    def _passes(self, estimate: Any) -> bool:
        value = estimate.share if self.bound == "estimate" else estimate.low
        return value is not None and value >= self.min

    @staticmethod
    def _drop(
        ctx: Context,
        verdict: Verdict,
        synthetic_rows: BoolArray,
        scored_rows: BoolArray,
        score: np.ndarray[Any, Any],
        drops: tuple[int, int],
    ) -> None:
        """The rows a filter drops: synthetic provenance first, then the top scores."""
        drop_synthetic, drop_scored = drops
        mask = np.zeros(ctx.n, dtype=bool)
        why: ObjArray = ctx.none()
        codes: ObjArray = ctx.none()
        generator = ctx.text("generator")
        for r in np.flatnonzero(synthetic_rows)[:drop_synthetic].tolist():
            mask[r] = True
            made = f" ({generator[r]})" if generator[r] else ""
            why[r] = f"synthetic by provenance{made}; dropped to raise the human share"
            codes[r] = "synthetic_provenance"
        candidates = np.flatnonzero(scored_rows)
        order = candidates[np.argsort(-score[candidates], kind="stable")][:drop_scored]
        for r in order.tolist():
            mask[r] = True
            why[r] = (
                f"likely synthetic: P(synthetic) {score[r]:.3f}; dropped to raise the human share"
            )
            codes[r] = "likely_synthetic"
        verdict.rejected, verdict.reasons, verdict.codes = mask, why, codes
