"""Synthetic-content detector heads: a logistic regression over an embedder's vectors.

A head is a linear probe: ``z = ((x - mean) / scale) . w + b`` on the unit-length embedding
``x``, turned into a probability by a Platt calibration ``P(synthetic) = sigmoid(a z + c)``
fitted on out-of-fold scores. It is stored as safetensors (tensors ``weight``, ``bias``,
``mean``, ``scale``) with everything needed to use it honestly in the file's metadata:

* the embedder id and preprocessing id it was trained on (a head never scores vectors of
  another model: :meth:`Head.check` refuses them);
* the calibration: Platt parameters, the decision threshold, and the true and false positive
  rates measured at that threshold on out-of-fold scores (each image scored by a head that
  was not trained on it), with the counts they rest on. The dataset-level human share
  (:mod:`datagate.detect.prevalence`) is corrected with these rates, and its interval widens with
  their uncertainty.

Loading reads tensors and JSON only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from datagate import __version__
from datagate.errors import ConfigError, InputError

FORMAT = "datagate-detector"
FORMAT_VERSION = 1
DETECTOR_ENV = "DATAGATE_DETECTOR"

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


class DetectorMismatch(ConfigError):
    """A head applied to embeddings of a model or preprocessing it was not trained on."""


@dataclass(frozen=True)
class Calibration:
    """How the head's scores map to probabilities, and how well it separates held-out images.

    ``tpr`` / ``fpr`` are the rates at ``threshold`` measured on ``n_synthetic`` synthetic and
    ``n_real`` real held-out images; the prevalence correction uses them.
    """

    platt_a: float
    platt_b: float
    threshold: float
    tpr: float
    fpr: float
    n_synthetic: int
    n_real: int
    auc: float | None = None
    accuracy: float | None = None
    tpr_at_fpr: dict[str, float | None] = field(default_factory=dict)
    method: str = "cross-validation, out-of-fold scores"


@dataclass(frozen=True)
class Head:
    weight: FloatArray
    bias: float
    mean: FloatArray
    scale: FloatArray
    embedder: str
    preprocessing: str
    calibration: Calibration
    model: str | None = None  # the --model spec it was trained with (a hint for users)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def id(self) -> str:
        """Content id of the head (weights and calibration): part of a scan's config hash."""
        h = hashlib.sha256()
        for a in (self.weight, [self.bias], self.mean, self.scale):  # as stored: float32
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        h.update(json.dumps(asdict(self.calibration), sort_keys=True).encode())
        return h.hexdigest()[:16]

    def logits(self, x: np.ndarray[Any, Any]) -> FloatArray:
        """Uncalibrated scores for unit vectors ``x`` (n, dim)."""
        x = np.asarray(x, dtype=np.float64)
        w = self.weight / self.scale
        offset = self.bias - float(np.dot(self.mean / self.scale, self.weight))
        return np.asarray(x @ w + offset, dtype=np.float64)

    def proba(self, x: np.ndarray[Any, Any]) -> FloatArray:
        """Calibrated P(synthetic) for unit vectors ``x`` (n, dim)."""
        return platt(self.logits(x), self.calibration.platt_a, self.calibration.platt_b)

    def check(self, embedder: str, preprocessing: str, dim: int | None = None) -> None:
        """Refuse embeddings of another model, preprocessing or size."""
        if embedder != self.embedder or preprocessing != self.preprocessing:
            raise DetectorMismatch(
                f"detector head was trained on embeddings of {self.embedder} "
                f"(preprocessing {self.preprocessing}); these embeddings come from {embedder} "
                f"(preprocessing {preprocessing}), whose vectors mean something else",
                hint=f"scan with --model {self.model or self.embedder}, or train a head on "
                "this model's embeddings: datagate detector train --model ...",
            )
        if dim is not None and dim != self.dim:
            raise DetectorMismatch(
                f"detector head expects {self.dim}-dimensional embeddings, got {dim}"
            )


