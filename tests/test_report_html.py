"""report.html: self-contained, and correct in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from datagate.cli import main

from .conftest import build_demo

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed by `make install` (the setup `make test` runs first).

    In CI a missing browser fails the run; elsewhere (a bare `pytest` without the setup)
    the browser tests are skipped with the command that installs it."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (make browser)")
        pytest.skip("headless Chromium is not installed: run `make browser` (or `make test`)")
    return found


def load(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after scripts ran, and every console message it produced."""
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    build_demo(root / "shards")
    assert main(["scan", str(root / "shards"), "--out", str(root / "scan"), "-q"]) == 0
    assert main(["enforce", str(root / "scan"), "--out", str(root / "out"), "-q"]) == 1
    return root / "out"


def test_report_html_is_self_contained_and_bounded(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    assert len(html.encode()) < 1_000_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched
    assert "<link" not in html and "@import" not in html
    assert html.count("data:image/jpeg;base64,") >= 10  # galleries carry inline thumbnails


def test_report_html_in_headless_chromium(chromium: str, report_dir: Path, tmp_path: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    dom, console = load(chromium, report_dir / "report.html", tmp_path / "profile")
    assert console == [], console  # no console errors (the page logs nothing at all)
    assert 'data-ready="true"' in dom  # the inline script ran to its end
    assert re.search(r'id="verdict"[^>]*>FAIL<', dom)
    c = report["counts"]
    for number, label in (
        (c["images"], "images scanned"),
        (c["kept"], "kept"),
        (c["rejected"], "rejected"),
    ):
        assert re.search(rf"<b>{number:,}</b><span>{label}</span>", dom), label
    kept_human = report["composition"]["kept"]["origin"]["human"]
    assert f"<b>{kept_human:,}</b><span>kept, human-made</span>" in dom
    for rule in report["rules"]:
        assert f"<code>{rule['id']}</code>" in dom
    assert "Duplicates (dropped copy, then the kept original)" in dom and 'class="pair"' in dom
    div = report["diversity"]  # the scan used --model auto, which is pixel offline
    assert div["embedder"] == "pixel-v2"
    panel = dom[dom.index('id="diversity"') :]
    assert "<code>pixel-v2</code>" in panel
    assert f"{div['overall']['kept']['index']:.3g}" in panel


def test_console_check_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><body><script>undefinedFunction();</script></body>")
    _, console = load(chromium, page, tmp_path / "profile")
    assert any("undefinedFunction" in line for line in console)


def test_report_command_rerenders_without_recomputing(report_dir: Path, tmp_path: Path) -> None:
    scan_dir = report_dir.parent / "scan"
    before = (report_dir / "report.json").read_text()
    (report_dir / "report.html").unlink()
    (report_dir / "report.md").unlink()
    rejected_mtime = (report_dir / "manifests" / "rejected.parquet").stat().st_mtime_ns
    assert main(["report", str(scan_dir), "--out", str(report_dir)]) == 0
    assert (report_dir / "report.html").exists() and (report_dir / "report.md").exists()
    assert (report_dir / "report.json").read_text() == before
    assert (report_dir / "manifests" / "rejected.parquet").stat().st_mtime_ns == rejected_mtime
    assert main(["report", str(scan_dir), "--out", str(tmp_path)]) == 2  # no decisions there


def test_borderline_gallery_shows_only_images_near_a_bound() -> None:
    import pyarrow as pa

    from datagate.report.gallery import BORDERLINE_MARGIN, _borderline

    kept = pa.table(
        {
            "key": [f"s/{i}" for i in range(5)],
            "shard": ["s"] * 5,
            "member": [str(i) for i in range(5)],
            "brightness": [0.57, 0.70, 0.90, 0.97, None],
            "blur": [25.0, 100.0, 100.0, 100.0, 21.0],
        }
    )
    rules = [{"params": {"brightness": {"min": 0.02, "max": 0.98}, "blur": {"min": 20}}}]
    shown = _borderline({"rules": rules}, kept)  # type: ignore[typeddict-item]
    assert BORDERLINE_MARGIN == 0.10
    # 0.97 and 0.90 are within 10 % of 0.98, blur 21 within 10 % of 20; 0.57, 0.70 are not
    assert [item["key"] for item in shown] == ["s/3", "s/4", "s/2"]
    assert shown[0]["caption"] == "brightness 0.97 (bound 0.98): s/3"
    far = kept.slice(0, 2)
    assert _borderline({"rules": rules}, far) == []  # type: ignore[typeddict-item]
