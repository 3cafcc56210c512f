"""``datagate scan --engine ray``: the same table as the local engine, resume, clear errors.

One small local Ray (2 CPUs, 200 MB object store, no dashboard) serves the module and is
shut down at its end. The tests that run ``datagate scan --engine ray`` as a process of its
own (killed, interrupted, or left to finish) check that the Ray it started leaves no process
behind, and kill what is left themselves so that a failure leaks nothing.
"""

from __future__ import annotations

import contextlib
import json
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

from .conftest import DATA, ROOT, start_small_ray

ray = pytest.importorskip("ray")

DATAGATE = str(Path(sys.executable).with_name("datagate"))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    start_small_ray(ray)
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


def _running(pids: set[int]) -> dict[int, str]:
    """Those of ``pids`` still running (a zombie has ended), with their names."""
    running = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        if rest.split()[0] != "Z":
            running[pid] = name
    return running


def _gone_soon(pids: set[int], wait_s: float) -> dict[int, str]:
    """What of ``pids`` is still running after at most ``wait_s`` (as soon as none is)."""
    deadline = time.monotonic() + wait_s
    while (left := _running(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


#: How long a SIGKILLed scan's Ray may take to end: far under the minute Ray's agents spend,
#: left to themselves, trying to report their raylet's death to a GCS that died with it.
KILLED_RAY_ENDS_S = 30.0


def _drive(
    argv: list[str], out: Path, stop: signal.Signals | None = None, parts: int = 1
) -> tuple[int, str, dict[int, str], dict[int, str]]:
    """Run ``datagate scan`` as a process of its own, as a terminal job (its own process
    group); with ``stop``, send it that signal once ``parts`` embedding parts are written.

    Returns its exit status, its stderr, every process it had (pid -> name, as seen while it
    ran) and those of them still running after it ended: at once for an exit it handles (it
    waits for its Ray to end), :data:`KILLED_RAY_ENDS_S` at most after a SIGKILL. Kills what
    is left, so that a failing test leaks nothing.
    """
    driver = subprocess.Popen(
        [DATAGATE, *argv, "--engine", "ray", "-q"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            seen.update(_running(_descendants(driver.pid)))
            if stop is not None and len(list((out / "parts").glob("*.emb.parquet"))) >= parts:
                seen.update(_running(_descendants(driver.pid)))
                if stop == signal.SIGINT:
                    os.killpg(driver.pid, stop)  # a Ctrl-C reaches the terminal's whole job
                else:  # to the scan alone: killing its group would kill Ray's processes too
                    driver.send_signal(stop)
                break
            time.sleep(0.05)
        _, err = driver.communicate(timeout=120)
        wait_s = KILLED_RAY_ENDS_S if stop == signal.SIGKILL else 0.0
        left = _gone_soon(set(seen), wait_s)
    finally:
        driver.kill()
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return driver.returncode, err.decode(), seen, left


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find Ray's processes")
def test_killed_driver_leaves_no_ray_and_resumes_without_recomputing_written_chunks(
    local_ray: Any, dataset: Path, local_scans: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    argv = ["scan", str(dataset), "-o", str(out), "--model", "pixel", "--chunk-size", "8"]
    status, _, seen, left = _drive([*argv, "--workers", "1"], out, signal.SIGKILL, parts=2)
    assert status == -signal.SIGKILL, "the scan finished before it could be killed"
    assert {"raylet", "gcs_server"} <= set(seen.values())  # it had started a Ray of its own
    # which went with it: head processes, agents and workers
    assert not left, f"Ray processes outlived the killed scan: {left}"
    assert not (out / "images.parquet").exists()
    written = len(list((out / "parts").glob("*.emb.parquet")))
    assert written >= 2
    # resumed by a scan that finishes (its own Ray again): no process of it is left either
    status, err, seen, left = _drive(argv, out)
    assert status == 0, err
    assert {"raylet", "gcs_server"} <= set(seen.values())
    assert not left, f"Ray processes outlived the scan: {left}"
    # no written chunk is computed again (finished shards are not even read)
    assert _meta(out)["timing"]["chunks_computed"] == _chunk_count(out) - written
    assert _rows(out) == _rows(local_scans["pixel"])
    assert _vectors(out) == _vectors(local_scans["pixel"])
    # and the local engine resumes the Ray engine's parts: nothing left to compute
    assert main([*argv, "--workers", "1", "-q"]) == 0
    assert _meta(out)["timing"]["chunks_computed"] == 0
    assert _meta(out)["engine"] == "local"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find Ray's processes")
@pytest.mark.parametrize(
    ("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_interrupted_scan_exits_as_the_local_engine_and_leaves_no_ray_process(
    dataset: Path, tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    """Ctrl-C (to the terminal's job) and SIGTERM (to the scan) while it runs on its own Ray:
    the scan stops as the local engine does, and Ray's processes have ended when it exits
    (SIGTERM included: ray.init() puts in a handler of its own that dumps a stack)."""
    out = tmp_path / "scan"
    argv = ["scan", str(dataset), "-o", str(out), "--model", "pixel", "--chunk-size", "8"]
    code, err, seen, left = _drive([*argv, "--workers", "1"], out, stop)
    assert code == status, err
    assert "interrupted; finished work is kept" in err
    assert {"raylet", "gcs_server"} <= set(seen.values())
    assert not left, f"Ray processes outlived the interrupted scan: {left}"
    assert not (out / "images.parquet").exists()


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
