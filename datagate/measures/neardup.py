"""Near-duplicate search over 64-bit perceptual hashes without all-pairs comparison.

**Search.** Identical hashes are grouped first (``np.unique``), so a thousand copies of one
picture cost one entry, not half a million pairs. The distinct hashes are searched by
multi-index hashing with sorting instead of hash tables: the 64 bits are split into
``m = r + k`` blocks, and two hashes within Hamming distance ``r`` differ in at most ``r``
blocks, so they agree exactly on at least ``k`` of them (pigeonhole). For every choice of
``k`` blocks, the hashes are sorted by those blocks; hashes that share them are candidates,
verified on all 64 bits with a popcount. The search is exact (no pair within ``r`` is
missed; tested against brute force), runs in ``C(m, k)`` sorts of the distinct hashes plus
the candidates, and the choices of blocks run on two threads (numpy's sort releases the
GIL). Each sort is of one word per hash, the chosen blocks packed above its position, and
the candidates are read from the sorted order, never listed. ``m`` and ``k`` are chosen per
radius and size from a cost model: at a million hashes and ``r = 6``, 9 blocks of 7 bits,
84 sorts (``r = 8``: 11 blocks, 165 sorts). Small sets (a few thousand hashes) are compared
all-pairs in blocks instead.

**Selection.** :func:`near_duplicates` keeps images in preference order unless a kept image
is already within range (never chaining through a dropped copy), on the distinct hashes —
every further copy of a kept hash is its duplicate at distance 0 — and optionally confirms
every pair on a second hash (both hashes within their radius), which keeps precision at
scale where one 64-bit hash alone meets unrelated pictures by chance.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

UInt64Array = np.ndarray[Any, np.dtype[np.uint64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

#: at or below this many distinct hashes, compare all pairs (in row blocks)
BRUTE_FORCE_MAX = 4096
#: candidate pairs generated at once within one choice of blocks (bounds memory)
PAIR_BATCH = 1 << 20
#: relative cost of sorting one hash against verifying one candidate pair: the default of
#: :func:`plan` (a distributed search, whose every choice of blocks is a shuffle), and of the
#: local search (one plain sort of packed words; then ~10 ns a candidate, measured at a
#: million hashes: 35 ms a choice of blocks)
SORT_COST = 24.0
LOCAL_SORT_COST = 3.0
THREADS = 2


def _empty() -> tuple[IntArray, IntArray, IntArray]:
    e = np.empty(0, dtype=np.int64)
    return e, e, e


def _popcount(x: UInt64Array) -> IntArray:
    return np.bitwise_count(x).astype(np.int64)


def _brute_force(h: UInt64Array, r: int) -> tuple[IntArray, IntArray, IntArray]:
    """Every pair (i < j) within ``r``, by comparing all pairs in blocks of rows."""
    out: list[tuple[IntArray, IntArray, IntArray]] = []
    step = max(1, (1 << 22) // max(len(h), 1))
    for start in range(0, len(h), step):
        block = h[start : start + step]
        dist = _popcount(block[:, None] ^ h[None, :])
        a, b = np.nonzero(dist <= r)
        a = a + start
        keep = a < b
        a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
        out.append((a, b, dist[a - start, b]))
    if not out:
        return _empty()
    return tuple(np.concatenate(p) for p in zip(*out))  # type: ignore[return-value]


def plan(count: int, r: int, sort_cost: float = SORT_COST) -> tuple[int, int]:
    """``(m, k)``: split into ``m = r + k`` blocks, match on ``k``; the cheapest estimate
    when sorting a hash costs ``sort_cost`` verified candidates."""
    best: tuple[float, int, int] | None = None
    for k in range(1, 8):
        m = r + k
        if m > 64:
            break
        combos = math.comb(m, k)
        key_bits = 64 * k / m
        candidates = count * count / 2 / 2.0**key_bits
        cost = combos * (count * sort_cost + candidates)
        if best is None or cost < best[0]:
            best = (cost, m, k)
    assert best is not None
    return best[1], best[2]


def shared_runs(key: UInt64Array) -> tuple[IntArray, IntArray, IntArray]:
    """``(order, start, length)``: ``key`` sorted (stable) and the runs of two or more equal
    keys in that order — the candidates of one choice of blocks."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts_run = np.ones(n, dtype=bool)
    starts_run[1:] = sorted_key[1:] != sorted_key[:-1]
    run_start = np.flatnonzero(starts_run)
    run_len = np.diff(np.append(run_start, n))
    return order, run_start[run_len > 1], run_len[run_len > 1]


