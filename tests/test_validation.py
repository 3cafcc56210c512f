"""A scan folder is checked on load: a table edited after the scan is exit 2, never a
KeyError (exit 3) or a silently wrong verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagate.cli import main
from datagate.contract import load_scan

from .conftest import jpeg_bytes, photo

N_IMAGES = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validation")
    (root / "d").mkdir()
    for i in range(N_IMAGES):
        (root / "d" / f"img{i}.jpg").write_bytes(jpeg_bytes(photo(i, (300, 300))))
    scan_dir = root / "scan"
    args = ["scan", str(root / "d"), "-o", str(scan_dir), "--model", "none", "-q"]
    assert main([*args, "--workers", "1"]) == 0
    return scan_dir


@pytest.fixture
def scan_dir(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "scan"
    shutil.copytree(pristine, copy)
    return copy


def _rewrite(scan_dir: Path, table: pa.Table) -> None:
    """Edit the table as a user with pyarrow would (the schema metadata is kept)."""
    pq.write_table(table, scan_dir / "images.parquet")


def _legacy(scan_dir: Path) -> None:
    """Make the folder look written before scans recorded the table's digest."""
    meta = json.loads((scan_dir / "meta.json").read_text())
    del meta["counts"]["table_sha256"]
    (scan_dir / "meta.json").write_text(json.dumps(meta))


def _enforce(scan_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["enforce", str(scan_dir), "-o", str(scan_dir.parent / "out"), "-q"])
    return code, capsys.readouterr().err.replace("\n", " ")


def test_an_unedited_scan_records_its_digest_and_loads(
    scan_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = json.loads((scan_dir / "meta.json").read_text())
    assert len(meta["counts"]["table_sha256"]) == 64
    table, _ = load_scan(scan_dir)
    assert table.num_rows == N_IMAGES
    assert _enforce(scan_dir, capsys)[0] in (0, 1)


def test_a_scan_without_a_recorded_digest_still_loads(
    scan_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _legacy(scan_dir)
    assert load_scan(scan_dir)[0].num_rows == N_IMAGES
    assert _enforce(scan_dir, capsys)[0] in (0, 1)


@pytest.mark.parametrize("column", ["key", "sha256", "dhash", "error", "decodable"])
@pytest.mark.parametrize("legacy", [False, True], ids=["digest", "no-digest"])
def test_a_dropped_column_is_exit_2(
    scan_dir: Path, capsys: pytest.CaptureFixture[str], column: str, legacy: bool
) -> None:
    table = pq.read_table(scan_dir / "images.parquet")
    _rewrite(scan_dir, table.drop_columns([column]))
    if legacy:
        _legacy(scan_dir)
    code, err = _enforce(scan_dir, capsys)
    assert code == 2, err
    if legacy:
        assert f"not the table the scan wrote: columns {column} (missing)" in err
    else:
        assert "the file changed after the scan" in err
    assert "re-run `datagate scan`" in err


def test_a_column_of_another_type_is_exit_2(
    scan_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = pq.read_table(scan_dir / "images.parquet")
    i = table.schema.get_field_index("decodable")
    as_text = pa.array([str(v) for v in table.column(i).to_pylist()], pa.string())
    _rewrite(scan_dir, table.set_column(i, "decodable", as_text))
    _legacy(scan_dir)
    code, err = _enforce(scan_dir, capsys)
    assert code == 2
    assert "columns decodable (type string, expected bool)" in err


@pytest.mark.parametrize("legacy", [False, True], ids=["digest", "no-digest"])
def test_a_cut_table_is_exit_2(
    scan_dir: Path, capsys: pytest.CaptureFixture[str], legacy: bool
) -> None:
    _rewrite(scan_dir, pq.read_table(scan_dir / "images.parquet").slice(0, 2))
    if legacy:
        _legacy(scan_dir)
    code, err = _enforce(scan_dir, capsys)
    assert code == 2
    if legacy:
        assert f"2 rows, but the scan wrote {N_IMAGES}" in err
    else:
        assert "the file changed after the scan" in err


def test_duplicated_rows_are_exit_2(scan_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pq.read_table(scan_dir / "images.parquet")
    same_count = pa.concat_tables([table.slice(0, 1), table.slice(0, N_IMAGES - 1)])
    _rewrite(scan_dir, same_count)
    code, err = _enforce(scan_dir, capsys)
    assert code == 2
    assert "the file changed after the scan" in err
    _legacy(scan_dir)  # without the digest, added rows are still caught by the count
    _rewrite(scan_dir, pa.concat_tables([table, table.slice(0, 1)]))
    code, err = _enforce(scan_dir, capsys)
    assert code == 2
    assert f"{N_IMAGES + 1} rows, but the scan wrote {N_IMAGES}" in err


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("datagate_version", "9.9.9", "written by datagate 9.9.9 (scan schema version 1), newer"),
        ("schema_version", 99, "(scan schema version 99), newer than this datagate"),
        ("datagate_version", "latest", "datagate_version 'latest' is not a version"),
        ("schema_version", 0, "scan schema version 0, this datagate reads version 1"),
    ],
)
def test_a_scan_from_another_version_is_exit_2(
    scan_dir: Path, capsys: pytest.CaptureFixture[str], key: str, value: object, words: str
) -> None:
    meta = json.loads((scan_dir / "meta.json").read_text())
    meta[key] = value
    (scan_dir / "meta.json").write_text(json.dumps(meta))
    code, err = _enforce(scan_dir, capsys)
    assert code == 2
    assert words in err


def test_a_policy_reading_columns_the_scan_did_not_measure_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A legitimate scan of a few signals, judged by rules that read other signals' columns:
    exit 2 naming each rule, the columns and the signal to add — never a KeyError or every
    row rejected for a value that was never measured."""
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.jpg").write_bytes(jpeg_bytes(photo(i, (300, 300))))
    scan_dir = tmp_path / "scan"
    args = ["scan", str(folder), "-o", str(scan_dir), "--model", "none", "-q", "--workers", "1"]
    assert main([*args, "--signals", "integrity"]) == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - rule: decodable\n  - rule: exact_duplicates\n"
        "  - rule: quality\n    entropy: {min: 1.0}\n"
        "  - rule: near_duplicates\n    confirm_distance: 10\n"
    )
    capsys.readouterr()
    code = main(["enforce", str(scan_dir), "--rules", str(rules), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 2, err
    assert "rules[1] (exact_duplicates) reads 'sha256'" in err
    assert "rules[2] (quality) reads 'entropy'" in err and "quality signal" in err
    assert "rules[3] (near_duplicates) reads 'dhash', 'phash'" in err and "hashes signal" in err
    assert "rules[0]" not in err and "Traceback" not in err
    # the rules it can judge pass on the same scan
    rules.write_text("rules:\n  - rule: decodable\n  - rule: dimensions\n    min_width: 10\n")
    assert main(["enforce", str(scan_dir), "--rules", str(rules), "-o", str(tmp_path / "o")]) == 0
