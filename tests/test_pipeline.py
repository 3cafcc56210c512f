from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagate.contract import EMBEDDINGS_FILE, PARTS_DIR, file_sha256, load_scan
from datagate.embed.models import PixelEmbedder
from datagate.errors import InputError
from datagate.scanner.engine import scan
from datagate.scanner.options import ScanOptions
from datagate.scanner.schema import SCHEMA_VERSION, describe, images_schema

from .conftest import jpeg_bytes, photo


def _table(out: Path) -> pa.Table:
    return pq.read_table(out / "images.parquet")


def test_schema_matches_golden_snapshot(golden) -> None:  # type: ignore[no-untyped-def]
    golden("images_schema.txt", describe(images_schema(ScanOptions().signals)))


def test_scan_writes_versioned_table_and_meta(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan"
    result = scan([image_folder], out, workers=1)
    table = _table(out)
    assert table.num_rows == 12
    assert table.schema.metadata[b"datagate.schema_version"] == str(SCHEMA_VERSION).encode()
    assert table.schema.equals(images_schema(ScanOptions().signals), check_metadata=False)
    assert table.column("decodable").to_pylist() == [True] * 12
    meta = json.loads((out / "meta.json").read_text())
    assert meta == result.meta
    digest = meta["counts"].pop("table_sha256")
    assert digest == hashlib.sha256((out / "images.parquet").read_bytes()).hexdigest()
    assert meta["counts"] == {"images": 12, "errors": 0, "shards": 2, "skipped_files": 1}
    assert meta["signals"] == {"integrity": 1, "hashes": 1, "quality": 1, "provenance": 3}
    assert meta["skipped"][0]["path"].endswith("README.md")
    assert meta["timing"]["chunks_computed"] == 2 and meta["timing"]["chunks_resumed"] == 0


def test_parallel_scan_equals_serial_scan(image_folder: Path, tmp_path: Path) -> None:
    opts = ScanOptions(chunk_size=3)
    scan([image_folder], tmp_path / "serial", opts, workers=1)
    scan([image_folder], tmp_path / "parallel", opts, workers=2)
    assert _table(tmp_path / "serial").equals(_table(tmp_path / "parallel"))


def test_rescan_reuses_finished_shards_and_redoes_changed_ones(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    opts = ScanOptions(chunk_size=4)
    scan([image_folder], out, opts, workers=1)
    first = _table(out)
    again = scan([image_folder], out, opts, workers=1)
    assert again.meta["timing"]["chunks_computed"] == 0
    assert _table(out).equals(first)
    # change one image in shard "b": only that shard is recomputed
    (image_folder / "b" / "img07.jpg").write_bytes(jpeg_bytes(photo(1234)))
    changed = scan([image_folder], out, opts, workers=1)
    assert changed.meta["timing"]["chunks_computed"] == 2  # shard b: 6 images / 4 per chunk
    table = _table(out)
    row = table.column("key").to_pylist().index("b/img07.jpg")
    assert table.column("sha256")[row] != first.column("sha256")[row]
    # stale parts of the old shard b were removed
    assert len([p for p in (out / PARTS_DIR).iterdir() if p.suffix == ".parquet"]) == 4


def test_rescan_of_unchanged_parts_keeps_the_merged_files_and_remerges_a_touched_one(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    opts = ScanOptions(chunk_size=4)
    first = scan([image_folder], out, opts, workers=1, embedder=PixelEmbedder())
    assert first.meta["timing"]["merge"] == "merged"
    assert first.meta["counts"]["embeddings_sha256"] == file_sha256(out / EMBEDDINGS_FILE)
    table, stamp = _table(out), (out / "images.parquet").stat()
    # markers without a row count (older scans) still resume
    for done in (out / PARTS_DIR).glob("*.done"):
        done.write_text(json.dumps({"chunks": json.loads(done.read_text())["chunks"]}))
    again = scan([image_folder], out, opts, workers=1, embedder=PixelEmbedder())
    assert again.meta["timing"]["merge"] == "reused"
    assert (out / "images.parquet").stat().st_mtime_ns == stamp.st_mtime_ns
    assert again.meta["counts"] == first.meta["counts"]
    assert again.meta["shards"] == first.meta["shards"]
    # a merged file changed behind the scan's back is merged again, not trusted
    (out / "images.parquet").write_bytes(b"not the table")
    repaired = scan([image_folder], out, opts, workers=1, embedder=PixelEmbedder())
    assert repaired.meta["timing"]["merge"] == "merged"
    assert _table(out).equals(table)
    # the same parts without the embedder: merged again, and the vectors removed
    plain = scan([image_folder], out, opts, workers=1)
    assert plain.meta["timing"]["merge"] == "merged"
    assert not (out / EMBEDDINGS_FILE).exists()


def _slow_dataset(root: Path, n: int) -> None:
    root.mkdir()
    for i in range(n):
        (root / f"{i:04d}.jpg").write_bytes(jpeg_bytes(photo(i, (640, 480)), quality=95))


def test_scan_killed_with_sigkill_resumes_to_identical_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _slow_dataset(data, 240)
    out = tmp_path / "scan"
    cmd = [
        sys.executable,
        "-m",
        "datagate",
        "scan",
        str(data),
        "--out",
        str(out),
        "--chunk-size",
        "8",
        "--workers",
        "1",
        "--no-progress",
        "--model",
        "pixel",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / PARTS_DIR
    deadline = time.time() + 60
    while time.time() < deadline:  # a chunk is complete once its embeddings part is written
        if parts.exists() and len(list(parts.glob("*.emb.parquet"))) >= 5:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "images.parquet").exists(), "scan finished before it could be killed"
    n_parts = len(list(parts.glob("*.emb.parquet")))
    assert 5 <= n_parts < 30
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["timing"]["chunks_resumed"] >= 5
    assert meta["timing"]["chunks_computed"] == 30 - meta["timing"]["chunks_resumed"]
    reference = tmp_path / "reference"
    scan([data], reference, ScanOptions(chunk_size=8), workers=1, embedder=PixelEmbedder())
    assert _table(out).equals(_table(reference))
    assert pq.read_table(out / EMBEDDINGS_FILE).equals(pq.read_table(reference / EMBEDDINGS_FILE))
    assert not list(parts.glob(".*.tmp")), "leftover temp files are cleaned on the next run"


def test_load_scan_explains_missing_scan(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a datagate scan"):
        load_scan(tmp_path)


def test_broken_files_are_rows_with_errors(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "good.jpg").write_bytes(jpeg_bytes(photo(1)))
    (data / "zero.jpg").write_bytes(b"")
    (data / "huge.png").write_bytes(
        (Path(__file__).parent / "data" / "bomb-24000x24000.png").read_bytes()
    )
    scan([data], tmp_path / "out", workers=1)
    rows = {r["member"]: r for r in _table(tmp_path / "out").to_pylist()}
    assert rows["good.jpg"]["error"] is None and rows["good.jpg"]["decodable"]
    assert rows["zero.jpg"]["error"] == "empty file (0 bytes)"
    assert "decompression-bomb guard" in rows["huge.png"]["error"]
    assert rows["zero.jpg"]["sha256"] is not None  # exact duplicates of broken files still found
