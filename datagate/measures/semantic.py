"""Semantic duplicates, SemDeDup-style (Abbas et al., 2023), with no n x n matrix.

1. Spherical k-means (faiss) on the unit embeddings' top principal directions
   (:func:`~datagate.measures.diversity.fit_kmeans`, in two levels above 256 clusters);
   k defaults to ``ceil(n / 125)``: small clusters, since the search within them costs
   the square of their size. Each image joins its two nearest clusters
   (multi-probe), so pairs straddling a cluster boundary are still compared.
2. Within each cluster, images are ordered by a keep preference (the caller's; the rules
   put human-evidenced images first, then the largest, then scan order). An image is a
   semantic duplicate when an image *earlier in that order* in its cluster has cosine
   similarity >= ``threshold``; it is attributed to the most similar earlier image, and
   followed back to the first image of its chain, which is always kept.
3. Within a cluster, one product of its members with themselves: memory is O(m x m) for
   the largest cluster (about a thousand members), never n x n.

A pair is missed only when the two images share neither of their two nearest clusters,
which for pairs above a 0.9 threshold is rare (measured in tests and benchmarks). Alongside the
duplicates, each image's highest similarity to any other image in its cluster is returned:
the redundancy that the diversity-aware filter drops first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from datagate.measures.diversity import Rows, normalise, one_thread

if TYPE_CHECKING:
    from datagate.measures.backend import Backend

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
POINTS_PER_CLUSTER = 125
#: Each image is searched in its nearest PROBES clusters, so a pair split by a cluster
#: boundary is still compared.
PROBES = 2
#: Threads that search clusters at once.
THREADS = 2


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
    vectors: np.ndarray[Any, Any] | Rows,
    threshold: float = 0.95,
    *,
    preference: IntArray | None = None,
    clusters: int | None = None,
    probes: int = PROBES,
    seed: int = 0,
    redundancy: bool = True,
    backend: Backend | None = None,
) -> SemanticMatches:
    """Find semantic duplicates among ``vectors`` (see the module docstring).

    ``redundancy``: also each image's highest similarity to any other of its cluster (what
    the diversity filter drops first); without it only earlier images are compared, half
    the products. ``backend``: where the clusters are fitted and searched (this process by
    default)."""
    from datagate.measures.backend import LOCAL

    backend = backend or LOCAL
    n = len(vectors)
    if n < 2:
        none = np.full(n, -1, dtype=np.int64)
        lonely = np.full(n, -1.0, dtype=np.float32)
        return SemanticMatches(none, np.zeros(n, np.float32), none.copy(), lonely, 1)
    x = vectors  # normalised cluster by cluster: no float32 copy of every row
    k = clusters or math.ceil(n / POINTS_PER_CLUSTER)
    labels = backend.kmeans_labels(x, k, seed, probes=probes).reshape(n, -1)  # nearest first
    rank = np.empty(n, dtype=np.int64)
    rank[preference if preference is not None else np.arange(n)] = np.arange(n)
    dup_of, sim_to, nearest, most_similar = backend.cluster_matches(
        x, labels, rank, threshold, redundancy
    )
    hit = sim_to >= threshold
    dup_of[~hit] = -1
    sim_to[~hit] = 0.0
    most_similar[~np.isfinite(most_similar)] = -1.0
    # follow chains back to a kept image (a parent is earlier in preference order, so the
    # pointer jumping ends at the chain's first image)
    linked = np.flatnonzero(dup_of >= 0)
    if (dup_of[linked] == linked).any() or (rank[dup_of[linked]] >= rank[linked]).any():
        raise AssertionError("semantic duplicates: a match is not earlier in preference order")
    while linked.size:
        parent = dup_of[linked]
        grand = dup_of[parent]
        further = grand >= 0
        dup_of[linked[further]] = grand[further]
        linked = linked[further]
    return SemanticMatches(dup_of, sim_to, nearest, most_similar, int(labels.max()) + 1)


def match_clusters(
    x: Any,
    labels: IntArray,
    rank: IntArray,
    threshold: float,
    redundancy: bool,
    *,
    cached: Callable[[IntArray, Callable[[], Matches]], Matches] | None = None,
) -> tuple[IntArray, FloatArray, IntArray, FloatArray]:
    """Within every cluster of ``labels`` (``(n, probes)``): each row's most similar member
    earlier in ``rank`` order, when at least ``threshold`` similar, and, with
    ``redundancy``, its most similar other member.

    ``cached(members, search)``: a cluster's result (in member positions) from a cache, or
    from ``search()`` (:mod:`datagate.measures.incremental`); called from several threads.

    Returns ``(duplicate_of, similarity, nearest, most_similar)``; -1 / -inf where none."""
    n = len(x)
    labels = labels.reshape(n, -1)
    dup_of = np.full(n, -1, dtype=np.int64)
    sim_to = np.full(n, -np.inf, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    most_similar = np.full(n, -np.inf, dtype=np.float32)
    # every row is searched in each of its `probes` nearest clusters, in preference order
    member = labels.ravel()
    rows_of = np.repeat(np.arange(n), labels.shape[1])
    order = np.lexsort((rank[rows_of], member))
    bounds = np.flatnonzero(np.diff(member[order])) + 1
    groups = [rows_of[group] for group in np.split(order, bounds)]  # in preference order

    def search(members: IntArray) -> Matches | None:
        if members.size < 2:
            return None

        def compute() -> Matches:
            return within_cluster(normalise(x[members]), threshold, redundancy)

        return compute() if cached is None else cached(members, compute)

    # clusters hold a few hundred rows: a multi-threaded BLAS spends more time handing out
    # such small products than computing them, so BLAS runs single-threaded and the
    # clusters are spread over threads instead (numpy releases the GIL in the products);
    # results are folded in cluster order, as a sequential loop would
    threads = max(1, min(THREADS, os.cpu_count() or 1))
    with one_thread(), ThreadPoolExecutor(threads) as pool:
        for members, found in zip(groups, pool.map(search, groups)):
            if found is not None:
                merge_matches(members, found, dup_of, sim_to, nearest, most_similar)
    return dup_of, sim_to, nearest, most_similar


Matches = tuple[IntArray, FloatArray, IntArray, FloatArray]


def within_cluster(xm: FloatArray, threshold: float, redundancy: bool) -> Matches:
    """One cluster's members (unit rows, in keep order): each member's most similar earlier
    member at or above ``threshold`` (ties: the earliest), and with ``redundancy`` its most
    similar other member; member positions, -1 / -inf where none.

    One product of the members with themselves (BLAS computes ``X Xᵀ`` as a symmetric
    rank-k update, half the work of a general product); clusters hold ~1,000 members, so
    the m x m block stays in cache."""
    m = len(xm)
    xm = np.ascontiguousarray(xm, dtype=np.float32)
    sims = xm @ xm.T
    np.fill_diagonal(sims, -np.inf)  # not its own neighbour
    nearest = np.full(m, -1, dtype=np.int64)
    most_similar = np.full(m, -np.inf, dtype=np.float32)
    if redundancy:
        nearest = sims.argmax(axis=1).astype(np.int64)
        most_similar = sims[np.arange(m), nearest]
        best = most_similar
    else:
        best = sims.max(axis=1)
    # one reduction finds the few rows with any match; only their rows are searched
    rows = np.flatnonzero(best >= threshold)
    prev = np.full(m, -1, dtype=np.int64)
    prev_sim = np.full(m, -np.inf, dtype=np.float32)
    if rows.size:
        block = sims[rows]
        hit, found = np.nonzero((block >= threshold) & (np.arange(m) < rows[:, None]))
        query, value = rows[hit], block[hit, found]
        order = np.lexsort((found, -value, query))  # per query: most similar, then earliest
        query, found, value = query[order], found[order], value[order]
        first = np.ones(query.size, dtype=bool)
        first[1:] = query[1:] != query[:-1]
        prev[query[first]] = found[first]
        prev_sim[query[first]] = value[first]
    return prev, prev_sim, nearest, most_similar


def merge_matches(
    members: IntArray,
    found: Matches,
    dup_of: IntArray,
    sim_to: FloatArray,
    nearest: IntArray,
    most_similar: FloatArray,
) -> None:
    """Fold one cluster's :func:`within_cluster` result (member positions) into the row
    arrays: a row searched in several clusters keeps its best match (the first on ties)."""
    prev, prev_sim, near, near_sim = found
    better = prev_sim > sim_to[members]
    sim_to[members[better]] = prev_sim[better]
    dup_of[members[better]] = members[prev[better]]
    better = near_sim > most_similar[members]
    most_similar[members[better]] = near_sim[better]
    nearest[members[better]] = members[near[better]]
