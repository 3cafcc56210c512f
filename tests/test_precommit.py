"""The pre-commit gate, driven by the real pre-commit tool in a temporary git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, PngImagePlugin

from datagate.precommit import run_hook
from datagate.rules import parse_policy
from datagate.scanner.options import ScanOptions

from .conftest import ROOT, photo

POLICY = """\
version: 1
rules:
  - rule: decodable
  - rule: min_human
    min: 0.7
    unknown: not_human
"""
DATAGATE = Path(sys.executable).parent / "datagate"
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"


def camera_photo(path: Path, seed: int) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    photo(seed, (320, 240)).save(path, "JPEG", exif=exif.tobytes())


def generated(path: Path, seed: int) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle\nSteps: 30, Sampler: Euler a, Model: sdxl_base")
    photo(seed, (320, 240)).save(path, "PNG", pnginfo=info)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
    }
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)


@pytest.fixture
def data_repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not PRE_COMMIT.exists():
        pytest.skip("git and pre-commit are needed")
    repo = tmp_path / "repo"
    (repo / "rules").mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "rules" / "default.yaml").write_text(POLICY)
    (repo / ".gitignore").write_text(".datagate/\n")
    # the hook as .pre-commit-hooks.yaml declares it, run from this environment's datagate
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    config = {
        "repos": [
            {
                "repo": "local",
                "hooks": [
                    {
                        **{
                            k: hook[k]
                            for k in ("id", "name", "pass_filenames", "require_serial", "files")
                        },
                        "entry": f"{DATAGATE} precommit",
                        "args": ["data"],
                        "language": "system",
                    }
                ],
            }
        ]
    }
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    assert _git(repo, "init", "-q").returncode == 0
    assert (
        subprocess.run([str(PRE_COMMIT), "install"], cwd=repo, capture_output=True).returncode == 0
    )
    return repo


def test_commit_of_human_photographs_passes_and_synthetic_flood_is_refused(data_repo: Path) -> None:
    for i in range(4):
        camera_photo(data_repo / "data" / f"photo{i}.jpg", i)
    _git(data_repo, "add", ".")
    ok = _git(data_repo, "commit", "-m", "add camera photographs")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"datagate data-quality gate\.+Passed", ok.stdout + ok.stderr)

    for i in range(4):
        generated(data_repo / "data" / f"gen{i}.png", 100 + i)
    _git(data_repo, "add", ".")
    refused = _git(data_repo, "commit", "-m", "add generated images")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "datagate: FAIL" in output
    assert "min_human: human share 50.0% < 70% (4 human, 4 synthetic" in output
    assert "4 unchanged from cache, 4 scanned" in output
    log = _git(data_repo, "log", "--oneline")
    assert log.stdout.count("\n") == 1  # the second commit did not happen


def test_rerun_uses_the_content_cache(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        camera_photo(data / f"p{i}.jpg", i)
    policy = parse_policy(POLICY, "policy")
    state = tmp_path / ".datagate"
    first = run_hook([data], policy, source="p", state_dir=state, workers=1)
    assert (first.cached, first.computed, first.passed) == (0, 6, True)
    again = run_hook([data], policy, source="p", state_dir=state, workers=1)
    assert (again.cached, again.computed) == (6, 0)
    # same picture under a new name: served from cache, reported under its new key
    shutil.copy(data / "p0.jpg", data / "copy.jpg")
    generated(data / "g.png", 9)
    third = run_hook([data], policy, source="p", state_dir=state, workers=1)
    assert (third.cached, third.computed) == (7, 1)
    import pyarrow.parquet as pq

    table = pq.read_table(state / "scan" / "images.parquet")
    keys = table.column("key").to_pylist()
    assert "./copy.jpg" in keys and table.num_rows == 8
    # rows from the cache equal a fresh scan's rows
    from datagate.scanner.engine import scan

    scan([data], tmp_path / "fresh", ScanOptions(), workers=1)
    fresh = pq.read_table(tmp_path / "fresh" / "images.parquet")
    assert table.sort_by("key").equals(fresh.sort_by("key"))


@pytest.mark.slow
def test_hook_manifest_installs_and_runs_with_pre_commit_try_repo(data_repo: Path) -> None:
    """pre-commit builds the hook's own environment from this repository and runs it."""
    if _git(ROOT, "rev-parse", "HEAD").returncode != 0:
        pytest.skip("the datagate checkout is not a git repository")
    camera_photo(data_repo / "data" / "photo.jpg", 1)
    _git(data_repo, "add", ".")
    proc = subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(ROOT), "datagate", "--all-files", "--verbose"],
        cwd=data_repo,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PRE_COMMIT_HOME": str(data_repo.parent / "pre-commit-home")},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "datagate: PASS" in output


