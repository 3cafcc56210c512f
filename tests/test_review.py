"""``datagate review``: queues from the manifests, durable decisions, the server's guards, and
the whole loop in a real headless Chromium (scan, enforce, review by keyboard, enforce again)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main
from datagate.contract import KEPT, REJECTED
from datagate.curation.overrides import Override, append_override, read_overrides
from datagate.review.decisions import DecisionLog, Refused
from datagate.review.previews import PREVIEW_PX
from datagate.review.queues import DETAIL_COLUMNS, Gate
from datagate.review.server import ReviewApp, ReviewServer

from .conftest import ROOT, jpeg_bytes, photo

CHROMIUM = os.environ.get("DATAGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: a file name that would run script if the page ever put data into HTML
XSS_NAME = "<img src=x onerror=window.__xss=1>.jpg"


def sha(n: int) -> str:
    return f"{n:064x}"


# --------------------------------------------------------------------------- a real gate


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scanned and enforced folder of unknown-origin photos whose min_human floor fails:
    7 kept (one with a hostile file name), a 10x10 image and an exact copy rejected."""
    root = tmp_path_factory.mktemp("review")
    shards = root / "shards"
    shards.mkdir()
    for i in range(6):
        (shards / f"a{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (shards / XSS_NAME).write_bytes(jpeg_bytes(photo(6)))
    (shards / "a0-copy.jpg").write_bytes((shards / "a0.jpg").read_bytes())
    (shards / "tiny.jpg").write_bytes(jpeg_bytes(photo(9, (10, 10))))
    gate = root / "gate"
    scan = ["scan", str(shards), "--out", str(gate / "scan"), "--model", "none", "--workers", "1"]
    assert main([*scan, "--quiet"]) == 0
    assert main(["enforce", str(gate / "scan"), "--min-human", "0.5", "--quiet"]) == 1
    return gate


def min_human(gate: Path) -> dict[str, Any]:
    report = json.loads((gate / "report.json").read_text())
    rule: dict[str, Any] = next(r for r in report["rules"] if r["id"] == "min_human")
    return rule


def test_queues_come_from_the_manifests(gate_dir: Path) -> None:
    kept = pq.read_table(gate_dir / KEPT)
    rejected = pq.read_table(gate_dir / REJECTED)
    gate = Gate(gate_dir, threshold=None)
    # no detector in the scan: no borderline queue
    assert list(gate.queues) == ["unknown", "rejected", "duplicates"]
    unknown = gate.page("unknown", 0, 200, {})
    assert [i["key"] for i in unknown] == kept.column("key").to_pylist()
    assert {i["origin"] for i in unknown} == {"unknown"}
    assert all(len(i["sha256"]) == 64 and i["source"] == "kept" for i in unknown)
    shown = gate.page("rejected", 0, 200, {})
    assert sorted(i["key"] for i in shown) == sorted(rejected.column("key").to_pylist())
    by_rule = {i["rule_id"]: i for i in shown}
    assert "min_width 64" in by_rule["dimensions"]["reason"]
    copy = by_rule["exact_duplicates"]
    # a duplicate is shown beside the image it duplicates, with that image's facts
    assert copy["original"]["key"] == copy["duplicate_of"]
    assert copy["original"]["sha256"] == copy["sha256"]
    assert gate.queues["duplicates"].total == 0  # no embeddings: no semantic duplicates
    # a decision in force is shown on every item of that image
    decided = Override(copy["sha256"], "keep", "ana", "2026-01-01T00:00:00Z")
    again = gate.page("rejected", 0, 200, {copy["sha256"]: decided})
    assert {i["key"]: i["decision"] for i in again}[copy["key"]]["decision"] == "keep"


# --------------------------------------------------------------------------- the server


@contextlib.contextmanager
def serving(app: ReviewApp) -> Iterator[ReviewServer]:
    server = ReviewServer(app, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def request(
    server: ReviewServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        sent = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post(server: ReviewServer, path: str, body: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Datagate-Token"] = token
    status, _, data = request(server, "POST", path, body, headers)
    return status, json.loads(data)


def test_server_guards(gate_dir: Path, tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.jsonl"
    key = pq.read_table(gate_dir / KEPT, columns=["key"]).column("key")[0].as_py()
    image_path = f"/api/image?key={quote(key)}"
    with serving(ReviewApp(gate_dir, overrides, reviewer="ana")) as server:
        # the page: the token is embedded, scripts run only under this response's nonce
        status, headers, page = request(server, "GET", "/")
        assert status == 200 and server.token in page.decode()
        assert "script-src 'nonce-" in headers["Content-Security-Policy"]
        assert request(server, "GET", "/", headers={"Host": f"localhost:{server.port}"})[0] == 200
        # DNS rebinding: a name that resolves here but is not ours is refused, on every route
        for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1:1"):
            for path in ("/", "/api/queues", image_path):
                assert request(server, "GET", path, headers={"Host": host})[0] == 403
        # a POST needs the token (a page on another origin cannot read it)
        decision = {"key": key, "decision": "human"}
        assert post(server, "/api/decide", decision, None)[0] == 403
        assert post(server, "/api/decide", decision, "forged")[0] == 403
        assert post(server, "/api/undo", {}, None)[0] == 403
        assert not overrides.exists()
        # images only of rows in the manifests, never paths
        for bad in ("nope.jpg", "../../etc/passwd", "/etc/passwd", ""):
            status, _, body = request(server, "GET", f"/api/image?key={quote(bad)}")
            assert status == 404 and b"not an image in this gate" in body
        status, headers, image = request(server, "GET", image_path)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(image)) as im:
            assert im.format == "JPEG" and max(im.size) <= PREVIEW_PX
        # with the token: one line appended before the response, and undone on request
        status, answer = post(server, "/api/decide", decision, server.token)
        assert status == 200 and answer["decision"]["decision"] == "human"
        assert answer["progress"]["unknown"] == 1
        assert len(read_overrides(overrides)) == 1
        unknown_key = {"key": "nope", "decision": "human"}
        assert post(server, "/api/decide", unknown_key, server.token)[0] == 404
        assert (
            post(server, "/api/decide", {"key": key, "decision": "maybe"}, server.token)[0] == 400
        )
        status, answer = post(server, "/api/undo", {}, server.token)
        assert status == 200 and answer["undone"]["decision"] == "human"
        assert overrides.read_bytes() == b""
        status, answer = post(server, "/api/undo", {}, server.token)
        assert status == 409 and "nothing to undo" in answer["error"]
        # paging bounds
        assert request(server, "GET", "/api/page?queue=unknown&limit=201")[0] == 400
        assert request(server, "GET", "/api/page?queue=nope")[0] == 404


def test_undo_only_removes_this_servers_own_last_line(tmp_path: Path) -> None:
    path = tmp_path / "overrides.jsonl"
    log = DecisionLog(path, "ana")
    log.record(sha(1), "human")
    after_first = path.read_bytes()
    log.record(sha(2), "synthetic")
    log.record(sha(1), "synthetic")  # a second thought about the first image
    undone, in_force = log.undo()
    assert (undone.sha256, undone.decision) == (sha(1), "synthetic")
    assert in_force is not None and in_force.decision == "human"  # the earlier one again
    assert log.state()[0][sha(1)].decision == "human"
    log.undo()
    assert path.read_bytes() == after_first
    # another writer appended since: undo refuses rather than remove their line
    append_override(path, Override(sha(3), "keep", "bo"))
    with pytest.raises(Refused, match="changed since"):
        log.undo()
    assert len(read_overrides(path)) == 2
    assert set(log.state()[0]) == {sha(1), sha(3)}  # their decision is seen at once
    log.record(sha(4), "reject")
    log.undo()
    # the remaining undoable line (sha 1) is no longer at the end of the file
    with pytest.raises(Refused):
        log.undo()
    assert [o.sha256 for o in read_overrides(path).by_sha.values()] == [sha(1), sha(3)]


# --------------------------------------------------------------------------- 100k images


def test_a_page_from_the_far_end_of_100k_reads_only_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, group = 100_000, 10_000
    index = np.arange(n)
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, n).astype(np.float32)
    keys = pa.array([f"k{i:06d}" for i in range(n)])
    kept = pa.table(
        {
            "key": keys,
            "shard": pa.array(["s"] * n),
            "member": keys,
            "sha256": pa.array([sha(i) for i in range(n)]),
            "origin": pa.array(np.where(index % 2 == 0, "unknown", "human")),
            "evidence": pa.array(['[{"source": "exif", "says": null}]'] * n),
            "detector_score": pa.array(score),
            "p_synthetic_source": pa.array(np.where(index % 3 == 0, "provenance", "detector")),
        }
    )
    gate = tmp_path / "gate"
    (gate / "manifests").mkdir(parents=True)
    pq.write_table(kept, gate / KEPT, row_group_size=group)
    rejected = kept.slice(0, 0).append_column("rule_id", pa.array([], pa.string()))
    pq.write_table(rejected, gate / REJECTED)

    reads: list[tuple[str, tuple[int, ...], tuple[str, ...]]] = []
    read_groups, read_whole = pq.ParquetFile.read_row_groups, pq.ParquetFile.read

    def spy_groups(self: Any, row_groups: Any, columns: Any = None, **kw: Any) -> Any:
        reads.append(("row_groups", tuple(row_groups), tuple(columns)))
        return read_groups(self, row_groups, columns=columns, **kw)

    def spy_whole(self: Any, columns: Any = None, **kw: Any) -> Any:
        reads.append(("whole", (), tuple(columns or ("<every column>",))))
        return read_whole(self, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy_groups)
    monkeypatch.setattr(pq.ParquetFile, "read", spy_whole)

    reviewed = Gate(gate, threshold=0.3)
    # building the queues reads whole columns only one narrow column at a time, never the
    # wide ones an item shows
    assert all(kind == "whole" and len(cols) == 1 for kind, _, cols in reads)
    narrow = {"origin", "detector_score", "p_synthetic_source", "rule_id", "reason_code"}
    assert {cols[0] for _, _, cols in reads} <= narrow
    assert reviewed.queues["unknown"].total == n // 2

    reads.clear()
    items = reviewed.page("unknown", n // 2 - 50, 50, {})
    assert [i["key"] for i in items] == [f"k{i:06d}" for i in range(n - 100, n, 2)]
    assert reads == [
        ("row_groups", (9,), tuple(c for c in DETAIL_COLUMNS if c in kept.schema.names))
    ]

    # borderline: the detector's images (not provenance's), closest to the threshold first;
    # the far end of the queue holds the most confident scores
    candidates = index[index % 3 != 0]
    order = candidates[
        np.argsort(np.abs(score[candidates].astype(np.float64) - 0.3), kind="stable")
    ]
    assert reviewed.queues["borderline"].total == len(order)
    reads.clear()
    far = reviewed.page("borderline", len(order) - 40, 40, {})
    assert [i["key"] for i in far] == [f"k{i:06d}" for i in order[-40:]]
    assert len(reads) == 1 and set(reads[0][1]) == {int(i) // group for i in order[-40:]}

    # progress over 100k, and the next image to decide, without a row in Python objects
    decided = pa.array([sha(i) for i in range(0, 20, 2)])
    assert reviewed.progress(decided, 1)["unknown"] == 10
    assert reviewed.next_undecided("unknown", 0, decided, 1) == 10
    assert reviewed.next_undecided("unknown", n // 2 - 1, decided, 1) == n // 2 - 1


# --------------------------------------------------------------------------- the real thing


def until(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.05)


def start_cli(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "datagate", "review", *args, "--port", "0"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://127.0.0.1:" not in line:
        proc.kill()
        pytest.fail(f"review did not start: {line!r} {proc.communicate()[1]}")
    return proc, line.split()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is missing: `pip install -e .[dev]` installs it")
        pytest.skip("playwright is not installed (pip install -e .[dev])")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"chromium is missing at {CHROMIUM}: `make test` installs it")
        pytest.skip(f"headless Chromium not found at {CHROMIUM}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_review_by_keyboard_in_chromium_then_enforce_again(
    gate_dir: Path, tmp_path: Path, browser: Any
) -> None:
    gate = tmp_path / "gate"
    shutil.copytree(gate_dir, gate)
    overrides = tmp_path / "datagate-overrides.jsonl"
    before = min_human(gate)
    assert before["passed"] is False and before["value"] == 0.0
    kept = pq.read_table(gate / KEPT, columns=["key", "sha256"]).to_pylist()
    unknown = [r["key"] for r in kept]
    assert f"./{XSS_NAME}" in unknown[:6]

    proc, url = start_cli(str(gate), "--reviewer", "tester", cwd=tmp_path)
    try:
        page = browser.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # CSP violations and failed loads are console errors
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        progress = page.locator("#progress")
        assert progress.get_attribute("data-decided") == "0"
        assert progress.get_attribute("data-total") == str(len(unknown))
        assert page.text_content("#cap-main") == unknown[0]
        # the preview loaded (polled from outside: the page's CSP forbids eval, which
        # Playwright's wait_for_function uses)
        until(lambda: page.evaluate("document.getElementById('img-main').naturalWidth") > 0)

        # human, human, synthetic, undo (back to that image), human, skip, human
        for key in ["h", "h", "s", "u", "h", "Space", "h"]:
            page.keyboard.press(key)
        page.wait_for_selector("#progress[data-decided='4']")
        page.wait_for_selector("#position[data-position='5']")
        assert page.text_content("#cap-main") == unknown[5]
        assert page.evaluate("window.__xss") is None  # the hostile name was shown as text
        # the rejected queue: reason, and an exact copy beside the image it copies
        page.keyboard.press("2")
        page.wait_for_selector("#progress:has-text('Rejected')")
        page.wait_for_selector("#facts:has-text('min_width 64')")  # the 10x10 image's reason
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("#fig-orig:not([hidden])")
        assert "exact duplicate of" in page.text_content("#facts")
        assert page.text_content("#cap-orig").startswith("duplicate of: ./")
        assert errors == []
        page.close()
    finally:
        proc.kill()  # killed, not stopped: every decision made is already on disk
        proc.communicate()

    lines = [json.loads(line) for line in overrides.read_text().splitlines()]
    sha_of = {r["key"]: r["sha256"] for r in kept}
    assert [line["sha256"] for line in lines] == [sha_of[unknown[i]] for i in (0, 1, 2, 4)]
    assert {(line["decision"], line["reviewer"]) for line in lines} == {("human", "tester")}
    assert len(read_overrides(overrides)) == 4

    again = ReviewApp(gate, overrides)
    assert again.queues()["generation"] == 1
    rerun = ["enforce", str(gate / "scan"), "--min-human", "0.5", "--overrides", str(overrides)]
    main([*rerun, "--quiet"])
    after = min_human(gate)
    assert after["value"] > before["value"]
    assert after["value"] == pytest.approx(4 / len(unknown))
    assert after["passed"] is True
    # the new gate: the images decided human have left the unknown-origin queue,
    # and the decisions already made are shown as such
    reloaded = again.queues()
    assert reloaded["generation"] == 2  # a running review picks up the new manifests
    queues = {q["name"]: q for q in reloaded["queues"]}
    assert queues["unknown"]["total"] == len(unknown) - 4
    decided = again.page("rejected", 0, 10)["items"]
    copy = next(i for i in decided if i["rule_id"] == "exact_duplicates")
    assert copy["original"]["decision"]["decision"] == "human"


def test_ctrl_c_stops_the_server(gate_dir: Path, tmp_path: Path) -> None:
    proc, url = start_cli(str(gate_dir), "--overrides", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/queues")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# --------------------------------------------------------------------------- previews


def test_previews_read_back_every_shard_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarfile

    from datagate.contract import load_meta
    from datagate.review import previews as module
    from datagate.review.previews import Previews

    shards = tmp_path / "shards"
    shards.mkdir()
    big = photo(1, (1600, 900))
    images = {f"s{i}.jpg": jpeg_bytes(big if i == 0 else photo(i)) for i in range(4)}
    for name, mode in (("plain.tar", "w"), ("packed.tar.gz", "w:gz")):
        with tarfile.open(shards / name, mode) as tar:
            for member, data in images.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(
        pa.table({"image": pa.array([{"bytes": d, "path": n} for n, d in images.items()])}),
        shards / "hf.parquet",
        row_group_size=2,  # rows are read back one row group at a time
    )
    scan = tmp_path / "scan"
    scanned = main(["scan", str(shards), "--out", str(scan), "--model", "none", "--workers", "1"])
    assert scanned == 0
    rows = pq.read_table(scan / "images.parquet", columns=["shard", "member", "error"])
    assert rows.num_rows == 12 and rows.column("error").null_count == 12

    streamed: list[str] = []
    reopen = module.reopen

    def spy(kind: str, shard_id: str, *args: Any) -> Any:
        streamed.append(shard_id)
        return reopen(kind, shard_id, *args)

    monkeypatch.setattr(module, "reopen", spy)
    previews = Previews(load_meta(scan))
    pairs = [(r["shard"], r["member"]) for r in rows.to_pylist()]
    previews.expect(pairs)  # the page being reviewed
    for shard, member in pairs:
        preview = previews.get(shard, member)
        assert preview is not None, (shard, member)
        with Image.open(io.BytesIO(preview)) as im:
            assert im.format == "JPEG" and max(im.size) <= PREVIEW_PX
            if member in ("s0.jpg", "0"):
                assert im.size == (PREVIEW_PX, PREVIEW_PX * 900 // 1600)
    # the compressed tar was streamed once for all four images; the plain one never
    assert streamed == ["packed.tar.gz"]
    assert previews.get("hf.parquet", "99") is None
    assert previews.get("no such shard", "s0.jpg") is None
