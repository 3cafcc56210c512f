"""A floor on the kept set's diversity, measured on its embeddings; and the diversity
statistics the rules and the report share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from datagate.contract import value_codes
from datagate.measures import diversity, semantic
from datagate.measures.backend import Backend
from datagate.rules.base import (
    NO_VECTORS,
    BoolArray,
    Context,
    Fraction,
    IntArray,
    RowVectors,
    Rule,
    Verdict,
    register,
)
from datagate.rules.origin import effective_origin

#: The origins the diversity statistics are grouped by (and a last group for anything else).
ORIGINS = ("human", "synthetic", "unknown")
#: Per-shard statistics are kept for at most this many shards (the largest).
SHARD_GROUPS = 50


@dataclass(frozen=True)
class Cells:
    """Sums of x xᵀ and x of every embedded row, grouped by (origin, shard), in one pass.

    Any set the rules or the report measure is a sum of cells minus the rows it leaves out,
    so the full pass over the embeddings happens once per run. Shards beyond the
    ``SHARD_GROUPS`` largest share one slot."""

    cell: IntArray  # per vector row
    parts: list[diversity.Running]
    shard_names: np.ndarray[Any, Any]
    shard_slot: IntArray  # per shard name: its slot (len(largest) for the rest)
    largest: IntArray  # shard name indices with their own slot, largest first
    slots: int

    def origin_of(self, cell: int) -> int:
        return cell // self.slots

    def slot_of(self, cell: int) -> int:
        return cell % self.slots

    def total(self, cells: Any = None) -> diversity.Running:
        """The sum of the chosen cells (all by default), a new object."""
        chosen = range(len(self.parts)) if cells is None else cells
        dim = self.parts[0].dim
        out = diversity.Running.empty(dim)
        for c in chosen:
            out += self.parts[c]
        return out


def cells(shared: dict[Any, Any], table: pa.Table, vectors: RowVectors, backend: Backend) -> Cells:
    """The run's :class:`Cells` of ``table`` and ``vectors``, computed on first use."""
    cached = shared.get("diversity.cells")
    if cached is not None and cached[0] is table and cached[1] is vectors:
        found: Cells = cached[2]
        return found
    origin = effective_origin(table)[vectors.rows]
    names, shard_of = _shards(table, vectors.rows)
    counts = np.bincount(shard_of, minlength=len(names))
    largest = np.argsort(-counts, kind="stable")[:SHARD_GROUPS]
    slot = np.full(len(names), len(largest), dtype=np.int64)
    slot[largest] = np.arange(len(largest))
    slots = len(largest) + 1
    origin_id = np.select([origin == o for o in ORIGINS], range(len(ORIGINS)), len(ORIGINS))
    cell = (origin_id * slots + slot[shard_of.ravel()]).astype(np.int64)
    count = (len(ORIGINS) + 1) * slots
    parts = backend.group_stats(vectors.vectors, cell, count)
    found = Cells(cell, parts, names, slot, largest.astype(np.int64), slots)
    shared["diversity.cells"] = (table, vectors, found)
    return found


def _shards(table: pa.Table, rows: IntArray) -> tuple[np.ndarray[Any, Any], IntArray]:
    """The distinct shard names of ``rows`` (sorted, as ``np.unique`` sorts them) and each
    row's position among them: from Arrow's dictionary, no Python string per row."""
    distinct, codes = value_codes(table.column("shard"))
    codes = codes[rows]
    used = np.unique(codes)
    names, rank = np.unique(np.array(distinct, dtype=object)[used], return_inverse=True)
    position = np.zeros(len(distinct), dtype=np.int64)
    position[used] = rank.ravel()
    return names, position[codes]


def selected_stats(
    shared: dict[Any, Any],
    table: pa.Table,
    vectors: RowVectors,
    backend: Backend,
    mask: BoolArray,
) -> tuple[list[diversity.Running], Cells]:
    """Per cell, the statistics of the embedded rows ``mask`` selects (a table-length mask):
    the cell's total minus the rows left out when those are fewer, else summed directly."""
    grouped = cells(shared, table, vectors, backend)
    pick = np.asarray(mask, dtype=bool)[vectors.rows]
    count = len(grouped.parts)
    # the rows are read where they are (a Rows view), never copied: the left-out rows of a
    # million are often a few hundred thousand, and their copy made the run's memory peak
    if int((~pick).sum()) <= int(pick.sum()):
        out = [part.copy() for part in grouped.parts]
        if (~pick).any():
            gone_rows = np.flatnonzero(~pick)
            left = backend.group_stats(
                diversity.Rows(vectors.vectors, gone_rows), grouped.cell[gone_rows], count
            )
            for running, gone in zip(out, left):
                running -= gone
        return out, grouped
    rows = np.flatnonzero(pick)
    return (
        backend.group_stats(diversity.Rows(vectors.vectors, rows), grouped.cell[rows], count),
        grouped,
    )


