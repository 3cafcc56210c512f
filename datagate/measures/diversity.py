"""Diversity of a set of embeddings, in O(n·d^2) time and O(d^2) memory — never n x n.

* **Vendi score** (Friedman & Dieng, 2023) of order q: the exponential of the Rényi entropy
  of the eigenvalues of K/n, where K is the cosine-similarity matrix of the n embeddings.
  K/n = X X^T/n shares its non-zero eigenvalues with the d x d matrix C = X^T X / n of the
  row-normalised embeddings X, so C is accumulated in chunks and only C is decomposed.
  The score is an "effective number of distinct items": 1 for n copies of one image, up to
  min(n, d) for embeddings spread evenly over every direction.
* **Diversity index** in [0, 1]: ``log(Vendi) / log(min(n, d))``, the Vendi score against
  its ceiling (n images span at most n directions). It is 0 for a collapsed set (one item
  repeated), 1 for a set spread evenly over every direction it can span, does not depend on
  n once n is above d and well above the effective number of items (a random subsample of a
  dataset gets the same index), is comparable between a handful of photographs and a
  dataset (a floor of 0.6 means the same for both), and falls as a dataset collapses onto
  fewer modes (images replaced by near-copies of a few others). Replacing images by
  near-copies of *random* others keeps the distribution, and so the index, unchanged:
  exact and near duplicates are the job of the duplicate rules, not of this index.
* **Mean pairwise cosine distance** in O(n·d): 1 - (||sum x_i||^2 - n) / (n(n - 1)).
* **Cluster coverage**: the share of k-means clusters (fitted on a reference set, e.g. the
  scanned set) that still hold at least one image of a subset (e.g. the kept set).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]
CHUNK_ROWS = 65_536


class Rows:
    """The rows ``base[index]`` of a 2-D array, gathered only when indexed: ``x[a:b]`` and
    ``x[array]`` are ``base[index[...]]``; ``np.asarray(x)`` gathers them all."""

    def __init__(
        self, base: np.ndarray[Any, Any], index: np.ndarray[Any, np.dtype[np.int64]]
    ) -> None:
        self.base, self.index = base, index
        self.shape = (len(index), *base.shape[1:])
        self.dtype = base.dtype
        self.ndim = base.ndim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.base[self.index[key]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        out = np.asarray(self.base[self.index])
        return out if dtype is None else out.astype(dtype)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """BLAS and faiss on one thread for the block: the gate's products are small (a few
    thousand rows, clusters of hundreds), and spreading each over threads costs more CPU
    than it saves — far more when other processes compete for the cores (threads spin)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        faiss.omp_set_num_threads(before)


#: Rows squared at a time by :func:`normalise`.
NORM_BLOCK = 4096


def normalise(x: FloatArray) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    out: np.ndarray[Any, np.dtype[np.float32]] = np.array(x, dtype=np.float32, copy=True)
    # np.linalg.norm's own sum (the same values), its squares a block of rows at a time, and
    # one division in place: a third less time than a masked division into a new array, and
    # no temporary the size of the rows
    norms = np.empty((len(out), 1), dtype=np.float32)
    for start in range(0, len(out), NORM_BLOCK):
        block = out[start : start + NORM_BLOCK]
        norms[start : start + NORM_BLOCK, 0] = np.add.reduce(np.square(block), axis=1)
    np.sqrt(norms, out=norms)
    zero = ~(norms[:, 0] > 0)
    if zero.any():
        norms[zero] = 1.0
        out[zero] = 0.0
    np.divide(out, norms, out=out)
    return out


#: Rows per float32 product in :func:`outer_sum`, summed in float64 across blocks.
OUTER_BLOCK = 4096


