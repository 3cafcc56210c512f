"""Top-up from reserve data: when a human-share or diversity floor fails, add the fewest
reserve images that make every floor hold.

Reserve rows (other scans, e.g. an archive of verified human photographs) are judged by the
same per-image rules as the dataset, after the kept set; a reserve row that any duplicate
rule pairs with a kept image (either way round) is never added. Then, for each failing
``min_human`` floor, the fewest human-evidenced candidates (in reserve order) that reach
it, found by bisection so that one fewer misses it; and for each failing ``min_diversity``
floor, candidates chosen greedily by their gain on the d x d statistics
(:func:`datagate.measures.diversity.add_until`). If the reserve cannot make every floor
hold, nothing is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datagate.contract import load_embeddings, load_scan
from datagate.embed.stacked import semantic_embeddings
from datagate.errors import ConfigError, InputError
from datagate.measures.diversity import add_until
from datagate.rules import Context, Policy, RowVectors, apply_policy
from datagate.rules.diversity import MinDiversity
from datagate.rules.human import MinHuman
from datagate.rules.origin import effective_origin

if TYPE_CHECKING:
    from datagate.contract import Embeddings
    from datagate.detect.head import Calibration
    from datagate.rules import Decision

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


DETECTOR_COLUMNS = ("detector_score", "p_synthetic", "p_synthetic_source")


@dataclass(frozen=True)
class Reserve:
    """A reserve scan: its table (keys prefixed with its name) and, aligned to its rows,
    vectors and which rows have one (None: no embeddings)."""

    name: str
    table: pa.Table
    vectors: tuple[np.ndarray[Any, Any], BoolArray] | None


@dataclass
class TopUp:
    added: dict[int, str] = field(default_factory=dict)  # reserve row (in the pool) -> rule id
    candidates: int = 0
    reached: bool = False
    message: str = ""
    by_rule: dict[str, int] = field(default_factory=dict)


def _floors(policy: Policy, decision: Decision) -> list[MinHuman | MinDiversity]:
    failed = {o.id for o in decision.outcomes if o.passed is False}
    return [
        r
        for r in policy.dataset_rules()
        if isinstance(r, (MinHuman, MinDiversity)) and r.rule_id in failed
    ]


def _candidate_policy(policy: Policy) -> Policy:
    """The per-image rules, with duplicate rules keeping the first (the kept set comes first)."""
    rules = []
    for rule in policy.image_rules():
        if "keep" in type(rule).model_fields:
            rule = rule.model_copy(update={"keep": "first"})
        rules.append(rule)
    return policy.model_copy(update={"rules": rules})


def plan(
    table: pa.Table,
    decision: Decision,
    policy: Policy,
    pool: pa.Table,
    pool_vectors: RowVectors | None,
    calibration: Calibration | None,
) -> TopUp:
    """Which rows of ``pool`` (the kept rows of ``table`` first, then every reserve row) to
    add. ``pool_vectors`` are aligned to ``pool``."""
    floors = _floors(policy, decision)
    n_kept = int(decision.kept.sum())
    found = TopUp()
    if not floors:
        found.reached, found.message = True, "no floor failed: nothing to add"
        return found
    exempt = np.zeros(pool.num_rows, dtype=bool)
    exempt[:n_kept] = True
    judged = apply_policy(pool, _candidate_policy(policy), pool_vectors, calibration)
    # a reserve row that a duplicate rule preferred over a kept image is a duplicate of it
    displaced = ~judged.kept[:n_kept]
    copies = {str(k) for k in judged.duplicate_of[:n_kept][displaced] if k is not None}
    keys = np.asarray(pool.column("key").to_pylist(), dtype=object)
    candidate = judged.kept & ~exempt & ~np.isin(keys, list(copies))
    found.candidates = int(candidate.sum())
    chosen = exempt.copy()  # the kept set, then what is added
    for floor in floors:
        if isinstance(floor, MinHuman):
            check = floor.model_copy(update={"action": "fail"})
            human = np.flatnonzero(candidate & ~chosen & (effective_origin(pool, floor) == "human"))

            def passes(count: int, check: MinHuman = check, human: Any = human) -> bool:
                mask = chosen.copy()
                mask[human[:count]] = True
                ctx = Context(pool, mask, policy, pool_vectors, calibration)
                return check.apply(ctx).passed is True

            if not passes(len(human)):
                found.message = (
                    f"{floor.rule_id}: even all {len(human):,} human-evidenced reserve "
                    f"candidates do not reach {floor.min:.0%}"
                )
                found.added = {}
                return found
            lo, hi = 0, len(human)
            while lo < hi:  # the fewest that pass: one fewer misses the floor
                mid = (lo + hi) // 2
                if passes(mid):
                    hi = mid
                else:
                    lo = mid + 1
            for row in human[:lo].tolist():
                chosen[row] = True
                found.added[row] = floor.rule_id
            found.by_rule[floor.rule_id] = lo
        else:
            if pool_vectors is None:
                found.message = f"{floor.rule_id}: the scans have no embeddings"
                found.added = {}
                return found
            _, x = pool_vectors.subset(chosen)
            pick = candidate & ~chosen
            cand_rows, cand_x = pool_vectors.subset(pick)
            order, value = add_until(x, cand_x, floor.metric, floor.min, floor.q)
            if value < floor.min:
                found.message = (
                    f"{floor.rule_id}: the reserve raises the {floor.metric} to {value:.3f} at "
                    f"most, short of {floor.min}"
                )
                found.added = {}
                return found
            for row in cand_rows[order].tolist():
                chosen[row] = True
                found.added[row] = floor.rule_id
            found.by_rule[floor.rule_id] = len(order)
    found.reached = True
    total = sum(found.by_rule.values())
    found.message = (
        f"added {total:,} reserve images ("
        + ", ".join(f"{k}: {v:,}" for k, v in found.by_rule.items())
        + ")"
    )
    return found


def load_reserve(path: Path, schema: pa.Schema, embedder: str | None) -> Reserve:
    """A reserve scan, its rows cast to the dataset's schema and its keys prefixed
    (``reserve:<folder>/<key>``) so they never collide with the dataset's."""
    table, _ = load_scan(path)
    name = path.resolve().name
    missing = [
        f.name
        for f in schema
        if f.name not in table.column_names and f.name not in DETECTOR_COLUMNS
    ]
    if missing:
        raise InputError(
            f"{path}: the reserve scan lacks columns the dataset's scan has: {missing}",
            hint="scan the reserve with the same --signals as the dataset",
        )
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    for name_col in ("key", "shard"):
        index = schema.get_field_index(name_col)
        prefixed = [f"reserve:{name}/{v}" for v in columns[index].to_pylist()]
        columns[index] = pa.array(prefixed, pa.string())
    table = pa.Table.from_arrays(columns, schema=schema)
    vectors = None
    found = semantic_embeddings(load_embeddings(path))
    if found is not None and embedder is not None:
        if found.embedder != embedder:
            raise ConfigError(
                f"{path}: reserve embedded with {found.embedder}, the scan with {embedder}",
                hint="scan the reserve with the dataset's --model",
            )
        position = {f"reserve:{name}/{k}": i for i, k in enumerate(found.keys.tolist())}
        order = [position.get(k, -1) for k in table.column("key").to_pylist()]
        matrix = np.zeros((table.num_rows, found.vectors.shape[1]), dtype=found.vectors.dtype)
        present = np.array([i >= 0 for i in order], dtype=bool)
        matrix[present] = found.vectors[[i for i in order if i >= 0]]
        vectors = (matrix, present)
    return Reserve(name, table, vectors)


