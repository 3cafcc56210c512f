"""End-to-end: drive the real CLI and check exit codes, files and their contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datagate import __version__
from datagate.cli import main

from .conftest import DATA, ROOT, build_demo


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("demo") / "shards")


@pytest.fixture(scope="module")
def scanned(demo_shards: Path) -> Path:
    """The product card's exact invocation, from the folder that holds ./shards."""
    proc = subprocess.run(
        [sys.executable, "-m", "datagate", "scan", "./shards"],
        cwd=demo_shards.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scanned" in proc.stdout
    return demo_shards.parent


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"datagate {__version__}"


def test_scan_output_in_default_location(scanned: Path) -> None:
    table = pq.read_table(scanned / "datagate-out" / "scan" / "images.parquet")
    meta = json.loads((scanned / "datagate-out" / "scan" / "meta.json").read_text())
    assert meta["counts"]["images"] == table.num_rows
    assert {s["kind"] for s in meta["shards"]} == {"folder", "webdataset", "parquet"}
    assert meta["skipped"] == [
        {"path": "shards/SOURCES.txt", "reason": "not an image, tar shard or Parquet file"}
    ]
    errors = {r["member"]: r["error"] for r in table.to_pylist() if r["error"]}
    assert errors["broken-empty.jpg"] == "empty file (0 bytes)"
    assert "escapes the shard" in errors["../escape.jpg"]
    assert "truncated" in errors["broken-truncated.jpg"]


def test_enforce_min_human_fails_honestly_without_provenance(
    scanned: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(scanned)
    assert main(["enforce", "--min-human", "0.7"]) == 1
    shown = capsys.readouterr().out
    assert "FAIL" in shown and "min_human" in shown
    out = scanned / "datagate-out"
    report = json.loads((out / "report.json").read_text())
    kept = pq.read_table(out / "manifests" / "kept.parquet")
    rejected = pq.read_table(out / "manifests" / "rejected.parquet")
    scan_rows = pq.read_table(out / "scan" / "images.parquet").num_rows
    assert report["verdict"] == "fail"
    assert report["counts"] == {
        "images": scan_rows,
        "kept": kept.num_rows,
        "rejected": rejected.num_rows,
        "errors": report["counts"]["errors"],
    }
    assert kept.num_rows + rejected.num_rows == scan_rows
    assert not set(kept.column("key").to_pylist()) & set(rejected.column("key").to_pylist())
    # every rejected row names its rule and a reason; each per-image rule fired
    assert rejected.column("rule_id").null_count == 0 and rejected.column("reason").null_count == 0
    by_rule = {r["id"]: r for r in report["rules"]}
    for rule_id in ("decodable", "dimensions", "quality", "exact_duplicates", "near_duplicates"):
        assert by_rule[rule_id]["rejected"] > 0, rule_id
        assert rejected.column("rule_id").to_pylist().count(rule_id) == by_rule[rule_id]["rejected"]
    human = by_rule["min_human"]
    # the tar shards' sidecars declare human origin, 8 generated PNGs carry generator
    # metadata, everything else is of unknown origin (counted as not human by default)
    origins = kept.column("origin").to_pylist()
    counts = {o: origins.count(o) for o in ("human", "synthetic", "unknown")}
    assert counts["human"] > 0 and counts["synthetic"] == 8 and counts["unknown"] > 0
    assert {k: human["details"][k] for k in counts} == counts
    assert human["passed"] is False and human["threshold"] == 0.7
    assert human["value"] == pytest.approx(counts["human"] / kept.num_rows)
    generators = set(kept.column("generator").to_pylist()) - {None}
    assert generators == {"demo_model_v1", "demo_xl.safetensors"}
    assert report["composition"]["kept"]["origin"] == {k: v for k, v in counts.items() if v}
    assert sum(s["images"] for s in report["shards"]) == scan_rows
    md = (out / "report.md").read_text()
    assert "## ❌ datagate: FAIL" in md and "| `min_human` | **FAIL** |" in md
    assert f"| human | {counts['human']:,} |" in md and "### Composition (kept / scanned)" in md
    assert "### Dataset nutrition label" in md and "| duplicates removed |" in md
    assert len(md) < 65_536  # fits a GitHub pull-request comment
    assert rejected.column("duplicate_of").null_count < rejected.num_rows
    dup_rows = [r for r in rejected.to_pylist() if r["rule_id"].endswith("duplicates")]
    kept_keys = set(kept.column("key").to_pylist())
    assert dup_rows and all(r["duplicate_of"] in kept_keys for r in dup_rows)


def test_enforce_passes_with_trusted_sources_policy(scanned: Path, tmp_path: Path) -> None:
    out = tmp_path / "trusted"
    code = main(
        [
            "enforce",
            str(scanned / "datagate-out" / "scan"),
            "--rules",
            str(ROOT / "examples" / "trusted-sources.yaml"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert report["policy"]["source"].endswith("trusted-sources.yaml")
    assert (out / "manifests" / "kept.parquet").exists()


def test_enforce_keeps_intermediates_between_runs_and_judges_as_a_fresh_run(
    scanned: Path, tmp_path: Path
) -> None:
    scan = str(scanned / "datagate-out" / "scan")
    kept = tmp_path / "gate-work"
    for run in ("first", "second"):
        args = ["enforce", scan, "-o", str(tmp_path / run), "--keep-intermediates", str(kept)]
        assert main([*args, "-q"]) in (0, 1)
    assert main(["enforce", scan, "-o", str(tmp_path / "fresh"), "-q"]) in (0, 1)
    first, second, fresh = (
        json.loads((tmp_path / run / "report.json").read_text())
        for run in ("first", "second", "fresh")
    )
    assert "intermediates" not in fresh["timing"]
    assert first["timing"]["intermediates"]["near_duplicates"] == {"added_hashes": None}
    reused = second["timing"]["intermediates"]
    assert reused["near_duplicates"] == {"added_hashes": 0}
    assert reused["semantic_clusters"] == {"assigned_rows": 0}
    assert reused["semantic_matches"] == {"clusters_searched": 0}
    assert {p.name for p in kept.iterdir()} >= {"neardup-r6.v1.npz", "clusters.v1.npz"}
    for report in (second, fresh):
        for rule in report["rules"]:
            rule.pop("seconds", None)
    assert second["rules"] == fresh["rules"]
    assert second["verdict"] == fresh["verdict"]
    rejected = "manifests/rejected.parquet"
    assert pq.read_table(tmp_path / "second" / rejected).equals(
        pq.read_table(tmp_path / "fresh" / rejected)
    )
    # a folder that cannot be made is the user's error, named
    (tmp_path / "a-file").write_text("not a folder")
    blocked = tmp_path / "a-file" / "work"
    args = ["enforce", scan, "-o", str(tmp_path / "x"), "--keep-intermediates", str(blocked)]
    assert main([*args, "-q"]) == 2


def test_enforce_never_imports_torch(scanned: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from datagate.cli import main; "
        f"rc = main(['enforce', {str(scanned / 'datagate-out' / 'scan')!r}, "
        f"'--out', {str(tmp_path)!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'open_clip' not in sys.modules; print('rc', rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "rc 1" in proc.stdout


def test_enforce_without_a_scan_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["enforce"]) == 2
    err = capsys.readouterr().err
    assert "not a datagate scan" in err and "run `datagate scan PATH` first" in err


def test_enforce_with_invalid_override_is_exit_2(
    scanned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["enforce", str(scanned / "datagate-out" / "scan"), "--min-human", "7"]) == 2
    assert "--min-human: expected a number in [0, 1], got 7.0" in capsys.readouterr().err


def test_rules_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate", str(ROOT / "rules" / "default.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - rule: max_rejected_fraction\n    max: high\n")
    assert main(["rules", "validate", str(bad)]) == 2
    assert (
        f"{bad}:3:10: rules[0].max: expected a number in [0, 1], got 'high'"
        in capsys.readouterr().err.replace("\n", "")
    )


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        (DATA / "no-image-column.parquet", 2, "no image column found"),
        (DATA / "hostile.tar", 0, "3 unreadable"),
        (DATA / "truncated.jpg", 0, "1 unreadable"),
        (DATA / "bomb-24000x24000.png", 0, "1 unreadable"),
    ],
)
def test_hostile_inputs_never_traceback(path: Path, code: int, words: str, tmp_path: Path) -> None:
    # A narrow terminal: messages must still reach logs and pipes on one line each.
    proc = subprocess.run(
        [sys.executable, "-m", "datagate", "scan", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr + proc.stdout
    assert any(words in line for line in (proc.stdout + proc.stderr).splitlines())


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan"]) == 2
    assert main(["enforce", "--min-human", "lots"]) == 2


def test_internal_error_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datagate.scanner.engine

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(datagate.scanner.engine, "scan", boom)
    assert main(["scan", str(DATA / "grey.png"), "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "--debug" in err


def test_json_and_quiet_for_scripts(scanned: Path, tmp_path: Path) -> None:
    scan_dir = scanned / "datagate-out" / "scan"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datagate",
            "enforce",
            str(scan_dir),
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)  # stdout is pure JSON
    assert doc["verdict"] == "fail" and doc["counts"]["images"] > 0
    assert {r["id"] for r in doc["rules"]} >= {"decodable", "min_human"}
    quiet = subprocess.run(
        [sys.executable, "-m", "datagate", "enforce", str(scan_dir), "--out", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
    )
    assert quiet.returncode == 1 and quiet.stdout == "" and quiet.stderr == ""
    shards = scanned / "shards"
    scan_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "datagate",
            "scan",
            str(shards / "photos"),
            "--out",
            str(tmp_path / "s"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert scan_json.returncode == 0, scan_json.stderr
    assert json.loads(scan_json.stdout)["counts"]["images"] > 0


def test_no_colour_or_progress_when_not_a_terminal(scanned: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datagate",
            "scan",
            str(scanned / "shards" / "photos"),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    assert "\x1b[" not in proc.stdout + proc.stderr  # no ANSI escapes into pipes
    assert "scanned" in proc.stdout and "scanned" not in proc.stderr  # results on stdout
