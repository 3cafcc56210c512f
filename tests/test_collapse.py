"""The model-collapse example (examples/collapse/run.py) in its reduced form: a PCA +
Gaussian-mixture model retrained on its own samples for three generations, every training
set scanned and gated by datagate against generation 0 (`make collapse-demo` runs it full)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import datagate

from .conftest import ROOT

pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

GENERATIONS = 3


def example() -> ModuleType:
    name = "datagate_collapse_example"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples/collapse/run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("collapse")
    argv = ["--quick", "--out", str(out), "--schedules", "synthetic,mix-1", "--workers", "1"]
    assert example().main(argv) == 0
    return out, json.loads((out / "collapse.json").read_text(encoding="utf-8"))


def rows_of(summary: dict[str, Any], schedule: str) -> list[dict[str, Any]]:
    """Generation 0 (the real set every schedule starts from), then the schedule's rows."""
    rows = summary["rows"]
    return [r for r in rows if r["schedule"] == "real"] + [
        r for r in rows if r["schedule"] == schedule
    ]


def test_the_fully_synthetic_loop_drifts_away_from_generation_0(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = quick
    rows = rows_of(summary, "synthetic")
    assert [r["generation"] for r in rows] == list(range(GENERATIONS + 1))
    recall = [r["recall"] for r in rows]
    coverage = [r["coverage"] for r in rows]
    frechet = [r["frechet"] for r in rows]
    diversity = [r["diversity"] for r in rows]
    assert recall[0] == coverage[0] == 1.0 and frechet[0] == 0.0  # generation 0 is the reference
    assert all(a > b for a, b in itertools.pairwise(recall)), recall
    assert max(coverage[1:]) < 1.0, coverage  # no synthetic generation covers all of gen 0
    assert all(a < b for a, b in itertools.pairwise(frechet)), frechet
    assert all(a > b for a, b in itertools.pairwise(diversity)), diversity
    assert [r["synthetic_share"] for r in rows] == [0.0] + [1.0] * GENERATIONS


def test_mixing_in_the_real_images_keeps_the_baseline_covered(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = quick
    n = summary["config"]["images"]
    for row in rows_of(summary, "mix-1")[1:]:
        g = row["generation"]
        assert row["images"] == 2 * n and row["synthetic_share"] == 0.5
        assert row["generation_mix"] == {"0": n, str(g): n}
        assert row["coverage"] == row["recall"] == 1.0  # the human baseline is in the set
        assert 0.0 < row["samples_recall"] < 1.0  # the model's samples alone are measured
    synthetic_last = rows_of(summary, "synthetic")[-1]
    assert rows_of(summary, "mix-1")[-1]["samples_recall"] > synthetic_last["recall"]


def test_the_gate_passes_generation_0_and_fails_the_first_synthetic_generation(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = quick
    real = rows_of(summary, "real")[0]
    assert real["passed"] and real["failing"] == []
    failures = summary["first_failures"]
    assert set(failures) == {"synthetic", "mix-1"}
    for found in failures.values():
        assert found["generation"] == 1
        assert any(rule.startswith("min_human") for rule in found["rules"])
    # each gate is a real datagate run: its report names the rules and the reference
    report = json.loads((out / "gates/synthetic/gen03/report.json").read_text(encoding="utf-8"))
    outcome = {r["rule"]: r for r in report["rules"]}
    assert outcome["min_human"]["code"] == "min_human.below_floor"
    assert outcome["min_recall"]["code"] == "min_recall.below_min"
    assert report["reference"]["measured"] and report["reference"]["reference_images"] == len(
        list((out / "images/gen00").glob("*.png"))
    )


def test_generations_and_origins_are_recorded_in_the_scans(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = quick
    table, meta = datagate.load_scan(out / "scans/synthetic/gen02")
    assert set(table.column("generation").to_pylist()) == {2}
    assert set(table.column("generation_source").to_pylist()) == {"text chunk"}
    assert set(table.column("origin").to_pylist()) == {"synthetic"}
    embedder = meta.get("embedder")
    assert embedder is not None and embedder["id"] == "pixel-v2"
    assert str(out / "cache") in str(embedder.get("cache"))  # nothing written outside OUT
    table, _ = datagate.load_scan(out / "scans/mix-1/gen03")
    pairs = set(zip(table.column("generation").to_pylist(), table.column("origin").to_pylist()))
    assert pairs == {(0, "human"), (3, "synthetic")}


def test_the_table_and_the_plot_are_written(quick: tuple[Path, dict[str, Any]]) -> None:
    out, summary = quick
    n_rows = 2 + 2 * GENERATIONS  # generation 0, the held-out crops, two schedules
    assert len(summary["rows"]) == n_rows
    lines = (out / "collapse.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + n_rows and lines[0].startswith("schedule,generation,images")
    plot = (out / "collapse.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n") and len(plot) > 20_000
    md = (out / "collapse.md").read_text(encoding="utf-8")
    assert "![datagate measures per generation](collapse.png)" in md
    assert "| schedule | gen | images |" in md and "FAIL: min_human" in md
    page = (out / "collapse.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2  # the plot and the samples, inline
    assert 'href="gates/synthetic/gen01/report.html"' in page
    assert (out / "gates/synthetic/gen01/report.html").is_file()


def test_the_model_and_the_files_are_deterministic(tmp_path: Path) -> None:
    run = example()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, run.SIZE, run.SIZE, 3), dtype=np.uint8)
    first = run.PcaMixture(8, 3, seed=5).fit(pixels).sample(12)
    again = run.PcaMixture(8, 3, seed=5).fit(pixels).sample(12)
    assert first.shape == (12, run.SIZE, run.SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, run.PcaMixture(8, 3, seed=6).fit(pixels).sample(12))
    for folder in ("a", "b"):
        run.write_pngs(tmp_path / folder, first[:2], 3, "test", ["x", "y"])
    for name in ("g03-00000.png", "g03-00001.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_it_refuses_an_output_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        example().main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "notes.txt").read_text() == "keep me"