def _packed_pairs(
    h: UInt64Array, combo: tuple[int, ...], sizes: list[int], shifts: list[int], r: int
) -> tuple[IntArray, IntArray, IntArray] | None:
    """The verified pairs (i < j) that agree on the blocks ``combo`` of the distinct hashes
    ``h``, or None when the blocks and a position do not fit in 64 bits.

    The blocks' bits are packed above each hash's position, so one plain sort (a fifth of
    a stable argsort's cost) orders the hashes by key, then position; candidates one, two,
    ... places apart in that order are compared while they still share the key (the runs
    are short: a few members each), with no array of every candidate pair."""
    n = len(h)
    index_bits = max(1, (n - 1).bit_length())
    if sum(sizes[b] for b in combo) + index_bits > 64:
        return None
    packed = np.arange(n, dtype=np.uint64)
    offset = index_bits
    for b in combo:
        packed |= ((h >> np.uint64(shifts[b])) & np.uint64((1 << sizes[b]) - 1)) << np.uint64(
            offset
        )
        offset += sizes[b]
    packed.sort()
    low = np.uint64((1 << index_bits) - 1)
    same = np.zeros(n, dtype=bool)  # the next word has the same key (never the last)
    same[:-1] = (packed[1:] ^ packed[:-1]) <= low
    at = np.flatnonzero(same)  # words whose partner `apart` places on shares the key
    if not at.size:
        return _empty()
    order = (packed & low).astype(np.int64)
    del packed
    sorted_h = h[order]  # one gather: the comparisons below then read nearby words
    out: list[tuple[IntArray, IntArray, IntArray]] = []
    apart = 1
    while at.size:
        dist = np.bitwise_count(sorted_h[at] ^ sorted_h[at + apart])
        ok = np.flatnonzero(dist <= r)
        if ok.size:
            hit = at[ok]
            out.append((order[hit], order[hit + apart], dist[ok].astype(np.int64)))
        at = at[same[at + apart]]
        apart += 1
    if not out:
        return _empty()
    return tuple(np.concatenate(p) for p in zip(*out))  # type: ignore[return-value]