def outer_sum(unit: FloatArray) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Σ x xᵀ over the rows: float32 products of ``OUTER_BLOCK`` rows (BLAS's symmetric
    update), added in float64. A float32 sum over millions of rows leaves spurious
    eigenvalues; over blocks of 4,096 the Vendi score matches a float64 sum to ~1e-8
    (measured on a million pixel embeddings) at a fifth of the cost."""
    unit = np.asarray(unit, dtype=np.float32)
    out = np.zeros((unit.shape[1], unit.shape[1]), dtype=np.float64)
    for start in range(0, len(unit), OUTER_BLOCK):
        block = unit[start : start + OUTER_BLOCK]
        out += block.T @ block
    return out


def covariance(x: FloatArray) -> np.ndarray[Any, np.dtype[np.float64]]:
    """C = X^T X / n of the row-normalised embeddings, accumulated chunk by chunk."""
    running = Running(x)
    return running.outer / max(running.count, 1)


#: Eigenvalues below this share of the largest are rounding of the float32 products
#: (:func:`outer_sum`), not directions of the data: they count as zero.
EIGEN_FLOOR = 1e-6


def vendi_from_eigenvalues(eigenvalues: FloatArray, q: float = 1.0) -> float:
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = np.where(lam > EIGEN_FLOOR * max(float(lam.max(initial=0.0)), 0.0), lam, 0.0)
    total = lam.sum()
    if total <= 0:
        return 1.0
    lam = lam[lam > 0] / total
    if q == 1.0:
        return float(math.exp(-(lam * np.log(lam)).sum()))
    if math.isinf(q):
        return float(1.0 / lam.max())
    return float((lam**q).sum() ** (1.0 / (1.0 - q)))


def vendi_score(x: FloatArray, q: float = 1.0) -> float:
    """Vendi score of order q of the embeddings' cosine similarities."""
    if len(x) == 0:
        return 0.0
    with threadpool_limits(1):
        return vendi_from_eigenvalues(np.linalg.eigvalsh(covariance(x)), q)


def index_from_vendi(vendi: float, n: int, d: int) -> float:
    """``log(Vendi) / log(min(n, d))``, in [0, 1]: the Vendi score against its ceiling."""
    ceiling = min(n, d)
    if ceiling < 2 or vendi <= 0:
        return 0.0
    return float(min(1.0, max(0.0, math.log(vendi) / math.log(ceiling))))


def diversity_index(x: FloatArray, q: float = 1.0) -> float:
    """``log(Vendi) / log(min(n, d))``, in [0, 1] (see the module docstring)."""
    return index_from_vendi(vendi_score(x, q), len(x), x.shape[1])


def mean_cosine_distance(x: FloatArray) -> float:
    """Mean of 1 - cos(x_i, x_j) over all pairs i ≠ j, in O(n·d)."""
    n = len(x)
    if n < 2:
        return 0.0
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        total += normalise(x[start : start + CHUNK_ROWS]).sum(axis=0, dtype=np.float64)
    same = float(total @ total) - n  # sum over i≠j of cos(x_i, x_j), unit rows
    return 1.0 - same / (n * (n - 1))


KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_CENTROID = 32
#: k-means runs on the embeddings' top principal directions (at most this many): a partition
#: to search within needs the coarse geometry, and every distance costs this, not d.
KMEANS_DIMENSIONS = 32
#: The principal directions are those of at most this many of the training rows: 32
#: directions of a few hundred dimensions are settled long before, and the float64 product
#: of all 256,000 rows of a million-row fit took 2 s.
PCA_ROWS = 32_768


#: Above this many centroids, k-means is fitted and searched in two levels (sqrt(k) coarse
#: clusters, each split in proportion to its share of rows): fitting costs O(sample x
#: sqrt(k)) instead of O(sample x k), and assigning a row O(sqrt(k)) distances, not O(k).
TWO_LEVEL_MIN = 256
#: Coarse clusters searched for a row's nearest fine centroids in a two-level k-means.
COARSE_PROBES = 4


