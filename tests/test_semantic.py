"""Semantic duplicates and the diversity rules, with the selection that raises the index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from datagate.measures.diversity import (
    TWO_LEVEL_MIN,
    Running,
    diversity_index,
    drop_until,
    fit_kmeans,
    normalise,
)
from datagate.measures.semantic import semantic_duplicates
from datagate.rules import RowVectors, apply_policy, parse_policy
from datagate.scanner.schema import images_schema


def spread(n: int, d: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def near(x: np.ndarray, copies: int, noise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = x[rng.integers(0, len(x), copies)]
    return base + noise * rng.normal(size=base.shape) * np.linalg.norm(base, axis=1, keepdims=True)


def brute_force(x: np.ndarray, threshold: float) -> np.ndarray:
    """The definition, with the n x n matrix: a duplicate of an earlier image in order."""
    u = normalise(x).astype(np.float64)
    sims = u @ u.T
    return np.array([i > 0 and sims[i, :i].max() >= threshold for i in range(len(u))])


@pytest.mark.parametrize("threshold", [0.9, 0.97, 0.995])
def test_single_cluster_equals_brute_force(threshold: float) -> None:
    base = spread(150)
    x = np.concatenate([base, near(base, 80, 0.05), near(base, 40, 0.2, seed=2)])
    found = semantic_duplicates(x, threshold, clusters=1)
    np.testing.assert_array_equal(found.dropped, brute_force(x, threshold))
    kept = ~found.dropped
    assert kept[found.duplicate_of[found.dropped]].all()  # always points at a kept image


def test_clustered_search_finds_planted_copies_without_false_positives() -> None:
    base = spread(3000, d=64)
    copies = near(base, 500, 0.03)
    x = np.concatenate([base, copies])
    found = semantic_duplicates(x, 0.95)  # 28 clusters: never a 3500 x 3500 matrix
    assert found.clusters == 28
    assert not found.dropped[:3000].any()  # random vectors are never 0.95 alike
    assert found.dropped[3000:].mean() > 0.95  # pairs split across clusters are rare


def test_two_level_kmeans_finds_the_nearest_centroid_and_the_planted_copies() -> None:
    """Above TWO_LEVEL_MIN clusters k-means is fitted and searched in two levels; on random
    isotropic vectors (no structure for the coarse level to follow: the hardest case) rows
    still land in their nearest centroid ~90 % of the time (else the next), and ~95 % of
    planted copies are found (97 % with one level at this size)."""
    base = spread(36_000, d=64, seed=3)
    x = np.concatenate([base, near(base, 4_000, 0.03, seed=4)])
    model = fit_kmeans(x, 400)
    assert model.coarse is not None and model.k >= 380  # the two-level path ran
    labels = model.assign(x[:5000], 2)
    exhaustive = np.argmax(model.project(x[:5000]) @ model.centroids.T, axis=1)
    assert (labels[:, 0] == exhaustive).mean() > 0.85
    assert (labels[:, 0] != labels[:, 1]).all()  # two distinct clusters per row
    found = semantic_duplicates(x, 0.95)
    assert found.clusters > TWO_LEVEL_MIN
    assert not found.dropped[:36_000].any()
    assert found.dropped[36_000:].mean() > 0.93


def test_preference_decides_which_copy_is_kept() -> None:
    base = spread(10)
    x = np.concatenate([base, base[:3] * 1.0001])
    prefer_copies = np.array([10, 11, 12, *range(10)])
    found = semantic_duplicates(x, 0.99, preference=prefer_copies, clusters=1)
    assert found.dropped[:3].all() and not found.dropped[10:].any()
    assert found.duplicate_of[:3].tolist() == [10, 11, 12]


def test_drop_until_stops_as_soon_as_the_target_holds() -> None:
    x = np.concatenate([spread(400), near(spread(400)[:3], 600, 0.02)])
    order = np.arange(400, 1000)[::-1]
    before = diversity_index(x)
    target = before + 0.1
    dropped, value = drop_until(x, order, "index", target)
    assert value >= target > before
    keep = np.ones(len(x), bool)
    keep[order[: dropped - 1]] = False
    assert Running(x[keep]).value("index") < target  # one fewer would not have been enough


def _table(n: int, human: set[int] | None = None) -> pa.Table:
    schema = images_schema(["integrity", "provenance"])
    rows = []
    for i in range(n):
        row = {f.name: None for f in schema}
        row.update(
            key=f"s/{i:05d}",
            shard="s",
            member=f"{i:05d}",
            reader="folder",
            decodable=True,
            width=100,
            height=100,
            origin="human" if human and i in human else "unknown",
            origin_strength="strong" if human and i in human else None,
            evidence="[]",
            c2pa_state="absent",
            provenance_conflict=False,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _collapsed() -> np.ndarray:
    """500 distinct subjects, then 500 near-copies of five of them (a collapsing dataset)."""
    base = spread(500)
    return np.concatenate([base, near(base[:5], 500, 0.05)])


def _vectors(table: pa.Table, x: np.ndarray) -> RowVectors:
    keys = table.column("key").to_pylist()
    return RowVectors.align(table, keys, x.astype(np.float16), "test-embedder")


POLICY = """
rules:
  - rule: semantic_duplicates
    threshold: 0.9
    action: {action}
  - rule: min_diversity
    min: {floor}
"""


def test_semantic_filter_raises_the_index_and_drops_only_what_is_needed() -> None:
    x = _collapsed()
    table = _table(len(x))
    before = diversity_index(x)
    floor = round(before + 0.05, 3)
    vectors = _vectors(table, x)
    filtered = apply_policy(
        table, parse_policy(POLICY.format(action="filter", floor=floor), "p"), vectors
    )
    rejected = apply_policy(
        table, parse_policy(POLICY.format(action="reject", floor=floor), "p"), vectors
    )
    kept_index = diversity_index(x[filtered.kept])
    assert kept_index >= floor > before
    assert filtered.passed
    assert 0 < (~filtered.kept).sum() < (~rejected.kept).sum()  # filter drops fewer
    assert not (~filtered.kept[:500]).any()  # only the copies went
    assert all(r.startswith("semantic duplicate of s/") for r in filtered.reason[~filtered.kept])


def test_min_diversity_filter_drops_redundant_images_but_never_human_ones() -> None:
    x = _collapsed()
    human = set(range(500, 700))  # some of the copies carry human evidence
    table = _table(len(x), human)
    before = diversity_index(x)
    policy = parse_policy(
        f"rules:\n  - rule: min_diversity\n    min: {before + 0.04:.3f}\n    action: filter\n", "p"
    )
    decision = apply_policy(table, policy, _vectors(table, x))
    dropped = np.flatnonzero(~decision.kept)
    assert dropped.size and not any(int(i) in human for i in dropped)
    assert diversity_index(x[decision.kept]) > before
    outcome = decision.outcomes[0]
    assert outcome.passed and outcome.rejected == dropped.size
    assert "redundant images dropped" in outcome.message


def test_diversity_rules_without_embeddings_fail_and_say_why() -> None:
    table = _table(10)
    decision = apply_policy(table, parse_policy(POLICY.format(action="reject", floor=0.5), "p"))
    assert not decision.passed
    messages = [o.message for o in decision.outcomes]
    assert all("the scan has no embeddings" in m for m in messages), messages
