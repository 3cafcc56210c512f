"""report.md: a short Markdown summary fit for a pull-request comment or a dataset card."""

from __future__ import annotations

from typing import Any

from datagate.contract import Report
from datagate.rules import RULES

MD_SHARD_ROWS = 30


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_markdown(report: Report) -> str:
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
    lines += _reference_markdown(report.get("reference", {}))
    lines += _overrides_markdown(report.get("overrides"))
    top_up = report.get("top_up")
    if top_up:
        passed = f"{top_up['candidates']:,} reserve images passed the per-image rules"
        lines += ["", "### Top-up from reserve", "", f"{top_up['message']} ({passed}).", ""]
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


def _overrides_markdown(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    applied = ", ".join(f"{k} {v:,}" for k, v in sorted(found["applied"].items())) or "none"
    lines = [
        "",
        "### Reviewed decisions",
        "",
        f"{found['decisions']:,} decisions in the overrides file; applied to this scan: {applied}.",
    ]
    if found["conflicts"]:
        lines.append(
            f"{len(found['conflicts']):,} images were decided more than once (the latest "
            "decision is in force; listed in report.json)."
        )
    return lines


REFERENCE_MEASURES = ("precision", "recall", "density", "coverage", "frechet")


def _reference_markdown(ref: dict[str, Any]) -> list[str]:
    if not ref.get("measured"):
        return []
    lines = [
        "",
        "### Against the reference (preserved human baseline)",
        "",
        f"{ref['reference_images']:,} reference images, `{ref['embedder']}`, k={ref['k']}",
        "",
        "| set | " + " | ".join(REFERENCE_MEASURES) + " |",
        "|---" * (len(REFERENCE_MEASURES) + 1) + "|",
    ]
    for name in ("scanned", "kept"):
        m = ref.get(name)
        if m:
            values = " | ".join(f"{m[k]:.3f}" for k in REFERENCE_MEASURES)
            lines.append(f"| {name} | {values} |")
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


def _diversity_label(report: Report) -> str:
    div = report.get("diversity", {})
    if not div.get("measured"):
        return "not measured (no embeddings)"
    o = div["overall"]
    return (
        f"index {_fmt(o['kept']['index'])} kept, {_fmt(o['scanned']['index'])} scanned "
        f"(`{div['embedder']}`)"
    )


# --------------------------------------------------------------------------- galleries


def _generation_label(counts: dict[str, int]) -> str:
    if not counts:
        return "not recorded (no provenance signal)"
    return ", ".join(
        f"{'gen ' + k if k != 'unknown' else 'unknown'} {v:,}"
        for k, v in sorted(counts.items(), key=lambda kv: (kv[0] == "unknown", kv[0]))
    )


def _share_label(report: Report) -> str:
    est = next(
        (r["details"]["estimate"] for r in report["rules"] if "estimate" in r["details"]), None
    )
    if not est or est.get("share") is None:
        return "not judged (no min_human rule)" if not est else "cannot be measured"
    text = f"{est['share']:.1%}"
    if est["low"] != est["high"]:
        text += f" ({est['confidence']:.0%} interval {est['low']:.1%} to {est['high']:.1%})"
    return f"{text}, {est['method']}"


def nutrition_label(report: Report) -> list[str]:
    """The dataset card section: what the kept set is made of, and how it was judged."""
    kept = report.get("composition", {}).get("kept", {})
    origin = kept.get("origin", {})
    total = report["counts"]["kept"] or 1
    by_kind: dict[str, int] = report.get("sources", {})
    dup = {
        r["id"]: r["rejected"]
        for r in report["rules"]
        if r["rule"] in RULES and RULES[r["rule"]].removes_duplicates
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
