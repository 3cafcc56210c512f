"""Report sinks. ``build_report`` makes one JSON-able dict; every format renders from it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from datagate import __version__
from datagate.contract import REPORT_VERSION, Report, ScanMeta, ShardOutcome
from datagate.measures import diversity
from datagate.measures.reference import DEFAULT_K
from datagate.rules import Decision, Reference, RowVectors
from datagate.rules.origin import effective_origin
from datagate.rules.reference import shared_measures


def shard_breakdown(table: pa.Table, decision: Decision) -> list[ShardOutcome]:
    shards = np.asarray(table.column("shard").to_numpy(zero_copy_only=False), dtype=object)
    errors = np.asarray(table.column("error").is_valid().to_numpy(zero_copy_only=False))
    names, inverse = np.unique(shards.astype(str), return_inverse=True)
    total = np.bincount(inverse, minlength=len(names))
    kept = np.bincount(inverse, weights=decision.kept, minlength=len(names)).astype(int)
    errs = np.bincount(inverse, weights=errors, minlength=len(names)).astype(int)
    return [
        {
            "shard": str(name),
            "images": int(total[k]),
            "kept": int(kept[k]),
            "rejected": int(total[k] - kept[k]),
            "errors": int(errs[k]),
        }
        for k, name in enumerate(names)
    ]


def _counts(values: list[Any], top: int | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        key = "—" if v is None else str(v)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ordered[:top] if top else ordered)


def composition(table: pa.Table, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, Any]:
    """Origin, evidence strength and source, generator and C2PA state of the rows in mask."""
    if "origin" not in table.column_names:
        return {"provenance_scanned": False, "origin": {"unknown": int(mask.sum())}}
    rows = np.flatnonzero(mask)
    sub = table.take(pa.array(rows)) if len(rows) != table.num_rows else table
    sources: dict[str, int] = {}
    for text in sub.column("evidence").to_pylist():
        if not text:
            continue
        for source in {e["source"] for e in json.loads(text) if e.get("says")}:
            sources[source] = sources.get(source, 0) + 1
    return {
        "provenance_scanned": True,
        "origin": _counts(sub.column("origin").to_pylist()),
        "strength": _counts(
            [
                f"{o}/{s}"
                for o, s in zip(
                    sub.column("origin").to_pylist(), sub.column("origin_strength").to_pylist()
                )
                if o != "unknown"
            ]
        ),
        "evidence_source": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "generator": _counts([g for g in sub.column("generator").to_pylist() if g], top=10),
        "c2pa_state": _counts(sub.column("c2pa_state").to_pylist()),
        "conflicts": int(sum(bool(c) for c in sub.column("provenance_conflict").to_pylist())),
        "generation": (
            _counts(
                ["unknown" if g is None else str(g) for g in sub.column("generation").to_pylist()]
            )
            if "generation" in sub.column_names
            else {"unknown": sub.num_rows}
        ),
    }


#: Score histogram bins of the synthetic-score section.
SCORE_BINS = 10


def synthetic_report(table: pa.Table, scan_meta: ScanMeta, decision: Decision) -> dict[str, Any]:
    """The detector's view: who decided each image's P(synthetic), score histograms, the
    head's held-out figures, and the human-share estimate of the min_human rule."""
    detector = scan_meta.get("detector")
    if detector is None or "detector_score" not in table.column_names:
        return {"measured": False}
    score = table.column("detector_score").cast(pa.float64()).fill_null(np.nan).to_numpy()
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)

    def histogram(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, int]:
        values = score[mask & ~np.isnan(score)]
        counts, _ = np.histogram(values, edges)
        return {f"{lo:.1f}-{hi:.1f}": int(c) for lo, hi, c in zip(edges, edges[1:], counts)}

    everything = np.ones(table.num_rows, dtype=bool)
    cal = detector.get("calibration", {})
    estimate = next(
        (r.details["estimate"] for r in decision.outcomes if "estimate" in r.details), None
    )
    return {
        "measured": True,
        "head": detector.get("id"),
        "embedder": detector.get("embedder"),
        "held_out": {k: cal.get(k) for k in ("auc", "accuracy", "tpr", "fpr", "threshold")}
        | {"images": (cal.get("n_real") or 0) + (cal.get("n_synthetic") or 0)},
        "decided_by": _counts(
            [s or "none (not decodable)" for s in table.column("p_synthetic_source").to_pylist()]
        ),
        "scores_scanned": histogram(everything),
        "scores_kept": histogram(decision.kept),
        "human_share": estimate,
    }


#: Per-group diversity is listed for at most this many shards (the largest).
DIVERSITY_SHARDS = 50


