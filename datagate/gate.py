"""Enforce: apply a policy to a scan, write manifests and reports. Never loads a model."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datagate.contract import (
    KEPT,
    META_FILE,
    REJECTED,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    Embeddings,
    Report,
    ScanMeta,
    file_sha256,
    load_embeddings,
    load_meta,
    load_report,
    load_scan,
)
from datagate.curation.apply import REVIEW_REJECT, REVIEW_RULE, apply_decisions
from datagate.curation.overrides import Overrides, summary
from datagate.curation.topup import load_reserve, top_up
from datagate.detect.head import Calibration
from datagate.embed.stacked import semantic_embeddings
from datagate.errors import ConfigError, InputError
from datagate.io import output_dir, write_json, write_rows, write_text
from datagate.ledger import GateSigning, signing_for_gate
from datagate.ledger.attest import ATTESTATION, statement, write_attestation
from datagate.ledger.chain import Entry, append
from datagate.ledger.croissant import CROISSANT, croissant
from datagate.ledger.lineage import apply_lineage
from datagate.ledger.runs import overrides_record, run_payload, verdict_index
from datagate.measures.backend import LOCAL, Backend
from datagate.report.build import build_report
from datagate.report.gallery import QUALITY_KEYS, select_galleries
from datagate.report.html import render_html
from datagate.report.markdown import render_markdown
from datagate.rules import Decision, Reference, RowVectors, apply_policy
from datagate.rules.engine import return_memory
from datagate.rules.origin import weigh_origins
from datagate.rules.policy import Policy, policy_digest


@dataclass
class EnforceResult:
    report: Report
    decision: Decision
    out: Path
    #: the ledger entry this run appended, when it recorded into a ledger
    entry: Entry | None = None
    #: the signed attestation written, when a signing key was available
    attestation: Path | None = None
    #: one-line remarks for the console (e.g. why no attestation was written)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


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
    reference: Path | None = None,
    decisions: Overrides | None = None,
    reserves: list[Path] | None = None,
    ledger: Path | None = None,
    key: Path | None = None,
    backend: Backend = LOCAL,
    intermediates: Path | None = None,
) -> EnforceResult:
    """Judge a scan folder: write the kept/rejected manifests and every report.

    ``decisions``: reviewed overrides (an overrides file), applied before the rules;
    ``reserves``: scans to top up from when a human-share or diversity floor fails.

    ``reference`` (else the policy's ``reference:``) is a scan folder of the preserved human
    baseline, for the reference rules and the report's reference section.

    ``ledger``: a ledger to record the run in, whose recorded models set the generation of
    their outputs before the rules run; ``key``: signs the ledger entry and the run's
    attestation (none: ``croissant.json`` only). Both are checked before anything is judged;
    no defaults are looked up here (:func:`datagate.enforce` does that). ``backend``: where
    the dataset-wide work (duplicate groups and pairs, clusters, sums) runs;
    ``intermediates``: a folder where that work's results are kept between runs and updated
    with what changed (:mod:`datagate.measures.incremental`; the pre-commit hook's)."""
    started = time.perf_counter()
    kept_work = None
    if intermediates is not None:
        from datagate.measures.incremental import IncrementalBackend

        backend = kept_work = IncrementalBackend(backend, output_dir(intermediates))
    signing = signing_for_gate(ledger, key)
    table, meta = load_scan(scan_dir)
    table, lineage = apply_lineage(table, signing.ledger)
    out = out if out is not None else default_out(scan_dir)
    embeddings = semantic_embeddings(load_embeddings(scan_dir))
    vectors = (
        None
        if embeddings is None
        else RowVectors.align(table, embeddings.keys, embeddings.vectors, embeddings.embedder)
    )
    detector = meta.get("detector")
    calibration = Calibration(**detector["calibration"]) if detector else None
    baseline = load_reference(
        reference or (Path(policy.reference) if policy.reference else None), embeddings
    )
    if embeddings is not None and not reserves:  # aligned: only a top-up reads the keys again
        embeddings = dataclasses.replace(embeddings, keys=np.empty(0, dtype=object))
    return_memory()
    loaded = time.perf_counter()
    reviewed = apply_decisions(table, decisions or Overrides(), policy.review_strength)
    table = reviewed.table
    if policy.unsigned_human != "weak":  # the scan decided with the default weighing
        table = weigh_origins(table, policy.unsigned_human)
    exempt, override = reviewed.keep, reviewed.decision
    prejudged = (reviewed.reject, reviewed.reasons, REVIEW_RULE, REVIEW_REJECT)

    def judge(table: pa.Table, vectors: RowVectors | None, exempt: Any, prejudged: Any) -> Decision:
        return apply_policy(
            table,
            policy,
            vectors,
            calibration,
            baseline,
            exempt=exempt,
            prejudged=prejudged,
            backend=backend,
        )

    decision = judge(table, vectors, exempt, prejudged)
    topped = None
    if reserves:
        embedder = embeddings.embedder if embeddings is not None else None
        pools = [load_reserve(path, table.schema, embedder) for path in reserves]
        for i, pool in enumerate(pools):  # judged like the dataset: lineage and weighing
            reserve_table, _ = apply_lineage(pool.table, signing.ledger)
            if policy.unsigned_human != "weak":
                reserve_table = weigh_origins(reserve_table, policy.unsigned_human)
            pools[i] = dataclasses.replace(pool, table=reserve_table)
        topped = top_up(table, decision, policy, embeddings, pools, calibration)
        if topped.added.any():  # judge again with the added rows in (they are kept)
            extra = int(topped.added.sum())
            table, vectors = topped.table, topped.vectors
            table, lineage = apply_lineage(table, signing.ledger)  # the reserve rows too
            exempt = np.concatenate([exempt, np.ones(extra, dtype=bool)])
            override = np.concatenate([override, np.full(extra, None, dtype=object)])
            prejudged = (
                np.concatenate([reviewed.reject, np.zeros(extra, dtype=bool)]),
                np.concatenate([reviewed.reasons, np.full(extra, None, dtype=object)]),
                REVIEW_RULE,
                REVIEW_REJECT,
            )
            decision = judge(table, vectors, exempt, prejudged)
        table = table.append_column(
            pa.field("source", pa.string()),
            pa.array(np.where(topped.added, "reserve", "scan").tolist(), pa.string()),
        ).append_column(
            pa.field("added_for", pa.string()), pa.array(topped.added_for.tolist(), pa.string())
        )
    if decisions is not None and len(decisions):
        table = table.append_column(
            pa.field("override", pa.string()), pa.array(override.tolist(), pa.string())
        )
    judged = time.perf_counter()
    rejected_fields = [
        (pa.field(name, pa.string(), nullable=nullable), values)
        for name, values, nullable in (
            ("rule_id", decision.rule_id, False),
            ("reason", decision.reason, False),
            ("reason_code", decision.reason_code, False),
            ("duplicate_of", decision.duplicate_of, True),
        )
    ]
    write_rows(out / KEPT, table, decision.kept)
    write_rows(out / REJECTED, table, ~decision.kept, rejected_fields)
    outputs = {
        "kept": str(out / KEPT),
        "rejected": str(out / REJECTED),
        "report_json": str(out / REPORT_JSON),
        "report_md": str(out / REPORT_MD),
        "report_html": str(out / REPORT_HTML),
    }
    return_memory()
    written = time.perf_counter()
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
        vectors=vectors,
        reference=baseline,
        backend=backend,
    )
    if decisions is not None:
        report["overrides"] = summary(decisions, reviewed.counts)
    if topped is not None:
        report["top_up"] = {
            "reserves": [str(p) for p in reserves or []],
            "candidates": topped.plan.candidates,
            "reached": topped.plan.reached,
            "added": topped.plan.by_rule,
            "message": topped.plan.message,
        }
    if lineage["models"]:
        report["composition"]["lineage"] = lineage
    report["timing"] = {
        "load_s": round(loaded - started, 3),
        "judge_s": round(judged - loaded, 3),
        "rules_s": dict(decision.seconds),
        "manifests_s": round(written - judged, 3),
        "report_s": round(time.perf_counter() - written, 3),
    }
    if kept_work is not None:  # what the kept intermediates saved (None: computed whole)
        report["timing"]["intermediates"] = kept_work.reused
    write_json(out / REPORT_JSON, report)
    write_reports(report, meta, out)
    result = EnforceResult(report=report, decision=decision, out=out)
    payload = run_payload(
        scan_dir=scan_dir,
        out=out,
        meta=meta,
        report=report,
        table=table,
        decision=decision,
        overrides=overrides_record(overrides or {}, decisions),
        files={},
        lineage=lineage,
        content=signing.private is not None,
    )
    write_json(
        out / CROISSANT,
        croissant(out, report, payload["human_share"], ledger=signing.ledger, lineage=lineage),
    )
    if signing.private is not None:  # what the ledger entry and the attestation sign
        payload["files"] = {name: file_sha256(out / name) for name in ATTESTED}
    record(result, signing, payload, lambda: verdict_index(table, decision))
    if kept_work is not None:  # once every output is written: a finished run's work only
        kept_work.save()
    return result


#: The gate outputs a ledger entry and an attestation name by their sha256.
ATTESTED = (KEPT, REJECTED, REPORT_JSON, CROISSANT)


def record(
    result: EnforceResult,
    signing: GateSigning,
    payload: dict[str, Any],
    index: Callable[[], pa.Table],
) -> None:
    """Append the run to the ledger and sign its attestation, as far as ``signing`` allows
    (``index`` builds the run's verdict index, only when a ledger entry is written)."""
    out = result.out
    if signing.ledger is not None and signing.private is not None:
        result.entry = append(signing.ledger.dir, signing.private, "run", payload, index())
    if signing.private is None:
        (out / ATTESTATION).unlink(missing_ok=True)  # a stale one would no longer verify
        result.notes.append(
            f"no signing key: {ATTESTATION} not written (create a key with `datagate keygen`)"
        )
        return
    entry = result.entry
    predicate = {k: v for k, v in payload.items() if k != "files"} | {
        "ledger": None
        if entry is None or signing.ledger is None
        else {"dir": str(signing.ledger.dir), "entry": entry.seq, "sha256": entry.hash}
    }
    stmt = statement(out, list(ATTESTED), predicate)
    result.attestation = write_attestation(out, stmt, signing.private)


def load_reference(path: Path | None, scan: Embeddings | None) -> Reference | None:
    """A reference scan's embeddings, refused when its embedder is not the scan's."""
    if path is None:
        return None
    if not path.is_dir():
        raise InputError(f"{path}: reference scan not found (expected a scan folder)")
    found = semantic_embeddings(load_embeddings(path))
    if found is None or not len(found.keys):
        raise InputError(
            f"{path}: the reference scan has no embeddings",
            hint="scan the reference with the same --model as the dataset",
        )
    if scan is not None and (found.embedder, found.preprocessing) != (
        scan.embedder,
        scan.preprocessing,
    ):
        raise ConfigError(
            f"{path}: reference embedded with {found.embedder} ({found.preprocessing}), "
            f"the scan with {scan.embedder} ({scan.preprocessing}): the two cannot be compared",
            hint="re-scan one of them with the other's --model",
        )
    return Reference(vectors=found.vectors, embedder=found.embedder, source=str(path))


def write_reports(report: Report, scan_meta: ScanMeta | None, out: Path) -> None:
    """Render report.md and report.html from a report and the manifests beside it."""
    # the galleries need identity, reasons and quality measures, not every column
    kept_names = set(pq.read_schema(out / KEPT).names)
    wanted = ["key", "shard", "member", *(c for c in QUALITY_KEYS if c in kept_names)]
    kept = pq.read_table(out / KEPT, columns=wanted)
    rejected_names = set(pq.read_schema(out / REJECTED).names)
    rejected = pq.read_table(
        out / REJECTED,
        columns=[
            c
            for c in ("key", "shard", "member", "rule_id", "reason", "reason_code", "duplicate_of")
            if c in rejected_names
        ],
    )
    galleries = select_galleries(report, kept, rejected, scan_meta)
    write_text(out / REPORT_MD, render_markdown(report))
    write_text(out / REPORT_HTML, render_html(report, galleries))


def rerender(scan_dir: Path, out: Path | None = None) -> Report:
    """Re-render every report from a scan and its recorded decisions; nothing is recomputed."""
    out = out if out is not None else default_out(scan_dir)
    if not (out / REPORT_JSON).exists() or not (out / KEPT).exists():
        raise InputError(
            f"{out}: no decisions to report (expected {REPORT_JSON} and {KEPT})",
            hint=f"run `datagate enforce {scan_dir}` first, or pass --out where it wrote",
        )
    report = load_report(out)
    meta = load_meta(scan_dir) if (scan_dir / META_FILE).exists() else None
    write_reports(report, meta, out)
    return report