def test_hook_embeds_when_the_policy_needs_it_and_reuses_cached_vectors(tmp_path: Path) -> None:
    import numpy as np

    from datagate.contract import load_embeddings
    from datagate.embed.models import PixelEmbedder
    from datagate.scanner.engine import scan

    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        camera_photo(data / f"p{i}.jpg", i)
    (data / "broken.jpg").write_bytes(b"not an image")
    policy = parse_policy(POLICY + "  - rule: min_diversity\n    min: 0.1\n", "policy")
    state = tmp_path / ".datagate"
    hook = {"source": "p", "state_dir": state, "workers": 1, "embedder": PixelEmbedder()}
    first = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    assert first.computed == 6
    again = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    assert (again.cached, again.computed) == (6, 0)
    assert again.reused  # nothing changed: the verdict (and its report) of the first run
    meta = json.loads((state / "scan" / "meta.json").read_text())["embedder"]
    assert meta["id"] == "pixel-v2" and meta["computed"] == 0
    hooked = load_embeddings(state / "scan")
    scan([data], tmp_path / "fresh", workers=1, embedder=PixelEmbedder())
    fresh = load_embeddings(tmp_path / "fresh")
    assert hooked is not None and fresh is not None and len(hooked.keys) == 5
    by_key = dict(zip(fresh.keys.tolist(), fresh.vectors))
    for key, vector in zip(hooked.keys.tolist(), hooked.vectors):
        np.testing.assert_array_equal(vector, by_key[key])
    rule = next(r for r in again.report["rules"] if r["rule"] == "min_diversity")
    assert rule["passed"] and "pixel-v2" in rule["message"]


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json less what differs between any two runs: when, how long, what was cached,
    and the merged files' stamps (their modification times and inodes)."""
    drop = {"timing", "created_at"}
    out = {k: v for k, v in meta.items() if k not in drop}
    out["merged"] = out["merged"]["key"]
    if "embedder" in out:
        out["embedder"] = {
            k: v for k, v in out["embedder"].items() if k not in ("computed", "cache", "cache_hits")
        }
    return out


def _pixel_head() -> Any:
    import numpy as np

    from datagate.detect.train import train_head
    from datagate.embed.models import PixelEmbedder

    pixel = PixelEmbedder()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, pixel.dim)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return train_head(
        x, y, embedder=pixel.id, preprocessing=pixel.preprocessing.id, model="pixel"
    ).head


PARITY = {
    "defaults": ({}, False, False),
    "watermark-all": ({"watermark": "all"}, False, False),
    "watermark-sample": ({"watermark": "sample:3"}, False, False),
    "signals-subset": ({"signals": ("integrity", "hashes")}, False, False),
    "pixel-embedder": ({}, True, False),
    "detector-head": ({"watermark": "all"}, True, True),
}


@pytest.mark.parametrize("case", list(PARITY), ids=list(PARITY))
def test_hook_rows_and_meta_equal_a_fresh_scan(tmp_path: Path, case: str) -> None:
    """The hook is a configuration of the scan: same rows, vectors and meta.json, first run,
    cached re-run, and after a change."""
    import json

    import pyarrow.parquet as pq

    from datagate.embed.models import PixelEmbedder
    from datagate.scanner.engine import scan

    overrides, embeds, with_head = PARITY[case]
    options = ScanOptions(**overrides)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        camera_photo(data / f"p{i}.jpg", i)
    generated(data / "g.png", 7)
    (data / "broken.jpg").write_bytes(b"not an image")
    policy = parse_policy(
        POLICY + ("  - rule: min_diversity\n    min: 0.0\n" if embeds else ""), "p"
    )
    head = _pixel_head() if with_head else None
    embedder = PixelEmbedder() if embeds else None
    state = tmp_path / ".datagate"

    def compare(run: int) -> None:
        fresh = tmp_path / f"fresh{run}"
        scan([data], fresh, options, workers=1, embedder=embedder, head=head)
        hooked = state / "scan"
        for name in ("images.parquet", "embeddings.parquet"):
            assert (fresh / name).exists() == (hooked / name).exists(), name
            if (fresh / name).exists():
                a, b = pq.read_table(hooked / name), pq.read_table(fresh / name)
                assert a.schema.equals(b.schema, check_metadata=True), name
                assert a.equals(b), f"{name} differs on run {run}"
        a_meta = json.loads((hooked / "meta.json").read_text())
        b_meta = json.loads((fresh / "meta.json").read_text())
        assert _comparable(a_meta) == _comparable(b_meta)

    hook = {"source": "p", "state_dir": state, "options": options, "workers": 1}
    first = run_hook([data], policy, embedder=embedder, head=head, **hook)  # type: ignore[arg-type]
    assert first.computed == 6
    compare(1)
    again = run_hook([data], policy, embedder=embedder, head=head, **hook)  # type: ignore[arg-type]
    assert (again.cached, again.computed) == (6, 0)
    compare(2)
    camera_photo(data / "new.jpg", 11)
    third = run_hook([data], policy, embedder=embedder, head=head, **hook)  # type: ignore[arg-type]
    # sample:N checks N of all images: one more image changes which, so all are recomputed
    resampled = options.watermark.startswith("sample:")
    assert (third.cached, third.computed) == ((0, 7) if resampled else (6, 1))
    compare(3)
    if options.watermark == "all":
        rate = json.loads((state / "scan" / "meta.json").read_text())["config"]["watermark_rate"]
        assert rate == 1.0


