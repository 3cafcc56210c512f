"""Report sinks. ``build_report`` makes one JSON-able dict; every format renders from it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from datagate import __version__
from datagate.rules import Decision

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


def build_report(
    table: pa.Table,
    scan_meta: dict[str, Any],
    decision: Decision,
    *,
    policy: dict[str, Any],
    outputs: dict[str, str],
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
        "shards": shard_breakdown(table, decision),
        "policy": policy,
        "scan": {
            "datagate_version": scan_meta.get("datagate_version"),
            "created_at": scan_meta.get("created_at"),
            "config_hash": scan_meta.get("config_hash"),
            "signals": scan_meta.get("signals"),
            "inputs": scan_meta.get("inputs"),
            "skipped_files": scan_meta.get("counts", {}).get("skipped_files", 0),
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
        f"<sub>datagate {report['datagate_version']} · policy `{policy.get('source')}` "
        f"({policy.get('digest')}) · scan {report['scan'].get('created_at')}</sub>",
        "",
    ]
    return "\n".join(lines)
