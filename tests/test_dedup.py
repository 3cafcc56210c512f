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
