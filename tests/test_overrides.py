"""Reviewed decisions (overrides, keyed by sha256) applied by enforce before the rules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datagate.cli import main
from datagate.curation.overrides import Override, append_override, read_overrides
from datagate.errors import InputError

from .conftest import jpeg_bytes, photo

POLICY = "rules:\n  - rule: exact_duplicates\n  - rule: min_human\n    min: 0.5\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def gate(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (data / "copy.jpg").write_bytes((data / "0.jpg").read_bytes())
    rules = tmp_path / "rules.yaml"
    rules.write_text(POLICY)
    return {"data": data, "rules": rules, "root": tmp_path}


def _run(g: dict[str, Path], *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    scan_dir = g["root"] / "scan"
    args = ["scan", str(g["data"]), "-o", str(scan_dir), "--model", "none", "-q", "--workers", "1"]
    assert main(args) == 0
    out = g["root"] / "out"
    code = main(
        ["enforce", str(scan_dir), "--rules", str(g["rules"]), "-o", str(out), "-q", *extra]
    )
    return code, json.loads((out / "report.json").read_text())


def _share(report: dict) -> float:  # type: ignore[type-arg]
    return next(r["value"] for r in report["rules"] if r["rule"] == "min_human")


def test_reviewed_origins_change_the_human_share_and_survive_renames(gate: dict[str, Path]) -> None:
    code, before = _run(gate)
    assert code == 1 and _share(before) == 0.0  # four unknown-origin photos
    decisions = gate["root"] / "overrides.jsonl"
    for name in ("1.jpg", "2.jpg"):
        append_override(decisions, Override(_sha(gate["data"] / name), "human", "ana", "t", "mine"))
    code, after = _run(gate, "--overrides", str(decisions))
    assert code == 0 and _share(after) == 0.5
    assert after["overrides"]["applied"] == {"human": 2}
    kept = pq.read_table(gate["root"] / "out" / "manifests" / "kept.parquet").to_pylist()
    reviewed = {r["member"]: (r["override"], r["origin"], r["origin_strength"]) for r in kept}
    assert reviewed["1.jpg"] == ("human", "human", "strong")
    assert reviewed["3.jpg"] == (None, "unknown", None)
    evidence = json.loads(next(r["evidence"] for r in kept if r["member"] == "1.jpg"))
    assert evidence[-1]["source"] == "review" and "ana" in evidence[-1]["detail"]
    # renamed and moved into a sub-folder: the decisions follow the content
    (gate["data"] / "sub").mkdir()
    (gate["data"] / "1.jpg").rename(gate["data"] / "sub" / "renamed.jpg")
    code, moved = _run(gate, "--overrides", str(decisions))
    assert code == 0 and _share(moved) == 0.5


def test_keep_reject_and_conflicts(gate: dict[str, Path]) -> None:
    decisions = gate["root"] / "overrides.jsonl"
    copy = _sha(gate["data"] / "copy.jpg")  # same bytes as 0.jpg: both rows have this sha
    append_override(decisions, Override(copy, "reject", "ana", note="blurry"))
    append_override(decisions, Override(copy, "keep", "bo"))  # the latest wins
    append_override(decisions, Override(_sha(gate["data"] / "3.jpg"), "reject", "bo", note="x"))
    append_override(decisions, Override(_sha(gate["data"] / "2.jpg"), "human", "bo"))
    append_override(decisions, Override(_sha(gate["data"] / "1.jpg"), "human", "bo"))
    _, report = _run(gate, "--overrides", str(decisions))
    out = gate["root"] / "out" / "manifests"
    kept = sorted(r["member"] for r in pq.read_table(out / "kept.parquet").to_pylist())
    assert kept == ["0.jpg", "1.jpg", "2.jpg", "copy.jpg"]  # keep beats exact_duplicates
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert [(r["member"], r["rule_id"], r["reason_code"], r["reason"]) for r in rejected] == [
        ("3.jpg", "review", "review_reject", "rejected in review by bo: x")
    ]
    assert report["overrides"]["conflicts"] == [
        {"sha256": copy, "decisions": ["reject", "keep"], "in_force": "keep"}
    ]
    assert "Reviewed decisions" in (gate["root"] / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"sha256": "ab", "decision": "human"}\n', ":1: sha256: expected 64 lowercase hex"),
        (
            '\n{"sha256": "' + "a" * 64 + '", "decision": "maybe"}\n',
            ":2: decision: expected one of",
        ),
        ("not json\n", ":1: not a JSON object"),
        ('{"sha256": "' + "a" * 64 + '", "decision": "keep", "extra": 1}\n', "unknown key(s)"),
        ('{"sha256": "' + "a" * 64 + '", "decision": "keep"}', ":1: the last line is incomplete"),
    ],
)
def test_a_malformed_line_is_an_error_with_its_line_number(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_overrides(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_enforce_exits_2_on_a_malformed_overrides_file(
    gate: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = gate["root"] / "bad.jsonl"
    bad.write_text("{}\n")
    scan_dir = gate["root"] / "scan"
    assert main(["scan", str(gate["data"]), "-o", str(scan_dir), "--model", "none", "-q"]) == 0
    capsys.readouterr()
    assert main(["enforce", str(scan_dir), "--overrides", str(bad)]) == 2
    assert "bad.jsonl:1: sha256" in capsys.readouterr().err
    assert main(["enforce", str(scan_dir), "--overrides", str(gate["root"] / "missing")]) == 2
