"""Rule tests the YAML format cannot express; every other rule test is data in
tests/rule_cases/ (one file per rule, run by tests/test_rule_cases.py).

What stays here: tables without the provenance columns (a scan without the provenance
signal, or with only ``origin`` columns added) and assertions on an outcome's ``details``.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from datagate.rules import apply_policy, parse_policy
from datagate.scanner.options import ScanOptions
from datagate.scanner.schema import images_schema

WITHOUT_PROVENANCE = ("integrity", "hashes", "quality")


def _table(rows: list[dict], signals: tuple[str, ...] = WITHOUT_PROVENANCE) -> pa.Table:  # type: ignore[type-arg]
    schema = images_schema(signals)
    full = []
    for i, r in enumerate(rows):
        base = {f.name: None for f in schema}
        base.update(
            key=f"s/{i}",
            shard="s",
            member=str(i),
            reader="folder",
            decodable=True,
            format="JPEG",
            width=512,
            height=512,
            brightness=0.5,
            contrast=0.2,
            blur=100.0,
            entropy=7.0,
            aspect_ratio=1.0,
            sha256=f"{i:064x}",
            dhash=i * 0x0101010101010101 % 2**64,
            phash=i,
        )
        base.update(r)
        full.append(base)
    return pa.Table.from_pylist(full, schema=schema)


def _decide(rows: list[dict], text: str, signals: tuple[str, ...] = WITHOUT_PROVENANCE):  # type: ignore[no-untyped-def,type-arg]
    return apply_policy(_table(rows, signals), parse_policy(text, "t.yaml"))


@pytest.mark.parametrize(
    ("unknown", "passed", "value"),
    [("not_human", False, 0.0), ("human", True, 1.0), ("exclude", False, None)],
)
def test_min_human_without_provenance_is_reported_honestly(
    unknown: str, passed: bool, value: float | None
) -> None:
    d = _decide([{}, {}, {}], f"rules: [{{rule: min_human, min: 0.7, unknown: {unknown}}}]")
    (outcome,) = d.outcomes
    assert outcome.passed is passed and outcome.value == value
    assert outcome.details["unknown"] == 3 and outcome.details["human"] == 0
    assert "no provenance signal" in outcome.message
    if unknown == "exclude":
        assert outcome.message.startswith("human share cannot be measured")


def test_min_human_counts_origin_of_kept_rows_only() -> None:
    rows = [{}, {}, {}, {}, {"decodable": False}]
    table = (
        _table(rows)
        .append_column(
            "origin", pa.array(["human", "human", "synthetic", None, "human"], pa.string())
        )
        .append_column(
            "origin_strength", pa.array(["strong", "weak", "strong", None, "strong"], pa.string())
        )
    )
    d = apply_policy(
        table,
        parse_policy(
            "rules: [{rule: decodable}, {rule: min_human, min: 0.6, unknown: exclude}]", "t"
        ),
    )
    outcome = d.outcomes[-1]
    estimate = outcome.details.pop("estimate")
    assert outcome.details == {
        "human": 2,
        "synthetic": 1,
        "unknown": 1,
        "unknown_counts_as": "exclude",
        "human_evidence": "weak",
        "untrusted_c2pa": "count",
        "evidence": "provenance",
        "bound": "estimate",
    }
    # without detector scores the share is an exact count: the interval is the point
    assert estimate["share"] == estimate["low"] == estimate["high"] == pytest.approx(2 / 3, 1e-5)
    assert outcome.value == pytest.approx(2 / 3) and outcome.passed


ALL = ScanOptions().signals
C2PA_SYNTHETIC = json.dumps(
    [
        {
            "source": "c2pa",
            "says": "synthetic",
            "strength": "strong",
            "detail": "valid",
            "generator": None,
            "error": False,
        }
    ]
)
CAMERA = json.dumps(
    [
        {
            "source": "camera",
            "says": "human",
            "strength": "weak",
            "detail": "Canon",
            "generator": None,
            "error": False,
        }
    ]
)


def _prov_rows() -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "origin": "human",
            "origin_strength": "definitive",
            "c2pa_state": "valid",
            "c2pa_trusted": True,
        },
        {"origin": "human", "origin_strength": "weak", "evidence": CAMERA, "c2pa_state": "absent"},
        {
            "origin": "synthetic",
            "origin_strength": "strong",
            "evidence": C2PA_SYNTHETIC,
            "c2pa_state": "valid",
            "c2pa_trusted": False,
            "generator": "Midjourney v6",
        },
        {"origin": "unknown", "c2pa_state": "absent"},
    ]


def test_min_human_evidence_strength_and_untrusted_c2pa_policy_in_details() -> None:
    # the same rows in tests/rule_cases/min_human.yaml pin values and messages
    base = "rules: [{rule: min_human, min: 0.5, unknown: exclude"
    d = _decide(_prov_rows(), base + "}]", ALL)
    assert d.outcomes[0].details["human"] == 2 and d.outcomes[0].details["synthetic"] == 1
    strong = _decide(_prov_rows(), base + ", human_evidence: strong}]", ALL)
    assert strong.outcomes[0].details["human"] == 1 and strong.outcomes[0].details["unknown"] == 2
    ignore = _decide(_prov_rows(), base + ", untrusted_c2pa: ignore}]", ALL)
    assert ignore.outcomes[0].details["synthetic"] == 0
