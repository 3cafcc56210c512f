"""The dataset's human share: provenance counted exactly, the rest estimated, with an interval.

Images whose provenance decides their origin are counted exactly. The remaining images that
carry a detector score are *not* counted by hard labels: a detector that calls 10 % of real
photographs synthetic would otherwise lower every share by up to 10 points. Instead the
synthetic prevalence among them is estimated by adjusted classify-and-count (Forman 2008)::

    q  = share of scored images with P(synthetic) >= threshold
    pi = clip((q - FPR) / (TPR - FPR), 0, 1)

with the head's TPR and FPR at that threshold, measured on held-out images
(:class:`datagate.detect.head.Calibration`). The 95 % interval comes from redrawing the three
measured rates (``q`` over the scored images; TPR and FPR over the held-out images they were
measured on) from their Jeffreys posteriors, a smoothed parametric bootstrap, so a head
measured on few images, or one that barely separates, gives a wide interval.

To say how many humans a *subset* of the scored images holds (the ``action: filter`` step
drops the most-likely-synthetic first), each image's calibrated probability is shifted to the
estimated prevalence (Saerens et al. 2002) and the subset's share of the expected human mass
is taken; over the whole scored set this equals the estimate above exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from datagate.detect.head import Calibration

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
Unknown = Literal["not_human", "exclude", "human"]

RESAMPLES = 2000
CONFIDENCE = 0.95
BINS = 512
#: Below this TPR - FPR the head carries too little information to correct with.
MIN_SEPARATION = 0.05


@dataclass(frozen=True)
class ShareEstimate:
    share: float | None
    low: float | None
    high: float | None
    human_exact: int
    synthetic_exact: int
    scored: int
    unscored: int
    scored_human: float | None  # estimated human images among the scored ones
    method: str
    confidence: float = CONFIDENCE
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class ShareModel:
    """The estimate for the whole kept set and for the subsets a filter would keep."""

    def __init__(
        self,
        human: int,
        synthetic: int,
        scores: np.ndarray[Any, Any],
        unscored: int,
        unknown: Unknown,
        calibration: Calibration | None,
        *,
        resamples: int = RESAMPLES,
        confidence: float = CONFIDENCE,
        seed: int = 0,
    ) -> None:
        self.human, self.synthetic, self.unscored = human, synthetic, unscored
        self.unknown, self.confidence = unknown, confidence
        self.scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]  # most synthetic first
        self.calibration = calibration
        self.note: str | None = None
        m = len(self.scores)
        if m and calibration is None:
            self.note = "scores present but the scan recorded no detector calibration"
        elif m and calibration is not None and not separates(calibration):
            self.note = (
                f"the detector head does not clearly separate held-out images (TPR "
                f"{calibration.tpr:.2f}, FPR {calibration.fpr:.2f} on {calibration.n_synthetic:,}"
                f" synthetic and {calibration.n_real:,} real); its scores are not used"
            )
        self.usable = m > 0 and self.note is None
        if not self.usable:
            self.unscored += m  # scores that cannot be used: unknown origin again
            self.scores = self.scores[:0]
            return
        assert calibration is not None
        cal = calibration
        rng = np.random.default_rng(seed)
        self.edges = np.unique(np.r_[np.linspace(0.0, 1.0, BINS + 1), cal.threshold])
        self.edges[-1] = np.nextafter(1.0, 2.0)  # include p == 1 in the last bin
        total_hist, sums = self._hist(self.scores)
        self.bin_p = np.where(total_hist > 0, sums / np.maximum(total_hist, 1), 0.0)
        self.total_hist = total_hist
        q = float(np.mean(self.scores >= cal.threshold))
        tpr = np.r_[cal.tpr, _rate_draws(rng, cal.tpr, cal.n_synthetic, resamples)]
        fpr = np.r_[cal.fpr, _rate_draws(rng, cal.fpr, cal.n_real, resamples)]
        qs = np.r_[q, _rate_draws(rng, q, m, resamples)]
        # row 0 is the point estimate, rows 1.. the bootstrap replicates
        gap = tpr - fpr
        gap = np.where(np.abs(gap) < 1e-3, np.where(gap < 0, -1e-3, 1e-3), gap)
        self.pi = np.clip((qs - fpr) / gap, 0.0, 1.0)
        prior = cal.n_synthetic / (cal.n_synthetic + cal.n_real)
        self.human_mass = self._human_mass(prior)  # (replicates, bins)
        whole = self.human_mass @ total_hist
        self.scale = np.where(whole > 0, (1.0 - self.pi) * m / np.maximum(whole, 1e-12), 0.0)

    def _hist(self, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
        counts, _ = np.histogram(scores, self.edges)
        sums, _ = np.histogram(scores, self.edges, weights=scores)
        return counts.astype(np.float64), sums

    def _human_mass(self, prior: float) -> FloatArray:
        """P(human | score) shifted to each replicate's prevalence, per score bin."""
        p = np.clip(self.bin_p, 1e-9, 1 - 1e-9)[None, :]
        pi = self.pi[:, None]
        syn = (pi / prior) * p
        hum = ((1.0 - pi) / (1.0 - prior)) * (1.0 - p)
        return np.asarray(hum / np.maximum(syn + hum, 1e-300))

    # ----------------------------------------------------------------- estimates

    def _replicates(self, drop_synthetic: int, drop_scored: int) -> tuple[FloatArray, int]:
        """Human counts per replicate (row 0: point) and the denominator, after dropping
        ``drop_synthetic`` exact-synthetic and the ``drop_scored`` top-scored images."""
        unscored_human = self.unscored if self.unknown == "human" else 0
        den = self.human + self.synthetic - drop_synthetic + unscored_human
        if self.unknown == "not_human":
            den += self.unscored
        humans = np.full(1 if not self.usable else len(self.pi), float(self.human + unscored_human))
        if self.usable:
            kept, _ = self._hist(self.scores[drop_scored:])
            humans = humans + self.scale * (self.human_mass @ kept)
            den += len(self.scores) - drop_scored
        return humans, den

    def estimate(self, drop_synthetic: int = 0, drop_scored: int = 0) -> ShareEstimate:
        humans, den = self._replicates(drop_synthetic, drop_scored)
        scored = len(self.scores) - drop_scored
        method = "provenance counts"
        if self.usable:
            method = "provenance counts + adjusted classify-and-count (bootstrap interval)"
        if den <= 0:
            return ShareEstimate(
                None, None, None, self.human, self.synthetic - drop_synthetic, scored,
                self.unscored, None, method, self.confidence, self.note,
            )  # fmt: skip
        shares = humans / den
        point = float(shares[0])
        low = high = point
        if not self.usable and self.unscored and self.unknown != "exclude":
            # nothing says what the unknown images are: the share lies between "none of them
            # is human" and "all of them are" (the policy's ``unknown`` picks the point)
            none_human = self.human / den
            all_human = (self.human + self.unscored) / den
            low, high = min(low, none_human), max(high, all_human)
        if self.usable:
            alpha = (1.0 - self.confidence) / 2
            low, high = (float(v) for v in np.quantile(shares[1:], [alpha, 1 - alpha]))
            low, high = min(low, point), max(high, point)
        scored_human = float(humans[0] - self.human) if self.usable else None
        if self.usable and self.unknown == "human":
            scored_human = float(humans[0] - self.human - self.unscored)
        return ShareEstimate(
            point, low, high, self.human, self.synthetic - drop_synthetic, scored,
            self.unscored, scored_human, method, self.confidence, self.note,
        )  # fmt: skip

    def filter_to(
        self, floor: float, bound: Literal["estimate", "lower"]
    ) -> tuple[int, int] | None:
        """The fewest drops (exact-synthetic first, then by descending score) after which the
        kept set's estimate (or its lower bound) reaches ``floor``: (synthetic, scored).

        None when even dropping every candidate would not reach the floor (then nothing
        should be dropped: the dataset needs more human data, not less synthetic).
        """
        steps = self.synthetic + len(self.scores)

        def split(k: int) -> tuple[int, int]:
            return min(k, self.synthetic), max(0, k - self.synthetic)

        def value(k: int) -> float:
            est = self.estimate(*split(k))
            v = est.share if bound == "estimate" else est.low
            return -1.0 if v is None else v

        if value(0) >= floor:
            return 0, 0
        # coarse grid, then bisection between the last miss and the first hit on it
        grid = _grid(steps)
        hi = next((k for k in grid if value(k) >= floor), None)
        if hi is None:
            return None
        lo = max([k for k in grid if k < hi] or [0])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if value(mid) >= floor:
                hi = mid
            else:
                lo = mid
        return split(hi)


def separates(calibration: Calibration) -> bool:
    """Whether held-out TPR - FPR is clearly positive: at least MIN_SEPARATION, and its
    lower 95 % bound (normal approximation) above zero."""
    c = calibration
    gap = c.tpr - c.fpr
    se = np.sqrt(
        c.tpr * (1 - c.tpr) / max(c.n_synthetic, 1) + c.fpr * (1 - c.fpr) / max(c.n_real, 1)
    )
    return bool(gap >= MIN_SEPARATION and gap - 1.96 * se > 0)


def _rate_draws(rng: np.random.Generator, rate: float, n: int, size: int) -> FloatArray:
    """Plausible values of a rate measured as ``rate`` on ``n`` images: draws from its
    Jeffreys posterior, Beta(k + 1/2, n - k + 1/2). Unlike resampling the counts, this keeps
    a spread when the measured rate is 0 or 1 (a head with 0 false positives on 20 real
    images does not have a false positive rate of exactly 0)."""
    k = rate * n
    return np.asarray(rng.beta(k + 0.5, n - k + 0.5, size), dtype=np.float64)


def _grid(steps: int, points: int = 64) -> list[int]:
    return sorted({int(v) for v in np.rint(np.linspace(0, steps, min(points, steps + 1)))})
