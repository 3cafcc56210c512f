"""The gate's intermediates kept between runs (datagate.measures.incremental)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datagate.measures.backend import LOCAL
from datagate.measures.diversity import Running
from datagate.measures.incremental import IncrementalBackend, fingerprints
from datagate.measures.semantic import semantic_duplicates


def _hashes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    # a third are near copies of another hash (a few flipped bits), so pairs exist
    near = base[rng.integers(0, n, size=n // 3)] ^ (
        np.uint64(1) << rng.integers(0, 64, size=n // 3).astype(np.uint64)
    )
    return np.unique(np.concatenate([base, near]))


def test_fingerprints_tell_rows_apart_and_equal_rows_alike() -> None:
    x = np.random.default_rng(0).standard_normal((1000, 37)).astype(np.float16)
    fp = fingerprints(x)
    assert len(np.unique(fp, axis=0)) == 1000
    assert (fingerprints(x[::-1].copy())[::-1] == fp).all()
    y = x.copy()
    y[5, 36] = np.float16(y[5, 36] + 1)  # the last byte of a row
    changed = (fingerprints(y) != fp).any(axis=1)
    assert changed.tolist() == [i == 5 for i in range(1000)]


def test_near_duplicate_pairs_updated_with_added_and_removed_hashes_equal_a_full_search(
    tmp_path: Path,
) -> None:
    first = _hashes(6000, 1)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        got = backend.distinct_pairs(first, 4)
    assert backend.reused["near_duplicates"] == {"added_hashes": None}  # nothing kept yet
    for want, part in zip(LOCAL.distinct_pairs(first, 4), got):
        assert np.array_equal(want, part)
    # next commit: 40 hashes gone, 20 new ones, some of them near copies of kept ones
    rng = np.random.default_rng(2)
    kept = np.delete(first, rng.choice(len(first), 40, replace=False))
    added = np.concatenate(
        [first[:10] ^ np.uint64(0b101), rng.integers(0, 2**63, size=10, dtype=np.uint64)]
    )
    second = rng.permutation(np.unique(np.concatenate([kept, added])))
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        got = backend.distinct_pairs(second, 4)
    assert 0 < backend.reused["near_duplicates"]["added_hashes"] <= 20
    want = LOCAL.distinct_pairs(second, 4)
    assert len(want[0]) > 1000
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


def test_too_many_added_hashes_search_everything_again(tmp_path: Path) -> None:
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.distinct_pairs(_hashes(2000, 3), 3)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        fresh = _hashes(2000, 4)  # all new
        got = backend.distinct_pairs(fresh, 3)
    assert backend.reused["near_duplicates"] == {"added_hashes": None}
    for w, g in zip(LOCAL.distinct_pairs(fresh, 3), got):
        assert np.array_equal(w, g)


def test_diversity_sums_reuse_unchanged_groups_and_sum_changed_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 24)).astype(np.float16)
    groups = np.repeat(np.arange(3), 1000)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.group_stats(x, groups, 3)
    assert backend.reused["diversity_sums"] == {"rows_summed": 3000}
    x[1500] = rng.standard_normal(24)  # one row of group 1 changes
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        got = backend.group_stats(x, groups, 3)
    assert backend.reused["diversity_sums"] == {"rows_summed": 1000}
    for want, running in zip(Running.of_groups(x, groups, 3), got):
        assert running.count == want.count
        np.testing.assert_allclose(running.outer, want.outer, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(running.total, want.total, rtol=1e-12, atol=1e-9)


def test_a_kept_fit_assigns_new_rows_and_a_drifted_dataset_is_fitted_again(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((40, 16))
    x = (centres[rng.integers(0, 40, 4000)] + 0.05 * rng.standard_normal((4000, 16))).astype(
        np.float32
    )
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        first = backend.kmeans_labels(x, 40, probes=2)
    assert backend.reused["semantic_clusters"] == {"assigned_rows": None}
    grown = np.concatenate([x, x[:50] + 0.01])  # 50 new rows
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        second = backend.kmeans_labels(grown, 41, probes=2)
    assert backend.reused["semantic_clusters"] == {"assigned_rows": 50}
    assert np.array_equal(second[:4000], first)  # rows seen before keep their clusters
    assert np.array_equal(second[4000:, 0], first[:50, 0])  # copies land with their originals
    other = rng.standard_normal((4000, 16)).astype(np.float32)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.kmeans_labels(other, 40, probes=2)
    assert backend.reused["semantic_clusters"] == {"assigned_rows": None}


def test_semantic_duplicates_search_only_the_clusters_whose_members_changed(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x[1000:1100] = x[:100] + 0.01 * rng.standard_normal((100, 32)).astype(np.float32)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        first = semantic_duplicates(x, 0.95, backend=backend)
    searched = backend.reused["semantic_matches"]["clusters_searched"]
    assert searched == first.clusters
    y = np.concatenate([x, x[200:201] + 0.001])  # one new image, a copy of image 200
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        second = semantic_duplicates(y, 0.95, backend=backend)
    assert 1 <= backend.reused["semantic_matches"]["clusters_searched"] <= 2  # its 2 probes
    assert second.duplicate_of[3000] == 200
    # the same result as the whole search with the same clusters
    labels = backend.kmeans_labels(y, second.clusters, probes=2)
    rank = np.arange(len(y))
    cached = backend.cluster_matches(y, labels, rank, 0.95, True)
    whole = LOCAL.cluster_matches(y, labels, rank, 0.95, True)
    for w, c in zip(whole, cached):
        assert np.array_equal(w, c)


def test_a_kept_fit_of_one_cluster_or_one_probe_keeps_the_fits_label_width(
    tmp_path: Path,
) -> None:
    """A fit of one cluster assigns one label per row however many probes are asked for:
    a reused fit must too (two equal labels put a row twice in its cluster, where it
    matched itself)."""
    x = np.random.default_rng(8).standard_normal((120, 16)).astype(np.float32)
    x[100:110] = x[:10] + 0.001
    for probes in (1, 2):
        cache = tmp_path / f"p{probes}"
        fresh = LOCAL.kmeans_labels(x, 1, probes=probes)
        for _ in range(2):  # fitted, then reused
            with IncrementalBackend(LOCAL, cache) as backend:
                got = backend.kmeans_labels(x, 1, probes=probes)
            assert got.shape == fresh.shape and np.array_equal(got, fresh)
        assert backend.reused["semantic_clusters"] == {"assigned_rows": 0}
    with IncrementalBackend(LOCAL, tmp_path / "semantic") as backend:
        first = semantic_duplicates(x, 0.95, backend=backend)
    with IncrementalBackend(LOCAL, tmp_path / "semantic") as backend:
        again = semantic_duplicates(x, 0.95, backend=backend)
    assert first.clusters == again.clusters == 1
    assert np.array_equal(first.duplicate_of, again.duplicate_of)
    assert first.duplicate_of[100:110].tolist() == list(range(10))


def test_fingerprints_see_changes_that_cancel_in_a_plain_weighted_sum() -> None:
    """Two sign bits flipped (2^63 + 2^63 = 0 mod 2^64 in a sum of odd multiples), zero
    words, other lengths and other dtypes of the same bytes all give other fingerprints."""
    x = np.random.default_rng(9).standard_normal((200, 8)).astype(np.float16)
    y = x.copy()
    y[:, [3, 7]] *= -1  # the sign bits of two 64-bit words
    assert (fingerprints(x) != fingerprints(y)).any(axis=1).all()
    z = np.zeros((2, 8), np.float16)
    z[1, 4] = np.float16(-0.0)  # one sign bit alone
    assert len(np.unique(fingerprints(z), axis=0)) == 2
    assert (
        fingerprints(np.zeros((1, 4), np.float16)) != fingerprints(np.zeros((1, 8), np.float16))
    ).any()
    same_bytes = np.zeros((1, 4), np.float32)
    assert (fingerprints(same_bytes) != fingerprints(same_bytes.view(np.int32))).any()
    wide = np.random.default_rng(10).standard_normal((3, 8193)).astype(np.float32)
    assert len(np.unique(fingerprints(wide), axis=0)) == 3  # rows of any width


def test_semantic_matches_of_vectors_changed_in_two_sign_bits_are_searched_again(
    tmp_path: Path,
) -> None:
    x = np.random.default_rng(11).standard_normal((300, 8)).astype(np.float16)
    x[1] = x[0]
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        first = semantic_duplicates(x, 0.95, redundancy=False, backend=backend)
    assert first.duplicate_of[1] == 0
    y = x.copy()
    y[1, [3, 7]] *= -1  # no longer a copy of row 0
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        got = semantic_duplicates(y, 0.95, redundancy=False, backend=backend)
    want = semantic_duplicates(y, 0.95, redundancy=False)
    assert got.duplicate_of[1] == want.duplicate_of[1] == -1
    assert np.array_equal(got.duplicate_of, want.duplicate_of)


def test_damaged_or_foreign_cache_files_are_misses(tmp_path: Path) -> None:
    keys = _hashes(3000, 12)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.distinct_pairs(keys, 4)
    (path,) = tmp_path.iterdir()
    want = LOCAL.distinct_pairs(keys, 4)
    np.savez(path.with_suffix(".tmp.npz"), keys=keys)  # an array missing
    for damaged in (b"PK\x03\x04" + bytes(64), path.with_suffix(".tmp.npz").read_bytes()):
        path.write_bytes(damaged)
        with IncrementalBackend(LOCAL, tmp_path) as backend:
            got = backend.distinct_pairs(keys, 4)
        assert backend.reused["near_duplicates"] == {"added_hashes": None}
        for w, g in zip(want, got):
            assert np.array_equal(w, g)


def test_a_fit_is_not_reused_for_a_few_of_its_rows_repeated(tmp_path: Path) -> None:
    x = np.random.default_rng(13).standard_normal((1000, 16)).astype(np.float32)
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.kmeans_labels(x, 8, probes=2)
    repeated = np.concatenate([x[:110]] * 9)  # 990 rows, 110 of them distinct
    with IncrementalBackend(LOCAL, tmp_path) as backend:
        backend.kmeans_labels(repeated, 8, probes=2)
    assert backend.reused["semantic_clusters"] == {"assigned_rows": None}