@dataclass
class Combined:
    """The dataset's table with the added reserve rows appended, and what goes with it."""

    plan: TopUp
    table: pa.Table
    vectors: RowVectors | None
    added: BoolArray  # per row of ``table``
    added_for: np.ndarray[Any, np.dtype[np.object_]]  # the floor each added row is for


def top_up(
    table: pa.Table,
    decision: Decision,
    policy: Policy,
    embeddings: Embeddings | None,
    reserves: list[Reserve],
    calibration: Calibration | None,
) -> Combined:
    """Plan the top-up and, when every floor can be made to hold, append the added rows."""
    kept = table.take(np.flatnonzero(decision.kept))
    pool = pa.concat_tables([kept, *(r.table for r in reserves)])
    keys: list[str] = []
    blocks: list[np.ndarray[Any, Any]] = []
    embedder = embeddings.embedder if embeddings is not None else None
    if embeddings is not None:
        keys += embeddings.keys.tolist()
        blocks.append(np.asarray(embeddings.vectors))
    for reserve in reserves:
        if reserve.vectors is not None:
            matrix, present = reserve.vectors
            names = np.asarray(reserve.table.column("key").to_pylist(), dtype=object)
            keys += names[present].tolist()
            blocks.append(matrix[present])
    stacked = np.vstack(blocks) if blocks else None

    def aligned(t: pa.Table) -> RowVectors | None:
        if stacked is None or embedder is None:
            return None
        return RowVectors.align(t, keys, stacked, embedder)

    found = plan(table, decision, policy, pool, aligned(pool), calibration)
    none = np.full(table.num_rows, None, dtype=object)
    if not (found.reached and found.added):
        return Combined(found, table, aligned(table), np.zeros(table.num_rows, bool), none)
    rows = sorted(found.added)
    combined = pa.concat_tables([table, pool.take(rows)])
    added = np.zeros(combined.num_rows, dtype=bool)
    added[table.num_rows :] = True
    added_for = np.concatenate([none, np.array([found.added[r] for r in rows], dtype=object)])
    return Combined(found, combined, aligned(combined), added, added_for)
