"""Top-up from reserve scans when a human-share or diversity floor fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main

from .conftest import jpeg_bytes, photo


def camera(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"  # camera EXIF: weak human evidence
    photo(seed, size).save(path, "JPEG", exif=exif.tobytes())


def scan(folder: Path, out: Path, *extra: str) -> Path:
    args = ["scan", str(folder), "-o", str(out), "--workers", "1", "-q", *extra]
    assert main([*args, "--cache-dir", str(out.parent / "cache")]) == 0
    return out


POLICY = """\
rules:
  - rule: dimensions
    min_width: 100
  - rule: exact_duplicates
  - rule: near_duplicates
  - rule: min_human
    min: 0.5
"""


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i, (320, 240))))
    return data


def _enforce(tmp_path: Path, scan_dir: Path, *extra: str) -> tuple[int, dict, Path]:  # type: ignore[type-arg]
    rules = tmp_path / "rules.yaml"
    rules.write_text(POLICY)
    out = tmp_path / "out"
    code = main(["enforce", str(scan_dir), "--rules", str(rules), "-o", str(out), "-q", *extra])
    return code, json.loads((out / "report.json").read_text()), out


def test_human_floor_is_topped_up_with_the_fewest_valid_reserve_images(
    tmp_path: Path, dataset: Path
) -> None:
    reserve = tmp_path / "reserve"
    reserve.mkdir()
    camera(reserve / "tiny.jpg", 50, (60, 40))  # rejected by dimensions: never added
    camera(reserve / "copy.jpg", 0)  # the same picture as data/0.jpg: a near duplicate
    for i in range(10, 16):
        camera(reserve / f"r{i}.jpg", i)
    scan_dir = scan(dataset, tmp_path / "scan", "--model", "none")
    reserve_dir = scan(reserve, tmp_path / "reserve-scan", "--model", "none")
    code, report, out = _enforce(tmp_path, scan_dir)
    assert code == 1
    code, report, out = _enforce(tmp_path, scan_dir, "--reserve", str(reserve_dir))
    assert code == 0
    assert report["top_up"]["added"] == {"min_human": 4}  # 4 of 8 is the first share >= 0.5
    assert report["top_up"]["candidates"] == 6  # tiny and the copy were judged out
    kept = pq.read_table(out / "manifests" / "kept.parquet").to_pylist()
    added = sorted(r["member"] for r in kept if r["source"] == "reserve")
    assert len(added) == 4 and "tiny.jpg" not in added and "copy.jpg" not in added
    assert all(r["added_for"] == "min_human" for r in kept if r["source"] == "reserve")
    assert all(
        r["key"].startswith("reserve:reserve-scan/") for r in kept if r["source"] == "reserve"
    )
    floor = next(r for r in report["rules"] if r["rule"] == "min_human")
    assert floor["value"] == 0.5 and floor["passed"]
    assert "Top-up from reserve" in (out / "report.md").read_text()
    # minimal: with one valid human image fewer, the floor cannot be reached -> nothing added
    for name in ("r10.jpg", "r11.jpg", "r12.jpg"):
        (reserve / name).unlink()
    small = scan(reserve, tmp_path / "small-scan", "--model", "none")
    code, report, out = _enforce(tmp_path, scan_dir, "--reserve", str(small))
    assert code == 1 and report["top_up"]["reached"] is False
    assert "do not reach 50%" in report["top_up"]["message"]
    kept = pq.read_table(out / "manifests" / "kept.parquet").to_pylist()
    assert all(r["source"] == "scan" for r in kept)


def test_reserve_with_other_signals_is_refused(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan_dir = scan(dataset, tmp_path / "scan", "--model", "none")
    other = scan(dataset, tmp_path / "other", "--model", "none", "--signals", "integrity")
    capsys.readouterr()
    rules = tmp_path / "rules.yaml"
    rules.write_text(POLICY)
    assert main(["enforce", str(scan_dir), "--rules", str(rules), "--reserve", str(other)]) == 2
    assert "lacks columns" in capsys.readouterr().err


def test_diversity_injection_beats_random_choice(tmp_path: Path, evaldata: Path) -> None:
    """A collapsed set (near copies of three pictures) topped up from real photographs: the
    greedy choice raises the index more per added image than random choices of as many."""
    from datagate.contract import load_embeddings
    from datagate.measures.diversity import Running

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        base = np.asarray(photo(i % 3, (256, 256)), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(data / f"{i}.png")
    reserve = evaldata / "detect" / "ml72"
    scan_dir = scan(data, tmp_path / "scan", "--model", "pixel")
    reserve_dir = scan(reserve, tmp_path / "reserve-scan", "--model", "pixel")
    rules = tmp_path / "rules.yaml"
    x = load_embeddings(scan_dir)
    assert x is not None
    start = Running(x.vectors).value("index")
    target = round(start + 0.15, 3)
    rules.write_text(f"rules:\n  - rule: min_diversity\n    min: {target}\n")
    out = tmp_path / "out"
    code = main(["enforce", str(scan_dir), "--rules", str(rules), "-o", str(out), "-q",
                 "--reserve", str(reserve_dir)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    count = report["top_up"]["added"]["min_diversity"]
    assert 0 < count < report["top_up"]["candidates"]
    reached = next(r for r in report["rules"] if r["rule"] == "min_diversity")["value"]
    pool = load_embeddings(reserve_dir)
    assert pool is not None
    random_values = []
    for seed in range(20):
        pick = np.random.default_rng(seed).choice(len(pool.keys), size=count, replace=False)
        running = Running(x.vectors)
        running.add(pool.vectors[pick])
        random_values.append(running.value("index"))
    assert reached >= target and reached > max(random_values), (reached, random_values)