def kept_stats(ctx: Context) -> diversity.Running:
    """The statistics of every embedded row still kept (see :func:`selected_stats`)."""
    assert ctx.vectors is not None
    parts, _ = selected_stats(ctx.shared, ctx.table, ctx.vectors, ctx.backend, ctx.kept)
    out = diversity.Running.empty(ctx.vectors.vectors.shape[1])
    for part in parts:
        out += part
    return out


@register
class MinDiversity(Rule):
    """Fail when the kept set's diversity (index, Vendi score or mean cosine distance of the
    embeddings) is below ``min``. With ``action: filter``, first drop the most redundant
    kept images (never one with human evidence), up to ``max_drop``."""

    rule: Literal["min_diversity"]
    metric: Literal["index", "vendi", "mean_cosine_distance"] = "index"
    min: Annotated[float, Field(ge=0.0)]
    q: Annotated[float, Field(gt=0.0)] = 1.0
    """Order of the Vendi score (1: Shannon; larger weighs dominant modes more)."""
    action: Literal["fail", "filter"] = "fail"
    """fail: only judge; filter: first drop the most redundant kept images (never one with
    human evidence) until the metric reaches ``min`` or ``max_drop`` is spent."""
    max_drop: Fraction = 0.5
    """With action filter: at most this share of the kept images may be dropped."""
    scope = "dataset"
    needs = frozenset({"vectors"})
    codes = {
        "min_diversity.ok": "the diversity reaches the floor",
        "min_diversity.below_min": "the diversity is below the floor",
        "min_diversity.unmeasurable": "no embeddings, or fewer than 2 kept images have one",
        "redundant": "filtered: the most redundant kept images",
    }

    def apply(self, ctx: Context) -> Verdict:
        label = {"index": "diversity index", "vendi": "Vendi score"}.get(self.metric, self.metric)
        verdict = Verdict(threshold=self.min)
        if ctx.vectors is None:
            verdict.passed, verdict.code = False, "min_diversity.unmeasurable"
            verdict.message = f"{label} cannot be measured: {NO_VECTORS}"
            return verdict
        rows, x = ctx.vectors.view(ctx.kept)
        verdict.details = {"embedder": ctx.vectors.embedder, "metric": self.metric, "q": self.q}
        stats = kept_stats(ctx)
        below = len(x) >= 2 and stats.value(self.metric, self.q) < self.min
        if self.action == "filter" and len(rows) > 2 and below:
            # the per-image redundancy (most similar other image), only when filtering
            found = semantic.semantic_duplicates(x, 1.0, backend=ctx.backend)
            human = effective_origin(ctx.table)[rows] == "human"
            candidates = np.flatnonzero(~human)
            order = candidates[np.argsort(-found.redundancy[candidates], kind="stable")]
            order = order[: int(self.max_drop * len(rows))]
            count, _ = diversity.drop_until(x, order, self.metric, self.min, self.q, running=stats)
            drop = order[:count]
            mask = np.zeros(ctx.n, dtype=bool)
            mask[rows[drop]] = True
            why = ctx.none()
            nearest = ctx.values_at("key", rows[found.nearest[drop]])
            for i, other in zip(drop.tolist(), nearest.tolist()):
                why[rows[i]] = (
                    f"redundant: cosine {found.redundancy[i]:.3f} to "
                    f"{other} (dropped to raise the {label} toward "
                    f"{self.min})"
                )
            verdict.rejected, verdict.reasons, verdict.codes = mask, why, "redundant"
            verdict.details["filtered"] = int(count)
            if count:
                stats = stats.copy()
                stats.remove(x[drop])
        if self.action == "filter" and len(rows) > 2:
            verdict.details.setdefault("filtered", 0)
        value = stats.value(self.metric, self.q) if stats.count >= 2 else None
        verdict.value = value
        verdict.details["images"] = stats.count
        if value is None:
            verdict.passed, verdict.code = False, "min_diversity.unmeasurable"
            verdict.message = (
                f"{label} cannot be measured: fewer than 2 kept images have embeddings"
            )
            return verdict
        verdict.passed = value >= self.min
        verdict.code = "min_diversity.ok" if verdict.passed else "min_diversity.below_min"
        dropped = verdict.details.get("filtered")
        verdict.message = (
            f"{label} {value:.3f} {'>=' if verdict.passed else '<'} {self.min} over "
            f"{stats.count:,} kept images ({ctx.vectors.embedder}"
            + (f"; {dropped:,} redundant images dropped" if dropped else "")
            + ")"
        )
        return verdict
