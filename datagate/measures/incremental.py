"""The gate's intermediates, kept between runs so that what did not change is not computed
again (the pre-commit hook re-judges the whole dataset on every commit).

:class:`IncrementalBackend` wraps a :class:`~datagate.measures.backend.Backend` and keeps
in a folder, keyed by content (the bytes of the hashes and vectors, never file names):

* **near-duplicate pairs** (:meth:`~IncrementalBackend.distinct_pairs`): the last run's
  hashes and pairs. Pairs among hashes still present are kept; every added hash is compared
  with every hash. The result is exactly a full search's. Too many added hashes (more than
  ``1/ADDED_SHARE`` of them, at least ``ADDED_MIN``): a full search.
* **clusters and assignments** (:meth:`~IncrementalBackend.kmeans_labels`): the last k-means
  fit, reused while the rows it was fitted on are at least ``FIT_OVERLAP`` of the rows and
  of their own number and the cluster count is within ``FIT_OVERLAP`` of the one asked
  for; rows seen before keep their clusters, new rows are assigned to the same centroids.
  This is the one intermediate whose reuse can move a result: a fresh fit draws other
  boundaries, and a near-threshold pair that a fresh fit would put in two clusters out of
  each other's two nearest may be searched, or not. Every row is still searched in its
  nearest clusters; ``datagate enforce`` without this cache always fits afresh.
* **per-cluster matches** (:meth:`~IncrementalBackend.cluster_matches`): each cluster's
  search result, keyed by its members' vectors in preference order, the threshold and
  whether redundancy is searched; only clusters whose members changed are searched.
* **diversity sums** (:meth:`~IncrementalBackend.group_stats`): Σxxᵀ and Σx of each group
  of at least ``STATS_MIN_ROWS`` rows, keyed by its rows' vectors in order (equal to a
  fresh sum up to float64 rounding of the order of addition).

Group ids and row counts are a pass over a column and are not kept. Every cache file is
written atomically on :meth:`~IncrementalBackend.save` and named with :data:`FORMAT`; a
missing, damaged or other-version one is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datagate.io import atomic_path, cannot_write
from datagate.measures.backend import Backend, FloatArray, IntArray, Pairs, UInt64Array

Matches = tuple[Any, ...]

#: incremental near-duplicate search while added hashes are at most 1/ADDED_SHARE of all
#: (each is compared with every hash: cost added x all, against a full search's ~28 x all)
ADDED_SHARE = 512
ADDED_MIN = 256
#: a k-means fit is reused while this share of the rows overlaps the rows it was fitted on
FIT_OVERLAP = 0.9
#: groups smaller than this are summed again (cheap) rather than stored (d x d floats each)
STATS_MIN_ROWS = 256
#: rows fingerprinted per block
BLOCK_ROWS = 16_384
#: the layout of the cache files and of what their keys hash: a change to either (or to a
#: search whose results are kept) bumps it, and files of another version are never read
FORMAT = 1

KMEANS_FIELDS = ("basis", "centroids", "coarse", "members", "fit", "rows", "labels")
CLUSTER_FIELDS = ("digests", "sizes", "dup_of", "sim_to", "nearest", "most_similar")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SEEDS = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))


def _mix(z: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """splitmix64's finaliser, in place: a bijection of 64-bit words whose every output bit
    depends on every input bit."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def fingerprints(x: Any) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A 128-bit fingerprint of each row's bytes, its dtype and its length: equal rows give
    equal fingerprints; any other two rows the same one with a chance of about 2^-64.

    Each 64-bit word is mixed with its position (splitmix64) before the words are summed,
    so no change of bits cancels in the sum (as flipping two sign bits would in a sum of
    plain products), zero words count, and the total is mixed once more."""
    n = len(x)
    out = np.empty((n, 2), dtype=np.uint64)
    tag = int.from_bytes(hashlib.blake2b(str(np.dtype(x.dtype)).encode(), digest_size=8).digest())
    with np.errstate(over="ignore"):
        for start in range(0, n, BLOCK_ROWS):
            rows = np.ascontiguousarray(x[start : start + BLOCK_ROWS])
            raw = rows.reshape(len(rows), -1).view(np.uint8)
            pad = (-raw.shape[1]) % 8
            if pad:
                raw = np.concatenate([raw, np.zeros((len(raw), pad), np.uint8)], axis=1)
            words = raw.view(np.uint64)
            width = words.shape[1]
            position = np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN
            length = np.uint64((tag ^ raw.shape[1]) & 0xFFFFFFFFFFFFFFFF)
            for j, seed in enumerate(_SEEDS):
                keyed = _mix(position ^ seed)
                h = _mix(words ^ keyed).sum(axis=1, dtype=np.uint64)
                out[start : start + len(rows), j] = _mix(h ^ length ^ seed)
    return out


def _digest(fp: np.ndarray[Any, Any], *extra: object) -> bytes:
    h = hashlib.blake2b(np.ascontiguousarray(fp).tobytes(), digest_size=16)
    h.update(repr((FORMAT, *extra)).encode())
    return h.digest()


def _popcount_within(a: UInt64Array, keys: UInt64Array, r: int) -> tuple[IntArray, IntArray]:
    """(index into a, index into keys) of every pair within Hamming distance r."""
    found_a, found_b = [], []
    step = max(1, (1 << 22) // max(1, len(keys)))
    for start in range(0, len(a), step):
        block = a[start : start + step]
        close = np.bitwise_count(block[:, None] ^ keys[None, :]) <= r
        i, j = np.nonzero(close)
        found_a.append(i + start)
        found_b.append(j)
    if not found_a:
        empty = np.zeros(0, np.int64)
        return empty, empty
    return np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)


class IncrementalBackend:
    """``inner``'s operations, with the intermediates kept in ``directory`` (see the module
    docstring). Use as a context manager, or call :meth:`save` after the run."""

    def __init__(self, inner: Backend, directory: Path) -> None:
        self.inner = inner
        self.name = f"{inner.name}+incremental"
        self.directory = directory
        self._pending: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
        self._stats: dict[bytes, tuple[Any, Any, int]] | None = None
        self._stats_used: set[bytes] = set()
        self._clusters: dict[bytes, Matches] | None = None
        self._clusters_used: set[bytes] = set()
        #: what each kept intermediate saved this run, for report.json
        self.reused: dict[str, Any] = {}

    def __enter__(self) -> IncrementalBackend:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.save()

    # ------------------------------------------------------------------ storage
    def _load(self, name: str, *fields: str) -> dict[str, np.ndarray[Any, Any]] | None:
        """The arrays of one kept intermediate, None when missing, unreadable, or without one
        of ``fields`` (any damage or another layout is a miss, never an error)."""
        try:
            with np.load(self._path(name), allow_pickle=False) as data:
                found = {k: data[k] for k in data.files}
        except Exception:  # a damaged zip, a truncated array, a file that is not ours
            return None
        return found if all(f in found for f in fields) else None

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.v{FORMAT}.npz"

    def _keep(self, name: str, **arrays: np.ndarray[Any, Any]) -> None:
        self._pending[name] = arrays

    def save(self) -> None:
        """Write what this run computed (atomically, one file per intermediate)."""
        if self._stats is not None:
            used = [d for d in self._stats if d in self._stats_used]
            if used:
                self._keep(
                    "stats",
                    digests=np.frombuffer(b"".join(used), dtype="V16"),
                    outer=np.stack([self._stats[d][0] for d in used]),
                    total=np.stack([self._stats[d][1] for d in used]),
                    count=np.array([self._stats[d][2] for d in used], dtype=np.int64),
                )
        if self._clusters is not None:
            self._keep("clusters", **_pack_clusters(self._clusters, self._clusters_used))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name, arrays in self._pending.items():
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)  # type: ignore[arg-type]
                with atomic_path(self._path(name)) as tmp:
                    tmp.write_bytes(buffer.getvalue())
        except OSError as exc:
            raise cannot_write(self.directory, exc) from None
        self._pending.clear()

    # ------------------------------------------------------------------ operations
    def equal_groups(self, values: pa.Array | pa.ChunkedArray) -> IntArray:
        return self.inner.equal_groups(values)

    def counts(self, groups: IntArray, count: int) -> IntArray:
        return self.inner.counts(groups, count)

    def distinct_pairs(self, keys: UInt64Array, r: int) -> Pairs:
        keys = np.asarray(keys, dtype=np.uint64)
        name = f"neardup-r{r}"
        old = self._load(name, "keys", "a", "b")
        added = None if old is None else np.setdiff1d(keys, old["keys"], assume_unique=True)
        if old is None or added is None or len(added) > max(ADDED_MIN, len(keys) // ADDED_SHARE):
            i, j, d = self.inner.distinct_pairs(keys, r)
            self.reused["near_duplicates"] = {"added_hashes": None}
        else:
            i, j, d = _updated_pairs(keys, r, old, added)
            self.reused["near_duplicates"] = {"added_hashes": len(added)}
        self._keep(name, keys=np.sort(keys), a=keys[i], b=keys[j])
        return i, j, d

    def kmeans_labels(self, x: Any, k: int, seed: int = 0, probes: int = 1) -> IntArray:
        from datagate.measures.diversity import KMeans, fit_kmeans

        fp = fingerprints(x)[:, 0]
        name = f"kmeans-{x.shape[1]}-{seed}-{probes}"
        old = self._load(name, *KMEANS_FIELDS)
        model: KMeans | None = None
        if old is not None and _fit_holds(old, fp, k):
            coarse = old["coarse"] if old["coarse"].size else None
            members = old["members"] if old["members"].size else None
            model = KMeans(old["basis"], old["centroids"], coarse, members)
            fit_fp = old["fit"]
            # as wide as the fit's assignments: min(probes, k) columns (one cluster: one)
            width = min(max(1, probes), model.k)
            labels = np.full((len(fp), width), -1, dtype=np.int64)
            seen = _lookup(old["rows"], fp)
            known = seen >= 0
            labels[known] = old["labels"][seen[known]]
            new = np.flatnonzero(~known)
            if new.size:
                labels[new] = model.assign(x[new], probes)
            self.reused["semantic_clusters"] = {"assigned_rows": int(new.size)}
        else:
            model = fit_kmeans(x, k, seed)
            labels = model.assign(x, probes)
            fit_fp = np.unique(fp)
            self.reused["semantic_clusters"] = {"assigned_rows": None}
        order = np.argsort(fp, kind="stable")
        self._keep(
            name,
            basis=model.basis,
            centroids=model.centroids,
            coarse=model.coarse if model.coarse is not None else np.zeros(0, np.float32),
            members=model.members if model.members is not None else np.zeros(0, np.int64),
            fit=fit_fp,
            rows=fp[order],
            labels=labels[order],
        )
        return labels if probes > 1 else labels.ravel()

    def cluster_matches(
        self, x: Any, labels: IntArray, rank: IntArray, threshold: float, redundancy: bool
    ) -> tuple[IntArray, FloatArray, IntArray, FloatArray]:
        from datagate.measures.semantic import match_clusters

        if self._clusters is None:
            stored = self._load("clusters", *CLUSTER_FIELDS)
            self._clusters = _unpack_clusters(stored) if stored is not None else {}
        fp = fingerprints(x)
        cache, used = self._clusters, self._clusters_used
        searched: list[int] = []  # appended from the search threads

        def cached(members: IntArray, search: Callable[[], Matches]) -> Matches:
            key = _digest(fp[members], threshold, redundancy)
            used.add(key)
            found = cache.get(key)
            if found is None:
                searched.append(len(members))
                found = cache[key] = search()
            return found

        result = match_clusters(x, labels, rank, threshold, redundancy, cached=cached)
        self.reused["semantic_matches"] = {"clusters_searched": len(searched)}
        return result

    def group_stats(self, x: Any, groups: IntArray, count: int) -> list[Any]:
        from datagate.measures.diversity import Rows, Running

        if self._stats is None:
            stored = self._load("stats", "digests", "outer", "total", "count")
            self._stats = {}
            if stored is not None:
                for i, key in enumerate(_split_digests(stored["digests"])):
                    hit = (stored["outer"][i], stored["total"][i], int(stored["count"][i]))
                    self._stats[key] = hit
        groups = np.asarray(groups, dtype=np.int64)
        out = [Running.empty(x.shape[1]) for _ in range(count)]
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(count + 1))
        fp = fingerprints(x)
        todo: list[int] = []
        keys: dict[int, bytes] = {}
        for g in range(count):
            rows = order[bounds[g] : bounds[g + 1]]
            if len(rows) < STATS_MIN_ROWS:
                todo.append(g)
                continue
            key = keys[g] = _digest(fp[rows], x.shape[1])
            self._stats_used.add(key)
            stored_sums = self._stats.get(key)
            if stored_sums is None:
                todo.append(g)
            else:
                out[g].outer[:], out[g].total[:], out[g].count = stored_sums
        summed = 0
        if todo:
            pick = np.isin(groups, todo)
            relabel = np.full(count, -1, dtype=np.int64)
            relabel[todo] = np.arange(len(todo))
            rows = np.flatnonzero(pick)
            fresh = self.inner.group_stats(Rows(x, rows), relabel[groups[rows]], len(todo))
            for g, running in zip(todo, fresh):
                out[g] = running
                summed += running.count
                if g in keys:
                    kept = (running.outer.copy(), running.total.copy(), running.count)
                    self._stats[keys[g]] = kept
        self.reused.setdefault("diversity_sums", {"rows_summed": 0})["rows_summed"] += summed
        return out


def _lookup(sorted_keys: np.ndarray[Any, Any], keys: np.ndarray[Any, Any]) -> IntArray:
    """Position of each of ``keys`` in ``sorted_keys``, -1 where absent."""
    if not len(sorted_keys):
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1).astype(np.int64)


def _fit_holds(old: dict[str, np.ndarray[Any, Any]], fp: np.ndarray[Any, Any], k: int) -> bool:
    """Whether the stored fit still describes these rows (see the module docstring)."""
    fit = old["fit"]
    if not len(fit) or not len(fp):
        return False
    distinct = np.unique(fp)  # a row repeated is one row the fit knows, not many
    shared = int((_lookup(fit, distinct) >= 0).sum())
    k_fit = len(old["centroids"])
    return (
        shared >= FIT_OVERLAP * len(distinct)
        and shared >= FIT_OVERLAP * len(fit)
        and FIT_OVERLAP * k <= k_fit <= k / FIT_OVERLAP
    )


def _updated_pairs(
    keys: UInt64Array, r: int, old: dict[str, np.ndarray[Any, Any]], added: UInt64Array
) -> Pairs:
    """The pairs of ``keys`` within ``r`` from the last run's pairs and the added hashes."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]

    def index(values: np.ndarray[Any, Any]) -> tuple[IntArray, np.ndarray[Any, Any]]:
        at = _lookup(sorted_keys, values)
        return np.where(at >= 0, order[np.maximum(at, 0)], -1), at >= 0

    a, a_ok = index(old["a"])
    b, b_ok = index(old["b"])
    still = a_ok & b_ok
    ai, bi = _popcount_within(added, keys, r)
    new_a, _ = index(added[ai])
    new_b = bi.astype(np.int64)
    own = new_a != new_b
    i = np.concatenate([a[still], new_a[own]])
    j = np.concatenate([b[still], new_b[own]])
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    lo, hi = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    d = np.bitwise_count(keys[lo] ^ keys[hi]).astype(np.int64)
    return lo, hi, d