def _block_pairs(h: UInt64Array, r: int) -> tuple[IntArray, IntArray, IntArray]:
    """Every pair (i < j) of *distinct* hashes ``h`` within ``r`` (multi-index by sorting)."""
    n = len(h)
    m, k = plan(n, r, LOCAL_SORT_COST)
    sizes = [64 // m + (1 if b < 64 % m else 0) for b in range(m)]
    shifts = np.cumsum([0, *sizes[:-1]]).tolist()
    masks = [((1 << z) - 1) << s for z, s in zip(sizes, shifts)]

    def one(combo: tuple[int, ...]) -> tuple[IntArray, IntArray, IntArray]:
        packed = _packed_pairs(h, combo, sizes, shifts, r)
        if packed is not None:
            return packed
        order, shared, shared_len = shared_runs(h & np.uint64(sum(masks[b] for b in combo)))
        if shared.size == 0:
            return _empty()
        out: list[tuple[IntArray, IntArray, IntArray]] = []
        cumulative = np.cumsum(shared_len * (shared_len - 1) // 2)
        lo, done = 0, 0
        while lo < shared.size:  # runs in batches of about PAIR_BATCH candidate pairs
            hi = max(lo + 1, int(np.searchsorted(cumulative, done + PAIR_BATCH, "right")))
            out.append(_pairs_in_runs(h, order, shared[lo:hi], shared_len[lo:hi], r))
            done, lo = int(cumulative[hi - 1]), hi
        return tuple(np.concatenate(p) for p in zip(*out))  # type: ignore[return-value]

    combos = list(itertools.combinations(range(m), k))
    threads = min(THREADS, os.cpu_count() or 1)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(one, combos))
    else:
        found = [one(c) for c in combos]
    i = np.concatenate([f[0] for f in found])
    j = np.concatenate([f[1] for f in found])
    d = np.concatenate([f[2] for f in found])
    # a pair agreeing on several choices of blocks is found once per choice
    code, first = np.unique(i * n + j, return_index=True)
    return code // n, code % n, d[first]


def _pairs_in_runs(
    h: UInt64Array, order: IntArray, start: IntArray, length: IntArray, r: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Verified pairs among the members of runs ``order[start : start + length]``."""
    # each member pairs with the members before it in its run
    member = _ranges(start, length)
    run_first = np.repeat(start, length)
    before = member - run_first
    a = np.repeat(member, before)
    offset = np.arange(len(a)) - np.repeat(np.cumsum(before) - before, before)
    b = np.repeat(run_first, before) + offset
    ia, ib = order[a], order[b]
    dist = _popcount(h[ia] ^ h[ib])
    ok = dist <= r
    ia, ib, dist = ia[ok], ib[ok], dist[ok]
    return np.minimum(ia, ib), np.maximum(ia, ib), dist


def _ranges(start: IntArray, length: IntArray) -> IntArray:
    """Concatenated ``arange(s, s + n)`` for every (s, n)."""
    total = int(length.sum())
    steps = np.ones(total, dtype=np.int64)
    heads = np.cumsum(length) - length
    steps[heads] = start - np.concatenate([[0], start[:-1] + length[:-1] - 1])
    return np.cumsum(steps)


def distinct_pairs(h: UInt64Array, r: int) -> tuple[IntArray, IntArray, IntArray]:
    """Every pair (i < j) of distinct hashes within ``r``, sorted by ``(i, j)``."""
    if len(h) < 2:
        return _empty()
    if len(h) <= BRUTE_FORCE_MAX:
        i, j, d = _brute_force(h, r)
    else:
        i, j, d = _block_pairs(h, r)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def near_pairs(hashes: UInt64Array, max_distance: int) -> tuple[IntArray, IntArray, IntArray]:
    """All pairs (i < j) of ``hashes`` whose Hamming distance is <= ``max_distance``.

    Returns arrays ``(i, j, distance)`` sorted by ``(i, j)``; exact. Copies of one hash
    give every pair among them (quadratic in the copies: selection should use
    :func:`near_duplicates`, which never expands them).
    """
    uniq, inverse = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
    ui, uj, ud = distinct_pairs(uniq, max_distance)
    members = _members(inverse, len(uniq))
    return _expand(members, ui, uj, ud, lambda group: np.triu_indices(len(group), 1))


def _expand(
    members: tuple[IntArray, IntArray],
    gi: IntArray,
    gj: IntArray,
    gd: IntArray,
    within: Any,
    keep: Any = None,
) -> tuple[IntArray, IntArray, IntArray]:
    """Row pairs from pairs of groups ``(gi, gj, distance)``: every member of one with every
    member of the other (those ``keep(rows_a, rows_b)`` accepts), plus the pairs
    ``within(group) -> (a, b)`` gives inside each group of several rows, at distance 0.
    ``members``: :func:`_members`' rows and bounds."""
    order, bounds = members
    size = np.diff(bounds)
    gi, gj, gd = (np.asarray(v, dtype=np.int64) for v in (gi, gj, gd))
    across = size[gi] * size[gj]  # every member of one group with every member of the other
    pair = np.repeat(np.arange(len(gi)), across)
    offset = np.arange(int(across.sum())) - np.repeat(np.cumsum(across) - across, across)
    width = size[gj][pair]
    x = order[bounds[gi][pair] + offset // width]
    y = order[bounds[gj][pair] + offset % width]
    d = gd[pair]
    if keep is not None:
        ok = keep(x, y)
        x, y, d = x[ok], y[ok], d[ok]
    out = [(x, y, d)]
    for g in np.flatnonzero(size > 1).tolist():
        group = order[bounds[g] : bounds[g + 1]]
        a, b = within(group)
        out.append((group[a], group[b], np.zeros(len(a), dtype=np.int64)))
    i, j, d = (np.concatenate(p) for p in zip(*out))
    if not len(i):
        return _empty()
    i, j = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def _members(inverse: IntArray, count: int) -> tuple[IntArray, IntArray]:
    """Row indices of each group, in row order: group ``g`` is ``rows[bounds[g] :
    bounds[g + 1]]`` of the returned ``(rows, bounds)`` (no array per group: a million
    distinct hashes would be a million)."""
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(count + 1))
    return order.astype(np.int64), bounds.astype(np.int64)


def near_duplicates(
    hashes: UInt64Array,
    max_distance: int,
    preference: IntArray,
    confirm: UInt64Array | None = None,
    confirm_distance: int = 0,
    pairs: Any = None,
) -> tuple[BoolArray, IntArray, IntArray]:
    """Greedy near-duplicate selection: ``(dropped, duplicate_of, distance)`` per row.

    Rows are visited in ``preference`` order (a permutation); a row is dropped when a kept
    row is within ``max_distance`` (and, with ``confirm``, also within ``confirm_distance``
    on that second hash), as the duplicate of the nearest such kept row. Rows with the same
    hash (and the same ``confirm`` hash) form one group: its most preferred row stands for
    it and every other row is its duplicate at distance 0. ``pairs(keys, r)``: the search
    of distinct hashes (:func:`distinct_pairs` here, or a backend's distributed one).
    """
    search = pairs or distinct_pairs
    n = len(hashes)
    dropped = np.zeros(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    dist_to = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dropped, dup_of, dist_to
    primary = np.asarray(hashes, dtype=np.uint64)
    if confirm is None:
        keys, inverse = np.unique(primary, return_inverse=True)
        groups = len(keys)
        ui, uj, ud = search(keys, max_distance)
    else:
        second = np.asarray(confirm, dtype=np.uint64)
        # distinct (primary, confirm) combinations, in sorted order (a lexsort, not
        # np.unique over rows, which sorts byte strings)
        order = np.lexsort((second, primary))
        a, b = primary[order], second[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.cumsum(new) - 1
        groups = int(new.sum())
        ui, uj, ud = _confirmed_pairs(a[new], b[new], max_distance, confirm_distance, search)
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(preference, dtype=np.int64)] = np.arange(n)
    # the most preferred row of each group stands for it
    best_rank = np.full(groups, n, dtype=np.int64)
    np.minimum.at(best_rank, inverse, rank)
    best = np.asarray(preference, dtype=np.int64)[best_rank]
    g_dropped, g_dup, g_dist = greedy_keep(groups, ui, uj, ud, np.argsort(best_rank))
    group = inverse
    leader = best[group] == np.arange(n)
    # a group's leader follows the group; every other row is a copy of the group's survivor
    survivor = np.where(g_dropped[group], best[np.maximum(g_dup[group], 0)], best[group])
    dropped = g_dropped[group] | ~leader
    dup_of = np.where(dropped, survivor, -1)
    dist_to = np.where(dropped, np.where(g_dropped[group], g_dist[group], 0), -1)
    return dropped, dup_of.astype(np.int64), dist_to.astype(np.int64)


def _confirmed_pairs(
    first: UInt64Array, second: UInt64Array, r1: int, r2: int, search: Any = None
) -> tuple[IntArray, IntArray, IntArray]:
    """Pairs of rows (distinct (first, second) combinations) within ``r1`` on ``first`` and
    ``r2`` on ``second``; the distance returned is on ``first``."""
    keys, inverse = np.unique(first, return_inverse=True)
    ki, kj, kd = (search or distinct_pairs)(keys, r1)
    members = _members(inverse.ravel(), len(keys))

    def close(a: IntArray, b: IntArray) -> Any:
        return _popcount(second[a] ^ second[b]) <= r2

    def within(group: IntArray) -> tuple[IntArray, IntArray]:
        si, sj, _ = distinct_pairs(second[group], r2)  # same first hash: search the second
        return si, sj

    return _expand(members, ki, kj, kd, within, close)


def greedy_keep(
    n: int, i: IntArray, j: IntArray, d: IntArray, preference: IntArray
) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], IntArray, IntArray]:
    """Keep images in ``preference`` order unless a kept image is already within range.

    Unlike connected components this never chains (A~B, B~C does not drop C when C is far
    from A and A is kept). Returns ``(dropped mask, duplicate_of index, distance)`` with -1
    where an image is kept.
    """
    dropped = np.zeros(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    dist_to = np.full(n, -1, dtype=np.int64)
    if len(i) == 0:
        return dropped, dup_of, dist_to
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    w = np.concatenate([d, d])
    order = np.argsort(a, kind="stable")
    a, b, w = a[order], b[order], w[order]
    starts = np.searchsorted(a, np.arange(n + 1))
    has_neighbours = starts[1:] > starts[:-1]
    kept = np.zeros(n, dtype=bool)
    for row in np.asarray(preference)[has_neighbours[preference]].tolist():
        lo, hi = starts[row], starts[row + 1]
        neighbours = b[lo:hi]
        hit = np.flatnonzero(kept[neighbours])
        if hit.size:
            k = hit[np.argmin(w[lo:hi][hit])]
            dropped[row] = True
            dup_of[row] = neighbours[k]
            dist_to[row] = w[lo + k]
        else:
            kept[row] = True
    return dropped, dup_of, dist_to
