"""Hostile and awkward inputs, each built here, scanned through the real CLI.

Every case asserts what a user sees: the rows' errors and keys, the skipped list in
meta.json, messages on stderr and exit codes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main
from datagate.scanner import decode as decode_module
from datagate.scanner.decode import DecodeError, decode, to_rgb
from datagate.scanner.readers import discover
from datagate.scanner.readers.webdataset import MAX_SAMPLE_META_BYTES

from .conftest import jpeg_bytes, photo


def scan(
    capsys: pytest.CaptureFixture[str], out: Path, *inputs: Path | str
) -> tuple[int, dict[str, dict[str, Any]], dict[str, Any], str, str]:
    """Run ``datagate scan``; (exit code, rows by key, meta.json, stdout, stderr)."""
    args = ["scan", *map(str, inputs), "--out", str(out), "--workers", "1", "--model", "none"]
    code = main(args)
    captured = capsys.readouterr()
    rows: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    if code == 0:
        rows = {r["key"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}
        meta = json.loads((out / "meta.json").read_text())
    return code, rows, meta, captured.out, captured.err


def skipped(meta: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in meta["skipped"]}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------- 1. symbolic links


def test_links_outside_the_input_are_error_rows_and_never_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(b"root:x:0:0:secret\n")
    (outside / "elsewhere.jpg").write_bytes(jpeg_bytes(photo(1)))
    (outside / "pictures").mkdir()
    (outside / "pictures" / "far.jpg").write_bytes(jpeg_bytes(photo(2)))
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "real.jpg").write_bytes(jpeg_bytes(photo(3)))
    (data / "p.jpg").symlink_to(secret)
    (data / "q.jpg").symlink_to(outside / "elsewhere.jpg")
    (data / "inside.jpg").symlink_to(data / "sub" / "real.jpg")
    (data / "far").symlink_to(outside / "pictures", target_is_directory=True)
    (data / "near").symlink_to(data / "sub", target_is_directory=True)

    code, rows, meta, _, _ = scan(capsys, tmp_path / "out", data)

    assert code == 0
    for key in ("./p.jpg", "./q.jpg"):
        assert "outside the input (not followed)" in rows[key]["error"]
        assert rows[key]["sha256"] is None and rows[key]["decodable"] is False
    assert rows["./inside.jpg"]["error"] is None  # a link that stays inside is read
    assert rows["./inside.jpg"]["sha256"] == rows["sub/real.jpg"]["sha256"]
    assert not any("far.jpg" in key for key in rows)
    reasons = skipped(meta)
    assert reasons[str(data / "far")] == (
        "symbolic link to a folder outside the input (not followed)"
    )
    assert reasons[str(data / "near")].startswith("symbolic link to a folder inside the input")


def test_special_files_with_image_names_are_error_rows(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / "pipe.jpg")  # opening it to read would block forever
    (shard,) = discover([data]).shards
    (record,) = list(shard.records())
    assert record.error == "not a regular file (not read)" and record.path is None


# ------------------------------------------------------------- 2. small files, huge costs


def test_16_bit_image_is_reduced_without_full_size_copies(tmp_path: Path) -> None:
    """A 16-bit PNG of 4000x3000 (a few KB) must not become a full-size float64 array."""
    arr = np.zeros((3000, 4000), dtype=np.uint16)
    arr[::7, ::5] = 60000
    data = png(Image.fromarray(arr))
    assert len(data) < 400_000
    tracemalloc.start()
    try:
        decoded = decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.image.size == (4000 // 11 + 1, 3000 // 11 + 1)
    # numpy allocations are traced: today's float64 copy alone is 96 MB
    assert peak < 3000 * 4000, f"peak traced allocation {peak:,} bytes"


@pytest.mark.parametrize("mode", ["I;16", "P", "PA", "1", "P-transparent"])
def test_strip_reduction_equals_the_full_size_conversion(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strips give pixel-identical results to converting the whole image, then reducing."""
    rng = np.random.default_rng(7)
    h, w = 1031, 797  # odd sizes: partial reduction boxes at the right and bottom edges
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        rgb = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        im = rgb.convert("1") if mode == "1" else rgb.quantize(64)
        if mode == "PA":
            im = im.convert("PA")
        if mode == "P-transparent":
            im.info["transparency"] = 3
    monkeypatch.setattr(decode_module, "STRIP_PIXELS", w * 40)  # many strips
    factor = min(w, h) // 256
    expected = to_rgb(im).reduce(factor)
    assert np.array_equal(
        np.asarray(decode_module.reduce_in_strips(im, factor)), np.asarray(expected)
    )


