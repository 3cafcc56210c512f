"""Semantic duplicates, SemDeDup-style (Abbas et al., 2023), with no n x n matrix.

1. Spherical k-means (faiss) on the unit embeddings; k defaults to ``ceil(n / 1000)``,
   trained on at most 256 points per centroid.
2. Within each cluster, images are ordered by a keep preference (the caller's; the rules
   put human-evidenced images first, then the largest, then scan order). An image is a
   semantic duplicate when an image *earlier in that order* in its cluster has cosine
   similarity >= ``threshold``; it is attributed to the most similar earlier image, and
   followed back to the first image of its chain, which is always kept.
3. Similarities are computed block by block (``BLOCK`` rows against the cluster), so memory
   is O(BLOCK x largest cluster), never n x n.

Pairs split across two clusters are missed, as in SemDeDup; at thresholds >= 0.9 such
pairs are rare because near-identical vectors fall in the same Voronoi cell. Alongside the
duplicates, each image's highest similarity to any other image in its cluster is returned:
the redundancy that the diversity-aware filter drops first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from datagate.diversity import kmeans_labels, normalise

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
BLOCK = 2048
POINTS_PER_CLUSTER = 1000


@dataclass(frozen=True)
class SemanticDuplicates:
    """Per input row: the kept row it duplicates (-1 if kept), that similarity, and the
    highest similarity to any other row of its cluster (-1.0 for a singleton)."""

    duplicate_of: IntArray
    similarity: FloatArray
    nearest: IntArray
    redundancy: FloatArray
    clusters: int

    @property
    def dropped(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        return self.duplicate_of >= 0


def semantic_duplicates(
    vectors: np.ndarray[Any, Any],
    threshold: float = 0.95,
    *,
    preference: IntArray | None = None,
    clusters: int | None = None,
    seed: int = 0,
) -> SemanticDuplicates:
    """Find semantic duplicates among ``vectors`` (see the module docstring)."""
    n = len(vectors)
    dup_of = np.full(n, -1, dtype=np.int64)
    sim_to = np.zeros(n, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    redundancy = np.full(n, -1.0, dtype=np.float32)
    if n < 2:
        return SemanticDuplicates(dup_of, sim_to, nearest, redundancy, min(n, 1))
    x = normalise(vectors)
    k = clusters or math.ceil(n / POINTS_PER_CLUSTER)
    labels = kmeans_labels(x, k, seed)
    rank = np.empty(n, dtype=np.int64)
    rank[preference if preference is not None else np.arange(n)] = np.arange(n)
    # rows grouped by cluster, each group in preference order
    order = np.lexsort((rank, labels))
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        m = members.size
        if m < 2:
            continue
        xm = x[members]
        for start in range(0, m, BLOCK):
            block = xm[start : start + BLOCK] @ xm.T  # (b, m)
            rows = np.arange(start, start + block.shape[0])
            block[np.arange(block.shape[0]), rows] = -np.inf  # not its own neighbour
            best = block.argmax(axis=1)
            nearest[members[rows]] = members[best]
            redundancy[members[rows]] = block[np.arange(block.shape[0]), best]
            earlier = np.where(np.arange(m)[None, :] < rows[:, None], block, -np.inf)
            prev = earlier.argmax(axis=1)
            prev_sim = earlier[np.arange(block.shape[0]), prev]
            hit = prev_sim >= threshold
            dup_of[members[rows[hit]]] = members[prev[hit]]
            sim_to[members[rows[hit]]] = prev_sim[hit]
    # follow chains back to a kept image (earlier in preference order, so this terminates)
    for row in np.argsort(rank).tolist():
        parent = dup_of[row]
        if parent >= 0 and dup_of[parent] >= 0:
            dup_of[row] = dup_of[parent]
    return SemanticDuplicates(dup_of, sim_to, nearest, redundancy, int(labels.max()) + 1)
