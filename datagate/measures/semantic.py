"""Semantic duplicates, SemDeDup-style (Abbas et al., 2023), with no n x n matrix.

1. Spherical k-means (faiss) on the unit embeddings; k defaults to ``ceil(n / 1000)``,
   trained on a sample of 64 points per centroid. Each image joins its two nearest clusters
   (multi-probe), so pairs straddling a cluster boundary are still compared.
2. Within each cluster, images are ordered by a keep preference (the caller's; the rules
   put human-evidenced images first, then the largest, then scan order). An image is a
   semantic duplicate when an image *earlier in that order* in its cluster has cosine
   similarity >= ``threshold``; it is attributed to the most similar earlier image, and
   followed back to the first image of its chain, which is always kept.
3. Similarities are computed block by block (``BLOCK`` rows against the cluster), so memory
   is O(BLOCK x largest cluster), never n x n.

A pair is missed only when the two images share neither of their two nearest clusters,
which for pairs above a 0.9 threshold is rare (measured in tests and benchmarks). Alongside the
duplicates, each image's highest similarity to any other image in its cluster is returned:
the redundancy that the diversity-aware filter drops first.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from datagate.measures.diversity import kmeans_labels, normalise

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
BLOCK = 2048
POINTS_PER_CLUSTER = 1000
#: Each image is searched in its nearest PROBES clusters, so a pair split by a cluster
#: boundary is still compared.
PROBES = 2


@functools.cache
def _upper() -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The diagonal and above of a BLOCK x BLOCK square: a member and those after it (built
    on first use, not at import)."""
    return np.triu(np.ones((BLOCK, BLOCK), dtype=bool))


@dataclass(frozen=True)
class SemanticMatches:
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
    probes: int = PROBES,
    seed: int = 0,
    redundancy: bool = True,
) -> SemanticMatches:
    """Find semantic duplicates among ``vectors`` (see the module docstring).

    ``redundancy``: also each image's highest similarity to any other of its cluster (what
    the diversity filter drops first); without it only earlier images are compared, half
    the products."""
    n = len(vectors)
    dup_of = np.full(n, -1, dtype=np.int64)
    sim_to = np.full(n, -np.inf, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    most_similar = np.full(n, -np.inf, dtype=np.float32)
    if n < 2:
        return SemanticMatches(dup_of, np.zeros(n, np.float32), nearest, most_similar + 0, 1)
    x = vectors  # normalised cluster by cluster: no float32 copy of every row
    k = clusters or math.ceil(n / POINTS_PER_CLUSTER)
    labels = kmeans_labels(x, k, seed, probes=probes).reshape(n, -1)  # nearest clusters first
    rank = np.empty(n, dtype=np.int64)
    rank[preference if preference is not None else np.arange(n)] = np.arange(n)
    # every row is searched in each of its `probes` nearest clusters, in preference order
    member = labels.ravel()
    rows_of = np.repeat(np.arange(n), labels.shape[1])
    order = np.lexsort((rank[rows_of], member))
    bounds = np.flatnonzero(np.diff(member[order])) + 1
    for group in np.split(order, bounds):
        members = np.unique(rows_of[group])
        members = members[np.argsort(rank[members], kind="stable")]
        m = members.size
        if m < 2:
            continue
        xm = normalise(x[members])
        for start in range(0, m, BLOCK):
            stop = min(m, start + BLOCK)
            # against every member, or only those up to the block's end (earlier ones)
            block = xm[start:stop] @ (xm if redundancy else xm[:stop]).T  # (b, m or stop)
            b = block.shape[0]
            local = np.arange(start, stop)
            block[np.arange(b), local] = -np.inf  # not its own neighbour
            targets = members[local]
            if redundancy:
                best = block.argmax(axis=1)
                best_sim = block[np.arange(b), best]
                better = best_sim > most_similar[targets]
                most_similar[targets[better]] = best_sim[better]
                nearest[targets[better]] = members[best[better]]
            # only earlier members may be the original: mask this block's own square's
            # upper triangle (and everything after it) in place, no second (b, m) array
            own = block[:, start:stop]
            own[_upper()[:b, :b]] = -np.inf
            earlier = block[:, :stop]
            prev = earlier.argmax(axis=1)
            prev_sim = earlier[np.arange(b), prev]
            better = prev_sim > sim_to[targets]
            sim_to[targets[better]] = prev_sim[better]
            dup_of[targets[better]] = members[prev[better]]
    hit = sim_to >= threshold
    dup_of[~hit] = -1
    sim_to[~hit] = 0.0
    most_similar[~np.isfinite(most_similar)] = -1.0
    # follow chains back to a kept image (earlier in preference order, so this terminates)
    for row in np.argsort(rank).tolist():
        parent = dup_of[row]
        if parent >= 0 and dup_of[parent] >= 0:
            dup_of[row] = dup_of[parent]
    return SemanticMatches(dup_of, sim_to, nearest, most_similar, int(labels.max()) + 1)
