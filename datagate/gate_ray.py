"""The gate's dataset-wide work on a Ray cluster: every :class:`~datagate.measures.backend.Backend`
operation as Ray Data operations, with the results :class:`~datagate.measures.backend.LocalBackend`
gives (same values, shapes and dtypes), so ``datagate enforce --engine ray`` decides as the
local engine does.

The driver holds the scan table and passes the arrays an operation needs; they go to the
object store in blocks (``ray.data.from_arrow``) and come back as small results:

* :meth:`~RayBackend.equal_groups`: a shuffle keyed by value (rows sent to a bucket by a hash
  of the value; each bucket dictionary-encodes its values exactly); the driver turns each
  row's first equal row into dense ids in order of first appearance.
* :meth:`~RayBackend.distinct_pairs`: multi-index hashing (:func:`.neardup.plan`) as a shuffle:
  for each choice of ``k`` of the ``m`` bit blocks, every hash is keyed by (choice, its bits
  in those blocks); each bucket sorts its keys, verifies the candidates that share one with a
  popcount, and emits a pair only for the first choice of blocks it agrees on (so no pair
  comes back twice). A record is 10 bytes (bucket, hash: the hashes are distinct, so the
  driver turns the pairs' hashes back into positions). Choices run in rounds that fill at
  most ``ROUND_SHARE`` of the object store.
* :meth:`~RayBackend.kmeans_labels`: trained on the driver exactly as the local function
  (same sample, seed and faiss), assigned with ``map_batches`` chunk by chunk as it does.
* :meth:`~RayBackend.cluster_matches`: each row sent to each of its clusters' bucket;
  :func:`.semantic.within_cluster` per cluster in ``map_groups``; the driver folds the matches
  with :func:`.semantic.merge_matches` in ascending cluster order, as the local loop does.
* :meth:`~RayBackend.group_stats`: partial sums of x xᵀ and x per group in each block (rows
  sent grouped, so a block holds few groups), added up on the driver.
* :meth:`~RayBackend.counts`: a groupby count.

Every shuffle is ``groupby(bucket).map_groups``, with buckets coarse enough that a reducer
works on many keys (values, masked hashes, clusters) at once: a Ray Data group per key would
cost more than the key's work.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagate.measures import neardup, semantic
from datagate.measures.backend import FloatArray, IntArray, Pairs, UInt64Array
from datagate.measures.diversity import CHUNK_ROWS, KMeans, Running, fit_kmeans, normalise
from datagate.scanner.ray_engine import RayOptions, connect, ray_modules, shutdown

#: at or below this many distinct hashes, pairs are searched in this process (all pairs)
LOCAL_MAX = 4096
#: rows per block sent to the object store (a multiple of diversity.CHUNK_ROWS)
BLOCK_ROWS = 4 * CHUNK_ROWS
#: share of the cluster's object store one near-duplicate round (several choices of blocks)
#: may fill with its records: a sort shuffle holds them twice, beside the hashes sent
ROUND_SHARE = 0.25
#: rows per reducer bucket of a shuffle (more buckets than this many rows each)
BUCKET_ROWS = 1 << 19
#: Ray Data's sort-based shuffle: its hash shuffle starts a pool of aggregator actors for
#: every operation, seconds each on a small cluster
SHUFFLE = "sort_shuffle_pull_based"


def _mix(x: UInt64Array) -> UInt64Array:
    """splitmix64's finaliser: 64 well-mixed bits of each value (a bucket by a modulus)."""
    z = np.asarray(x, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: UInt64Array = z ^ (z >> np.uint64(31))
    return out


def _value_keys(values: pa.Array) -> UInt64Array:
    """A 64-bit key per value from its length and its first and last 16 bytes: equal values
    share a key (so a bucket); values that differ there almost never do."""
    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary)
    if not any(f(values.type) for f in (*kinds, pa.types.is_large_binary)):
        values = values.cast(pa.string())
    arr = values.cast(pa.large_binary())
    _, offsets_buf, data_buf = arr.buffers()
    assert offsets_buf is not None
    offsets = np.frombuffer(offsets_buf, np.int64, len(arr) + 1, arr.offset * 8)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    if data.size == 0:
        data = np.zeros(1, np.uint8)
    start, length = offsets[:-1], np.diff(offsets)
    key = _mix(length.astype(np.uint64))
    last = data.size - 1
    for t in range(16):
        has = length > t
        head = np.where(has, data[np.minimum(start + t, last)], 0).astype(np.uint64)
        tail = np.where(has, data[np.clip(start + length - 1 - t, 0, last)], 0).astype(np.uint64)
        key = _mix(key ^ (head | (tail << np.uint64(8)) | np.uint64(t << 16)))
    return key