def platt(z: np.ndarray[Any, Any], a: float, b: float) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(a * z + b, -500, 500))), dtype=np.float64)


# --------------------------------------------------------------------------- files


def save_head(head: Head, path: Path) -> None:
    """Write a head as safetensors with its metadata, atomically."""
    from safetensors.numpy import save

    from datagate.io import atomic_path

    tensors = {
        "weight": np.asarray(head.weight, dtype=np.float32),
        "bias": np.asarray([head.bias], dtype=np.float32),
        "mean": np.asarray(head.mean, dtype=np.float32),
        "scale": np.asarray(head.scale, dtype=np.float32),
    }
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "embedder": head.embedder,
        "preprocessing": head.preprocessing,
        "model": head.model or "",
        "calibration": json.dumps(asdict(head.calibration), sort_keys=True),
        "training": json.dumps(head.training, sort_keys=True, default=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(tensors, metadata=metadata))


def load_head(path: Path) -> Head:
    """Read a head written by :func:`save_head` (safetensors: no code runs on load)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise InputError(f"{path}: detector head not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not a safetensors file ({exc})",
            hint="datagate loads detector heads only from safetensors files written by "
            "`datagate detector train`; pickled checkpoints are refused",
        ) from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: safetensors file is not a datagate detector head")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise InputError(
            f"{path}: detector head format version {meta.get('format_version')!r}, "
            f"this datagate reads version {FORMAT_VERSION}"
        )
    try:
        weight = tensors["weight"].astype(np.float64)
        dim = weight.shape[0]
        mean, scale = tensors["mean"].astype(np.float64), tensors["scale"].astype(np.float64)
        if weight.ndim != 1 or mean.shape != (dim,) or scale.shape != (dim,):
            raise ValueError("tensor shapes disagree")
        if not np.all(np.isfinite(weight)) or not np.all(scale > 0):
            raise ValueError("weights are not finite or scales not positive")
        calibration = Calibration(**json.loads(meta["calibration"]))
        return Head(
            weight=weight,
            bias=float(tensors["bias"].reshape(-1)[0]),
            mean=mean,
            scale=scale,
            embedder=meta["embedder"],
            preprocessing=meta["preprocessing"],
            calibration=calibration,
            model=meta.get("model") or None,
            training=json.loads(meta.get("training") or "{}"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed detector head: {exc}") from exc


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- scan columns


def attach_scores(
    table: Any, keys: np.ndarray[Any, Any], scores: np.ndarray[Any, Any], schema: Any
) -> Any:
    """Append the detector columns to scan rows: ``scores[i]`` belongs to ``keys[i]``.

    The result has ``schema``. ``p_synthetic`` is the head's score unless the row's
    provenance verdict is definitive, which then decides (1.0 synthetic, 0.0 human);
    ``p_synthetic_source`` says which.
    """
    import pyarrow as pa

    n = table.num_rows
    index = {k: i for i, k in enumerate(np.asarray(keys).tolist())}
    score = np.full(n, np.nan, dtype=np.float32)
    for row, key in enumerate(table.column("key").to_pylist()):
        at = index.get(key)
        if at is not None:
            score[row] = scores[at]
    final = score.copy()
    source = np.full(n, None, dtype=object)
    source[~np.isnan(score)] = "detector"
    if "origin" in table.column_names:
        origin = np.asarray(table.column("origin").to_pylist(), dtype=object)
        strength = np.asarray(table.column("origin_strength").to_pylist(), dtype=object)
        definitive = (strength == "definitive") & np.isin(origin, ["human", "synthetic"])
        final[definitive] = (origin[definitive] == "synthetic").astype(np.float32)
        source[definitive] = "provenance"
    columns = {
        "detector_score": pa.array(score, pa.float32(), mask=np.isnan(score)),
        "p_synthetic": pa.array(final, pa.float32(), mask=np.isnan(final)),
        "p_synthetic_source": pa.array(source.tolist(), pa.string()),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table.cast(schema)  # ``images_schema(signals, detector_id)``
