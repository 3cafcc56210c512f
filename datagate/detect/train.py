"""Training detector heads (scikit-learn) and the held-out figures that describe them.

:func:`train_head` scores every image with a head fitted without it (stratified k-fold),
fits a Platt calibration on those out-of-fold scores, measures the error rates at the
decision boundary, then refits on all images. The head file format is :mod:`.head`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from datagate import __version__
from datagate.detect.head import Calibration, FloatArray, Head, IntArray, platt
from datagate.errors import InputError


def metrics(p: np.ndarray[Any, Any], y: np.ndarray[Any, Any], threshold: float) -> dict[str, Any]:
    """AUC, accuracy at ``threshold``, TPR/FPR there, TPR at 1 % and 5 % FPR (synthetic = 1)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.int64)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    pred = p >= threshold
    out: dict[str, Any] = {
        "n_synthetic": pos,
        "n_real": neg,
        "accuracy": float(np.mean(pred == (y == 1))) if len(y) else None,
        "tpr": float(pred[y == 1].mean()) if pos else None,
        "fpr": float(pred[y == 0].mean()) if neg else None,
        "auc": None,
        "tpr_at_fpr": {"0.01": None, "0.05": None},
    }
    if pos and neg:
        out["auc"] = float(roc_auc_score(y, p))
        fpr, tpr, _ = roc_curve(y, p)
        for level in (0.01, 0.05):
            out["tpr_at_fpr"][f"{level:.2f}"] = float(np.max(tpr[fpr <= level]))
    return out


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainResult:
    head: Head
    held_out: dict[str, Any]  # metrics of the out-of-fold scores
    held_out_p: FloatArray  # out-of-fold calibrated P(synthetic), one per training image
    held_out_y: IntArray


def train_head(
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    *,
    embedder: str,
    preprocessing: str,
    model: str | None = None,
    folds: int = 5,
    seed: int = 0,
    training: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit a logistic-regression head; calibrate and measure it on out-of-fold scores.

    Every image is scored once by a head fitted without it (stratified k-fold), so the
    held-out figures and the rates stored for prevalence correction rest on all the images,
    not on a small held-out slice. Rates are measured at the balanced decision boundary
    (logit 0; classes are weighted to balance), which does not move when the final head is
    refitted on all images; a Platt scaling fitted on the out-of-fold scores turns scores
    into probabilities. Regularisation is chosen by an inner cross-validation in each fold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if min(pos, neg) < 2:
        raise InputError(
            f"training needs at least 2 real and 2 synthetic images, got {neg} real and "
            f"{pos} synthetic"
        )
    folds = max(2, min(folds, pos, neg))
    z = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        z[test] = _fit(x[train], y[train], seed).logits(x[test])
    calib = LogisticRegression(C=1e4, max_iter=1000).fit(z[:, None], y)
    a, b = float(calib.coef_[0, 0]), float(calib.intercept_[0])
    p = platt(z, a, b)
    threshold = float(platt(np.zeros(1), a, b)[0])
    held_out = metrics(p, y, threshold)
    fitted = _fit(x, y, seed)
    calibration = Calibration(
        platt_a=a,
        platt_b=b,
        threshold=threshold,
        tpr=held_out["tpr"],
        fpr=held_out["fpr"],
        n_synthetic=pos,
        n_real=neg,
        auc=held_out["auc"],
        accuracy=held_out["accuracy"],
        tpr_at_fpr=held_out["tpr_at_fpr"],
        method=f"stratified {folds}-fold cross-validation (seed {seed}), out-of-fold scores",
    )
    head = Head(
        weight=fitted.weight,
        bias=fitted.bias,
        mean=fitted.mean,
        scale=fitted.scale,
        embedder=embedder,
        preprocessing=preprocessing,
        calibration=calibration,
        model=model,
        training={
            **(training or {}),
            "C": fitted.c,
            "n_real": neg,
            "n_synthetic": pos,
            "datagate_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return TrainResult(head=head, held_out=held_out, held_out_p=p, held_out_y=y)


@dataclass(frozen=True)
class _Fitted:
    weight: FloatArray
    bias: float
    mean: FloatArray
    scale: FloatArray
    c: float

    def logits(self, x: FloatArray) -> FloatArray:
        return np.asarray(((x - self.mean) / self.scale) @ self.weight + self.bias)


def _fit(x: FloatArray, y: IntArray, seed: int) -> _Fitted:
    """Standardise, then logistic regression with C chosen by inner cross-validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    model = LogisticRegression(class_weight="balanced", max_iter=2000)
    inner = int(min(3, y.sum(), len(y) - y.sum()))
    c = 1.0
    if inner >= 2:
        search = GridSearchCV(
            model,
            {"C": np.logspace(-4, 2, 7).tolist()},
            cv=StratifiedKFold(inner, shuffle=True, random_state=seed),
            scoring="roc_auc",
        ).fit(z, y)
        c = float(search.best_params_["C"])
    model.set_params(C=c).fit(z, y)
    return _Fitted(model.coef_[0].astype(np.float64), float(model.intercept_[0]), mean, scale, c)