def _block_masks(m: int) -> list[int]:
    """The 64 bits cut into ``m`` contiguous blocks (the first ``64 % m`` a bit wider)."""
    sizes = [64 // m + (1 if b < 64 % m else 0) for b in range(m)]
    shifts = np.cumsum([0, *sizes[:-1]]).tolist()
    return [((1 << z) - 1) << s for z, s in zip(sizes, shifts)]


def _vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray[Any, Any]:
    """A fixed-size-list column as an (n, dim) array (its own dtype)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat).reshape(len(arr), dim)


def _fixed(x: np.ndarray[Any, Any]) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _np(column: pa.ChunkedArray | pa.Array, dtype: Any) -> np.ndarray[Any, Any]:
    return np.asarray(column.to_numpy(), dtype=dtype)


def _column(batches: list[pa.Table], name: str, dtype: Any) -> np.ndarray[Any, Any]:
    """One column of every result block, concatenated."""
    parts = [_np(b.column(name), dtype) for b in batches]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


# -- what runs on the workers (module level: Ray ships these by reference) -------------------


def _bucket_values(batch: pa.Table, buckets: int) -> pa.Table:
    """equal_groups, map: each row's bucket, from its value."""
    keys = _value_keys(batch.column("value").combine_chunks())
    return batch.append_column("bucket", pa.array((keys % np.uint64(buckets)).astype(np.int64)))


def _first_equal(group: pa.Table) -> pa.Table:
    """equal_groups, reduce (one bucket): each row's first row with an equal value."""
    rows = _np(group.column("row"), np.int64)
    encoded = pc.dictionary_encode(group.column("value").combine_chunks())
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
    order = np.lexsort((rows, codes))
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = codes[order][1:] != codes[order][:-1]
    first = np.empty(len(order), dtype=np.int64)
    first[order] = rows[order][np.flatnonzero(starts)][np.cumsum(starts) - 1]
    return pa.table({"row": rows, "first": first})


def _band_keys(batch: pa.Table, masks: list[int], buckets: int) -> pa.Table:
    """distinct_pairs, map: every hash once per choice of blocks of this round, keyed by
    (choice, the hash's bits in those blocks) and sent to that key's bucket."""
    h = _np(batch.column("hash"), np.uint64)
    kind = _bucket_type(len(masks) * buckets)
    parts = []
    for slot, mask in enumerate(masks):
        spread = _mix(h & np.uint64(mask)) % np.uint64(buckets)
        bucket = spread.astype(kind) + kind(slot * buckets)
        parts.append(pa.table({"bucket": bucket, "hash": h}))
    return pa.concat_tables(parts)


def _bucket_type(count: int) -> Any:
    """The smallest integer type of ``count`` bucket ids (the shuffle carries one per row)."""
    return np.int16 if count < 2**15 else np.int32


def _verify_band(
    group: pa.Table,
    masks: list[int],
    combo_bits: list[int],
    block_masks: list[int],
    k: int,
    buckets: int,
    r: int,
    pair_batch: int,
) -> pa.Table:
    """distinct_pairs, reduce (one bucket of one choice of blocks): the pairs sharing those
    blocks within ``r`` bits, kept only where this choice is the first they agree on; as
    hashes (the hashes are distinct: the driver turns them back into positions)."""
    slot = int(group.column("bucket")[0].as_py()) // buckets
    mask = np.uint64(masks[slot])
    h = _np(group.column("hash"), np.uint64)
    order, shared, shared_len = neardup.shared_runs(h & mask)
    out_i, out_j = [np.empty(0, np.uint64)], [np.empty(0, np.uint64)]
    out_d = [np.empty(0, np.int64)]
    cumulative = np.cumsum(shared_len * (shared_len - 1) // 2)
    weights = np.left_shift(np.int64(1), np.arange(len(block_masks), dtype=np.int64))
    lo, done = 0, 0
    while lo < shared.size:  # runs in batches of about pair_batch candidate pairs
        hi = max(lo + 1, int(np.searchsorted(cumulative, done + pair_batch, "right")))
        a, b, d = neardup._pairs_in_runs(h, order, shared[lo:hi], shared_len[lo:hi], r)
        done, lo = int(cumulative[hi - 1]), hi
        # the first k blocks a pair agrees on name the one choice that reports it
        diff = h[a] ^ h[b]
        agree = np.stack([(diff & np.uint64(bm)) == 0 for bm in block_masks], axis=1)
        chosen = agree & (np.cumsum(agree, axis=1) <= k)
        own = (chosen.astype(np.int64) @ weights) == combo_bits[slot]
        out_i.append(h[a[own]])
        out_j.append(h[b[own]])
        out_d.append(d[own])
    return pa.table(
        {"i": np.concatenate(out_i), "j": np.concatenate(out_j), "d": np.concatenate(out_d)}
    )


def _assign(batch: pa.Table, model: KMeans, dim: int, probes: int) -> pa.Table:
    """kmeans_labels, map: :meth:`.KMeans.assign` on a block (blocks start at multiples of
    CHUNK_ROWS, so it searches the chunks the local function searches)."""
    labels = model.assign(_vectors(batch.column("x"), dim), probes)
    return pa.table({"row": batch.column("row"), "labels": _fixed(labels)})


def _to_clusters(batch: pa.Table, probes: int, buckets: int) -> pa.Table:
    """cluster_matches, map: each row once per cluster it is searched in, sent to that
    cluster's bucket."""
    labels = _vectors(batch.column("labels"), probes)
    x = batch.column("x").combine_chunks()
    kind = _bucket_type(buckets)
    parts = []
    for p in range(probes):
        cluster = labels[:, p]
        bucket = (_mix(cluster.astype(np.uint64)) % np.uint64(buckets)).astype(kind)
        columns = {"bucket": bucket, "cluster": cluster, "row": batch.column("row")}
        parts.append(pa.table({**columns, "rank": batch.column("rank"), "x": x}))
    return pa.concat_tables(parts)


def _match_clusters(group: pa.Table, dim: int, threshold: float, redundancy: bool) -> pa.Table:
    """cluster_matches, reduce (one bucket of clusters): :func:`.semantic.within_cluster` on
    each cluster's members in keep order; the rows a match was found for, with their match
    (row numbers), per cluster."""
    cluster = _np(group.column("cluster"), np.int64)
    rows = _np(group.column("row"), np.int64)
    rank = _np(group.column("rank"), np.int64)
    x = _vectors(group.column("x"), dim)
    order = np.lexsort((rank, cluster))  # by cluster, then keep order
    cuts = np.flatnonzero(np.diff(cluster[order])) + 1
    out: list[tuple[np.ndarray[Any, Any], ...]] = []
    for part in np.split(order, cuts):
        members, first = np.unique(rows[part], return_index=True)
        if members.size < 2:
            continue
        keep = part[np.sort(first)]  # one entry per row, still in keep order
        members = rows[keep]
        prev, prev_sim, near, near_sim = semantic.within_cluster(
            normalise(x[keep]), threshold, redundancy
        )
        found = (prev >= 0) | (near >= 0)
        prev = np.where(prev >= 0, members[np.maximum(prev, 0)], -1)[found]
        near = np.where(near >= 0, members[np.maximum(near, 0)], -1)[found]
        c = np.full(int(found.sum()), cluster[part[0]], np.int64)
        out.append((c, members[found], prev, prev_sim[found], near, near_sim[found]))
    names = ("cluster", "row", "prev", "prev_sim", "near", "near_sim")
    types = (np.int64, np.int64, np.int64, np.float32, np.int64, np.float32)
    return pa.table(
        {
            name: np.concatenate([o[c] for o in out]).astype(t) if out else np.empty(0, t)
            for c, (name, t) in enumerate(zip(names, types))
        }
    )


def _partial_stats(batch: pa.Table, dim: int) -> pa.Table:
    """group_stats, map: sums of x xᵀ and x, and the count, of each group in this block."""
    x = _vectors(batch.column("x"), dim)
    groups = _np(batch.column("group"), np.int64)
    present, local = np.unique(groups, return_inverse=True)
    parts = Running.of_groups(x, local.ravel().astype(np.int64), len(present))
    return pa.table(
        {
            "group": present.astype(np.int64),
            "count": np.array([p.count for p in parts], dtype=np.int64),
            "total": _fixed(np.stack([p.total for p in parts])),
            "outer": _fixed(np.stack([p.outer.ravel() for p in parts])),
        }
    )


def _valid_groups(batch: pa.Table) -> pa.Table:
    """counts, map: only rows with a group (negative ids are not counted)."""
    return batch.filter(pc.greater_equal(batch.column("group"), 0))


# -- the backend ----------------------------------------------------------------------------


class RayBackend:
    """Every :class:`~datagate.measures.backend.Backend` operation as Ray Data operations on
    the connected Ray (see the module docstring). ``close()`` (or leaving a ``with`` block)
    shuts down a Ray that :func:`ray_backend` started; it is also registered at exit."""

    name = "ray"

    def __init__(self, started: bool = False) -> None:
        self._started = started

    def close(self) -> None:
        """Stop the local Ray this backend started (nothing when it joined one)."""
        if self._started:
            self._started = False
            shutdown()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _cpus(self) -> int:
        ray, _ = ray_modules()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _bounds(self, n: int, align: int = 1) -> list[tuple[int, int]]:
        """Row ranges of the blocks sent: about BLOCK_ROWS each, at least two per CPU (so a
        shuffle has several blocks to exchange), starting at multiples of ``align``."""
        blocks = max(2 * self._cpus(), math.ceil(n / BLOCK_ROWS))
        size = max(1, math.ceil(n / blocks))
        size = math.ceil(size / align) * align
        return [(s, min(n, s + size)) for s in range(0, n, size)]

    def _source(self, tables: list[pa.Table], refs: bool = False) -> Any:
        """A dataset of these blocks (or object refs of them), quiet, on our shuffle."""
        _, data = ray_modules()
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ds = data.from_arrow_refs(tables) if refs else data.from_arrow(tables)
        context = ds.context
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.shuffle_strategy = SHUFFLE
        return ds

    def _shuffle(
        self,
        ds: Any,
        mapper: Any,
        map_kwargs: dict[str, Any],
        reducer: Any,
        reduce_kwargs: dict[str, Any],
    ) -> list[pa.Table]:
        """``mapper`` on every block (it adds a ``bucket`` column), then ``reducer`` on every
        bucket: the one shape of this backend's shuffles; returns the reducers' tables."""
        ds = ds.map_batches(mapper, batch_size=None, batch_format="pyarrow", fn_kwargs=map_kwargs)
        ds = ds.groupby("bucket").map_groups(
            reducer, batch_format="pyarrow", fn_kwargs=reduce_kwargs
        )
        return self._collect(ds)

    @staticmethod
    def _collect(ds: Any) -> list[pa.Table]:
        """The result blocks, on the driver."""
        batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
        return [b for b in batches if b is not None and b.num_rows]

    def _buckets(self, records: int) -> int:
        return max(2 * self._cpus(), math.ceil(records / BUCKET_ROWS))

    # -- the operations ---------------------------------------------------------------------

    def equal_groups(self, values: pa.Array | pa.ChunkedArray) -> IntArray:
        n = len(values)
        # chunks stay chunks (more than 2 GB of strings cannot be one string array)
        arr = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
        valid = np.asarray(pc.is_valid(arr).to_numpy(), dtype=bool)
        rows = np.flatnonzero(valid)
        ids = np.full(n, -1, dtype=np.int64)
        if rows.size == 0:
            return ids
        present = arr.filter(pa.array(valid)) if rows.size < n else arr
        tables = [
            pa.table({"row": rows[s:e], "value": present.slice(s, e - s)})
            for s, e in self._bounds(rows.size)
        ]
        buckets = self._buckets(rows.size)
        got = self._shuffle(
            self._source(tables), _bucket_values, {"buckets": buckets}, _first_equal, {}
        )
        first_of = np.full(n, -1, dtype=np.int64)
        first_of[_column(got, "row", np.int64)] = _column(got, "first", np.int64)
        # dense ids in order of first appearance: a group's id is how many first rows precede
        is_first = np.zeros(n, dtype=bool)
        is_first[first_of[rows]] = True
        dense = np.cumsum(is_first) - 1
        ids[rows] = dense[first_of[rows]]
        return ids

    def distinct_pairs(self, keys: UInt64Array, r: int) -> Pairs:
        h = np.asarray(keys, dtype=np.uint64)
        n = len(h)
        if n <= LOCAL_MAX:
            return neardup.distinct_pairs(h, r)
        ray, _ = ray_modules()
        m, k = neardup.plan(n, r)
        block_masks = _block_masks(m)
        combos = list(itertools.combinations(range(m), k))
        combo_masks = [sum(block_masks[b] for b in c) for c in combos]
        combo_bits = [sum(1 << b for b in c) for c in combos]
        refs = [ray.put(pa.table({"hash": h[s:e]})) for s, e in self._bounds(n)]
        record = 2 + 8  # bucket (int16 below 32,768 buckets a round), hash
        store = ray.cluster_resources().get("object_store_memory", 2**30)
        per_round = max(1, int(store * ROUND_SHARE) // (n * record))
        found: list[pa.Table] = []
        for lo in range(0, len(combos), per_round):
            chosen = range(lo, min(len(combos), lo + per_round))
            buckets = self._buckets(n)
            masks = [combo_masks[c] for c in chosen]
            found += self._shuffle(
                self._source(refs, refs=True),
                _band_keys,
                {"masks": masks, "buckets": buckets},
                _verify_band,
                {
                    "masks": masks,
                    "combo_bits": [combo_bits[c] for c in chosen],
                    "block_masks": block_masks,
                    "k": k,
                    "buckets": buckets,
                    "r": r,
                    "pair_batch": neardup.PAIR_BATCH,
                },
            )
        # back from hashes to positions in keys
        ascending = bool(np.all(h[1:] > h[:-1]))  # np.unique's keys: no sort needed
        by_hash = np.arange(n) if ascending else np.argsort(h, kind="stable")
        sorted_h = h[by_hash]
        hi, hj = (_column(found, c, np.uint64) for c in "ij")
        a = by_hash[np.searchsorted(sorted_h, hi)]
        b = by_hash[np.searchsorted(sorted_h, hj)]
        i, j, d = np.minimum(a, b), np.maximum(a, b), _column(found, "d", np.int64)
        order = np.lexsort((j, i))
        return i[order], j[order], d[order]

    def kmeans_labels(self, x: Any, k: int, seed: int = 0, probes: int = 1) -> IntArray:
        # fitted on the driver as the local function fits (the same sample, seed and
        # faiss), so the centroids, and every label, are the local ones
        model = fit_kmeans(x, k, seed)
        n, dim = x.shape
        if model.k == 1:
            labels = model.assign(x, probes)  # zeros: nothing to search
        else:
            tables = [
                pa.table({"row": np.arange(s, e, dtype=np.int64), "x": _fixed(x[s:e])})
                for s, e in self._bounds(n, align=CHUNK_ROWS)
            ]
            ds = self._source(tables).map_batches(
                _assign,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs={"model": model, "dim": dim, "probes": probes},
            )
            labels = np.empty((n, min(probes, model.k)), dtype=np.int64)
            for batch in self._collect(ds):
                rows = _np(batch.column("row"), np.int64)
                labels[rows] = _vectors(batch.column("labels"), labels.shape[1])
        return labels if probes > 1 else labels.ravel()

    def cluster_matches(
        self, x: Any, labels: IntArray, rank: IntArray, threshold: float, redundancy: bool
    ) -> tuple[IntArray, FloatArray, IntArray, FloatArray]:
        n = len(x)
        dup_of = np.full(n, -1, dtype=np.int64)
        sim_to = np.full(n, -np.inf, dtype=np.float32)
        nearest = np.full(n, -1, dtype=np.int64)
        most_similar = np.full(n, -np.inf, dtype=np.float32)
        if n < 2:
            return dup_of, sim_to, nearest, most_similar
        labels = np.asarray(labels, dtype=np.int64).reshape(n, -1)
        probes = labels.shape[1]
        rank = np.asarray(rank, dtype=np.int64)
        tables = [
            pa.table(
                {
                    "row": np.arange(s, e, dtype=np.int64),
                    "rank": rank[s:e],
                    "labels": _fixed(labels[s:e]),
                    "x": _fixed(x[s:e]),
                }
            )
            for s, e in self._bounds(n)
        ]
        buckets = self._buckets(n * probes)
        batches = self._shuffle(
            self._source(tables),
            _to_clusters,
            {"probes": probes, "buckets": buckets},
            _match_clusters,
            {"dim": x.shape[1], "threshold": threshold, "redundancy": redundancy},
        )
        got = {
            name: _column(batches, name, dtype)
            for name, dtype in (
                ("cluster", np.int64),
                ("row", np.int64),
                ("prev", np.int64),
                ("prev_sim", np.float32),
                ("near", np.int64),
                ("near_sim", np.float32),
            )
        }
        # fold cluster by cluster, in ascending order, as the local loop does (ties: the
        # first cluster's match stays); members beyond the cluster's own are their matches
        order = np.argsort(got["cluster"], kind="stable")
        cluster = got["cluster"][order]
        cuts = np.flatnonzero(np.diff(cluster)) + 1
        for part in np.split(order, cuts):
            if part.size == 0:
                continue
            rows, size = got["row"][part], part.size
            prev, near = got["prev"][part], got["near"][part]
            members = np.concatenate([rows, np.maximum(prev, 0), np.maximum(near, 0)])
            pad = np.zeros(2 * size, dtype=np.int64)
            none = np.full(2 * size, -np.inf, dtype=np.float32)
            position = np.arange(size, dtype=np.int64)
            found = (
                np.concatenate([size + position, pad]),
                np.concatenate([got["prev_sim"][part], none]),
                np.concatenate([2 * size + position, pad]),
                np.concatenate([got["near_sim"][part], none]),
            )
            semantic.merge_matches(members, found, dup_of, sim_to, nearest, most_similar)
        return dup_of, sim_to, nearest, most_similar

    def group_stats(self, x: Any, groups: IntArray, count: int) -> list[Any]:
        dim = x.shape[1]
        out = [Running.empty(dim) for _ in range(count)]
        groups = np.asarray(groups, dtype=np.int64)
        if len(groups) == 0:
            return out
        # rows sent in group order, so that each block holds few groups and few partial sums
        order = np.argsort(groups, kind="stable")
        tables = []
        for s, e in self._bounds(len(order)):
            rows = order[s:e]
            tables.append(pa.table({"group": groups[rows], "x": _fixed(x[rows])}))
        ds = self._source(tables).map_batches(
            _partial_stats, batch_size=None, batch_format="pyarrow", fn_kwargs={"dim": dim}
        )
        for batch in self._collect(ds):
            ids = _np(batch.column("group"), np.int64)
            counts = _np(batch.column("count"), np.int64)
            totals = _vectors(batch.column("total"), dim)
            outers = _vectors(batch.column("outer"), dim * dim)
            for g, c, total, outer in zip(ids.tolist(), counts.tolist(), totals, outers):
                part = Running.empty(dim)
                part.count, part.total, part.outer = c, total, outer.reshape(dim, dim)
                out[g] += part
        return out

    def counts(self, groups: IntArray, count: int) -> IntArray:
        groups = np.asarray(groups, dtype=np.int64)
        out = np.zeros(count, dtype=np.int64)
        if not (groups >= 0).any():
            return out
        tables = [pa.table({"group": groups[s:e]}) for s, e in self._bounds(len(groups))]
        ds = self._source(tables).map_batches(
            _valid_groups, batch_size=None, batch_format="pyarrow"
        )
        got = self._collect(ds.groupby("group").count())
        group, rows = _column(got, "group", np.int64), _column(got, "count()", np.int64)
        inside = group < count
        out[group[inside]] = rows[inside]
        return out


def ray_backend(address: str | None = None) -> RayBackend:
    """A :class:`RayBackend` on the Ray at ``address`` (``auto``, ``HOST:PORT``), or on a local
    Ray started here with this machine's CPUs (shut down when the process exits, or by
    :meth:`RayBackend.close`). Exit-2 errors when Ray is not installed or nothing answers at
    the address (:func:`datagate.scanner.ray_engine.connect`)."""
    started = connect(RayOptions(address=address))
    backend = RayBackend(started=started)
    if started:
        atexit.register(backend.close)
    return backend
