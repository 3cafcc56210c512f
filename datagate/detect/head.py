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
from pathlib import Path
from typing import Any

import numpy as np

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
    def model_spec(self) -> str:
        """The --model spec that reproduces the embeddings this head was trained on."""
        return self.model or self.embedder.removeprefix("open_clip:")

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
