"""report.md as users read it, pinned by a golden file (pytest --update-golden to accept)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from datagate.report.build import build_report
from datagate.report.markdown import render_markdown
from datagate.rules import RowVectors, apply_policy, parse_policy
from datagate.scanner.options import ScanOptions
from datagate.scanner.schema import images_schema

POLICY = """
rules:
  - rule: decodable
  - rule: exact_duplicates
  - rule: min_human
    min: 0.5
  - rule: max_rejected_fraction
    max: 0.5
"""
CAMERA = json.dumps(
    [
        {
            "source": "camera",
            "says": "human",
            "strength": "weak",
            "detail": "camera EXIF: Canon R5",
            "generator": None,
            "error": False,
        }
    ]
)
A1111 = json.dumps(
    [
        {
            "source": "png-text",
            "says": "synthetic",
            "strength": "definitive",
            "detail": "AUTOMATIC1111 parameters",
            "generator": "sdxl_base",
            "error": False,
        }
    ]
)


def _table() -> pa.Table:
    schema = images_schema(ScanOptions().signals)
    rows = []
    specs = [
        ("photos", "a.jpg", "human", "weak", None, CAMERA, "1" * 64, None),
        ("photos", "b.jpg", "human", "weak", None, CAMERA, "2" * 64, None),
        ("photos", "b-copy.jpg", "human", "weak", None, CAMERA, "2" * 64, None),
        ("gen.tar", "0001.png", "synthetic", "definitive", "sdxl_base", A1111, "3" * 64, None),
        ("gen.tar", "0002.png", "unknown", None, None, None, "4" * 64, "empty file (0 bytes)"),
    ]
    for shard, member, origin, strength, generator, evidence, sha, error in specs:
        row = {f.name: None for f in schema}
        row.update(
            key=f"{shard}/{member}",
            shard=shard,
            member=member,
            reader="folder",
            decodable=error is None,
            error=error,
            sha256=sha,
            origin=origin,
            origin_strength=strength,
            generator=generator,
            evidence=evidence,
            c2pa_state="absent",
            provenance_conflict=False,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _report(vectors: RowVectors | None = None) -> dict:  # type: ignore[type-arg]
    table = _table()
    policy = POLICY + ("  - rule: min_diversity\n    min: 0.3\n" if vectors is not None else "")
    decision = apply_policy(table, parse_policy(policy, "rules.yaml"), vectors)
    meta = {
        "datagate_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00+00:00",
        "config": {"watermark": "off"},
        "counts": {"skipped_files": 0},
    }
    report = build_report(
        table,
        meta,
        decision,
        policy={
            "source": "rules.yaml",
            "digest": "0123456789abcdef",
            "name": None,
            "overrides": {},
        },
        outputs={
            "kept": "k",
            "rejected": "r",
            "report_json": "j",
            "report_md": "m",
            "report_html": "h",
        },
        vectors=vectors,
    )
    report["datagate_version"] = "0.1.0"
    return report


def test_report_markdown_golden(golden) -> None:  # type: ignore[no-untyped-def]
    report = _report()
    assert report["diversity"] == {"measured": False, "embedder": None}
    golden("report.md", render_markdown(report))


def test_report_markdown_golden_with_diversity(golden) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    keys = table.column("key").to_pylist()
    x = np.eye(8, dtype=np.float16)[[0, 1, 2, 3, 3]]  # the last two rows point the same way
    report = _report(RowVectors.align(table, keys, x, "pixel-v1"))
    div = report["diversity"]
    assert div["embedder"] == "pixel-v1" and div["overall"]["scanned"]["images"] == 5
    rule = next(r for r in report["rules"] if r["rule"] == "min_diversity")
    assert rule["value"] == pytest.approx(div["overall"]["kept"]["index"], abs=1e-3)
    golden("report-diversity.md", render_markdown(report))