@dataclass(frozen=True)
class KMeans:
    """A fitted spherical k-means: rows are projected on ``basis`` (the top principal
    directions of the unit training rows), normalised, and matched to ``centroids``; with
    ``coarse``, only to the centroids of the row's nearest coarse clusters (``members``:
    each coarse cluster's centroid ids, padded with -1)."""

    basis: np.ndarray[Any, np.dtype[np.float32]]  # (d, p)
    centroids: np.ndarray[Any, np.dtype[np.float32]]  # (k, p), unit rows
    coarse: np.ndarray[Any, np.dtype[np.float32]] | None = None  # (k1, p)
    members: np.ndarray[Any, np.dtype[np.int64]] | None = None  # (k1, width)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, x: FloatArray) -> np.ndarray[Any, np.dtype[np.float32]]:
        # the direction of x·basis does not depend on |x|: one normalisation, in p dimensions
        return normalise(np.asarray(x, dtype=np.float32) @ self.basis)

    def assign(self, x: FloatArray, probes: int = 1) -> np.ndarray[Any, np.dtype[np.int64]]:
        """``(len(x), probes)`` nearest centroids of each row, nearest first."""
        probes = min(probes, self.k)
        if self.k == 1:
            return np.zeros((len(x), probes), dtype=np.int64)
        out = np.empty((len(x), probes), dtype=np.int64)
        step = CHUNK_ROWS
        with one_thread():
            for start in range(0, len(x), step):
                rows = self.project(x[start : start + step])
                out[start : start + step] = self._nearest(rows, probes)
        return out

    def _nearest(self, rows: FloatArray, probes: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        import faiss

        if self.coarse is None or self.members is None:
            index = faiss.IndexFlatIP(self.centroids.shape[1])
            index.add(self.centroids)
            _, found = index.search(rows, probes)
            return np.asarray(found, dtype=np.int64)
        index = faiss.IndexFlatIP(self.coarse.shape[1])
        index.add(self.coarse)
        _, near = index.search(rows, min(COARSE_PROBES, len(self.coarse)))
        # per coarse cluster: its rows against its fine centroids (one product), and each
        # row's best ``probes`` of them; then the best ``probes`` of a row's candidates from
        # all its coarse clusters (a fine centroid belongs to one coarse cluster)
        width = near.shape[1]
        score = np.full((len(rows), width * probes), -np.inf, dtype=np.float32)
        found = np.full((len(rows), width * probes), -1, dtype=np.int64)
        order = np.argsort(near.ravel(), kind="stable")
        coarse_of = near.ravel()[order]
        row_of, slot_of = order // width, order % width
        bounds = np.searchsorted(coarse_of, np.arange(len(self.coarse) + 1))
        for c in range(len(self.coarse)):
            mine = row_of[bounds[c] : bounds[c + 1]]
            ids = self.members[c][self.members[c] >= 0]
            if not mine.size or not ids.size:
                continue
            value, best = _top(rows[mine] @ self.centroids[ids].T, probes)
            columns = slot_of[bounds[c] : bounds[c + 1], None] * probes + np.arange(value.shape[1])
            score[mine[:, None], columns] = value
            found[mine[:, None], columns] = ids[best]
        ranked = np.argsort(-score, axis=1, kind="stable")[:, :probes]  # nearest first
        return np.take_along_axis(found, ranked, axis=1)


def _top(
    scores: np.ndarray[Any, np.dtype[np.float32]], count: int
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]]]:
    """Each row's ``count`` highest scores and their columns, highest first (ties: the first
    column). One pass per place for the few probes k-means asks for: no sort of the row."""
    m, width = scores.shape
    count = min(count, width)
    if count > 4:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :count]
        return np.take_along_axis(scores, top, axis=1), top.astype(np.int64)
    scores = scores.copy() if count > 1 else scores
    every = np.arange(m)
    value = np.empty((m, count), dtype=np.float32)
    where = np.empty((m, count), dtype=np.int64)
    for place in range(count):
        best = scores.argmax(axis=1)
        where[:, place] = best
        value[:, place] = scores[every, best]
        if place + 1 < count:
            scores[every, best] = -np.inf
    return value, where


