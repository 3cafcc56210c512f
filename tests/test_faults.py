"""Faults a user meets: Ctrl-C and SIGTERM, a killed scan, two writers, bad output paths,
nonsense numbers, and hostile file names in what the console prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datagate.cli import console, main
from datagate.io import LOCK_FILE, output_lock

from .conftest import ROOT, jpeg_bytes, photo

DATAGATE = str(ROOT / ".venv" / "bin" / "datagate")
INTERRUPTED = "interrupted; finished work is kept: re-run the same command to resume"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 distinct JPEGs in three folders (three shards)."""
    root = tmp_path_factory.mktemp("many") / "images"
    for i in range(240):
        sub = root / f"part{i // 80}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i:04d}.jpg").write_bytes(jpeg_bytes(photo(i, (256, 192))))
    return root


def scan_command(images: Path, out: Path) -> list[str]:
    return [
        DATAGATE,
        "scan",
        str(images),
        "--out",
        str(out),
        "--workers",
        "2",
        "--model",
        "none",
        "--chunk-size",
        "4",
        "--no-progress",
    ]


def start(command: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, f"the scan ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def parts(out: Path) -> int:
    return len(list((out / "parts").glob("*.parquet"))) if (out / "parts").is_dir() else 0


@pytest.fixture(scope="module")
def clean_scan(many_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "scan"
    done = subprocess.run(
        scan_command(many_images, out), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return out


def same_rows(a: Path, b: Path) -> None:
    left, right = pq.read_table(a / "images.parquet"), pq.read_table(b / "images.parquet")
    assert left.num_rows == right.num_rows == 240
    assert left.equals(right)


# -- Ctrl-C and SIGTERM -----------------------------------------------------------------


@linux_only
@pytest.mark.parametrize(
    ("moment", "sig", "code"),
    [
        ("lock", signal.SIGINT, 130),  # while the pool starts (forkserver, first workers)
        ("5 parts", signal.SIGINT, 130),  # mid-scan, workers busy
        pytest.param("40 parts", signal.SIGINT, 130, marks=pytest.mark.slow),  # shards finishing
        ("5 parts", signal.SIGTERM, 143),
    ],
)
def test_interrupt_exits_cleanly_and_resumes(
    many_images: Path,
    clean_scan: Path,
    tmp_path: Path,
    moment: str,
    sig: signal.Signals,
    code: int,
) -> None:
    out = tmp_path / "scan"
    proc = start(scan_command(many_images, out))
    if moment == "lock":
        wait_for(lambda: (out / LOCK_FILE).exists(), proc, "the output lock")
    else:
        wanted = int(moment.split()[0])
        wait_for(lambda: parts(out) >= wanted, proc, moment)
    os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C does
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the scan hung after {sig.name}")
    assert proc.returncode == code, err
    assert INTERRUPTED in err
    assert "Traceback" not in err, err
    assert not (out / "images.parquet").exists()
    assert not (out / LOCK_FILE).exists()

    resumed = subprocess.run(
        scan_command(many_images, out), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    same_rows(out, clean_scan)


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@linux_only
def test_sigkill_of_the_scan_takes_its_processes_along(many_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan"
    proc = start(scan_command(many_images, out))
    # resource tracker, forkserver and two workers
    wait_for(lambda: len(descendants(proc.pid)) >= 4 and parts(out) >= 2, proc, "the workers")
    family = descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(running(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in family if running(p)]
    for p in alive:  # do not leave them to the next test
        os.kill(p, signal.SIGKILL)
    assert not alive, f"processes outlived the killed scan: {alive}"


# -- one writer per output folder ------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scan"
    with output_lock(out):
        code = main(["scan", str(image_folder), "--out", str(out), "--model", "none"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"{out} is being written by another datagate process" in err
        assert f"pid {os.getpid()} on " in err and "since 20" in err
        assert not (out / "images.parquet").exists()
        # enforce into the same folder is refused the same way
        assert main(["enforce", str(out), "--out", str(out)]) == 2
        assert "being written by another datagate process" in capsys.readouterr().err
    assert not (out / LOCK_FILE).exists()
    assert main(["scan", str(image_folder), "--out", str(out), "--model", "none", "-q"]) == 0


@linux_only
def test_lock_of_a_killed_process_is_recovered(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from datagate.io import output_lock\n"
            "with output_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    command = [*scan_command(image_folder, out)[:-1], "--workers", "1"]
    busy = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2, busy.stderr
    assert f"pid {holder.pid} on" in busy.stderr
    holder.kill()
    holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(out / "images.parquet").num_rows == 12


# -- output paths that cannot be written -----------------------------------------------


def bad_outputs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = {
        "a file": a_file,
        "under a file": a_file / "scan",
        "in /proc": Path("/proc/datagate-test/scan"),
    }
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        cases["unwritable"] = locked / "scan"
    return cases


@pytest.mark.parametrize("case", ["a file", "under a file", "in /proc", "unwritable"])
def test_unwritable_output_is_a_usage_error(
    case: str,
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder does not stop root writing")
    out = bad_outputs(tmp_path)[case]
    code = main(["scan", str(image_folder), "--out", str(out), "--model", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write {out}" in err
    assert "internal error" not in err


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    images = root / "images"
    images.mkdir()
    for i in range(6):
        (images / f"img{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    out = root / "scan"
    assert main(["scan", str(images), "--out", str(out), "--model", "none", "-q"]) == 0
    return out


@pytest.mark.parametrize("case", ["a file", "under a file", "in /proc", "unwritable"])
def test_enforce_unwritable_output_is_a_usage_error(
    case: str, small_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder does not stop root writing")
    out = bad_outputs(tmp_path)[case]
    code = main(["enforce", str(small_scan), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write {out}" in err
    assert "internal error" not in err


def test_failed_enforce_leaves_no_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decisions"
    assert main(["enforce", str(tmp_path / "no-scan"), "--out", str(out)]) == 2
    assert not out.exists()


# -- numbers that make no sense ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-pixels", "0"),
        ("--max-bytes", "-5"),
        ("--workers", "-1"),
        ("--chunk-size", "0"),  # typer's own min=1: its message does not repeat the value
        ("--batch-size", "-5"),
    ],
)
def test_scan_refuses_nonsense_numbers(
    flag: str, value: str, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scan"
    code = main(["scan", str(image_folder), "--out", str(out), "--model", "none", flag, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert flag in err
    assert flag == "--chunk-size" or f"got {value}" in err
    assert not (out / "images.parquet").exists()


def test_detector_workers_must_not_be_negative(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detector", "train", "--workers", "-1"]) == 2
    assert "--workers" in capsys.readouterr().err


# -- what the console prints ------------------------------------------------------------


def test_file_names_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "ok.jpg").write_bytes(jpeg_bytes(photo(1)))
    evil = "x\x1b[2K\r::error::faked\x1b[31m [red]red[dim]\nnext.txt"
    (images / evil).write_text("not an image")
    code = main(["scan", str(images), "--out", str(tmp_path / "scan"), "--model", "none"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\x1b" not in err and "\r" not in err
    assert "\\x1b[2K\\r::error::faked\\x1b[31m [red]red[dim]\\nnext.txt" in err
    warnings = [line for line in err.splitlines() if "faked" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")


def test_error_messages_escape_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "gone\x1b]0;title\x07[bold]"
    assert main(["scan", str(missing), "--out", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "gone\\x1b]0;title\\x07[bold]" in err


def test_console_markup_and_control_escaping(capsys: pytest.CaptureFixture[str]) -> None:
    assert console.clean("a\x1bb\tc\u202ed") == "a\\x1bb\\tc\\u202ed"
    assert console.markup("[bold]{}[/] {:,}", "[red]x", 1234).plain == "[red]x 1,234"
    # whatever a caller prints, the console itself escapes control characters
    console.err.print("raw \x1b[31mred\x1b[0m", highlight=False)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "raw \\x1b[31mred\\x1b[0m" in err


@linux_only
@pytest.mark.parametrize(("delay", "sig", "code"), [
    (0.15, signal.SIGINT, 130), (0.3, signal.SIGINT, 130), (0.2, signal.SIGTERM, 143),
])  # fmt: skip
def test_a_signal_while_the_command_line_loads_is_an_interrupt_too(
    delay: float, sig: int, code: int, many_images: Path, tmp_path: Path
) -> None:
    """The console script loads the CLI (~0.5 s) with the interrupt already handled: the
    same exit code and message as later, never Python's KeyboardInterrupt traceback."""
    proc = start(scan_command(many_images, tmp_path / "out"))
    # the console script's first lines install its handlers: wait for that (on a loaded
    # machine the interpreter alone can take longer than ``delay`` to start), then signal
    # soon after, while the CLI is still loading. SIGTERM tells: Python itself catches
    # SIGINT from its first instruction, SIGTERM only the script does
    _wait_until_caught(proc.pid, signal.SIGTERM)
    time.sleep(delay / 10)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert INTERRUPTED in err and "Traceback" not in err, err


def _wait_until_caught(pid: int, sig: int, timeout: float = 30.0) -> None:
    """Until ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(
            next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16
        )
        if caught & (1 << (sig - 1)):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} never installed a handler for signal {sig}")
