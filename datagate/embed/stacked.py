"""Forensic features stacked with a model's embedding (``--model forensic+SPEC``).

The scan's workers compute the forensic features and prepare the model's pixels in the same
decode (:func:`datagate.embed.models.prepare_input`); :meth:`StackedEmbedder.embed` splits
the input, standardises the features (:class:`~datagate.embed.forensic.ForensicEmbedder`),
runs the model on the pixels, and concatenates the two unit vectors, each scaled by
``1/sqrt(2)``: the result is unit length, and each half keeps its own geometry. A detector
head standardises every dimension again, so the head sees both parts on an equal footing.

The id names both parts (``forensic-v1+open_clip:ViT-B-32:openai``) and the preprocessing
id both preprocessings, so the cache key and a head's check change when either part does.

Cosines between stacked vectors are the mean of the two parts' cosines, and the forensic
part's are high for any two images (its last component carries most of the length), so
measures meant for what images show (diversity, semantic duplicates) should read the model's
columns alone: :func:`semantic_vectors`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from datagate.contract import Embeddings
from datagate.embed.forensic import ForensicEmbedder
from datagate.embed.models import Embedder, FeaturePreprocessing, Pixels, Preprocessing, Vectors
from datagate.errors import ConfigError


class StackedEmbedder:
    """The forensic features and a pixel-input model, concatenated after standardising."""

    def __init__(self, features: ForensicEmbedder, model: Embedder) -> None:
        if isinstance(model.preprocessing, FeaturePreprocessing):
            raise ConfigError(
                f"cannot stack the forensic features with {model.id}: it is not a pixel model",
                hint="stack with an image model: forensic+ViT-B-32:openai, forensic+pixel",
            )
        self.features, self.model = features, model
        self.id = f"{features.id}+{model.id}"
        self.dim = features.dim + model.dim
        self.device = model.device
        own = features.preprocessing
        assert isinstance(own, FeaturePreprocessing)
        self.preprocessing: Preprocessing = FeaturePreprocessing(
            **asdict(model.preprocessing), features=own.features, digest=own.digest, pixels=True
        )
        self._split = 4 * features.n_features
        self._scale = np.float32(1.0 / math.sqrt(2.0))

    def embed(self, pixels: Pixels) -> Vectors:
        n, size = len(pixels), self.model.preprocessing.size
        flat = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(n, -1)
        if flat.shape[1] != self._split + size * size * 3:
            raise ValueError(
                f"stacked input has {flat.shape[1]} bytes per image, expected "
                f"{self._split + size * size * 3}"
            )
        a = self.features.embed(flat[:, : self._split])
        b = self.model.embed(flat[:, self._split :].reshape(n, size, size, 3))
        return (np.concatenate([a, b], axis=1) * self._scale).astype(np.float32)


def semantic_vectors(embedder_id: str, vectors: np.ndarray[Any, Any]) -> Vectors | None:
    """The part of stored vectors that describes what images show, as unit vectors.

    For a stack, the model's columns (renormalised); for the forensic features alone, None
    (they describe how a file was made, so diversity and semantic duplicates are undefined);
    for any other embedder, the vectors themselves.
    """
    from datagate.embed.forensic import N_FEATURES, VERSION

    x = np.asarray(vectors, dtype=np.float32)
    if embedder_id == VERSION:
        return None
    if embedder_id.startswith(f"{VERSION}+"):
        part = x[:, N_FEATURES + 1 :]
        norm = np.linalg.norm(part, axis=1, keepdims=True)
        unit: Vectors = np.divide(part, norm, out=np.zeros_like(part), where=norm > 0)
        return unit
    return x


def semantic_embeddings(found: Embeddings | None) -> Embeddings | None:
    """A scan's embeddings as the rules, reports and top-up measure them: the semantic part
    (:func:`semantic_vectors`), or None when the embedder has none (forensic features)."""
    from datagate.embed.forensic import VERSION

    if found is None or not found.embedder.startswith(VERSION):
        return found  # every other embedder's vectors are semantic as stored
    vectors = semantic_vectors(found.embedder, found.vectors)
    return None if vectors is None else replace(found, vectors=vectors.astype(np.float16))
