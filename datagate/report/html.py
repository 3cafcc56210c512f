"""``report.html``: one self-contained page (inline CSS, SVG charts, inline thumbnails).

Nothing is fetched: no fonts, scripts or images from the network. The one inline script
only makes tables sortable and marks the page ready.
"""

from __future__ import annotations

from html import escape
from typing import Any

from datagate.contract import Report
from datagate.report.gallery import BORDERLINE_MARGIN
from datagate.words import plural

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--muted:#57606a;--line:#d0d7de;--bar:#0969da;--bar2:#bf8700}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
margin:0;color:#1f2328;background:#f6f8fa}main{max-width:1180px;margin:0 auto;padding:24px}
header{display:flex;align-items:center;gap:16px;flex-wrap:wrap}h1{font-size:22px;margin:0}
h2{font-size:17px;margin:28px 0 10px}.badge{font-weight:700;color:#fff;border-radius:6px;
padding:4px 12px;font-size:16px}.pass{background:var(--ok)}.fail{background:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-top:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px}
.card b{display:block;font-size:22px}.card span{color:var(--muted)}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f0f3f6;cursor:pointer;user-select:none}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:var(--ok);font-weight:600}.no{color:var(--bad);font-weight:700}.muted{color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
.panel{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px}
.panel h3{margin:0 0 8px;font-size:14px}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:136px;background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px}
figure img{width:124px;height:124px;object-fit:contain;background:#eee;display:block}
figure .missing{width:124px;height:124px;background:#eee;display:flex;align-items:center;
justify-content:center;color:var(--muted);font-size:12px;text-align:center}
figcaption{font-size:11px;color:var(--muted);word-break:break-all;margin-top:4px;max-height:4.4em;overflow:hidden}
.pair{display:flex;gap:4px}.pair figure{width:136px}footer{margin:32px 0 8px;color:var(--muted);font-size:12px}
"""

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, index) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.asc !== 'true';
    th.dataset.asc = asc;
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.v || a.cells[index].textContent;
      var y = b.cells[index].dataset.v || b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.body.dataset.ready = 'true';
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def bar_chart(title: str, data: dict[str, int], *, colour: str = "var(--bar)") -> str:
    """A horizontal SVG bar chart, one bar per key (values are counts)."""
    if not data:
        return f'<div class="panel"><h3>{escape(title)}</h3><p class="muted">No data.</p></div>'
    items = list(data.items())[:12]
    peak = max(v for _, v in items) or 1
    row_h, label_w, width = 22, 170, 330
    height = row_h * len(items) + 6
    bars = []
    for i, (label, value) in enumerate(items):
        y = i * row_h + 3
        w = max(1.0, (width - label_w - 60) * value / peak)
        text = escape(label if len(label) <= 26 else label[:25] + "…")
        bars.append(
            f'<text x="0" y="{y + 14}" font-size="12">{text}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{colour}" rx="2"><title>{escape(label)}: {value:,}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" font-size="12">{value:,}</text>'
        )
    return (
        f'<div class="panel"><h3>{escape(title)}</h3><svg role="img" aria-label="{escape(title)}" '
        f'width="100%" viewBox="0 0 {width} {height}">{"".join(bars)}</svg></div>'
    )


def _not_measured(title: str, why: str) -> str:
    return f'<div class="panel"><h3>{escape(title)}</h3><p class="muted">{escape(why)}</p></div>'


def _synthetic_panel(syn: dict[str, Any]) -> str:
    if not syn.get("measured"):
        return _not_measured(
            "Synthetic score",
            "Not measured: no detector head was configured (datagate scan --detector); origin "
            "above comes from provenance evidence only.",
        )
    held = syn["held_out"]
    auc = "n/a" if held.get("auc") is None else f"{held['auc']:.3f}"
    chart = bar_chart("P(synthetic), kept images", syn["scores_kept"], colour="var(--bar2)")
    share = syn.get("human_share") or {}
    line = ""
    if share.get("share") is not None:
        line = (
            f"<p>Estimated human share {share['share']:.1%} "
            f"({share['confidence']:.0%} interval {share['low']:.1%} to {share['high']:.1%}).</p>"
        )
    decided = ", ".join(f"{escape(k)} {v:,}" for k, v in syn["decided_by"].items())
    inner = chart.replace('<div class="panel">', "<div>", 1)
    return (
        f'<div class="panel" id="synthetic"><h3>Synthetic score</h3>'
        f"<p>Head {escape(str(syn['head']))} over {escape(str(syn['embedder']))}; held-out AUC "
        f"{auc} on {plural(held['images'], 'image')}. Decided by: {decided}.</p>{line}{inner}</div>"
    )


def _top_up_panel(top_up: dict[str, Any] | None) -> str:
    if not top_up:
        return ""
    return (
        '<div class="panel" id="top-up"><h3>Top-up from reserve</h3>'
        f"<p>{escape(top_up['message'])} ({plural(top_up['candidates'], 'reserve image')} "
        "passed the per-image rules).</p></div>"
    )


def _overrides_panel(found: dict[str, Any] | None) -> str:
    if not found:
        return ""
    applied = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(found["applied"].items()))
    conflicts = len(found["conflicts"])
    return (
        '<div class="panel" id="overrides"><h3>Reviewed decisions</h3>'
        f"<p>{plural(found['decisions'], 'decision')}; applied: {applied or 'none'}; "
        f"{plural(conflicts, 'image')} decided more than once (latest in force).</p></div>"
    )


def _reference_panel(ref: dict[str, Any]) -> str:
    """The scanned and kept set against the reference scan, as grouped bars per measure."""
    if not ref.get("measured"):
        return _not_measured(
            "Against the reference",
            "Not measured: no reference scan (datagate enforce --reference REF_SCAN, or "
            "reference: in the policy).",
        )
    names = ("precision", "recall", "density", "coverage")
    width, bar, gap = 420, 14, 26
    rows = []
    for i, name in enumerate(names):
        y = 10 + i * (2 * bar + gap)
        rows.append(f'<text x="0" y="{y + bar}" class="lbl">{name}</text>')
        for j, (which, colour) in enumerate((("scanned", "var(--bar)"), ("kept", "var(--bar2)"))):
            m = ref.get(which) or {}
            value = float(m.get(name) or 0.0)
            length = int(min(value, 1.5) / 1.5 * (width - 150))
            top = y + j * bar
            rows.append(
                f'<rect x="90" y="{top}" width="{length}" height="{bar - 2}" fill="{colour}">'
                f"<title>{which} {name} {value:.3f}</title></rect>"
                f'<text x="{95 + length}" y="{top + bar - 3}" class="num">{value:.3f}</text>'
            )
    height = 10 + len(names) * (2 * bar + gap)
    frechet = " · ".join(
        f"{which} {float((ref.get(which) or {}).get('frechet') or 0.0):.4f}"
        for which in ("scanned", "kept")
    )
    return (
        '<div class="panel" id="reference"><h3>Against the reference</h3>'
        f'<svg width="{width}" height="{height}" role="img" aria-label="reference measures">'
        f"{''.join(rows)}</svg>"
        f"<p>Fréchet distance: {escape(frechet)}. Bars: scanned (first), kept (second).</p>"
        f'<p class="muted">{plural(ref["reference_images"], "reference image")} from '
        f"<code>{escape(str(ref['source']))}</code>, embedder "
        f"<code>{escape(str(ref['embedder']))}</code>, k={ref['k']}</p></div>"
    )


def _diversity_panel(div: dict[str, Any]) -> str:
    if not div.get("measured"):
        return _not_measured(
            "Diversity",
            "Not measured: the scan has no embeddings (run datagate scan with --model).",
        )
    o = div["overall"]
    rows = [
        (
            "all",
            o["scanned"]["images"],
            o["scanned"]["index"],
            o["kept"]["images"],
            o["kept"]["index"],
        )
    ]
    for name, g in div["by_origin"].items():
        if g["images"]:
            rows.append((name, g["images"], g["index"], g["kept_images"], g["kept_index"]))
    body = "".join(
        f"<tr><td>{escape(label)}</td><td class=num>{_fmt(n)}</td><td class=num>{_fmt(i)}</td>"
        f"<td class=num>{_fmt(kn)}</td><td class=num>{_fmt(ki)}</td></tr>"
        for label, n, i, kn, ki in rows
    )
    coverage = o["kept"].get("cluster_coverage")
    clusters = plural(o["kept"].get("clusters", 0), "cluster")
    note = f"; kept covers {coverage:.0%} of {clusters}" if coverage else ""
    return (
        '<div class="panel" id="diversity"><h3>Diversity index (0 to 1)</h3>'
        "<table><thead><tr><th>set</th><th>scanned</th><th>index</th><th>kept</th><th>index</th>"
        f"</tr></thead><tbody>{body}</tbody></table>"
        f'<p class="muted">embedder <code>{escape(str(div["embedder"]))}</code>{escape(note)}</p></div>'
    )


def _figure(item: dict[str, Any]) -> str:
    thumb = item.get("thumb")
    img = (
        f'<img src="{thumb}" alt="{escape(item["key"])}">'
        if thumb
        else '<div class="missing">image not available</div>'
    )
    caption = escape(item.get("caption") or item["key"])
    return f'<figure title="{escape(item["key"])}">{img}<figcaption>{caption}</figcaption></figure>'


def _gallery(title: str, items: list[dict[str, Any]], empty: str) -> str:
    if not items:
        return f'<h2>{escape(title)}</h2><p class="muted">{escape(empty)}</p>'
    figures = []
    for item in items:
        if "original" in item:
            figures.append(f'<div class="pair">{_figure(item)}{_figure(item["original"])}</div>')
        else:
            figures.append(_figure(item))
    return f'<h2>{escape(title)}</h2><div class="gallery">{"".join(figures)}</div>'


def render_html(report: Report, galleries: dict[str, list[dict[str, Any]]]) -> str:
    c = report["counts"]
    verdict = report["verdict"]
    comp = report.get("composition", {})
    kept_comp = comp.get("kept", {})
    scanned_comp = comp.get("scanned", {})
    rule_rows = []
    for r in report["rules"]:
        if r["scope"] == "image":
            result = f'<span class="{"no" if r["rejected"] else "muted"}">{r["rejected"]:,} rejected</span>'
        else:
            result = (
                '<span class="ok">pass</span>' if r["passed"] else '<span class="no">FAIL</span>'
            )
        rule_rows.append(
            f"<tr><td><code>{escape(r['id'])}</code></td><td>{r['scope']}</td><td>{result}</td>"
            f'<td class="num">{_fmt(r["value"])}</td><td class="num">{_fmt(r["threshold"])}</td>'
            f"<td>{escape(r['message'])}</td></tr>"
        )
    shard_rows = "".join(
        f"<tr><td><code>{escape(s['shard'])}</code></td><td class=num>{s['images']:,}</td>"
        f"<td class=num>{s['kept']:,}</td><td class=num>{s['rejected']:,}</td>"
        f"<td class=num>{s['errors']:,}</td></tr>"
        for s in report["shards"]
    )
    per_shard = {s["shard"]: s["kept"] for s in report["shards"]}
    rejections = {r["id"]: r["rejected"] for r in report["rules"] if r["scope"] == "image"}
    charts = [
        bar_chart("Origin, kept images", kept_comp.get("origin", {})),
        bar_chart("Origin, all scanned images", scanned_comp.get("origin", {})),
        bar_chart(
            "Generators named by provenance",
            scanned_comp.get("generator", {}),
            colour="var(--bar2)",
        ),
        bar_chart("Evidence sources (images)", scanned_comp.get("evidence_source", {})),
        bar_chart("Kept images per shard", per_shard),
        bar_chart("Rejected images per rule", rejections, colour="var(--bar2)"),
        bar_chart(
            "Generation, kept images (0: human-made)",
            {
                f"gen {k}" if k != "unknown" else k: v
                for k, v in kept_comp.get("generation", {}).items()
            },
        ),
        _diversity_panel(report.get("diversity", {})),
        _reference_panel(report.get("reference", {})),
        _overrides_panel(report.get("overrides")),
        _top_up_panel(report.get("top_up")),
        _synthetic_panel(report.get("synthetic", {})),
    ]
    scan = report.get("scan", {})
    policy = report.get("policy", {})
    badge = "pass" if verdict == "pass" else "fail"
    cards = [
        (c["images"], "images scanned"),
        (c["kept"], "kept"),
        (c["rejected"], "rejected"),
        (c["errors"], "unreadable"),
        (kept_comp.get("origin", {}).get("human", 0), "kept, human-made"),
        (kept_comp.get("origin", {}).get("synthetic", 0), "kept, synthetic"),
    ]
    card_html = "".join(
        f'<div class="card" data-metric="{escape(label)}"><b>{value:,}</b><span>{escape(label)}</span></div>'
        for value, label in cards
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>datagate report: {verdict.upper()}</title><style>{CSS}</style></head>
<body><main>
<header><h1>datagate report</h1><span class="badge {badge}" id="verdict">{verdict.upper()}</span>
<span class="muted">policy <code>{escape(str(policy.get("name") or policy.get("source")))}</code></span></header>
<div class="cards">{card_html}</div>
<h2>Rules</h2>
<table class="sortable" id="rules"><thead><tr><th>rule</th><th>scope</th><th>result</th><th>value</th>
<th>threshold</th><th>detail</th></tr></thead><tbody>{"".join(rule_rows)}</tbody></table>
<h2>Composition</h2><div class="charts">{"".join(charts)}</div>
{_gallery("Rejected images", galleries.get("rejected", []), "Nothing was rejected.")}
{_gallery("Duplicates (dropped copy, then the kept original)", galleries.get("duplicates", []), "No duplicates were found.")}
{_gallery(f"Borderline kept images (within {BORDERLINE_MARGIN:.0%} of a quality bound)", galleries.get("borderline", []), "No kept image is near a quality bound.")}
<h2>Shards</h2>
<table class="sortable" id="shards"><thead><tr><th>shard</th><th>images</th><th>kept</th><th>rejected</th>
<th>unreadable</th></tr></thead><tbody>{shard_rows}</tbody></table>
<footer>datagate {escape(report["datagate_version"])} · scan {escape(str(scan.get("created_at")))}
· watermarks {escape(str(scan.get("watermark", {}).get("mode", "off")))}
· policy {escape(str(policy.get("source")))} ({escape(str(policy.get("digest")))})</footer>
</main><script>{SCRIPT}</script></body></html>
"""
