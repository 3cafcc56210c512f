from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagate.errors import InputError
from datagate.scanner.readers import discover
from datagate.scanner.readers.webdataset import split_key

from .conftest import DATA, jpeg_bytes, photo


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_folder_shards_per_directory_and_skipped_files(image_folder: Path) -> None:
    found = discover([image_folder])
    assert [s.id for s in found.shards] == ["a", "b"]
    assert [s.kind for s in found.shards] == ["folder", "folder"]
    keys = [r.key for s in found.shards for r in s.records()]
    assert keys[0] == "a/img00.jpg" and keys[-1] == "b/img11.jpg" and len(keys) == 12
    assert found.skipped == [
        (str(image_folder / "README.md"), "not an image, tar shard or Parquet file")
    ]


def test_multiple_roots_prefix_shard_ids(tmp_path: Path, image_folder: Path) -> None:
    other = tmp_path / "more"
    other.mkdir()
    (other / "x.jpg").write_bytes(jpeg_bytes(photo(99)))
    found = discover([image_folder, other])
    assert [s.id for s in found.shards] == ["images/a", "images/b", "more/."]


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        discover([tmp_path / "nope"])


def test_unsupported_file_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "notes.csv"
    f.write_text("a,b")
    with pytest.raises(InputError, match="not an image folder, WebDataset tar shard or Parquet"):
        discover([f])


def test_webdataset_groups_members_by_key_with_sidecars(tmp_path: Path) -> None:
    path = tmp_path / "shard-000.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(3):
            _add(tar, f"s/{i:04d}.jpg", jpeg_bytes(photo(i)))
            _add(tar, f"s/{i:04d}.json", json.dumps({"i": i, "url": f"http://x/{i}"}).encode())
            _add(tar, f"s/{i:04d}.txt", f"caption {i}".encode())
    (shard,) = discover([path]).shards
    assert shard.kind == "webdataset" and shard.id == "shard-000.tar.gz"
    records = list(shard.records())
    assert [r.member for r in records] == ["s/0000.jpg", "s/0001.jpg", "s/0002.jpg"]
    assert records[1].meta == {"json": {"i": 1, "url": "http://x/1"}, "txt": "caption 1"}
    assert all(r.data and r.error is None for r in records)


def test_split_key_follows_webdataset_convention() -> None:
    assert split_key("a/b/000.seg.png") == ("a/b/000", "seg.png")
    assert split_key("000.jpg") == ("000", "jpg")


def test_hostile_tar_members_become_error_rows_and_are_never_read() -> None:
    (shard,) = discover([DATA / "hostile.tar"]).shards
    records = {r.member: r for r in shard.records()}
    assert records["ok/000001.jpg"].error is None and records["ok/000001.jpg"].data
    for member, words in (
        ("../escape.jpg", "escapes the shard"),
        ("/abs.jpg", "absolute path"),
        ("ok/000002.jpg", "links are not followed"),
    ):
        assert words in (records[member].error or "")
        assert records[member].data is None


def test_truncated_tar_yields_rows_read_so_far_and_an_error_row(tmp_path: Path) -> None:
    path = tmp_path / "cut.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            _add(tar, f"{i:04d}.jpg", jpeg_bytes(photo(i), quality=95))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (shard,) = discover([path]).shards
    records = list(shard.records())
    assert records[-1].error is not None and "unreadable" in records[-1].error
    assert any(r.error is None for r in records[:-1])


def test_parquet_struct_column_autodetected(tmp_path: Path) -> None:
    path = tmp_path / "hf.parquet"
    images = [{"bytes": jpeg_bytes(photo(i)), "path": f"p{i}.jpg"} for i in range(3)]
    pq.write_table(
        pa.table(
            {
                "image": pa.array(
                    images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])
                ),
                "caption": ["a", "b", "c"],
            }
        ),
        path,
    )
    (shard,) = discover([path]).shards
    records = list(shard.records())
    assert [r.key for r in records] == ["hf.parquet/0", "hf.parquet/1", "hf.parquet/2"]
    assert records[2].meta == {"caption": "c", "path": "p2.jpg"}


def test_parquet_binary_column_by_name_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "raw.parquet"
    pq.write_table(
        pa.table(
            {"thumb": pa.array([jpeg_bytes(photo(1)), None], pa.binary()), "jpg": [b"x", b"y"]}
        ),
        path,
    )
    (auto,) = discover([path]).shards
    assert auto.image_column == "jpg"  # preferred name wins when several columns qualify
    (shard,) = discover([path], image_column="thumb").shards
    records = list(shard.records())
    assert records[0].data and records[1].error == "no image bytes in column 'thumb' (null)"


def test_parquet_without_image_column_is_a_clear_input_error() -> None:
    with pytest.raises(InputError) as info:
        discover([DATA / "no-image-column.parquet"])
    assert "no image column found" in str(info.value)
    assert "caption: string, label: int64" in str(info.value)


def test_parquet_unknown_column_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no column named 'pixels'"):
        discover([DATA / "no-image-column.parquet"], image_column="pixels")


def test_a_file_replaced_with_the_same_size_and_time_changes_the_fingerprint(
    tmp_path: Path,
) -> None:
    """Like git's index: size, mtime and inode, so a restore or ``cp -p`` is noticed."""
    folder = tmp_path / "data"
    folder.mkdir()
    image = folder / "a.jpg"
    image.write_bytes(jpeg_bytes(photo(1)))
    (tmp_path / "tar").mkdir()
    shard = tmp_path / "tar" / "s.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(image, arcname="a.jpg")
    before = [s.fingerprint for s in discover([folder, tmp_path / "tar"]).shards]
    for path in (image, shard):
        st = path.stat()
        replacement = path.with_name("new-" + path.name)
        replacement.write_bytes(path.read_bytes()[::-1])  # same size, other bytes
        replacement.replace(path)  # a new inode at the same name
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
        assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    after = [s.fingerprint for s in discover([folder, tmp_path / "tar"]).shards]
    assert len(before) == len(after) == 2
    assert all(b != a for b, a in zip(before, after))
