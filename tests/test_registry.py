"""A new signal and a new rule plug in through the registries alone (tests/toys/, one file
each) and are seen by ``--signals``, the scan table, validation, ``rules list``, enforce,
the manifests and the reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main
from datagate.rules import RULES, unregister
from datagate.scanner.signals import SIGNALS
from datagate.scanner.signals import unregister as unregister_signal

from .conftest import jpeg_bytes, photo


@pytest.fixture
def toys() -> Iterator[None]:
    from .toys import toy_rule, toy_signal  # registering is importing

    assert toy_rule.MaxRedness is RULES["toy_max_redness"]
    assert toy_signal.Redness is SIGNALS["toy_redness"]
    yield
    unregister("toy_max_redness")
    unregister_signal("toy_redness")


def test_toy_signal_and_rule_through_the_registries(
    toys: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"photo{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    Image.new("RGB", (64, 64), (255, 0, 0)).save(data / "red.png")
    scan_dir = tmp_path / "scan"
    signals = "integrity,hashes,toy_redness"
    assert main(["scan", str(data), "-o", str(scan_dir), "--signals", signals,
                 "--model", "none", "--workers", "1", "--quiet"]) == 0  # fmt: skip
    table = pq.read_table(scan_dir / "images.parquet")
    redness = dict(zip(table["member"].to_pylist(), table["redness"].to_pylist()))
    assert redness["red.png"] == 1.0 and redness["photo0.jpg"] < 0.5

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - rule: toy_max_redness\n    max: 0.5\n")
    assert main(["rules", "validate", str(rules)]) == 0
    rules_bad = tmp_path / "bad.yaml"
    rules_bad.write_text("rules:\n  - rule: toy_max_redness\n    maxx: 0.5\n")
    capsys.readouterr()
    assert main(["rules", "validate", str(rules_bad)]) == 2
    assert "did you mean 'max'" in capsys.readouterr().err

    assert main(["rules", "list"]) == 0
    listed = capsys.readouterr().out
    assert "toy_max_redness" in listed and "too_red" in listed
    assert "Largest share of pure-red pixels" in listed

    out = tmp_path / "out"
    assert main(["enforce", str(scan_dir), "--rules", str(rules), "-o", str(out), "-q"]) == 0
    rejected = pq.read_table(out / "manifests" / "rejected.parquet").to_pylist()
    assert [(r["member"], r["rule_id"], r["reason_code"]) for r in rejected] == [
        ("red.png", "toy_max_redness", "too_red")
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["rules"][0]["rule"] == "toy_max_redness" and report["rules"][0]["rejected"] == 1
    assert "`toy_max_redness`" in (out / "report.md").read_text()
    assert "toy_max_redness" in (out / "report.html").read_text()


def test_a_rule_needs_a_literal_name_and_a_docstring() -> None:
    from typing import Literal

    from datagate.rules import Rule, register

    class Nameless(Rule):
        """No ``rule`` key."""

    with pytest.raises(TypeError, match="Literal"):
        register(Nameless)

    class Undocumented(Rule):
        rule: Literal["undocumented"]

    Undocumented.__doc__ = None
    with pytest.raises(TypeError, match="docstring"):
        register(Undocumented)
    assert "undocumented" not in RULES


def test_a_signal_cannot_take_another_signals_column() -> None:
    from typing import Any, ClassVar

    import pyarrow as pa

    from datagate.errors import ConfigError
    from datagate.scanner.signals import register

    class Thief:
        name: ClassVar[str] = "thief"
        version: ClassVar[int] = 1
        fields: ClassVar[tuple[pa.Field, ...]] = (pa.field("sha256", pa.string()),)

        def compute(self, sample: Any) -> dict[str, Any]:
            return {"sha256": None}

    with pytest.raises(ConfigError, match="sha256"):
        register(Thief)
    assert "thief" not in SIGNALS