def _pack_clusters(cache: dict[bytes, tuple[Any, ...]], used: set[bytes]) -> dict[str, Any]:
    keys = [k for k in cache if k in used]
    sizes = np.array([len(cache[k][0]) for k in keys], dtype=np.int64)

    def cat(i: int, dtype: Any) -> np.ndarray[Any, Any]:
        parts = [np.asarray(cache[k][i], dtype=dtype) for k in keys]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return {
        "digests": np.frombuffer(b"".join(keys), dtype="V16"),
        "sizes": sizes,
        "dup_of": cat(0, np.int64),
        "sim_to": cat(1, np.float32),
        "nearest": cat(2, np.int64),
        "most_similar": cat(3, np.float32),
    }


def _split_digests(digests: np.ndarray[Any, Any]) -> list[bytes]:
    raw = digests.tobytes()
    return [raw[i : i + 16] for i in range(0, len(raw), 16)]


def _unpack_clusters(stored: dict[str, np.ndarray[Any, Any]]) -> dict[bytes, tuple[Any, ...]]:
    cuts = np.concatenate([[0], np.cumsum(stored["sizes"])])
    out = {}
    for key, lo, hi in zip(_split_digests(stored["digests"]), cuts[:-1], cuts[1:]):
        out[key] = tuple(
            stored[name][lo:hi] for name in ("dup_of", "sim_to", "nearest", "most_similar")
        )
    return out
