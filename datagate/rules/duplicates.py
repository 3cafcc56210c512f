"""Duplicate rules: exact (same bytes), near (perceptual hash) and semantic (embeddings).

Each rejects every copy but one per group and records, for each dropped row, the key of
the original it duplicates (the ``duplicate_of`` column of the rejected manifest).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from datagate.measures import diversity, neardup, semantic
from datagate.rules.base import NO_VECTORS, Context, IntArray, Rule, Verdict, reasons, register
from datagate.rules.origin import effective_origin

HAMMING_MAX = 32


@register
class ExactDuplicates(Rule):
    """Reject byte-identical copies (same SHA-256), keeping a copy with human evidence first,
    then the first in scan order."""

    rule: Literal["exact_duplicates"]
    keep: Literal["first"] = "first"
    """Of each group: a copy with human evidence, then the first in scan order."""
    removes_duplicates = True
    columns = frozenset({"sha256"})
    codes = {"exact_duplicate": "the same bytes as a kept image"}

    def apply(self, ctx: Context) -> Verdict:
        n, t = ctx.n, ctx.table
        sha = t.column("sha256")
        valid = np.asarray(pc.is_valid(sha).to_numpy(zero_copy_only=False))
        candidates = np.flatnonzero(ctx.kept & valid)
        bad = np.zeros(n, dtype=bool)
        first_of = np.full(n, -1, dtype=np.int64)
        if candidates.size:
            codes = ctx.backend.equal_groups(sha)[candidates]
            # visit candidates in keep order (human evidence, then scan order): the first
            # of each hash in that order is its group's kept copy
            order = keep_preference(ctx, candidates, "first")
            _, first_pos, inverse = np.unique(codes[order], return_index=True, return_inverse=True)
            kept_rows = candidates[order][first_pos]
            first_rows = np.empty_like(candidates)
            first_rows[order] = kept_rows[inverse]
            dup = first_rows != candidates
            bad[candidates[dup]] = True
            first_of[candidates] = first_rows
        originals = ctx.none()
        originals[bad] = ctx.values_at("key", first_of[bad])
        why = reasons(n, bad, lambda r: f"exact duplicate of {originals[r]} (same sha256)")
        groups = len(np.unique(first_of[bad])) if bad.any() else 0
        return Verdict(
            rejected=bad,
            reasons=why,
            codes="exact_duplicate",
            duplicate_of=originals,
            details={"groups": groups},
        )


@register
class NearDuplicates(Rule):
    """Reject images within ``max_distance`` bits of a kept image's perceptual hash (dHash or
    pHash), keeping a copy with human evidence first, then the largest (or first) of each
    group; never chains through copies."""

    rule: Literal["near_duplicates"]
    hash: Literal["dhash", "phash"] = "dhash"
    max_distance: Annotated[int, Field(ge=0, le=HAMMING_MAX)] = 6
    keep: Literal["largest", "first"] = "largest"
    """Of each group: a copy with human evidence, then the largest (or first) image."""
    confirm_distance: Annotated[int, Field(ge=0, le=HAMMING_MAX)] | None = None
    """When set, a pair must also be within this many bits on the other perceptual hash
    (pHash for dHash and vice versa): fewer chance matches between unrelated images at
    millions of images, at the cost of copies only one hash sees."""
    removes_duplicates = True
    codes = {"near_duplicate": "a perceptual hash within max_distance of a kept image's"}

    def required_columns(self) -> frozenset[str]:
        other = "phash" if self.hash == "dhash" else "dhash"
        return frozenset({self.hash} if self.confirm_distance is None else {self.hash, other})

    def apply(self, ctx: Context) -> Verdict:
        n = ctx.n
        other = "phash" if self.hash == "dhash" else "dhash"
        columns = [self.hash] if self.confirm_distance is None else [self.hash, other]
        valid = ctx.kept.copy()
        for name in columns:
            valid &= np.asarray(pc.is_valid(ctx.table.column(name)).to_numpy(zero_copy_only=False))
        rows = np.flatnonzero(valid)
        bad = np.zeros(n, dtype=bool)
        why = ctx.none()
        if rows.size < 2:
            return Verdict(rejected=bad, details={"groups": 0})
        hashes = [
            np.asarray(
                ctx.table.column(name).take(pa.array(rows)).to_numpy(zero_copy_only=False),
                dtype=np.uint64,
            )
            for name in columns
        ]
        preference = keep_preference(ctx, rows, self.keep).astype(np.int64)
        dropped, dup_of, dist = neardup.near_duplicates(
            hashes[0],
            self.max_distance,
            preference,
            confirm=hashes[1] if len(hashes) > 1 else None,
            confirm_distance=self.confirm_distance or 0,
            pairs=ctx.backend.distinct_pairs,
        )
        originals = ctx.none()
        label = "dHash" if self.hash == "dhash" else "pHash"
        local = np.flatnonzero(dropped)
        bad[rows[local]] = True
        originals[rows[local]] = ctx.values_at("key", rows[dup_of[local]])
        for row, distance in zip(rows[local].tolist(), dist[local].tolist()):
            why[row] = (
                f"near duplicate of {originals[row]} ({label} distance {distance} "
                f"<= {self.max_distance})"
            )
        return Verdict(
            rejected=bad,
            reasons=why,
            codes="near_duplicate",
            duplicate_of=originals,
            details={"groups": len(np.unique(dup_of[dropped])) if dropped.any() else 0},
        )


def keep_preference(ctx: Context, rows: IntArray, keep: str) -> Any:
    """Local order of ``rows`` to keep first: human evidence, then largest (or first)."""
    human = effective_origin(ctx.table)[rows] == "human"
    pixels = (ctx.num("width", 0) * ctx.num("height", 0))[rows] if keep == "largest" else 0
    return np.lexsort((np.arange(rows.size), -pixels * np.ones(rows.size), ~human))


@register
class SemanticDuplicates(Rule):
    """Reject images whose embedding is at least ``threshold`` cosine-similar to an image
    before them in the keep order (human evidence first, then the largest), SemDeDup-style
    within k-means clusters: a chain of near copies is one group, and only its first image
    is kept."""

    rule: Literal["semantic_duplicates"]
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    """Cosine similarity of the embeddings at or above which two images are duplicates."""
    keep: Literal["largest", "first"] = "largest"
    clusters: Annotated[int, Field(ge=1)] | None = None
    """k-means clusters searched within (default: one per 125 embedded images)."""
    action: Literal["reject", "filter"] = "reject"
    """reject: drop every duplicate; filter: drop the most similar first, only until the
    policy's min_diversity thresholds hold."""
    removes_duplicates = True
    needs = frozenset({"vectors"})
    codes = {
        "semantic_duplicate": "an embedding near-identical to a kept image's",
        "semantic_duplicates.unmeasurable": "the scan has no embeddings",
    }

    def apply(self, ctx: Context) -> Verdict:
        from datagate.rules.diversity import MinDiversity, kept_stats

        n = ctx.n
        bad = np.zeros(n, dtype=bool)
        why = ctx.none()
        if ctx.vectors is None:
            return Verdict(
                rejected=bad,
                passed=False,
                code="semantic_duplicates.unmeasurable",
                message=f"cannot be evaluated: {NO_VECTORS}",
                details={"error": NO_VECTORS},
            )
        rows, x = ctx.vectors.view(ctx.kept)
        found = semantic.semantic_duplicates(
            x,
            self.threshold,
            preference=keep_preference(ctx, rows, self.keep),
            clusters=self.clusters,
            redundancy=False,
            backend=ctx.backend,
        )
        local = np.flatnonzero(found.dropped)
        details: dict[str, Any] = {"duplicates": int(local.size), "clusters": found.clusters}
        if self.action == "filter":
            # most similar first, only as many as the diversity floors need
            local = local[np.argsort(-found.similarity[local], kind="stable")]
            needed = 0
            stats = kept_stats(ctx)
            for target in ctx.policy.rules:
                if isinstance(target, MinDiversity):
                    count, _ = diversity.drop_until(
                        x, local, target.metric, target.min, target.q, running=stats
                    )
                    needed = max(needed, count)
            local = local[:needed]
            details["filtered"] = int(local.size)
        originals = ctx.none()
        bad[rows[local]] = True
        originals[rows[local]] = ctx.values_at("key", rows[found.duplicate_of[local]])
        for row, similarity in zip(rows[local].tolist(), found.similarity[local].tolist()):
            why[row] = (
                f"semantic duplicate of {originals[row]} (cosine {similarity:.3f} "
                f">= {self.threshold})"
            )
        return Verdict(
            rejected=bad,
            reasons=why,
            codes="semantic_duplicate",
            duplicate_of=originals,
            details=details,
        )
