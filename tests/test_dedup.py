from __future__ import annotations

import numpy as np
import pytest

from datagate.measures.neardup import greedy_keep, near_pairs


def _brute(hashes: np.ndarray, r: int) -> set[tuple[int, int]]:
    x = hashes[:, None] ^ hashes[None, :]
    bits = np.unpackbits(
        x.astype(">u8").view(np.uint8).reshape(len(hashes), len(hashes), 8), axis=-1
    )
    dist = bits.sum(-1)
    i, j = np.nonzero(np.triu(dist <= r, 1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("radius", [0, 2, 6, 10, 13])
def test_near_pairs_is_exact_against_brute_force(radius: int) -> None:
    rng = np.random.default_rng(radius)
    n = 600
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for _ in range(150):  # plant near copies at distances 0..14
        a, b = rng.integers(0, n, 2)
        v = int(hashes[a])
        for bit in rng.choice(64, int(rng.integers(0, 15)), replace=False):
            v ^= 1 << int(bit)
        hashes[b] = v
    i, j, d = near_pairs(hashes, radius)
    assert set(zip(i.tolist(), j.tolist())) == _brute(hashes, radius)
    assert np.all(d <= radius)


def test_greedy_keep_does_not_chain() -> None:
    # 0~1 (d=3), 1~2 (d=3), 0 and 2 far apart: keeping 0 drops 1 only.
    i, j, d = np.array([0, 1]), np.array([1, 2]), np.array([3, 3])
    dropped, dup_of, dist = greedy_keep(3, i, j, d, np.array([0, 1, 2]))
    assert dropped.tolist() == [False, True, False]
    assert dup_of.tolist() == [-1, 0, -1] and dist.tolist() == [-1, 3, -1]


def test_greedy_keep_follows_preference() -> None:
    i, j, d = np.array([0]), np.array([1]), np.array([1])
    dropped, dup_of, _ = greedy_keep(2, i, j, d, np.array([1, 0]))
    assert dropped.tolist() == [True, False] and dup_of[0] == 1


def _clustered(n: int, seed: int) -> np.ndarray:
    """Random hashes, near copies of 50 of them at 0..11 bits, and exact copies."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    base = hashes[:50].copy()
    for _ in range(n // 2):
        v = int(base[rng.integers(0, 50)])
        for bit in rng.choice(64, int(rng.integers(0, 12)), replace=False):
            v ^= 1 << int(bit)
        hashes[rng.integers(50, n)] = v
    hashes[50:80] = hashes[80:110]
    return hashes


@pytest.mark.parametrize("radius", [0, 1, 4, 6, 9, 13])
def test_block_search_is_exact_against_brute_force(
    radius: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sorted multi-index search (used above a few thousand hashes) finds exactly the
    pairs all-pairs comparison finds, also when candidates are cut into small batches."""
    from datagate.measures import neardup

    hashes = np.unique(_clustered(700, radius))
    monkeypatch.setattr(neardup, "BRUTE_FORCE_MAX", 0)
    monkeypatch.setattr(neardup, "PAIR_BATCH", 7)
    i, j, d = neardup.distinct_pairs(hashes, radius)
    assert set(zip(i.tolist(), j.tolist())) == _brute(hashes, radius)
    bits = [bin(int(hashes[a]) ^ int(hashes[b])).count("1") for a, b in zip(i, j)]
    assert d.tolist() == bits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_duplicates_drops_what_greedy_over_all_pairs_drops(seed: int) -> None:
    """Grouping identical hashes first changes nothing: the same rows are dropped as by the
    greedy selection over every pair, and each names a kept row within range."""
    from datagate.measures.neardup import near_duplicates

    hashes = _clustered(900, seed)
    preference = np.random.default_rng(seed).permutation(len(hashes))
    dropped, dup_of, dist = near_duplicates(hashes, 6, preference)
    i, j, d = near_pairs(hashes, 6)
    expected, _, _ = greedy_keep(len(hashes), i, j, d, preference)
    assert dropped.tolist() == expected.tolist() and dropped.any()
    assert not dropped[dup_of[dropped]].any()
    for row in np.flatnonzero(dropped).tolist():
        assert bin(int(hashes[row]) ^ int(hashes[dup_of[row]])).count("1") == dist[row] <= 6


def test_confirmed_pairs_need_both_hashes_within_range() -> None:
    from datagate.measures.neardup import near_duplicates

    first = _clustered(600, 5)
    second = _clustered(600, 6)
    second[100:130] = second[130:160]  # some pairs agree on the second hash only
    close = _brute(first, 6) & _brute(second, 4)
    preference = np.arange(len(first))
    dropped, _, _ = near_duplicates(first, 6, preference, confirm=second, confirm_distance=4)
    i = np.array([a for a, _ in sorted(close)], dtype=np.int64)
    j = np.array([b for _, b in sorted(close)], dtype=np.int64)
    expected, _, _ = greedy_keep(len(first), i, j, np.zeros(len(i), dtype=np.int64), preference)
    assert dropped.tolist() == expected.tolist() and dropped.any()
