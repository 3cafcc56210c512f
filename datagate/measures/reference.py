"""How well a set of embeddings covers a frozen reference set (the preserved human baseline).

* **Precision / recall** (Kynkäänniemi et al., 2019): each set's k-NN balls (radius: the
  distance to the k-th nearest other member) approximate its manifold; precision is the
  share of the evaluated set inside the reference's manifold, recall the share of the
  reference inside the evaluated set's.
* **Density / coverage** (Naeem et al., 2020): density counts, per evaluated sample, how
  many reference balls contain it (divided by k; about 1 when the distributions match, and
  robust to outliers in the reference); coverage is the share of reference samples whose
  ball contains at least one evaluated sample.
* **Fréchet distance** between Gaussians fitted to the two sets (the FID formula on these
  embeddings): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, from d x d
  covariances accumulated in chunks.

Vectors are L2-normalised first (embeddings are compared by cosine). Nothing builds an
n x m matrix; memory is O((n + m) d).

* Up to ``EXACT_MAX`` points a side, everything is exact: k-NN radii and nearest neighbours
  come from faiss exhaustive searches (blocked matrix products), and "is y inside any ball
  B(x, r(x))" is a maximum-inner-product search on augmented vectors — for unit y,
  ``|y - x|^2 <= r^2  <=>  <[y, 1], [2x, r^2 - |x|^2]> >= 1`` — so one k=1 search answers it
  and a range search counts the balls (density). Time O(n m d): 20,000 x 20,000 x 512 takes
  about a minute on two cores.
* Above it, searches go through an inverted-file index (faiss ``IndexIVFFlat``, ``4 sqrt(n)``
  lists, ``NPROBE`` probed) and ball membership is checked exactly against each point's
  ``CANDIDATES`` nearest centres, one search each way. Both can miss a neighbour the
  exhaustive search would find, and density counts at most ``CANDIDATES`` balls per image;
  the benchmark measures the difference against the exact path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from datagate.measures.diversity import CHUNK_ROWS, normalise

FloatArray = np.ndarray[Any, np.dtype[np.float32]]
DEFAULT_K = 5
#: above this many points in a set, searches use an inverted-file index
EXACT_MAX = 50_000
NPROBE = 16
CANDIDATES = 64
TRAIN_ITERATIONS = 10
#: inner products are compared with this slack (float32 rounding of unit vectors)
EPS = 1e-6


@dataclass(frozen=True)
class ReferenceMeasures:
    """The evaluated set against the reference, each in [0, 1] except density and Fréchet."""

    precision: float
    recall: float
    density: float
    coverage: float
    frechet: float
    k: int
    n: int
    n_reference: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _l2_index(points: FloatArray) -> Any:
    """An L2 index over ``points``: exhaustive up to EXACT_MAX, inverted-file above."""
    import faiss

    n, d = points.shape
    index: Any
    if n <= EXACT_MAX:
        index = faiss.IndexFlatL2(d)
    else:
        lists = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, lists, faiss.METRIC_L2)
        index.cp.niter = TRAIN_ITERATIONS
        index.cp.min_points_per_centroid = 16  # a 16-per-list sample places lists well enough
        rng = np.random.default_rng(0)
        sample = points[np.sort(rng.choice(n, size=min(n, 16 * lists), replace=False))]
        index.train(sample)
        index.nprobe = NPROBE
    index.add(points)
    return index


def _search(index: Any, queries: FloatArray, k: int) -> tuple[Any, Any]:
    """(distances, ids) of the k nearest, in chunks of queries; missing ids are -1."""
    distances = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), CHUNK_ROWS):
        chunk = queries[start : start + CHUNK_ROWS]
        squared, found = index.search(chunk, k)
        distances[start : start + len(chunk)] = np.sqrt(np.maximum(squared, 0.0))
        ids[start : start + len(chunk)] = found
    distances[ids < 0] = np.inf
    return distances, ids


def knn_radii(x: FloatArray, k: int, index: Any = None) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Euclidean distance from each row to its k-th nearest other row (0 for duplicates)."""
    n = len(x)
    if n <= k:
        return np.full(n, np.inf, dtype=np.float32)  # too few points: every ball is infinite
    distances, _ = _search(index if index is not None else _l2_index(x), x, k + 1)
    radii: np.ndarray[Any, np.dtype[np.float32]] = distances[:, k].astype(np.float32)
    return radii  # the row itself is among the k + 1 nearest


def _augmented(centres: FloatArray, radii: np.ndarray[Any, Any]) -> FloatArray:
    """[2x, r^2 - |x|^2] per centre; an infinite radius becomes a huge finite offset."""
    r2 = np.minimum(radii.astype(np.float64) ** 2, 1e6)
    offset = r2 - np.einsum("ij,ij->i", centres, centres, dtype=np.float64)
    return np.hstack([2.0 * centres, offset[:, None].astype(np.float32)]).astype(np.float32)


def _queries(y: FloatArray) -> FloatArray:
    return np.hstack([y, np.ones((len(y), 1), dtype=np.float32)])