def test_hook_refuses_an_unknown_signal_as_an_input_error(tmp_path: Path) -> None:
    from datagate.errors import InputError

    (tmp_path / "d").mkdir()
    camera_photo(tmp_path / "d" / "p.jpg", 1)
    with pytest.raises(InputError, match="unknown signal"):
        run_hook(
            [tmp_path / "d"],
            parse_policy(POLICY, "p"),
            source="p",
            state_dir=tmp_path / ".datagate",
            options=ScanOptions(signals=("integrity", "nope")),
            workers=1,
        )


def test_an_unchanged_repository_reuses_the_last_verdict(tmp_path: Path) -> None:
    """Nothing changed (table, embeddings, policy, overrides): the verdict is reused, not
    judged again; any change to one of them judges again."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        camera_photo(data / f"p{i}.jpg", i)
    policy = parse_policy(POLICY, "policy")
    state = tmp_path / ".datagate"
    hook = {"source": "p", "state_dir": state, "workers": 1}
    first = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    again = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    assert (first.reused, again.reused) == (False, True)
    assert again.report == first.report and again.passed == first.passed
    stricter = parse_policy(POLICY.replace("0.7", "0.8"), "policy")
    assert not run_hook([data], stricter, **hook).reused  # type: ignore[arg-type]
    assert run_hook([data], stricter, **hook).reused  # type: ignore[arg-type]
    generated(data / "g.png", 3)
    changed = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    assert not changed.reused and changed.report["counts"]["images"] == 5
    overrides = tmp_path / "overrides.jsonl"
    overrides.write_text("")
    assert not run_hook([data], policy, overrides=overrides, **hook).reused  # type: ignore[arg-type]
    (state / "report.json").unlink()
    assert not run_hook([data], policy, overrides=overrides, **hook).reused  # type: ignore[arg-type]


def test_a_changed_repository_updates_the_kept_intermediates_and_judges_as_a_fresh_gate(
    tmp_path: Path,
) -> None:
    """With the shipped default policy: a commit that adds a copy of an image re-judges
    through the intermediates of the last verdict (pairs, clusters, sums) and decides what
    a gate with nothing kept decides on the same scan."""
    import pyarrow.parquet as pq

    from datagate.contract import REJECTED
    from datagate.embed.models import PixelEmbedder
    from datagate.gate import enforce
    from datagate.rules import load_policy

    data = tmp_path / "data"
    for shard in range(3):
        (data / f"s{shard}").mkdir(parents=True)
        for i in range(40):
            camera_photo(data / f"s{shard}" / f"p{i}.jpg", 1000 * shard + i)
    policy = load_policy(ROOT / "datagate" / "policies" / "default.yaml")
    state = tmp_path / ".datagate"
    hook = {"source": "p", "state_dir": state, "workers": 1, "embedder": PixelEmbedder()}
    first = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    kept = sorted(p.name for p in (state / "gate-cache").iterdir())
    assert kept == ["clusters.v1.npz", "kmeans-288-0-2.v1.npz", "neardup-r6.v1.npz"], kept
    shutil.copy(data / "s1" / "p3.jpg", data / "s2" / "copy.jpg")
    with open(data / "s2" / "copy.jpg", "ab") as fh:
        fh.write(b"other bytes, same picture")
    second = run_hook([data], policy, **hook)  # type: ignore[arg-type]
    assert not second.reused and second.computed == 1
    # the copy has a hash already kept: no search, and the pair found from the kept ones
    assert second.report["timing"]["intermediates"]["near_duplicates"] == {"added_hashes": 0}
    assert first.report["timing"]["intermediates"]["near_duplicates"] == {"added_hashes": None}
    fresh = enforce(state / "scan", policy, source="p", out=tmp_path / "fresh").report
    for report in (first.report, second.report, fresh):
        for rule in report["rules"]:
            rule.pop("seconds", None)
    assert second.report["rules"] == fresh["rules"]
    assert second.report["rules"] != first.report["rules"]  # the copy was found
    rejected = pq.read_table(state / REJECTED).column("key").to_pylist()
    assert rejected == pq.read_table(tmp_path / "fresh" / REJECTED).column("key").to_pylist()
    assert "s2/copy.jpg" in rejected
