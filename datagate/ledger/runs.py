"""What a gate run records: its ledger payload and its per-image sha256 -> verdict index."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datagate import __version__
from datagate.contract import REPORT_VERSION, Report, ScanMeta
from datagate.curation.overrides import Overrides
from datagate.ledger import merkle
from datagate.ledger.chain import canonical
from datagate.ledger.lineage import kept_generations
from datagate.rules import Decision
from datagate.scanner.schema import SCHEMA_VERSION

INDEX_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string()),
        pa.field("key", pa.string(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),  # kept | rejected
        pa.field("rule_id", pa.string()),
        pa.field("reason_code", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("generation", pa.int32()),
    ],
    metadata={"datagate.index_version": "1"},
)


def _column(table: pa.Table, name: str) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    return list(table.column(name).to_pylist())


def verdict_index(table: pa.Table, decision: Decision) -> pa.Table:
    """One row per judged image: its content hash, key, verdict and why, sorted by hash."""
    kept = decision.kept.tolist()
    index = pa.table(
        {
            "sha256": _column(table, "sha256"),
            "key": _column(table, "key"),
            "verdict": ["kept" if k else "rejected" for k in kept],
            "rule_id": [None if k else r for k, r in zip(kept, decision.rule_id.tolist())],
            "reason_code": [None if k else c for k, c in zip(kept, decision.reason_code.tolist())],
            "origin": _column(table, "origin"),
            "generation": _column(table, "generation"),
        },
        schema=INDEX_SCHEMA,
    )
    return index.sort_by([("sha256", "ascending"), ("key", "ascending")])


def content_roots(table: pa.Table, decision: Decision) -> dict[str, Any]:
    """Merkle roots over the distinct content hashes kept and rejected."""
    sha = np.asarray(_column(table, "sha256"), dtype=object)
    out: dict[str, Any] = {}
    for name, mask in (("kept", decision.kept), ("rejected", ~decision.kept)):
        hashes = sorted({h for h in sha[mask].tolist() if h})
        out[name] = {"merkle_root": merkle.content_root(hashes), "hashes": len(hashes)}
    out["definition"] = "RFC 9162 Merkle tree hash over the sorted distinct sha256 of the bytes"
    return out


def overrides_record(flags: dict[str, Any], decisions: Overrides | None) -> dict[str, Any]:
    """The overrides applied: command-line flags and reviewed decisions, as one digest."""
    pairs = sorted((sha, o.decision) for sha, o in (decisions.by_sha if decisions else {}).items())
    digest = hashlib.sha256(canonical({"flags": flags, "decisions": pairs})).hexdigest()
    return {
        "digest": digest,
        "flags": flags,
        "decisions": len(pairs),
        "file": decisions.source if decisions is not None else None,
    }


def human_share(report: Report) -> dict[str, Any]:
    """The human share of the kept set with its interval (the min_human rule's estimate), else
    the exact share by provenance."""
    for outcome in report["rules"]:
        estimate = outcome.get("details", {}).get("estimate")
        if isinstance(estimate, dict):
            return {"measured_by": f"rule {outcome['id']} ({outcome['rule']})", **estimate}
    origin = report["composition"].get("kept", {}).get("origin", {})
    kept = report["counts"]["kept"]
    share = round(origin.get("human", 0) / kept, 6) if kept else None
    return {
        "measured_by": "provenance evidence only (no min_human rule in the policy)",
        "share": share,
        "low": share,
        "high": share,
        "human_exact": origin.get("human", 0),
        "method": "exact count; images of unknown origin count as not human",
    }


def diversity(report: Report) -> dict[str, Any] | None:
    d = report["diversity"]
    return d.get("overall", {}).get("kept") if d.get("measured") else None


def versions(meta: ScanMeta) -> dict[str, Any]:
    embedder: dict[str, Any] = dict(meta.get("embedder") or {})
    detector: dict[str, Any] = dict(meta.get("detector") or {})
    return {
        "datagate": __version__,
        "python": platform.python_version(),
        "report": REPORT_VERSION,
        "scan_schema": SCHEMA_VERSION,
        "scanned_with": meta.get("datagate_version"),
        "signals": meta.get("signals"),
        "embedder": embedder.get("id"),
        "detector": detector.get("id"),
        "detector_model": detector.get("model"),
    }


def run_payload(
    *,
    scan_dir: Path,
    out: Path,
    meta: ScanMeta,
    report: Report,
    table: pa.Table,
    decision: Decision,
    overrides: dict[str, Any],
    files: dict[str, str],
    lineage: dict[str, Any],
    content: bool = True,
) -> dict[str, Any]:
    """A run entry's payload (the verdict index is added by the ledger). ``content``: with
    the Merkle roots of the kept and rejected content (only a signed run needs them)."""
    return {
        "verdict": report["verdict"],
        "scan": {
            "dir": str(scan_dir),
            "config_hash": meta.get("config_hash"),
            "created_at": meta.get("created_at"),
            "inputs": meta.get("inputs"),
        },
        "out": str(out),
        "policy": {k: report["policy"].get(k) for k in ("name", "digest", "source")},
        "overrides": overrides,
        "counts": report["counts"],
        "content": content_roots(table, decision) if content else None,
        "files": files,
        "human_share": human_share(report),
        "diversity": diversity(report),
        "generations": {**kept_generations(table, decision.kept), "lineage": lineage},
        "versions": versions(meta),
    }
