"""Report sinks. ``build_report`` makes one JSON-able dict; every format renders from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from datagate import __version__
from datagate.measures import diversity
from datagate.rules.engine import Decision, RowVectors, effective_origin

REPORT_VERSION = 1
MD_SHARD_ROWS = 30


def shard_breakdown(table: pa.Table, decision: Decision) -> list[dict[str, Any]]:
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


def synthetic_report(
    table: pa.Table, scan_meta: dict[str, Any], decision: Decision
) -> dict[str, Any]:
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
        (r.details.get("estimate") for r in decision.outcomes if r.rule == "min_human"), None
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

    def group(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, Any]:
        scanned = diversity.summary(x[mask])
        kept_part = diversity.summary(x[mask & kept])
        return {
            "images": scanned["images"],
            "index": scanned["index"],
            "kept_images": kept_part["images"],
            "kept_index": kept_part["index"],
        }

    overall = {"scanned": diversity.summary(x), "kept": diversity.summary(x[kept])}
    if len(x) >= 2 and kept.any():
        k = int(min(64, max(2, len(x) // 20)))
        overall["kept"]["cluster_coverage"] = round(diversity.cluster_coverage(x, kept, k), 4)
        overall["kept"]["clusters"] = k
    names, counts = np.unique(shard, return_counts=True)
    largest = names[np.argsort(-counts, kind="stable")][:DIVERSITY_SHARDS]
    return {
        "measured": True,
        "embedder": vectors.embedder,
        "definition": "index = log(Vendi score, q=1) / log(embedding dimension), in [0, 1]",
        "overall": overall,
        "by_origin": {o: group(origin == o) for o in ("human", "synthetic", "unknown")},
        "by_shard": {str(name): group(shard == name) for name in sorted(largest.tolist())},
        "shards_omitted": max(0, len(names) - DIVERSITY_SHARDS),
    }


def build_report(
    table: pa.Table,
    scan_meta: dict[str, Any],
    decision: Decision,
    *,
    policy: dict[str, Any],
    outputs: dict[str, str],
    vectors: RowVectors | None = None,
) -> dict[str, Any]:
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
        "rules": [asdict(o) for o in decision.outcomes],
        "composition": {
            "scanned": composition(table, np.ones(n, dtype=bool)),
            "kept": composition(table, decision.kept),
        },
        "diversity": diversity_report(table, decision, vectors),
        "synthetic": synthetic_report(table, scan_meta, decision),
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


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary fit for a pull-request comment."""
    verdict = report["verdict"]
    c = report["counts"]
    icon = "✅" if verdict == "pass" else "❌"
    lines = [
        f"## {icon} datagate: {verdict.upper()}",
        "",
        f"**{c['images']:,}** images scanned · **{c['kept']:,}** kept · "
        f"**{c['rejected']:,}** rejected · **{c['errors']:,}** unreadable",
        "",
        "### Dataset rules",
        "",
        "| rule | result | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for r in report["rules"]:
        if r["scope"] != "dataset":
            continue
        result = "pass" if r["passed"] else "**FAIL**"
        lines.append(
            f"| `{r['id']}` | {result} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | "
            f"{r['message']} |"
        )
    lines += ["", "### Per-image rules", "", "| rule | rejected |", "|---|---|"]
    for r in report["rules"]:
        if r["scope"] == "image":
            lines.append(f"| `{r['id']}` | {r['rejected']:,} |")
    lines += _composition_markdown(report.get("composition", {}))
    lines += _diversity_markdown(report.get("diversity", {}))
    lines += _synthetic_markdown(report.get("synthetic", {}))
    lines += nutrition_label(report)
    shards = report["shards"]
    lines += [
        "",
        "### Shards",
        "",
        "| shard | images | kept | rejected | errors |",
        "|---|---|---|---|---|",
    ]
    for s in shards[:MD_SHARD_ROWS]:
        lines.append(
            f"| `{s['shard']}` | {s['images']:,} | {s['kept']:,} | {s['rejected']:,} | "
            f"{s['errors']:,} |"
        )
    if len(shards) > MD_SHARD_ROWS:
        lines.append(f"| … {len(shards) - MD_SHARD_ROWS} more in report.json | | | | |")
    policy = report["policy"]
    lines += [
        "",
        f"<sub>datagate {report['datagate_version']} · watermarks "
        f"{report['scan'].get('watermark', {}).get('mode', 'off')} · "
        f"policy `{policy.get('source')}` "
        f"({policy.get('digest')}) · scan {report['scan'].get('created_at')}</sub>",
        "",
    ]
    return "\n".join(lines)


def _composition_markdown(comp: dict[str, Any]) -> list[str]:
    kept, scanned = comp.get("kept"), comp.get("scanned")
    if not kept or not scanned:
        return []
    lines = ["", "### Composition (kept / scanned)", ""]
    if not kept.get("provenance_scanned"):
        return [*lines, "Provenance was not scanned: every image's origin is unknown."]
    lines += ["| origin | kept | scanned |", "|---|---|---|"]
    for origin in ("human", "synthetic", "unknown"):
        n_kept, n_scanned = kept["origin"].get(origin, 0), scanned["origin"].get(origin, 0)
        lines.append(f"| {origin} | {n_kept:,} | {n_scanned:,} |")
    if scanned["evidence_source"]:
        listed = ", ".join(f"{k} {v:,}" for k, v in scanned["evidence_source"].items())
        lines += ["", f"Evidence (images per source, scanned): {listed}."]
    if scanned["generator"]:
        listed = ", ".join(f"`{k}` {v:,}" for k, v in scanned["generator"].items())
        lines += [f"Generators (scanned): {listed}."]
    if scanned["conflicts"]:
        lines += [
            f"Conflicting evidence on {scanned['conflicts']:,} images (resolved by precedence)."
        ]
    return lines


def _synthetic_markdown(syn: dict[str, Any]) -> list[str]:
    if not syn.get("measured"):
        return []
    held = syn["held_out"]
    auc = "n/a" if held.get("auc") is None else f"{held['auc']:.3f}"
    lines = [
        "",
        "### Synthetic score",
        "",
        f"Detector head `{syn['head']}` over `{syn['embedder']}` embeddings; held out on "
        f"{held['images']:,} images: AUC {auc}, TPR {_fmt(held.get('tpr'))}, "
        f"FPR {_fmt(held.get('fpr'))} at threshold {_fmt(held.get('threshold'))}.",
        "",
        "P(synthetic) decided by: "
        + ", ".join(f"{k} {v:,}" for k, v in syn["decided_by"].items())
        + ".",
        "",
        "| P(synthetic) | scanned | kept |",
        "|---|---|---|",
    ]
    for label, count in syn["scores_scanned"].items():
        lines.append(f"| {label} | {count:,} | {syn['scores_kept'].get(label, 0):,} |")
    return lines


def _diversity_markdown(div: dict[str, Any]) -> list[str]:
    lines = ["", "### Diversity", ""]
    if not div.get("measured"):
        return [*lines, "Not measured: the scan has no embeddings (`datagate scan --model`)."]
    overall = div["overall"]
    lines += [
        f"Embedder `{div['embedder']}`; {div['definition']}.",
        "",
        "| set | images | index | Vendi | mean cosine distance |",
        "|---|---|---|---|---|",
    ]
    for name in ("scanned", "kept"):
        o = overall[name]
        lines.append(
            f"| {name} | {o['images']:,} | {_fmt(o['index'])} | {_fmt(o['vendi'])} | "
            f"{_fmt(o['mean_cosine_distance'])} |"
        )
    if "cluster_coverage" in overall["kept"]:
        lines += [
            "",
            f"Kept images cover {overall['kept']['cluster_coverage']:.0%} of "
            f"{overall['kept']['clusters']} k-means clusters of the scanned set.",
        ]
    lines += ["", "| group | images | index | kept | kept index |", "|---|---|---|---|---|"]
    groups = [(f"origin {k}", v) for k, v in div["by_origin"].items() if v["images"]]
    groups += [(f"`{k}`", v) for k, v in div["by_shard"].items()]
    for label, g in groups[: MD_SHARD_ROWS + 3]:
        lines.append(
            f"| {label} | {g['images']:,} | {_fmt(g['index'])} | {g['kept_images']:,} | "
            f"{_fmt(g['kept_index'])} |"
        )
    return lines


def _diversity_label(report: dict[str, Any]) -> str:
    div = report.get("diversity", {})
    if not div.get("measured"):
        return "not measured (no embeddings)"
    o = div["overall"]
    return (
        f"index {_fmt(o['kept']['index'])} kept, {_fmt(o['scanned']['index'])} scanned "
        f"(`{div['embedder']}`)"
    )


# --------------------------------------------------------------------------- galleries

GALLERY_SIZE = 12
DUPLICATE_PAIRS = 8
QUALITY_KEYS = ("brightness", "contrast", "blur", "entropy", "aspect_ratio")


def select_galleries(
    report: dict[str, Any], kept: pa.Table, rejected: pa.Table, scan_meta: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Pick the images the HTML report shows and load their thumbnails (bounded count)."""
    from datagate.report.gallery import load_thumbnails

    # rejected: round-robin over the rules, so every rule that fired is shown
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for row in rejected.select(["key", "shard", "member", "rule_id", "reason"]).to_pylist():
        by_rule.setdefault(row["rule_id"], []).append(row)
    chosen: list[dict[str, Any]] = []
    while len(chosen) < GALLERY_SIZE and any(by_rule.values()):
        for rows in by_rule.values():
            if rows and len(chosen) < GALLERY_SIZE:
                chosen.append(rows.pop(0))
    rejected_items = [
        {
            "key": r["key"],
            "shard": r["shard"],
            "member": r["member"],
            "caption": f"{r['rule_id']}: {r['reason']}",
        }
        for r in chosen
    ]
    # duplicates: dropped copy beside the kept original
    duplicates: list[dict[str, Any]] = []
    if "duplicate_of" in rejected.column_names:
        dups = [
            r
            for r in rejected.select(["key", "shard", "member", "duplicate_of"]).to_pylist()
            if r["duplicate_of"]
        ][:DUPLICATE_PAIRS]
        wanted = {r["duplicate_of"] for r in dups}
        where = {
            r["key"]: r
            for r in kept.select(["key", "shard", "member"]).to_pylist()
            if r["key"] in wanted
        }
        for r in dups:
            original = where.get(r["duplicate_of"])
            if original is None:
                continue
            duplicates.append(
                {
                    "key": r["key"],
                    "shard": r["shard"],
                    "member": r["member"],
                    "caption": f"copy: {r['key']}",
                    "original": {**original, "caption": f"kept: {original['key']}"},
                }
            )
    borderline = _borderline(report, kept)
    items = [*rejected_items, *duplicates, *[d["original"] for d in duplicates], *borderline]
    thumbs = load_thumbnails(scan_meta, [(i["shard"], i["member"]) for i in items])
    for item in items:
        item["thumb"] = thumbs.get((item["shard"], item["member"]))
    return {"rejected": rejected_items, "duplicates": duplicates, "borderline": borderline}


def _borderline(report: dict[str, Any], kept: pa.Table) -> list[dict[str, Any]]:
    """Kept images whose quality measures are closest (relatively) to a rule's bound."""
    bounds: list[tuple[str, float]] = []
    for rule in report["rules"]:
        if rule["rule"] != "quality":
            continue
        for name in QUALITY_KEYS:
            for side in ("min", "max"):
                limit = (rule["params"].get(name) or {}).get(side)
                if limit is not None and name in kept.column_names:
                    bounds.append((name, float(limit)))
    if not bounds or kept.num_rows == 0:
        return []
    margin = np.full(kept.num_rows, np.inf)
    which = np.full(kept.num_rows, "", dtype=object)
    for name, limit in bounds:
        values = np.asarray(kept.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        rel = np.abs(values - limit) / max(abs(limit), 1e-6)
        closer = np.nan_to_num(rel, nan=np.inf) < margin
        margin[closer] = rel[closer]
        which[closer] = [f"{name} {v:.3g} (bound {limit:g})" for v in values[closer]]
    order = np.argsort(margin, kind="stable")[:GALLERY_SIZE]
    rows = kept.select(["key", "shard", "member"]).take(pa.array(order)).to_pylist()
    return [
        {**r, "caption": f"{which[i]}: {r['key']}"}
        for r, i in zip(rows, order.tolist())
        if np.isfinite(margin[i])
    ]


def _generation_label(counts: dict[str, int]) -> str:
    if not counts:
        return "not recorded (no provenance signal)"
    return ", ".join(
        f"{'gen ' + k if k != 'unknown' else 'unknown'} {v:,}"
        for k, v in sorted(counts.items(), key=lambda kv: (kv[0] == "unknown", kv[0]))
    )


def _share_label(report: dict[str, Any]) -> str:
    est = next(
        (r["details"].get("estimate") for r in report["rules"] if r["rule"] == "min_human"), None
    )
    if not est or est.get("share") is None:
        return "not judged (no min_human rule)" if not est else "cannot be measured"
    text = f"{est['share']:.1%}"
    if est["low"] != est["high"]:
        text += f" ({est['confidence']:.0%} interval {est['low']:.1%} to {est['high']:.1%})"
    return f"{text}, {est['method']}"


def nutrition_label(report: dict[str, Any]) -> list[str]:
    """The dataset card section: what the kept set is made of, and how it was judged."""
    kept = report.get("composition", {}).get("kept", {})
    origin = kept.get("origin", {})
    total = report["counts"]["kept"] or 1
    by_kind: dict[str, int] = report.get("sources", {})
    dup = {
        r["id"]: r["rejected"]
        for r in report["rules"]
        if r["rule"] in ("exact_duplicates", "near_duplicates", "semantic_duplicates")
    }
    generators = kept.get("generator", {})
    lines = [
        "",
        "### Dataset nutrition label",
        "",
        "| | kept set |",
        "|---|---|",
        f"| images | {report['counts']['kept']:,} of {report['counts']['images']:,} scanned |",
        "| origin | "
        + ", ".join(
            f"{k} {origin.get(k, 0):,} ({origin.get(k, 0) / total:.0%})"
            for k in ("human", "synthetic", "unknown")
        )
        + " |",
        f"| generation | {_generation_label(kept.get('generation', {}))} |",
        f"| human share | {_share_label(report)} |",
        "| source | "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(by_kind.items()))
        + f" ({len(report['shards'])} shards) |",
        "| generators | "
        + (", ".join(f"`{k}` {v:,}" for k, v in list(generators.items())[:5]) or "none named")
        + " |",
        f"| diversity | {_diversity_label(report)} |",
        "| duplicates removed | "
        + (", ".join(f"{k} {v:,}" for k, v in dup.items()) or "no duplicate rules")
        + " |",
        "| rules | " + ", ".join(f"`{r['id']}`" for r in report["rules"]) + " |",
        f"| datagate | {report['datagate_version']} |",
    ]
    return lines