def _within(distances: Any, ids: Any, radii: np.ndarray[Any, Any]) -> Any:
    """Which candidate balls (centre ids, their distances) contain the query."""
    limit = np.where(ids >= 0, radii[np.maximum(ids, 0)], -1.0)
    return distances <= limit * (1 + EPS)


def balls_containing(
    y: FloatArray, centres: FloatArray, radii: np.ndarray[Any, Any], index: Any = None
) -> Any:
    """Per row of ``y`` (unit rows): how many balls B(centre, radius) contain it."""
    import faiss

    counts = np.zeros(len(y), dtype=np.int64)
    if len(y) == 0 or len(centres) == 0:
        return counts
    if len(centres) > EXACT_MAX:  # candidates: the nearest centres, checked exactly
        found = _search(index or _l2_index(centres), y, min(CANDIDATES, len(centres)))
        return _within(*found, radii).sum(axis=1)
    augmented = faiss.IndexFlatIP(centres.shape[1] + 1)
    augmented.add(_augmented(centres, radii))
    for start in range(0, len(y), CHUNK_ROWS):
        lims, _, _ = augmented.range_search(_queries(y[start : start + CHUNK_ROWS]), 1.0 - EPS)
        counts[start : start + CHUNK_ROWS] = np.diff(lims)
    return counts


def inside_any_ball(
    y: FloatArray, centres: FloatArray, radii: np.ndarray[Any, Any], index: Any = None
) -> Any:
    """Boolean per row of ``y`` (unit rows): inside at least one ball B(centre, radius)."""
    import faiss

    if len(y) == 0 or len(centres) == 0:
        return np.zeros(len(y), dtype=bool)
    if len(centres) > EXACT_MAX:
        return balls_containing(y, centres, radii, index) > 0
    augmented = faiss.IndexFlatIP(centres.shape[1] + 1)
    augmented.add(_augmented(centres, radii))
    best = np.empty(len(y), dtype=np.float32)
    for start in range(0, len(y), CHUNK_ROWS):
        scores, _ = augmented.search(_queries(y[start : start + CHUNK_ROWS]), 1)
        best[start : start + CHUNK_ROWS] = scores[:, 0]
    return best >= 1.0 - EPS


def moments(x: FloatArray) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Mean and covariance (float64, chunked) of the rows."""
    n, d = x.shape
    total = np.zeros(d, dtype=np.float64)
    outer = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS].astype(np.float64)
        total += chunk.sum(axis=0)
        outer += chunk.T @ chunk
    mean = total / max(n, 1)
    cov = outer / max(n - 1, 1) - np.outer(mean, mean) * (n / max(n - 1, 1))
    return mean, cov


def frechet_distance(a: FloatArray, b: FloatArray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    mu_a, s_a = moments(a)
    mu_b, s_b = moments(b)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt of eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric)
    with threadpool_limits(1):  # d x d matrices: threads only add hand-off (and spin)
        w, v = np.linalg.eigh(s_a)
        root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = float(np.sqrt(np.clip(middle, 0.0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_root)
    return max(value, 0.0)


def compare(
    evaluated: np.ndarray[Any, Any], reference: np.ndarray[Any, Any], k: int = DEFAULT_K
) -> ReferenceMeasures:
    """Precision, recall, density, coverage and Fréchet distance of ``evaluated`` against
    ``reference`` (rows are embeddings; both are L2-normalised here)."""
    y = normalise(np.ascontiguousarray(evaluated, dtype=np.float32))
    x = normalise(np.ascontiguousarray(reference, dtype=np.float32))
    if len(y) == 0 or len(x) == 0:
        raise ValueError("both sets need at least one embedding")
    ref_index, eval_index = _l2_index(x), _l2_index(y)
    r_ref = knn_radii(x, k, ref_index)
    r_eval = knn_radii(y, k, eval_index)
    if max(len(x), len(y)) > EXACT_MAX:
        # one candidate search each way serves precision and density, recall and coverage
        inside_ref = _within(*_search(ref_index, y, min(CANDIDATES, len(x))), r_ref)
        precision = float(inside_ref.any(axis=1).mean())
        density = float(inside_ref.sum() / (k * len(y)))
        near_eval, ids_eval = _search(eval_index, x, min(CANDIDATES, len(y)))
        recall = float(_within(near_eval, ids_eval, r_eval).any(axis=1).mean())
        coverage = float((near_eval[:, 0] <= r_ref * (1 + EPS)).mean())
    else:
        precision = float(inside_any_ball(y, x, r_ref).mean())
        recall = float(inside_any_ball(x, y, r_eval).mean())
        density = float(balls_containing(y, x, r_ref).sum() / (k * len(y)))
        nearest, _ = _search(eval_index, x, 1)
        coverage = float((nearest[:, 0] <= r_ref * (1 + EPS)).mean())
    return ReferenceMeasures(
        precision=precision,
        recall=recall,
        density=density,
        coverage=coverage,
        frechet=frechet_distance(y, x),
        k=k,
        n=len(y),
        n_reference=len(x),
    )
