"""``datagate scan --engine ray``: the same table as the local engine, resume, clear errors.

One small local Ray (2 CPUs, 200 MB object store, no dashboard) serves the module and is
shut down at its end; the test that kills a driver cleans up that driver's own Ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datagate.cli import main

from .conftest import DATA, ROOT

ray = pytest.importorskip("ray")

DATAGATE = str(Path(sys.executable).with_name("datagate"))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo shards (folder, tar shards, Parquet) plus the hostile files of tests/data."""
    root = tmp_path_factory.mktemp("ray-data") / "shards"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "make_demo_shards.py"),
            str(root),
            "--per-source",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    hostile = root / "hostile"
    hostile.mkdir()
    for path in sorted(DATA.iterdir()):
        if path.suffix != ".py":
            shutil.copy(path, hostile / path.name)
    return root


def _rows(scan_dir: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(scan_dir / "images.parquet").to_pylist(), key=lambda r: r["key"])


def _vectors(scan_dir: Path) -> list[dict[str, Any]]:
    return sorted(
        pq.read_table(scan_dir / "embeddings.parquet").to_pylist(), key=lambda r: r["key"]
    )


def _meta(scan_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((scan_dir / "meta.json").read_text())
    return meta


@pytest.fixture(scope="module")
def local_scans(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outs = {}
    for model in ("pixel", "tiny"):
        out = tmp_path_factory.mktemp(f"local-{model}") / "scan"
        argv = ["scan", str(dataset), "-o", str(out), "--model", model, "--workers", "2", "-q"]
        assert main([*argv, "--chunk-size", "8"]) == 0
        outs[model] = out
    return outs


@pytest.mark.parametrize("model", ["pixel", "tiny"])
def test_ray_engine_table_equals_the_local_engines(
    local_ray: Any, dataset: Path, local_scans: dict[str, Path], tmp_path: Path, model: str
) -> None:
    out = tmp_path / "scan"
    argv = ["scan", str(dataset), "-o", str(out), "--model", model, "--chunk-size", "8", "-q"]
    assert main([*argv, "--engine", "ray"]) == 0
    local = local_scans[model]
    rows = _rows(out)
    assert rows == _rows(local)
    assert any(r["error"] for r in rows) and any(r["decodable"] for r in rows)
    assert _vectors(out) == _vectors(local)
    meta, local_meta = _meta(out), _meta(local)
    assert (meta["engine"], local_meta["engine"]) == ("ray", "local")
    assert meta["timing"]["executor"] == "ray"
    assert meta["config_hash"] == local_meta["config_hash"]
    assert meta["counts"] == local_meta["counts"]
    assert meta["embedder"]["id"] == local_meta["embedder"]["id"]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc), to clean up after a killed driver."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find Ray's processes")
def test_killed_driver_resumes_without_recomputing_written_chunks(
    local_ray: Any, dataset: Path, local_scans: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    argv = ["scan", str(dataset), "-o", str(out), "--model", "pixel", "--chunk-size", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(
        [DATAGATE, *argv, "--engine", "ray", "--workers", "1", "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ray_processes: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and driver.poll() is None:
            ray_processes |= _descendants(driver.pid)
            if len(list((out / "parts").glob("*-0*.emb.parquet"))) >= 2:
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the scan finished before it could be killed"
        ray_processes |= _descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        for pid in ray_processes:  # Ray's agents and workers outlive a SIGKILLed driver
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not (out / "images.parquet").exists()
    written = len(list((out / "parts").glob("*.emb.parquet")))
    assert main([*argv, "--engine", "ray", "-q"]) == 0
    assert written >= 2
    # no written chunk is computed again (finished shards are not even read)
    assert _meta(out)["timing"]["chunks_computed"] == _chunk_count(out) - written
    assert _rows(out) == _rows(local_scans["pixel"])
    assert _vectors(out) == _vectors(local_scans["pixel"])
    # and the local engine resumes the Ray engine's parts: nothing left to compute
    assert main([*argv, "--workers", "1", "-q"]) == 0
    assert _meta(out)["timing"]["chunks_computed"] == 0
    assert _meta(out)["engine"] == "local"


def _chunk_count(out: Path) -> int:
    return sum(json.loads(p.read_text())["chunks"] for p in (out / "parts").glob("*.done"))


def test_ray_address_that_answers_nothing_is_exit_2_with_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    argv = ["scan", str(DATA / "grey.png"), "-o", str(tmp_path / "x"), "--engine", "ray"]
    assert main([*argv, "--ray-address", address, "--model", "none", "-q"]) == 2
    err = capsys.readouterr().err
    assert address in err and "ray start --head" in err
    assert not (tmp_path / "x" / "images.parquet").exists()


def test_ray_not_installed_is_exit_2_with_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["scan", str(DATA / "grey.png"), "-o", str(tmp_path / "x"), "--engine", "ray", "-q"]
    assert main(argv) == 2
    assert "pip install 'datagate[ray]'" in capsys.readouterr().err


def test_engine_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["scan", str(DATA / "grey.png"), "-o", str(tmp_path / "x"), "-q"]
    assert main([*argv, "--engine", "spark"]) == 2
    assert "--engine: expected one of local, ray" in capsys.readouterr().err
    assert main([*argv, "--ray-address", "auto"]) == 2
    assert "--engine ray" in capsys.readouterr().err