def diversity_report(
    table: pa.Table, decision: Decision, vectors: RowVectors | None
) -> dict[str, Any]:
    """Diversity of the scanned and the kept set: overall, per origin and per shard."""
    if vectors is None:
        return {"measured": False, "embedder": None}
    kept = decision.kept[vectors.rows]
    x = vectors.vectors
    origin = effective_origin(table)[vectors.rows]
    shard = np.asarray(table.column("shard").to_numpy(zero_copy_only=False))[vectors.rows]
    names, shard_of, counts = np.unique(shard, return_inverse=True, return_counts=True)
    largest = np.argsort(-counts, kind="stable")[:DIVERSITY_SHARDS]
    # one pass over the vectors: statistics per (origin, reported shard or other, kept) cell;
    # every set the report shows is a sum of cells
    slot = np.full(len(names), len(largest), dtype=np.int64)
    slot[largest] = np.arange(len(largest))
    origins = ("human", "synthetic", "unknown")
    origin_id = np.select([origin == o for o in origins], range(len(origins)), len(origins))
    shape = (len(origins) + 1, len(largest) + 1, 2)
    cell = np.ravel_multi_index((origin_id, slot[shard_of.ravel()], kept.astype(np.int64)), shape)
    used, dense = np.unique(cell, return_inverse=True)
    parts = diversity.Running.of_groups(x, dense.ravel().astype(np.int64), len(used))
    where = np.array(np.unravel_index(used, shape)).T  # (origin, slot, kept) of each part

    def total(select: np.ndarray[Any, np.dtype[np.bool_]]) -> diversity.Running:
        running = diversity.Running.empty(x.shape[1])
        for i in np.flatnonzero(select).tolist():
            running += parts[i]
        return running

    def group(select: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, Any]:
        scanned = total(select).summary()
        kept_part = total(select & (where[:, 2] == 1)).summary()
        return {
            "images": scanned["images"],
            "index": scanned["index"],
            "kept_images": kept_part["images"],
            "kept_index": kept_part["index"],
        }

    everything = np.ones(len(parts), dtype=bool)
    overall = {"scanned": total(everything).summary(), "kept": total(where[:, 2] == 1).summary()}
    if len(x) >= 2 and kept.any():
        k = int(min(64, max(2, len(x) // 20)))
        overall["kept"]["cluster_coverage"] = round(diversity.cluster_coverage(x, kept, k), 4)
        overall["kept"]["clusters"] = k
    return {
        "measured": True,
        "embedder": vectors.embedder,
        "definition": (
            "index = log(Vendi score, q=1) / log(min(images, embedding dimension)), in [0, 1]"
        ),
        "overall": overall,
        "by_origin": {o: group(where[:, 0] == i) for i, o in enumerate(origins)},
        "by_shard": {
            str(names[j]): group(where[:, 1] == int(slot[j]))
            for j in sorted(largest.tolist(), key=lambda j: str(names[j]))
        },
        "shards_omitted": max(0, len(names) - DIVERSITY_SHARDS),
    }


def reference_report(
    decision: Decision, vectors: RowVectors | None, reference: Reference | None
) -> dict[str, Any]:
    """The scanned and the kept set against the reference scan (the preserved baseline):
    precision, recall, density, coverage and Fréchet distance of the embeddings."""
    if reference is None or vectors is None or len(vectors.rows) == 0:
        why = "no reference scan" if reference is None else "the scan has no embeddings"
        return {"measured": False, "why": why}
    k = DEFAULT_K
    out: dict[str, Any] = {
        "measured": True,
        "source": reference.source,
        "embedder": reference.embedder,
        "reference_images": len(reference.vectors),
        "k": k,
    }
    everything = np.ones(len(decision.kept), dtype=bool)
    for name, mask in (("scanned", everything), ("kept", decision.kept)):
        found = shared_measures(decision.shared, vectors, reference, mask, k)
        out[name] = None if found is None else found.as_dict()
    return out


def build_report(
    table: pa.Table,
    scan_meta: ScanMeta,
    decision: Decision,
    *,
    policy: dict[str, Any],
    outputs: dict[str, str],
    vectors: RowVectors | None = None,
    reference: Reference | None = None,
) -> Report:
    n = table.num_rows
    n_kept = int(decision.kept.sum())
    return {
        "report_version": REPORT_VERSION,
        "datagate_version": __version__,
        "verdict": "pass" if decision.passed else "fail",
        "counts": {
            "images": n,
            "kept": n_kept,
            "rejected": n - n_kept,
            "errors": int(table.column("error").is_valid().to_numpy(zero_copy_only=False).sum()),
        },
        "rules": [o.info() for o in decision.outcomes],
        "composition": {
            "scanned": composition(table, np.ones(n, dtype=bool)),
            "kept": composition(table, decision.kept),
        },
        "diversity": diversity_report(table, decision, vectors),
        "synthetic": synthetic_report(table, scan_meta, decision),
        "reference": reference_report(decision, vectors, reference),
        "shards": shard_breakdown(table, decision),
        "sources": _counts(
            np.asarray(table.column("reader").to_numpy(zero_copy_only=False))[
                decision.kept
            ].tolist()
        ),
        "policy": policy,
        "scan": {
            "datagate_version": scan_meta.get("datagate_version"),
            "created_at": scan_meta.get("created_at"),
            "config_hash": scan_meta.get("config_hash"),
            "signals": scan_meta.get("signals"),
            "inputs": scan_meta.get("inputs"),
            "skipped_files": scan_meta.get("counts", {}).get("skipped_files", 0),
            "watermark": {
                "mode": scan_meta.get("config", {}).get("watermark", "off"),
                "rate": scan_meta.get("config", {}).get("watermark_rate", 0.0),
            },
            "embedder": scan_meta.get("embedder"),
        },
        "outputs": outputs,
    }
