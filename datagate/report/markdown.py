"""report.md: a short Markdown summary fit for a pull-request comment or a dataset card.

Every value that comes from the data or the policy (generator names, shard and file names,
rule ids and messages, paths) goes through :func:`md` (prose) or :func:`md_code` (a code
span): a hostile name cannot add a heading, a link, an image, HTML or a table cell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datagate.contract import Report
from datagate.rules import RULES
from datagate.words import plural

MD_SHARD_ROWS = 30

#: control characters, and the line and paragraph separators Markdown treats as line breaks
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: ASCII punctuation that Markdown (CommonMark with GitHub's tables) gives a meaning inline
_SPECIAL = re.compile(r"([\\`*_\[\]<>#|!~&])")
#: what GitHub turns into a link even without brackets: ``scheme://`` and ``www.``
_AUTOLINK = re.compile(r"(:)(?=//)|(?<=www)(\.)", re.IGNORECASE)
#: what starts a block at the start of a line: ``- + =`` and ``1.`` / ``1)``
_LINE_START = re.compile(r"^([-+=])|^(\d{1,9})([.)])(?=\s|$)")


def _flat(value: Any) -> str:
    """One line: control characters and line breaks become single spaces."""
    return _CONTROL.sub(" ", str(value)).strip()


def md(value: Any) -> str:
    """A value from the data as literal Markdown text, safe in prose and in table cells
    (and at the start of a line: no list item, setext underline or numbered list)."""
    text = _SPECIAL.sub(r"\\\1", _flat(value))
    text = _AUTOLINK.sub(lambda m: "\\" + m.group(0), text)
    return _LINE_START.sub(lambda m: f"{m[2] or ''}\\{m[1] or m[3]}", text, count=1)


def md_code(value: Any, *, cell: bool = True) -> str:
    """A value from the data as a code span (nothing inside one is a link or markup).

    The fence is one backtick longer than the longest run inside. In a table ``cell``, ``|``
    is escaped: GitHub splits cells on it even inside code spans, and shows ``\\|`` as ``|``
    there (outside a table it would show the backslash)."""
    text = _flat(value)
    if cell:
        text = text.replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def policy_label(source: Any) -> str:
    """The policy file as report.md shows it: relative to the working directory when inside
    it, else its file name (an absolute path would leak the machine's layout into a PR)."""
    path = Path(str(source))
    if not path.is_absolute():
        return str(source)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return md(value)


def render_markdown(report: Report) -> str:
    """A short Markdown summary fit for a pull-request comment."""
    verdict = report["verdict"]
    c = report["counts"]
    icon = "✅" if verdict == "pass" else "❌"
    lines = [
        f"## {icon} datagate: {verdict.upper()}",
        "",
        f"**{c['images']:,}** {'image' if c['images'] == 1 else 'images'} scanned · "
        f"**{c['kept']:,}** kept · "
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
            f"| {md_code(r['id'])} | {result} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | "
            f"{md(r['message'])} |"
        )
    lines += ["", "### Per-image rules", "", "| rule | rejected |", "|---|---|"]
    for r in report["rules"]:
        if r["scope"] == "image":
            lines.append(f"| {md_code(r['id'])} | {r['rejected']:,} |")
    lines += _composition_markdown(report.get("composition", {}))
    lines += _diversity_markdown(report.get("diversity", {}))
    lines += _synthetic_markdown(report.get("synthetic", {}))
    lines += _reference_markdown(report.get("reference", {}))
    lines += _overrides_markdown(report.get("overrides"))
    top_up = report.get("top_up")
    if top_up:
        passed = f"{plural(top_up['candidates'], 'reserve image')} passed the per-image rules"
        lines += ["", "### Top-up from reserve", "", f"{md(top_up['message'])} ({passed}).", ""]
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
            f"| {md_code(s['shard'])} | {s['images']:,} | {s['kept']:,} | {s['rejected']:,} | "
            f"{s['errors']:,} |"
        )
    if len(shards) > MD_SHARD_ROWS:
        lines.append(f"| … {len(shards) - MD_SHARD_ROWS} more in report.json | | | | |")
    policy = report["policy"]
    lines += [
        "",
        f"<sub>datagate {md(report['datagate_version'])} · watermarks "
        f"{md(report['scan'].get('watermark', {}).get('mode', 'off'))} · "
        f"policy {md_code(policy_label(policy.get('source')), cell=False)} "
        f"({md(policy.get('digest'))}) · scan {md(report['scan'].get('created_at'))}</sub>",
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
        listed = ", ".join(f"{md(k)} {v:,}" for k, v in scanned["evidence_source"].items())
        lines += ["", f"Evidence (images per source, scanned): {listed}."]
    if scanned["generator"]:
        listed = ", ".join(
            f"{md_code(k, cell=False)} {v:,}" for k, v in scanned["generator"].items()
        )
        lines += [f"Generators (scanned): {listed}."]
    if scanned["conflicts"]:
        lines += [
            f"Conflicting evidence on {plural(scanned['conflicts'], 'image')} "
            "(resolved by precedence)."
        ]
    return lines


def _overrides_markdown(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    applied = ", ".join(f"{md(k)} {v:,}" for k, v in sorted(found["applied"].items())) or "none"
    lines = [
        "",
        "### Reviewed decisions",
        "",
        f"{plural(found['decisions'], 'decision')} in the overrides file; applied to this "
        f"scan: {applied}.",
    ]
    if found["conflicts"]:
        lines.append(
            f"{plural(len(found['conflicts']), 'image was', 'images were')} decided more than "
            "once (the latest decision is in force; listed in report.json)."
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
        f"{plural(ref['reference_images'], 'reference image')}, "
        f"{md_code(ref['embedder'], cell=False)}, "
        f"k={ref['k']}",
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
        f"Detector head {md_code(syn['head'], cell=False)} over "
        f"{md_code(syn['embedder'], cell=False)} embeddings; "
        f"held out on {plural(held['images'], 'image')}: AUC {auc}, TPR {_fmt(held.get('tpr'))}, "
        f"FPR {_fmt(held.get('fpr'))} at threshold {_fmt(held.get('threshold'))}.",
        "",
        "P(synthetic) decided by: "
        + ", ".join(f"{md(k)} {v:,}" for k, v in syn["decided_by"].items())
        + ".",
        "",
        "| P(synthetic) | scanned | kept |",
        "|---|---|---|",
    ]
    for label, count in syn["scores_scanned"].items():
        lines.append(f"| {md(label)} | {count:,} | {syn['scores_kept'].get(label, 0):,} |")
    return lines


def _diversity_markdown(div: dict[str, Any]) -> list[str]:
    lines = ["", "### Diversity", ""]
    if not div.get("measured"):
        return [*lines, "Not measured: the scan has no embeddings (`datagate scan --model`)."]
    overall = div["overall"]
    lines += [
        f"Embedder {md_code(div['embedder'], cell=False)}; {md(div['definition'])}.",
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
            f"{plural(overall['kept']['clusters'], 'k-means cluster')} of the scanned set.",
        ]
    lines += ["", "| group | images | index | kept | kept index |", "|---|---|---|---|---|"]
    groups = [(f"origin {md(k)}", v) for k, v in div["by_origin"].items() if v["images"]]
    groups += [(md_code(k), v) for k, v in div["by_shard"].items()]
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
        f"({md_code(div['embedder'])})"
    )


# --------------------------------------------------------------------------- galleries


def _generation_label(counts: dict[str, int]) -> str:
    if not counts:
        return "not recorded (no provenance signal)"
    return ", ".join(
        f"{'gen ' + md(k) if k != 'unknown' else 'unknown'} {v:,}"
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
    return f"{text}, {md(est['method'])}"


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
        + ", ".join(f"{md(k)} {v:,}" for k, v in sorted(by_kind.items()))
        + f" ({plural(len(report['shards']), 'shard')}) |",
        "| generators | "
        + (
            ", ".join(f"{md_code(k)} {v:,}" for k, v in list(generators.items())[:5])
            or "none named"
        )
        + " |",
        f"| diversity | {_diversity_label(report)} |",
        "| duplicates removed | "
        + (", ".join(f"{md(k)} {v:,}" for k, v in dup.items()) or "no duplicate rules")
        + " |",
        "| rules | " + ", ".join(md_code(r["id"]) for r in report["rules"]) + " |",
        f"| datagate | {md(report['datagate_version'])} |",
    ]
    return lines
