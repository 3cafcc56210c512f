"""Where the gate's dataset-wide work runs: in this process, or on a Ray cluster.

The rules and the report never loop over the dataset themselves for their heavy steps; they
ask a :class:`Backend`, whose every operation is a grouping, a pair search or a sum — the
shapes a distributed engine runs as shuffles and map-reduces:

* :meth:`~Backend.equal_groups`: rows with equal values (exact duplicates: group by sha256);
* :meth:`~Backend.distinct_pairs`: pairs of distinct 64-bit hashes within a Hamming radius
  (near duplicates: hash bands, then an exact check);
* :meth:`~Backend.kmeans_labels` and :meth:`~Backend.cluster_matches`: the semantic
  clusters, and the most similar earlier member of each row within its clusters;
* :meth:`~Backend.group_stats`: sums of x xᵀ and x per group (diversity: a map-reduce);
* :meth:`~Backend.counts`: rows per group (the human share).

Selection (which copy is kept, in what order rows leave) runs on the small results, in the
caller, so both backends give the same decisions. :class:`LocalBackend` is numpy and faiss
in this process; ``datagate.gate_ray.RayBackend`` runs the same operations as Ray Data.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
UInt64Array = np.ndarray[Any, np.dtype[np.uint64]]
Pairs = tuple[IntArray, IntArray, IntArray]


class Backend(Protocol):
    """The dataset-wide operations of the gate (see the module docstring)."""

    name: str

    def equal_groups(self, values: pa.Array | pa.ChunkedArray) -> IntArray:
        """A group id per value, equal values sharing one (ids dense from 0 in order of
        first appearance); -1 for nulls."""
        ...

    def distinct_pairs(self, keys: UInt64Array, r: int) -> Pairs:
        """Every pair ``(i < j)`` of the distinct hashes ``keys`` within Hamming distance
        ``r``, sorted by ``(i, j)``, with the distance."""
        ...

    def kmeans_labels(self, x: Any, k: int, seed: int = 0, probes: int = 1) -> IntArray:
        """Spherical k-means labels (``(n, probes)`` nearest clusters first, when probes > 1)."""
        ...

    def cluster_matches(
        self, x: Any, labels: IntArray, rank: IntArray, threshold: float, redundancy: bool
    ) -> tuple[IntArray, FloatArray, IntArray, FloatArray]:
        """Within every cluster: each row's most similar member earlier in ``rank`` order
        at or above ``threshold`` (``-1`` and ``-inf`` when none) and, with ``redundancy``,
        its most similar other member (``nearest``, ``most_similar``)."""
        ...

    def group_stats(self, x: Any, groups: IntArray, count: int) -> list[Any]:
        """:class:`~datagate.measures.diversity.Running` statistics of every group."""
        ...

    def counts(self, groups: IntArray, count: int) -> IntArray:
        """Rows per group id in ``[0, count)`` (negative ids are not counted)."""
        ...


class LocalBackend:
    """Every operation in this process (numpy, faiss; two threads where it helps)."""

    name = "local"

    def equal_groups(self, values: pa.Array | pa.ChunkedArray) -> IntArray:
        if isinstance(values, pa.ChunkedArray):
            # one array first: unifying 77 chunks' dictionaries took 290 s at 10M sha256s,
            # encoding the combined column 6 s (large_string: it may pass 2 GB)
            values = values.cast(pa.large_string()) if pa.types.is_string(values.type) else values
            values = values.combine_chunks()
        codes = pc.fill_null(pc.dictionary_encode(values).indices, -1)
        return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)

    def distinct_pairs(self, keys: UInt64Array, r: int) -> Pairs:
        from datagate.measures.neardup import distinct_pairs

        return distinct_pairs(keys, r)

    def kmeans_labels(self, x: Any, k: int, seed: int = 0, probes: int = 1) -> IntArray:
        from datagate.measures.diversity import kmeans_labels

        return kmeans_labels(x, k, seed, probes)

    def cluster_matches(
        self, x: Any, labels: IntArray, rank: IntArray, threshold: float, redundancy: bool
    ) -> tuple[IntArray, FloatArray, IntArray, FloatArray]:
        from datagate.measures.semantic import match_clusters

        return match_clusters(x, labels, rank, threshold, redundancy)

    def group_stats(self, x: Any, groups: IntArray, count: int) -> list[Any]:
        from datagate.measures.diversity import Running

        return Running.of_groups(x, groups, count)

    def counts(self, groups: IntArray, count: int) -> IntArray:
        groups = np.asarray(groups, dtype=np.int64)
        return np.bincount(groups[groups >= 0], minlength=count)[:count].astype(np.int64)


LOCAL = LocalBackend()
