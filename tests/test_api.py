"""The Python API: datagate.scan / enforce / load_scan, as a pipeline would call them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import datagate
from datagate.errors import InputError
from datagate.rules import parse_policy

from .conftest import jpeg_bytes, photo


def test_scan_enforce_load_from_python(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (data / "copy.jpg").write_bytes((data / "0.jpg").read_bytes())
    scan_dir = tmp_path / "scan"
    result = datagate.scan(str(data), scan_dir, model="pixel", workers=1, cache_dir=tmp_path / "c")
    assert result.meta["counts"]["images"] == 5 and result.meta["embedder"]["id"] == "pixel-v2"
    table, meta = datagate.load_scan(scan_dir)
    assert table.num_rows == 5 and meta["config_hash"] == result.meta["config_hash"]

    policy = parse_policy("rules:\n  - rule: exact_duplicates\n", "inline")
    gate = datagate.enforce(scan_dir, policy, out=tmp_path / "out")
    assert gate.passed and gate.report["counts"] == {
        "images": 5,
        "kept": 4,
        "rejected": 1,
        "errors": 0,
    }
    assert (tmp_path / "out" / "report.html").exists()
    codes = [c for c in gate.decision.reason_code.tolist() if c]
    assert codes == ["exact_duplicate"]
    # the default policy with a floor: unknown origin counts as not human, so it fails
    failed = datagate.enforce(scan_dir, out=tmp_path / "out2", min_human=0.7)
    assert not failed.passed
    floor = next(r for r in failed.report["rules"] if r["rule"] == "min_human")
    assert floor["code"] == "min_human.below_floor"


def test_api_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a datagate scan"):
        datagate.load_scan(tmp_path)
    with pytest.raises(InputError, match="unknown signal"):
        datagate.scan(tmp_path, tmp_path / "s", signals=["nope"], model="none")


def test_auto_model_offline_warns_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jpg").write_bytes(jpeg_bytes(photo(1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = datagate.scan(tmp_path / "d", tmp_path / "s", workers=1, cache_dir=tmp_path / "c")
    assert result.meta["embedder"]["id"] == "pixel-v2"
    assert any("pixel" in str(w.message) for w in caught)