def test_decode_budget_counts_bytes_per_pixel() -> None:
    rgba = png(Image.new("RGBA", (600, 500), (10, 20, 30, 128)))
    grey16 = png(Image.fromarray(np.zeros((500, 600), dtype=np.uint16)))
    budget = 600 * 500 * 3
    with pytest.raises(DecodeError, match=r"decodes to 1 MiB, over the 1 MiB decode budget"):
        decode(rgba, max_decode_bytes=budget)
    assert decode(grey16, max_decode_bytes=budget).mode == "I;16"


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_sidecar_metadata_per_sample_is_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar = b'{"caption": "' + b"a" * 60_000 + b'"}'
    members = [("s.jpg", jpeg_bytes(photo(4)))]
    members += [(f"s.{i:04d}.json", sidecar) for i in range(300)]
    shard = tmp_path / "meta.tar.gz"
    shard.write_bytes(_tar_gz(members))

    code, rows, _, _, _ = scan(capsys, tmp_path / "out", shard)

    assert code == 0
    row = rows["meta.tar.gz/s.jpg"]
    assert row["error"] is None
    assert len(row["meta"]) < 2 * MAX_SAMPLE_META_BYTES  # today: 18 MB in one cell
    meta = json.loads(row["meta"])
    assert meta["_truncated"].startswith("296 sidecars not stored")


def _zero_bomb_tar_gz(path: Path, zeros: int) -> None:
    """first.jpg, a member of ``zeros`` zero bytes, then last.jpg; gzip-compressed in code."""
    first, last = jpeg_bytes(photo(5)), jpeg_bytes(photo(6))
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    with open(path, "wb") as fh:

        def member(name: str, size: int, data: bytes | None) -> None:
            info = tarfile.TarInfo(name)
            info.size = size
            fh.write(comp.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
            if data is not None:
                fh.write(comp.compress(data))
            else:
                chunk = bytes(1 << 20)
                for _ in range(size >> 20):
                    fh.write(comp.compress(chunk))
            fh.write(comp.compress(bytes(-size % 512)))

        member("first.jpg", len(first), first)
        member("zeros.bin", zeros, None)
        member("last.jpg", len(last), last)
        fh.write(comp.compress(bytes(1024)) + comp.flush())


def test_compressed_tar_that_decompresses_too_far_stops_with_an_error_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = tmp_path / "bomb.tar.gz"
    _zero_bomb_tar_gz(shard, 256 << 20)
    assert shard.stat().st_size < 400_000

    code, rows, meta, _, _ = scan(capsys, tmp_path / "out", shard)

    assert code == 0
    assert rows["bomb.tar.gz/first.jpg"]["error"] is None  # read before the bomb
    assert "bomb.tar.gz/last.jpg" not in rows  # never reached
    error = rows["bomb.tar.gz/<tar:2>"]["error"]
    assert error.startswith("gzip-compressed tar shard decompresses to over 67,108,864 bytes")
    assert "decompression-bomb guard" in error
    assert meta["counts"]["errors"] == 1


# ------------------------------------------------------------ 3. datagate's own outputs


def test_rescanning_a_folder_skips_datagate_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "repo"
    data.mkdir()
    (data / "x.jpg").write_bytes(jpeg_bytes(photo(7)))
    # a folder merely named like datagate's output is still read
    (data / "datagate-out-of-date").mkdir()
    (data / "datagate-out-of-date" / "y.jpg").write_bytes(jpeg_bytes(photo(8)))
    scan_dir = data / "datagate-out" / "scan"
    assert scan(capsys, scan_dir, data)[0] == 0
    assert main(["enforce", str(scan_dir), "--out", str(data / "datagate-out")]) in (0, 1)
    assert (data / "datagate-out" / "manifests" / "kept.parquet").exists()
    capsys.readouterr()
    other = tmp_path / "other-scan"
    assert scan(capsys, other, data)[0] == 0  # leaves meta.json/images.parquet in other
    (data / "copy").mkdir()
    os.rename(other, data / "copy" / "old-scan")

    code, rows, meta, _, err = scan(capsys, tmp_path / "again", data)

    assert code == 0  # today: exit 2 on datagate-out/manifests/kept.parquet
    assert sorted(rows) == ["./x.jpg", "datagate-out-of-date/y.jpg"]
    reasons = skipped(meta)
    assert reasons[str(data / "datagate-out")] == (
        "a datagate enforce output folder (datagate's own output, not read)"
    )
    assert reasons[str(data / "copy" / "old-scan")] == (
        "a datagate scan folder (datagate's own output, not read)"
    )
    assert "skipped" in err and "datagate-out" in err


# -------------------------------------------------------------------- 4. broken Parquet


def test_broken_parquet_inside_a_folder_is_an_error_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.jpg").write_bytes(jpeg_bytes(photo(9)))
    (data / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.table({"caption": ["a", "b"]}), data / "captions.parquet")

    code, rows, _, _, _ = scan(capsys, tmp_path / "out", data)

    assert code == 0  # today: exit 2, nothing scanned
    assert rows["./ok.jpg"]["error"] is None
    assert rows["broken.parquet/<parquet>"]["error"].startswith(
        "Parquet file not read: not a readable Parquet file"
    )
    assert rows["captions.parquet/<parquet>"]["error"].startswith(
        "Parquet file not read: no image column found"
    )
    # named explicitly, the same file is a usage error
    code, _, _, _, err = scan(capsys, tmp_path / "out2", data / "broken.parquet")
    assert code == 2 and "not a readable Parquet file" in err


# ----------------------------------------------------------- 5. hidden and empty inputs


def test_hidden_files_and_folders_are_listed_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / ".cache").mkdir(parents=True)
    (data / ".cache" / "z.jpg").write_bytes(jpeg_bytes(photo(10)))
    (data / ".x.jpg").write_bytes(jpeg_bytes(photo(11)))
    (data / "y.jpg").write_bytes(jpeg_bytes(photo(12)))

    code, rows, meta, _, err = scan(capsys, tmp_path / "out", data)

    assert code == 0 and sorted(rows) == ["./y.jpg"]
    reasons = skipped(meta)
    assert reasons[str(data / ".x.jpg")] == "hidden file"
    assert reasons[str(data / ".cache")] == "hidden folder"
    assert f"skipped {data / '.x.jpg'}: hidden file" in err


