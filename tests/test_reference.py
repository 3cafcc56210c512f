"""Reference-based measures (precision, recall, density, coverage, Fréchet distance) against
brute force, on a synthetic collapse, and through enforce --reference end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import linalg

import datagate.measures.reference as ref
from datagate.cli import main
from datagate.measures.diversity import normalise

from .conftest import jpeg_bytes, photo


def brute(evaluated: Any, reference: Any, k: int) -> dict[str, float]:
    """The textbook definitions with full distance matrices (float64)."""
    y = normalise(evaluated).astype(np.float64)
    x = normalise(reference).astype(np.float64)

    def dist(a: Any, b: Any) -> Any:
        return np.sqrt(np.maximum(((a[:, None] - b[None]) ** 2).sum(-1), 0.0))

    r_x = np.sort(dist(x, x), axis=1)[:, k]
    r_y = np.sort(dist(y, y), axis=1)[:, k]
    d = dist(y, x)
    s_y, s_x = np.cov(y, rowvar=False), np.cov(x, rowvar=False)
    root = linalg.sqrtm(s_y @ s_x).real
    frechet = ((y.mean(0) - x.mean(0)) ** 2).sum() + np.trace(s_y + s_x - 2 * root)
    return {
        "precision": float((d <= r_x[None]).any(1).mean()),
        "recall": float((r_y[None] >= d.T).any(1).mean()),
        "density": float((d <= r_x[None]).sum() / (k * len(y))),
        "coverage": float((d.min(0) <= r_x).mean()),
        "frechet": float(frechet),
    }


@pytest.mark.parametrize(
    ("n", "m", "d", "k"), [(300, 400, 16, 5), (120, 90, 8, 3), (50, 60, 32, 1)]
)
def test_exact_path_equals_brute_force(n: int, m: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n + m + d + k)
    evaluated = rng.normal(size=(n, d)) * 0.8 + 0.3
    reference = rng.normal(size=(m, d))
    found = ref.compare(evaluated, reference, k)
    expected = brute(evaluated, reference, k)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(found, name) == pytest.approx(expected[name], abs=1e-9), name
    assert found.frechet == pytest.approx(expected["frechet"], rel=1e-5, abs=1e-8)
    assert (found.n, found.n_reference, found.k) == (n, m, k)


def mixture(rng: np.random.Generator, centres: Any, n: int, spread: float = 0.25) -> Any:
    picks = rng.integers(0, len(centres), size=n)
    return centres[picks] + spread * rng.normal(size=(n, centres.shape[1]))


def test_inverted_file_path_stays_close_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, 48))
    reference = mixture(rng, centres, 3000)
    evaluated = mixture(rng, centres[:20], 2500)
    exact = ref.compare(evaluated, reference)
    monkeypatch.setattr(ref, "EXACT_MAX", 500)
    approximate = ref.compare(evaluated, reference)
    for name in ("precision", "recall", "coverage"):
        assert getattr(approximate, name) == pytest.approx(getattr(exact, name), abs=0.03), name
    assert approximate.frechet == pytest.approx(exact.frechet)


def test_coverage_and_recall_fall_as_a_mixture_collapses() -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(24, 32))
    reference = mixture(rng, centres, 2400)
    coverage, recall, frechet = [], [], []
    for modes in (24, 16, 8, 4, 2):  # each generation keeps fewer of the modes
        found = ref.compare(mixture(rng, centres[:modes], 1200), reference)
        coverage.append(found.coverage)
        recall.append(found.recall)
        frechet.append(found.frechet)
    assert all(a > b for a, b in itertools.pairwise(coverage)), coverage
    assert all(a > b for a, b in itertools.pairwise(recall)), recall
    assert all(a < b for a, b in itertools.pairwise(frechet)), frechet
    assert coverage[0] > 0.8 and coverage[-1] < 0.2  # same distribution, half as many: ~0.88


def test_a_random_half_of_the_reference_stays_near_one() -> None:
    rng = np.random.default_rng(11)
    reference = mixture(rng, rng.normal(size=(24, 32)), 2000)
    half = reference[rng.permutation(len(reference))[:1000]]
    found = ref.compare(half, reference)
    assert found.precision == 1.0  # every kept image is a reference image
    assert found.coverage > 0.9 and found.recall > 0.9
    assert found.frechet < 0.05


def _folder(root: Path, seeds: range) -> Path:
    root.mkdir(parents=True)
    for i in seeds:
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    return root


def test_enforce_against_a_reference_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folder(tmp_path / "data", range(12))
    baseline = _folder(tmp_path / "baseline", range(6, 30))
    common = ["--workers", "1", "-q", "--cache-dir", str(tmp_path / "cache")]
    assert main(["scan", str(data), "-o", str(tmp_path / "s"), "--model", "pixel", *common]) == 0
    assert (
        main(["scan", str(baseline), "-o", str(tmp_path / "r"), "--model", "pixel", *common]) == 0
    )
    rules = tmp_path / "policy" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text(
        "reference: ../r\nrules:\n  - rule: min_coverage\n    min: 0.99\n"
        "  - rule: max_frechet\n    max: 10\n"
    )
    out = tmp_path / "out"
    code = main(["enforce", str(tmp_path / "s"), "--rules", str(rules), "-o", str(out), "-q"])
    assert code == 1  # 12 images cannot cover 24: the coverage floor fails
    report = json.loads((out / "report.json").read_text())
    section = report["reference"]
    assert section["measured"] and section["reference_images"] == 24
    assert section["kept"]["coverage"] < 0.99 and section["scanned"]["n"] == 12
    outcome = {r["rule"]: r for r in report["rules"]}
    assert outcome["min_coverage"]["code"] == "min_coverage.below_min"
    assert outcome["min_coverage"]["value"] == pytest.approx(section["kept"]["coverage"])
    assert outcome["max_frechet"]["code"] == "max_frechet.ok"
    assert "Against the reference" in (out / "report.md").read_text()
    assert 'id="reference"' in (out / "report.html").read_text()
    # --reference overrides the policy's: the scan against itself covers everything
    flag = ["--reference", str(tmp_path / "s")]
    assert (
        main(["enforce", str(tmp_path / "s"), "--rules", str(rules), "-o", str(out), "-q", *flag])
        == 0
    )

    # a reference scanned without embeddings, or with another embedder: exit 2, saying why
    assert (
        main(["scan", str(baseline), "-o", str(tmp_path / "none"), "--model", "none", *common]) == 0
    )
    capsys.readouterr()
    enforce = ["enforce", str(tmp_path / "s"), "--rules", str(rules), "-o", str(out)]
    assert main([*enforce, "--reference", str(tmp_path / "none")]) == 2
    assert "has no embeddings" in capsys.readouterr().err
    assert main(["scan", str(baseline), "-o", str(tmp_path / "t"), "--model", "tiny", *common]) == 0
    capsys.readouterr()
    assert main([*enforce, "--reference", str(tmp_path / "t")]) == 2
    assert "cannot be compared" in capsys.readouterr().err
    assert main([*enforce, "--reference", str(tmp_path / "missing")]) == 2
