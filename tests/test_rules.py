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


def test_decodable_uses_the_error_text() -> None:
    d = _decide(
        [{}, {"decodable": False, "error": "empty file (0 bytes)"}], "rules: [{rule: decodable}]"
    )
    assert d.kept.tolist() == [True, False]
    assert d.rule_id[1] == "decodable" and d.reason[1] == "not decodable: empty file (0 bytes)"


def test_dimensions_and_custom_rule_id() -> None:
    d = _decide(
        [{"width": 32, "height": 600}, {}, {"width": 9000}],
        "rules: [{rule: dimensions, id: size, min_width: 64, max_width: 8192, max_height: 512}]",
    )
    assert d.kept.tolist() == [False, True, False]
    assert d.reason[0] == "width 32 < min_width 64; height 600 > max_height 512"
    assert d.reason[2] == "width 9000 > max_width 8192" and d.rule_id[2] == "size"


def test_formats_are_case_insensitive_with_aliases() -> None:
    d = _decide(
        [{"format": "GIF"}, {"format": "JPEG"}], "rules: [{rule: formats, allow: [jpg, png]}]"
    )
    assert d.kept.tolist() == [False, True]
    assert d.reason[0] == "format GIF not in allowed formats [JPEG, PNG]"


def test_quality_bounds() -> None:
    d = _decide(
        [{"brightness": 0.01}, {"blur": 3.0, "entropy": 0.5}, {}],
        "rules: [{rule: quality, brightness: {min: 0.02}, blur: {min: 10}, entropy: {min: 1}}]",
    )
    assert d.kept.tolist() == [False, False, True]
    assert d.reason[1] == "blur 3 < min 10; entropy 0.5 < min 1"


def test_exact_duplicates_keep_first_in_scan_order() -> None:
    same = "ab" * 32
    d = _decide(
        [{}, {"sha256": same}, {}, {"sha256": same}, {"sha256": same}],
        "rules: [{rule: exact_duplicates}]",
    )
    assert d.kept.tolist() == [True, True, True, False, False]
    assert d.reason[3] == "exact duplicate of s/1 (same sha256)"


def test_first_rule_wins_and_later_rules_see_only_survivors() -> None:
    same = "cd" * 32
    # row 0 is broken and a byte-copy of row 1: row 1 must survive the duplicate rule
    d = _decide(
        [{"sha256": same, "decodable": False}, {"sha256": same}],
        "rules: [{rule: decodable}, {rule: exact_duplicates}]",
    )
    assert d.kept.tolist() == [False, True] and d.rule_id[0] == "decodable"


def test_near_duplicates_keep_the_largest() -> None:
    h = 0xF0F0F0F0F0F0F0F0
    d = _decide(
        [
            {"dhash": h, "width": 256, "height": 256},
            {"dhash": h ^ 0b111, "width": 1024, "height": 1024},
            {"dhash": h ^ 0xFFFF},
        ],
        "rules: [{rule: near_duplicates, max_distance: 4}]",
    )
    assert d.kept.tolist() == [False, True, True]
    assert d.reason[0] == "near duplicate of s/1 (dHash distance 3 <= 4)"
    first = _decide(
        [
            {"dhash": h, "width": 256, "height": 256},
            {"dhash": h ^ 0b111, "width": 1024, "height": 1024},
        ],
        "rules: [{rule: near_duplicates, max_distance: 4, keep: first}]",
    )
    assert first.kept.tolist() == [True, False]


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


def test_max_rejected_fraction() -> None:
    d = _decide(
        [{}, {"decodable": False}, {"decodable": False}],
        "rules: [{rule: decodable}, {rule: max_rejected_fraction, max: 0.5}]",
    )
    assert d.outcomes[-1].passed is False and d.outcomes[-1].value == pytest.approx(2 / 3)
    assert not d.passed


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


def test_min_human_evidence_strength_and_untrusted_c2pa_policy() -> None:
    base = "rules: [{rule: min_human, min: 0.5, unknown: exclude"
    d = _decide(_prov_rows(), base + "}]", ALL)
    assert d.outcomes[0].details["human"] == 2 and d.outcomes[0].details["synthetic"] == 1
    strong = _decide(_prov_rows(), base + ", human_evidence: strong}]", ALL)
    assert strong.outcomes[0].details["human"] == 1 and strong.outcomes[0].details["unknown"] == 2
    ignore = _decide(_prov_rows(), base + ", untrusted_c2pa: ignore}]", ALL)
    assert ignore.outcomes[0].details["synthetic"] == 0 and ignore.outcomes[0].value == 1.0


def test_provenance_rule_requires_evidence_and_rejects_generators() -> None:
    d = _decide(_prov_rows(), "rules: [{rule: provenance, require: c2pa_valid}]", ALL)
    assert d.kept.tolist() == [True, False, True, False]
    assert d.reason[1] == "no a valid C2PA manifest (c2pa: absent, origin: human)"
    trusted = _decide(_prov_rows(), "rules: [{rule: provenance, require: c2pa_trusted}]", ALL)
    assert trusted.kept.tolist() == [True, False, False, False]
    banned = _decide(
        _prov_rows(), "rules: [{rule: provenance, reject_generators: ['*midjourney*']}]", ALL
    )
    assert banned.kept.tolist() == [True, True, False, True]
    assert banned.reason[2] == "generator 'Midjourney v6' is rejected by the policy"
    evidence = _decide(_prov_rows(), "rules: [{rule: provenance, require: evidence}]", ALL)
    assert evidence.kept.tolist() == [True, True, True, False]


def test_max_unknown_origin() -> None:
    d = _decide(_prov_rows(), "rules: [{rule: max_unknown_origin, max: 0.2}]", ALL)
    assert d.outcomes[0].passed is False and d.outcomes[0].value == 0.25
    assert d.outcomes[0].message == "unknown origin 1 of 4 kept images (25.0%) > 20%"