def test_empty_input_warns_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, rows, _, _, err = scan(capsys, tmp_path / "out", empty)
    assert code == 0 and rows == {}
    assert f"warning: no images found in {empty}" in err


# ------------------------------------------------------------------------- 6. keys and ids


def test_single_file_inputs_are_keyed_by_their_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(photo(13)))
    (tmp_path / "y.png").write_bytes(png(photo(14)))
    tar = tmp_path / "bomb.tar"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("zz.jpg")
        data = jpeg_bytes(photo(15))
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

    code, rows, _, _, _ = scan(capsys, tmp_path / "one", tmp_path / "x.jpg")
    assert code == 0 and list(rows) == ["x.jpg"]

    code, rows, meta, _, _ = scan(
        capsys, tmp_path / "many", tmp_path / "x.jpg", tmp_path / "y.png", tar
    )
    assert code == 0
    assert sorted(rows) == ["bomb.tar/zz.jpg", "x.jpg", "y.png"]
    assert all(r["error"] is None for r in rows.values())
    assert sorted(s["id"] for s in meta["shards"]) == ["bomb.tar", "x.jpg", "y.png"]


def test_inputs_with_the_same_name_get_distinct_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for parent, seed in (("a", 16), ("b", 17)):
        (tmp_path / parent / "train").mkdir(parents=True)
        (tmp_path / parent / "train" / "img.jpg").write_bytes(jpeg_bytes(photo(seed)))
        (tmp_path / parent / "img.jpg").write_bytes(jpeg_bytes(photo(seed + 10)))

    code, rows, _, _, _ = scan(
        capsys,
        tmp_path / "out",
        tmp_path / "a" / "train",
        tmp_path / "b" / "train",
        tmp_path / "a" / "img.jpg",
        tmp_path / "b" / "img.jpg",
    )

    assert code == 0  # today: exit 2, "two inputs map to the same shard id"
    assert sorted(rows) == ["a/img.jpg", "a/train/./img.jpg", "b/img.jpg", "b/train/./img.jpg"]
    # the same input given twice is a clear usage error
    code, _, _, _, err = scan(capsys, tmp_path / "out2", tmp_path / "a", tmp_path / "a")
    assert code == 2 and "given twice" in err


# ---------------------------------------------------------------------------- 7. wording


def test_scan_summary_uses_singular_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.jpg").write_bytes(jpeg_bytes(photo(18)))
    (data / "notes.txt").write_text("hello")
    code, _, _, out, _ = scan(capsys, tmp_path / "out", data)
    assert code == 0
    assert "scanned 1 image in 1 shard (" in out
    assert "1 chunk resumed" not in out and "0 chunks resumed" in out
    assert "1 path skipped" in out
