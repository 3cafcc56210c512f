"""The package's shape: no private names cross modules, the hook stays a configuration of
the scan, the README's rules table is the registry's, and the CLI's cache commands work."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from datagate.cli import main
from datagate.rules.docs import markdown_table

from .conftest import ROOT, jpeg_bytes, photo

PACKAGE = ROOT / "datagate"
README_START = "<!-- rules-table:start -->"
README_END = "<!-- rules-table:end -->"


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("datagate"):
                offenders += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert offenders == []


def test_the_hook_is_a_short_configuration_of_the_scan() -> None:
    source = (PACKAGE / "precommit.py").read_text()
    assert len(source.splitlines()) < 100
    assert "compute_record" not in source and "compute_chunk" not in source


def test_readme_rules_table_is_generated_from_the_registry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (ROOT / "README.md").read_text()
    assert README_START in readme and README_END in readme
    table = readme.split(README_START)[1].split(README_END)[0].strip()
    assert table == markdown_table().strip(), "regenerate: datagate rules list --markdown"
    assert main(["rules", "list", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == table


def test_rules_list_json_has_every_rule_with_keys_and_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datagate.rules import RULES

    assert main(["rules", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in listed] == sorted(RULES, key=list(RULES).index)
    near = next(r for r in listed if r["rule"] == "near_duplicates")
    assert {k["name"]: k["default"] for k in near["keys"]}["max_distance"] == "6"
    assert "near_duplicate" in near["codes"]


def test_cache_info_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    cache = tmp_path / "cache"
    args = ["scan", str(data), "-o", str(tmp_path / "s"), "--workers", "1", "--quiet"]
    assert main([*args, "--model", "pixel", "--cache-dir", str(cache), "--cache-rows"]) == 0
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] and info["bytes"] > 0
    assert sum(info["rows"].values()) == 3 and sum(info["embeddings"].values()) == 3
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0  # all fresh: nothing goes
    assert "removed 0 rows and 0 vectors" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache-dir", str(cache), "--older-than", "0"]) == 0
    assert "removed 3 rows and 3 vectors" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["rows"] == {} and after["embeddings"] == {}


def test_rows_cached_by_content_survive_a_rename(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    cache = tmp_path / "cache"
    args = ["--workers", "1", "--quiet", "--model", "none", "--cache-dir", str(cache)]
    assert main(["scan", str(data), "-o", str(tmp_path / "a"), "--cache-rows", *args]) == 0
    moved = tmp_path / "moved"
    data.rename(moved)
    (moved / "0.jpg").rename(moved / "renamed.jpg")
    assert main(["scan", str(moved), "-o", str(tmp_path / "b"), "--cache-rows", *args]) == 0
    timing = json.loads((tmp_path / "b" / "meta.json").read_text())["timing"]
    assert (timing["rows_cached"], timing["rows_computed"]) == (3, 0)


def test_an_unusable_cache_warns_and_the_scan_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jpg").write_bytes(jpeg_bytes(photo(1)))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    args = ["scan", str(tmp_path / "d"), "-o", str(tmp_path / "s"), "--workers", "1"]
    assert main([*args, "--model", "pixel", "--cache-dir", str(blocker), "--cache-rows"]) == 0
    assert "continuing without it" in capsys.readouterr().err
    assert (tmp_path / "s" / "images.parquet").exists()


def test_report_with_a_corrupt_meta_json_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jpg").write_bytes(jpeg_bytes(photo(1)))
    scan_dir = tmp_path / "out" / "scan"
    assert main(["scan", str(tmp_path / "d"), "-o", str(scan_dir), "--model", "none", "-q"]) == 0
    assert main(["enforce", str(scan_dir), "-q"]) in (0, 1)  # the verdict does not matter here
    (scan_dir / "meta.json").write_text('{"counts": ')
    capsys.readouterr()
    assert main(["report", str(scan_dir)]) == 2
    err = capsys.readouterr().err
    assert "meta.json" in err and "unreadable" in err
    (scan_dir / "meta.json").write_text('{"counts": {"images": "many"}}')
    assert main(["report", str(scan_dir)]) == 2
    assert "not a datagate scan meta.json" in capsys.readouterr().err
    assert main(["enforce", str(scan_dir)]) == 2


def test_a_missing_golden_file_fails(golden) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AssertionError, match="missing"):
        golden("no-such-golden-file.txt", "text")
    assert not (Path(__file__).parent / "golden" / "no-such-golden-file.txt").exists()
