"""Generations from lineage: models recorded in the ledger as trained on dataset versions set
the generation of their outputs, so max_generation rejects the outputs of a model trained on
model outputs (a three-generation chain, end to end through the CLI)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import PngImagePlugin

import datagate
from datagate.cli import main

from .conftest import jpeg_bytes, photo

POLICY = "rules:\n  - rule: max_generation\n    max: 1\n    unknown: keep\n"


def shard(path: Path, humans: range, outputs: dict[str, range]) -> Path:
    """A WebDataset tar: human photos with a sidecar (generation 0 stated), and PNGs whose
    AUTOMATIC1111 ``parameters`` chunk names the generator (``Model: NAME``)."""
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in humans:
            add(f"h{i:03d}.jpg", jpeg_bytes(photo(i)))
            add(f"h{i:03d}.json", json.dumps({"origin": "human", "generation": 0}).encode())
        for model, seeds in outputs.items():
            for i in seeds:
                text = PngImagePlugin.PngInfo()
                text.add_text("parameters", f"a cat\nSteps: 20, Sampler: Euler a, Model: {model}")
                buf = io.BytesIO()
                photo(1000 + i).save(buf, "PNG", pnginfo=text)
                add(f"{model.lower()}{i:03d}.png", buf.getvalue())
    return path


def scan(tmp: Path, name: str, humans: range, outputs: dict[str, range]) -> Path:
    data = shard(tmp / f"{name}.tar", humans, outputs)
    out = tmp / f"{name}-scan"
    datagate.scan(data, out, model="pixel", workers=1, cache_dir=tmp / "cache")
    return out


def enforce(scan_dir: Path, out: Path, ledger: Path | None, key: Path, rules: Path) -> int:
    argv = ["enforce", str(scan_dir), "--rules", str(rules), "--out", str(out), "-q"]
    if ledger is not None:
        argv += ["--ledger", str(ledger), "--key", str(key)]
    return main(argv)


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    key, ledger, rules = tmp_path / "key.pem", tmp_path / "ledger", tmp_path / "gen.yaml"
    rules.write_text(POLICY)
    assert main(["keygen", "--out", str(key), "--ledger", str(ledger)]) == 0
    return {"key": key, "ledger": ledger, "rules": rules, "tmp": tmp_path}


def test_three_generation_chain(chain: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tmp, key, ledger, rules = chain["tmp"], chain["key"], chain["ledger"], chain["rules"]
    # v0: human photos only
    v0 = scan(tmp, "v0", range(0, 4), {})
    assert enforce(v0, tmp / "g0", ledger, key, rules) == 0
    # model A trained on v0 -> its outputs are generation 1
    assert (
        main(
            [
                "ledger",
                "model",
                "A",
                "--trained-on",
                "1",
                "--ledger",
                str(ledger),
                "--key",
                str(key),
            ]
        )
        == 0
    )
    assert "generation 1" in capsys.readouterr().out
    # v1: human photos and A's outputs; all kept under max_generation 1
    v1 = scan(tmp, "v1", range(0, 4), {"A": range(0, 3)})
    assert enforce(v1, tmp / "g1", ledger, key, rules) == 0
    g1 = json.loads((tmp / "g1" / "report.json").read_text())
    assert g1["counts"]["kept"] == 7
    assert g1["composition"]["kept"]["generation"] == {"0": 4, "1": 3}
    # model B trained on v1 (entry 3) -> generation 2
    assert (
        main(
            [
                "ledger",
                "model",
                "B",
                "--trained-on",
                "3",
                "--ledger",
                str(ledger),
                "--key",
                str(key),
            ]
        )
        == 0
    )
    assert "generation 2" in capsys.readouterr().out
    # v2: B's outputs are generation 2 and rejected; an unrecorded generator stays unknown
    v2 = scan(tmp, "v2", range(0, 4), {"B": range(10, 13), "C": range(20, 22)})
    assert enforce(v2, tmp / "g2", ledger, key, rules) == 0
    report = json.loads((tmp / "g2" / "report.json").read_text())
    assert report["composition"]["scanned"]["generation"] == {"0": 4, "2": 3, "unknown": 2}
    assert report["composition"]["kept"]["generation"] == {"0": 4, "unknown": 2}
    assert report["composition"]["lineage"]["models"]["B"] == {
        "entry": 4,
        "generation": 2,
        "images": 3,
    }
    rejected = pq.read_table(tmp / "g2" / "manifests/rejected.parquet").to_pylist()
    assert sorted(r["key"].rsplit("/", 1)[1] for r in rejected) == [
        "b010.png",
        "b011.png",
        "b012.png",
    ]
    assert {r["reason_code"] for r in rejected} == {"generation_too_high"}
    assert {r["generation_source"] for r in rejected} == {"ledger: model B (entry #4)"}
    # the ledger records the generation mix of every version and the per-image history
    found = datagate.open_ledger(ledger)
    runs = [e for e in found.entries if e.kind == "run"]
    assert [r.payload["generations"]["max_kept"] for r in runs] == [0, 1, 0]
    capsys.readouterr()
    assert main(["ledger", "show", "--ledger", str(ledger), "--json"]) == 0
    kinds = [e["kind"] for e in json.loads(capsys.readouterr().out)]
    assert kinds == ["run", "model", "run", "model", "run"]


def test_without_the_ledger_the_outputs_keep_the_scans_generation(
    chain: dict[str, Path],
) -> None:
    tmp, rules = chain["tmp"], chain["rules"]
    v2 = scan(tmp, "v2", range(0, 2), {"B": range(10, 13)})
    assert enforce(v2, tmp / "plain", None, chain["key"], rules) == 0
    report = json.loads((tmp / "plain" / "report.json").read_text())
    assert report["composition"]["kept"]["generation"] == {"0": 2, "unknown": 3}
    assert "lineage" not in report["composition"]


def test_model_records_refuse_bad_references(
    chain: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, key = str(chain["ledger"]), str(chain["key"])
    assert (
        main(["ledger", "model", "A", "--trained-on", "7", "--ledger", ledger, "--key", key]) == 2
    )
    assert "no entry '7'" in capsys.readouterr().err
    v0 = scan(chain["tmp"], "v0", range(0, 2), {})
    assert enforce(v0, chain["tmp"] / "g0", chain["ledger"], chain["key"], chain["rules"]) == 0
    assert (
        main(["ledger", "model", "A", "--trained-on", "1", "--ledger", ledger, "--key", key]) == 0
    )
    assert (
        main(["ledger", "model", "B", "--trained-on", "2", "--ledger", ledger, "--key", key]) == 2
    )
    assert "records a model, not a dataset version" in capsys.readouterr().err