def _spherical_kmeans(x: FloatArray, k: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``k`` unit centroids of the unit rows ``x`` (faiss; the mean direction for k = 1)."""
    import faiss

    if k <= 1 or len(x) <= 1:
        return normalise(np.asarray(x, dtype=np.float32).sum(axis=0, keepdims=True))
    kmeans = faiss.Kmeans(
        x.shape[1],
        min(k, len(x)),
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=KMEANS_POINTS_PER_CENTROID,
    )
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def fit_kmeans(x: FloatArray | Rows, k: int, seed: int = 0) -> KMeans:
    """Spherical k-means (faiss) with ``min(k, n)`` centroids, trained on a sample of at most
    ``KMEANS_POINTS_PER_CENTROID`` rows per centroid, in the sample's top
    ``KMEANS_DIMENSIONS`` principal directions, in two levels above ``TWO_LEVEL_MIN``
    centroids (a partition to search within, not a model: its cost, not its polish,
    matters at a million rows)."""
    with one_thread():  # small products: one thread wastes least
        return _fit_kmeans(x, k, seed)


def _fit_kmeans(x: FloatArray | Rows, k: int, seed: int) -> KMeans:
    import faiss

    n, d = x.shape
    k = max(1, min(k, n))
    sample = min(n, max(k * KMEANS_POINTS_PER_CENTROID, 1))
    picked = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    dims = min(d, KMEANS_DIMENSIONS)
    if dims < d:
        # the principal directions from at most PCA_ROWS of the sample (evenly spread)
        step = math.ceil(len(picked) / PCA_ROWS)
        basis = _principal_directions(x, picked[::step], dims)
    else:
        basis = np.eye(d, dtype=np.float32)
    if k == 1:
        return KMeans(basis, np.zeros((1, dims), dtype=np.float32))
    # the sample's unit rows on the basis, chunk by chunk: at a million rows the sample is
    # 256,000 rows, whose float32 copy (and its float64 one) made the run's memory peak
    projected = np.concatenate(
        [
            normalise(normalise(x[picked[start : start + CHUNK_ROWS]]) @ basis)
            for start in range(0, len(picked), CHUNK_ROWS)
        ]
    )
    if k <= TWO_LEVEL_MIN:
        return KMeans(basis, _spherical_kmeans(projected, k, seed))
    coarse = _spherical_kmeans(projected, math.ceil(math.sqrt(k)), seed)
    index = faiss.IndexFlatIP(dims)
    index.add(coarse)
    _, nearest = index.search(projected, 1)
    nearest = nearest.ravel()
    fine: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    members: list[list[int]] = []
    for c in range(len(coarse)):
        points = projected[nearest == c]
        if not len(points):
            members.append([])
            continue
        share = max(1, round(k * len(points) / len(projected)))
        found = _spherical_kmeans(points, share, seed + 1 + c)
        members.append(
            list(range(sum(len(f) for f in fine), sum(len(f) for f in fine) + len(found)))
        )
        fine.append(found)
    width = max(len(m) for m in members)
    table = np.full((len(members), width), -1, dtype=np.int64)
    for c, ids in enumerate(members):
        table[c, : len(ids)] = ids
    return KMeans(basis, np.concatenate(fine), coarse, table)


def _principal_directions(
    x: FloatArray | Rows, rows: np.ndarray[Any, np.dtype[np.int64]], dims: int
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The top ``dims`` eigenvectors of the second moment of the unit ``x[rows]`` (summed in
    float64, chunk by chunk), as columns."""
    d = x.shape[1]
    moment = np.zeros((d, d), dtype=np.float64)
    for start in range(0, len(rows), CHUNK_ROWS):
        unit = normalise(x[rows[start : start + CHUNK_ROWS]])
        moment += unit.T.astype(np.float64) @ unit
    _, vectors = np.linalg.eigh(moment / len(rows))
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims], dtype=np.float32)


