"""Rule tests as data: one YAML file per rule in tests/rule_cases/, run by one test.

Each file names its ``rule`` and lists ``cases``; a case gives ``rows`` (each overlays a
valid base row: a decodable 512x512 JPEG with distinct hashes, key ``s/<index>``), the
rule's ``config``, optionally ``vectors`` (one per row, null for none), ``reference``
(vectors of a reference set, for the reference rules), ``before`` (rules
applied first) and ``calibration``, and expects ``kept`` (row indices), ``codes`` (row
index -> reason code of each rejected row), optionally ``reasons`` (row index -> the exact
reason a user reads) and ``rule_ids``, and, for dataset rules, ``outcome`` (``passed``,
``code``, ``value`` within 1e-6, ``message``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from datagate.rules import RULES, Policy, Reference, RowVectors, apply_policy
from datagate.scanner.defaults import DEFAULT_SIGNALS
from datagate.scanner.schema import images_schema

CASES_DIR = Path(__file__).parent / "rule_cases"


def base_row(i: int) -> dict[str, Any]:
    return {
        "key": f"s/{i}",
        "shard": "s",
        "member": str(i),
        "reader": "folder",
        "decodable": True,
        "format": "JPEG",
        "width": 512,
        "height": 512,
        "brightness": 0.5,
        "contrast": 0.2,
        "blur": 100.0,
        "entropy": 7.0,
        "aspect_ratio": 1.0,
        "sha256": f"{i:064x}",
        "dhash": (i * 0x0101010101010101) % 2**64,
        "phash": (i * 0x1111111111111111) % 2**64,
        "origin": "unknown",
        "c2pa_state": "absent",
    }


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        for case in spec["cases"]:
            found.append((f"{spec['rule']}:{case['name']}", {"rule": spec["rule"], **case}))
    return found


CASES = load_cases()


def test_every_registered_rule_has_a_case_file() -> None:
    files = {p.stem for p in CASES_DIR.glob("*.yaml")}
    assert set(RULES) <= files, f"rules without cases: {sorted(set(RULES) - files)}"


def test_every_declared_code_is_exercised() -> None:
    seen: set[str] = set()
    for _, case in CASES:
        seen |= set((case.get("codes") or {}).values())
        if case.get("outcome", {}).get("code"):
            seen.add(case["outcome"]["code"])
    declared = {code for cls in RULES.values() for code in cls.codes}
    assert declared <= seen, f"codes no case exercises: {sorted(declared - seen)}"


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[n for n, _ in CASES])
def test_rule_case(case: dict[str, Any]) -> None:
    from datagate.detect.head import Calibration

    schema = images_schema(DEFAULT_SIGNALS)
    rows = []
    for i, overlay in enumerate(case["rows"]):
        row = dict.fromkeys(schema.names)
        row.update(base_row(i))
        row.update(overlay or {})
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=schema)
    if case.get("signal_versions"):  # a table as an older scan wrote it
        metadata = dict(table.schema.metadata or {})
        versions = json.loads(metadata[b"datagate.signals"])
        metadata[b"datagate.signals"] = json.dumps({**versions, **case["signal_versions"]})
        table = table.replace_schema_metadata(metadata)
    if any("detector_score" in (r or {}) for r in case["rows"]):
        scores = [(r or {}).get("detector_score") for r in case["rows"]]
        table = table.append_column("detector_score", pa.array(scores, pa.float32()))
    vectors = None
    if case.get("vectors") is not None:
        present = [i for i, v in enumerate(case["vectors"]) if v is not None]
        matrix = np.array([case["vectors"][i] for i in present], dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        keys = [f"s/{i}" for i in present]
        vectors = RowVectors.align(table, keys, matrix.astype(np.float16), "test")
    calibration = Calibration(**case["calibration"]) if case.get("calibration") else None
    reference = None
    if case.get("reference") is not None:
        ref = np.array(case["reference"], dtype=np.float32)
        reference = Reference(ref / np.linalg.norm(ref, axis=1, keepdims=True), "test", "ref")
    rules = [*case.get("before", []), {"rule": case["rule"], **(case.get("config") or {})}]
    policy = Policy.validate_data({"rules": rules})
    decision = apply_policy(table, policy, vectors, calibration, reference)
    assert np.flatnonzero(decision.kept).tolist() == case["kept"]
    codes = {i: decision.reason_code[i] for i in np.flatnonzero(~decision.kept).tolist()}
    assert codes == {int(k): v for k, v in (case.get("codes") or {}).items()}
    for i in codes:
        assert decision.reason[i], f"row {i} rejected without a reason"
    for i, text in (case.get("reasons") or {}).items():
        assert decision.reason[int(i)] == text
    if "rule_ids" in case:
        ids = {i: decision.rule_id[i] for i in codes}
        assert ids == {int(k): v for k, v in case["rule_ids"].items()}
    if "outcome" in case:
        outcome = decision.outcomes[-1]
        expected = case["outcome"]
        for key in ("passed", "code"):
            if key in expected:
                assert getattr(outcome, key) == expected[key], (key, outcome.message)
        if "value" in expected:
            assert outcome.value == pytest.approx(expected["value"], abs=1e-6)
        if "message" in expected:
            assert outcome.message == expected["message"]
