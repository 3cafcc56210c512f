"""Enforce: apply a policy to a scan, write manifests and reports. Never loads a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from datagate.io import write_json, write_table, write_text
from datagate.pipeline import load_scan
from datagate.policy import Policy, policy_digest
from datagate.report import build_report, render_markdown
from datagate.rules import Decision, apply_policy

KEPT = "manifests/kept.parquet"
REJECTED = "manifests/rejected.parquet"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class EnforceResult:
    report: dict[str, Any]
    decision: Decision
    out: Path

    @property
    def passed(self) -> bool:
        return bool(self.report["verdict"] == "pass")


def default_out(scan_dir: Path) -> Path:
    """Where enforce writes when ``--out`` is not given.

    Beside the scan in the default layout (``datagate-out/scan`` -> ``datagate-out``),
    otherwise inside the scan folder.
    """
    return scan_dir.parent if scan_dir.name == "scan" else scan_dir


def enforce(
    scan_dir: Path,
    policy: Policy,
    *,
    source: str,
    out: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> EnforceResult:
    table, meta = load_scan(scan_dir)
    out = out if out is not None else default_out(scan_dir)
    decision = apply_policy(table, policy)
    kept_mask = pa.array(decision.kept)
    kept = table.filter(kept_mask)
    rejected = table.filter(pa.compute.invert(kept_mask))
    rejected_idx = (~decision.kept).nonzero()[0]
    rejected = rejected.append_column(
        pa.field("rule_id", pa.string(), nullable=False),
        pa.array(decision.rule_id[rejected_idx].tolist(), pa.string()),
    ).append_column(
        pa.field("reason", pa.string(), nullable=False),
        pa.array(decision.reason[rejected_idx].tolist(), pa.string()),
    )
    write_table(out / KEPT, kept)
    write_table(out / REJECTED, rejected)
    outputs = {
        "kept": str(out / KEPT),
        "rejected": str(out / REJECTED),
        "report_json": str(out / REPORT_JSON),
        "report_md": str(out / REPORT_MD),
    }
    report = build_report(
        table,
        meta,
        decision,
        policy={
            "source": source,
            "digest": policy_digest(policy),
            "name": policy.name,
            "overrides": overrides or {},
        },
        outputs=outputs,
    )
    write_json(out / REPORT_JSON, report)
    write_text(out / REPORT_MD, render_markdown(report))
    return EnforceResult(report=report, decision=decision, out=out)
