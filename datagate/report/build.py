"""Report sinks. ``build_report`` makes one JSON-able dict; every format renders from it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagate import __version__
from datagate.contract import REPORT_VERSION, Report, ScanMeta, ShardOutcome, value_codes
from datagate.measures import diversity
from datagate.measures.backend import LOCAL, Backend
from datagate.measures.reference import DEFAULT_K
from datagate.rules import Decision, Reference, RowVectors
from datagate.rules.diversity import ORIGINS, SHARD_GROUPS, selected_stats
from datagate.rules.reference import shared_measures


def shard_breakdown(table: pa.Table, decision: Decision) -> list[ShardOutcome]:
    # the distinct shard names sorted as strings (a null as "None"), from Arrow's dictionary:
    # no Python string per row
    values, codes = value_codes(table.column("shard"))
    names, rename = np.unique(np.array([str(v) for v in values], dtype=str), return_inverse=True)
    inverse = rename.ravel()[codes]
    errors = np.asarray(table.column("error").is_valid().to_numpy(zero_copy_only=False))
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


def _counts(values: Any, top: int | None = None) -> dict[str, int]:
    """Occurrences of each value (nulls as "—"), most frequent first: one pass in Arrow."""
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    counts: dict[str, int] = {}
    for item in pc.value_counts(array).to_pylist():
        value = item["values"]
        key = "—" if value is None else str(value)
        counts[key] = counts.get(key, 0) + int(item["counts"])
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ordered[:top] if top else ordered)


COMPOSITION_COLUMNS = (
    "origin",
    "origin_strength",
    "evidence",
    "generator",
    "c2pa_state",
    "provenance_conflict",
    "generation",
)


def composition(table: pa.Table, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, Any]:
    """Origin, evidence strength and source, generator and C2PA state of the rows in mask."""
    if "origin" not in table.column_names:
        return {"provenance_scanned": False, "origin": {"unknown": int(mask.sum())}}
    wanted = [c for c in COMPOSITION_COLUMNS if c in table.column_names]
    sub = table.select(wanted)  # only these columns are filtered (copied)
    sub = sub.filter(pa.array(mask)) if not mask.all() else sub
    sources: dict[str, int] = {}
    # evidence repeats (a generator's PNG text, a camera's EXIF): parse each distinct text once
    for item in pc.value_counts(sub.column("evidence")).to_pylist():
        text, count = item["values"], int(item["counts"])
        if not text:
            continue
        for source in {e["source"] for e in json.loads(text) if e.get("says")}:
            sources[source] = sources.get(source, 0) + count
    origin = sub.column("origin")
    known = pc.fill_null(pc.not_equal(origin, "unknown"), False)
    strength = pc.binary_join_element_wise(
        origin.filter(known), sub.column("origin_strength").filter(known), "/"
    )
    generator = sub.column("generator")
    generated = pc.fill_null(pc.not_equal(generator, ""), False)
    conflicts = pc.sum(pc.fill_null(sub.column("provenance_conflict"), False)).as_py()
    return {
        "provenance_scanned": True,
        "origin": _counts(origin),
        "strength": _counts(strength),
        "evidence_source": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "generator": _counts(generator.filter(generated), top=10),
        "c2pa_state": _counts(sub.column("c2pa_state")),
        "conflicts": int(conflicts or 0),
        "generation": (
            _counts(pc.fill_null(sub.column("generation").cast(pa.string()), "unknown"))
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


def diversity_report(
    table: pa.Table, decision: Decision, vectors: RowVectors | None, backend: Backend = LOCAL
) -> dict[str, Any]:
    """Diversity of the scanned and the kept set: overall, per origin and per shard (from
    the run's shared statistics: the rules have usually summed them already)."""
    if vectors is None:
        return {"measured": False, "embedder": None}
    kept_parts, grouped = selected_stats(decision.shared, table, vectors, backend, decision.kept)
    all_parts = grouped.parts
    n_cells = len(all_parts)
    origin_of = np.array([grouped.origin_of(c) for c in range(n_cells)])
    slot_of = np.array([grouped.slot_of(c) for c in range(n_cells)])

    def total(parts: list[diversity.Running], select: Any) -> diversity.Running:
        running = diversity.Running.empty(vectors.vectors.shape[1])
        for i in np.flatnonzero(select).tolist():
            running += parts[i]
        return running

    def group(select: Any) -> dict[str, Any]:
        scanned = total(all_parts, select).summary()
        kept_part = total(kept_parts, select).summary()
        return {
            "images": scanned["images"],
            "index": scanned["index"],
            "kept_images": kept_part["images"],
            "kept_index": kept_part["index"],
        }

    everything = np.ones(n_cells, dtype=bool)
    overall = {
        "scanned": total(all_parts, everything).summary(),
        "kept": total(kept_parts, everything).summary(),
    }
    x = vectors.vectors
    kept = decision.kept[vectors.rows]
    if len(x) >= 2 and kept.any():
        k = int(min(64, max(2, len(x) // 20)))
        overall["kept"]["cluster_coverage"] = round(diversity.cluster_coverage(x, kept, k), 4)
        overall["kept"]["clusters"] = k
    names = grouped.shard_names
    return {
        "measured": True,
        "embedder": vectors.embedder,
        "definition": (
            "index = log(Vendi score, q=1) / log(min(images, embedding dimension)), in [0, 1]"
        ),
        "overall": overall,
        "by_origin": {o: group(origin_of == i) for i, o in enumerate(ORIGINS)},
        "by_shard": {
            str(names[j]): group(slot_of == int(grouped.shard_slot[j]))
            for j in sorted(grouped.largest.tolist(), key=lambda j: str(names[j]))
        },
        "shards_omitted": max(0, len(names) - SHARD_GROUPS),
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
    backend: Backend = LOCAL,
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
        "diversity": diversity_report(table, decision, vectors, backend),
        "synthetic": synthetic_report(table, scan_meta, decision),
        "reference": reference_report(decision, vectors, reference),
        "shards": shard_breakdown(table, decision),
        "sources": _counts(table.column("reader").filter(pa.array(decision.kept))),
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