def kmeans_labels(
    x: FloatArray, k: int, seed: int = 0, probes: int = 1
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Labels of :func:`fit_kmeans` for every row (assigned chunk by chunk: never a float32
    copy of all rows). With ``probes`` > 1: an (n, probes) array of each row's nearest
    centroids, nearest first."""
    labels = fit_kmeans(x, k, seed).assign(x, probes)
    return labels if probes > 1 else labels.ravel()


def cluster_coverage(
    reference: FloatArray, subset_mask: np.ndarray[Any, np.dtype[np.bool_]], k: int, seed: int = 0
) -> float:
    """Share of k-means clusters of ``reference`` with at least one row in the subset."""
    labels = kmeans_labels(reference, k, seed)
    occupied = np.unique(labels)
    covered = np.unique(labels[np.asarray(subset_mask, dtype=bool)])
    return float(len(covered) / len(occupied)) if len(occupied) else 0.0


METRICS = ("index", "vendi", "mean_cosine_distance")


class Running:
    """The sufficient statistics of a set of unit vectors — sum of x x^T and sum of x —
    kept up to date as rows leave, so any metric is re-evaluated in O(d^3), not O(n·d^2)."""

    dim: int
    count: int
    outer: np.ndarray[Any, np.dtype[np.float64]]
    total: np.ndarray[Any, np.dtype[np.float64]]
    _eigenvalues: np.ndarray[Any, np.dtype[np.float64]] | None

    def __init__(self, x: FloatArray) -> None:
        self._zero(x.shape[1])
        Running._accumulate(x, np.zeros(len(x), dtype=np.int64), [self])

    def _zero(self, dim: int) -> None:
        self.dim, self.count = dim, 0
        self.outer = np.zeros((dim, dim), dtype=np.float64)
        self.total = np.zeros(dim, dtype=np.float64)
        self._eigenvalues = None

    @classmethod
    def empty(cls, dim: int) -> Running:
        running = cls.__new__(cls)
        running._zero(dim)
        return running

    @classmethod
    def of_groups(
        cls, x: FloatArray, groups: np.ndarray[Any, np.dtype[np.int64]], count: int
    ) -> list[Running]:
        """The statistics of every group (``groups[i]`` in ``[0, count)``) in one pass over
        ``x``: each row is normalised and multiplied once, whatever its group."""
        out = [cls.empty(x.shape[1]) for _ in range(count)]
        cls._accumulate(x, groups, out)
        return out

    @staticmethod
    def _accumulate(
        x: FloatArray, groups: np.ndarray[Any, np.dtype[np.int64]], out: list[Running]
    ) -> None:
        order = np.argsort(groups, kind="stable")
        with one_thread():  # 4,096-row products: one thread wastes least
            Running._sums(x, groups, order, out)

    @staticmethod
    def _sums(
        x: FloatArray, groups: np.ndarray[Any, Any], order: np.ndarray[Any, Any], out: list[Running]
    ) -> None:
        for start in range(0, len(x), CHUNK_ROWS):
            rows = order[start : start + CHUNK_ROWS]
            unit = normalise(x[rows])
            labels = groups[rows]
            cuts = np.flatnonzero(np.diff(labels)) + 1
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)]):
                part = unit[lo:hi]
                target = out[int(labels[lo])]
                target.outer += outer_sum(part)
                target.total += part.sum(axis=0, dtype=np.float64)
                target.count += hi - lo
                target._eigenvalues = None

    def __iadd__(self, other: Running) -> Running:
        self.outer += other.outer
        self.total += other.total
        self.count += other.count
        self._eigenvalues = None
        return self

    def __isub__(self, other: Running) -> Running:
        self.outer -= other.outer
        self.total -= other.total
        self.count -= other.count
        self._eigenvalues = None
        return self

    def copy(self) -> Running:
        running = Running.empty(self.dim)
        running += self
        running._eigenvalues = self._eigenvalues
        return running

    def remove(self, rows: FloatArray) -> None:
        self.add(rows, -1)

    def add(self, rows: FloatArray, sign: int = 1) -> None:
        unit = normalise(rows)
        self.outer += sign * outer_sum(unit)
        self.total += sign * unit.sum(axis=0, dtype=np.float64)
        self.count += sign * len(rows)
        self._eigenvalues = None

    def eigenvalues(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Of ``outer / count``, computed once until the set changes."""
        found = self._eigenvalues
        if found is None:
            with threadpool_limits(1):  # a d x d matrix: threads only add hand-off (and spin)
                found = np.asarray(np.linalg.eigvalsh(self.outer / max(self.count, 1)), np.float64)
            self._eigenvalues = found
        return found

    def value(self, metric: str = "index", q: float = 1.0) -> float:
        if metric == "mean_cosine_distance":
            if self.count < 2:
                return 0.0
            same = float(self.total @ self.total) - self.count
            return 1.0 - same / (self.count * (self.count - 1))
        if self.count == 0:
            return 0.0
        vendi = vendi_from_eigenvalues(self.eigenvalues(), q)
        if metric == "vendi":
            return vendi
        return index_from_vendi(vendi, self.count, self.dim)

    def summary(self, q: float = 1.0) -> dict[str, Any]:
        """Every metric (None for sets too small to measure)."""
        if self.count < 2:
            return {"images": self.count, **{m: None for m in METRICS}}
        return {"images": self.count, **{m: round(self.value(m, q), 4) for m in METRICS}}


def summary(x: FloatArray, q: float = 1.0) -> dict[str, Any]:
    """Every metric of one set (None for sets too small to measure)."""
    return Running(x).summary(q)


def drop_until(
    x: FloatArray | Rows,
    order: np.ndarray[Any, np.dtype[np.int64]],
    metric: str,
    target: float,
    q: float = 1.0,
    steps: int = 100,
    running: Running | None = None,
) -> tuple[int, float]:
    """Remove rows of ``x`` in ``order`` (most redundant first) until ``metric >= target``.

    Rows leave in about ``steps`` equal batches, the metric re-evaluated after each, and the
    last batch is refined row by row so no more rows go than needed. Returns (rows dropped,
    final value); when ``order`` runs out first, every row in it is dropped. ``running``: the
    statistics of ``x`` when already summed (not changed).
    """
    running = running.copy() if running is not None else Running(np.asarray(x))
    value = running.value(metric, q)
    dropped = 0
    step = max(1, math.ceil(len(order) / steps))
    while value < target and dropped < len(order):
        batch = order[dropped : dropped + step]
        after = running.copy()
        after.remove(x[batch])
        after_value = after.value(metric, q)
        if after_value >= target and len(batch) > 1:
            lo = _shortest_prefix(running, x[batch], -1, metric, target, q)
            running.remove(x[batch[:lo]])
            return dropped + lo, running.value(metric, q)
        running, value = after, after_value
        dropped += len(batch)
    return dropped, value


def _shortest_prefix(
    running: Running, rows: FloatArray, sign: int, metric: str, target: float, q: float
) -> int:
    """The fewest leading ``rows`` whose addition (sign 1) or removal (-1) reaches ``target``
    (bisection; the whole of ``rows`` is known to reach it)."""
    lo, hi = 1, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        trial = running.copy()
        trial.add(rows[:mid], sign)
        if trial.value(metric, q) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def add_until(
    x: FloatArray,
    candidates: FloatArray,
    metric: str,
    target: float,
    q: float = 1.0,
    steps: int = 100,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], float]:
    """Add rows of ``candidates`` to ``x``, greedily, until ``metric >= target``.

    Each step adds the candidates least explained by the current set — lowest
    ``u^T (sum x x^T / n) u`` for a unit candidate u, i.e. pointing where the set has the
    least variance, which raises the Vendi score most — a batch at a time (about ``steps``
    batches), re-scoring after each; the last batch is bisected so that no more rows are
    added than needed (one fewer misses the target). Cost per step is O(m d^2) for m
    candidates, never n x n. Returns (the candidate rows added, in order; final value):
    every candidate when the target is never reached.
    """
    running = Running(x) if len(x) else Running.empty(candidates.shape[1])
    value = running.value(metric, q)
    unit = normalise(candidates).astype(np.float64)
    remaining = np.arange(len(candidates))
    added: list[int] = []
    step = max(1, math.ceil(len(candidates) / steps))
    while value < target and remaining.size:
        c = running.outer / max(running.count, 1)
        scores = np.einsum("ij,jk,ik->i", unit[remaining], c, unit[remaining])
        batch = remaining[np.argsort(scores, kind="stable")[:step]]
        after = running.copy()
        after.add(candidates[batch])
        after_value = after.value(metric, q)
        if after_value >= target and len(batch) > 1:
            lo = _shortest_prefix(running, candidates[batch], 1, metric, target, q)
            running.add(candidates[batch[:lo]])
            added += batch[:lo].tolist()
            return np.asarray(added, dtype=np.int64), running.value(metric, q)
        running, value = after, after_value
        added += batch.tolist()
        remaining = np.setdiff1d(remaining, batch, assume_unique=True)
    return np.asarray(added, dtype=np.int64), value
