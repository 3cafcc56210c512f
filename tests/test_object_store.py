"""Scan inputs on object storage, against a local S3-compatible server (moto, offline)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagate.cli import main
from datagate.errors import InputError
from datagate.scanner.readers import ParquetShard, as_url
from datagate.scanner.readers.remote import RemoteFile

from .conftest import DATA, jpeg_bytes, photo

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

BUCKET = "datagate-test"
#: A prefix holding a copy of the dataset's tar and Parquet shard beside one image: the
#: objects the tests below refuse, delete or cut off from the reader.
SHARDS = "shards"
SHARD_FILES = ("web-000000.tar", "table.parquet")


def _dataset(root: Path) -> None:
    """A folder of images (one truncated), a tar shard with sidecars and a Parquet shard."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    for i in range(3):
        (photos / f"p{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    shutil.copy(DATA / "truncated.jpg", photos / "truncated.jpg")
    (photos / ".hidden.jpg").write_bytes(jpeg_bytes(photo(9)))
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "nested" / "deeper" / "n0.png").write_bytes(_png(photo(10)))
    with tarfile.open(root / "web-000000.tar", "w") as tar:
        for i in range(2):
            for name, data in (
                (f"s{i}.jpg", jpeg_bytes(photo(20 + i))),
                (f"s{i}.json", json.dumps({"caption": f"sample {i}"}).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    table = pa.table(
        {
            "image": pa.array([jpeg_bytes(photo(30)), b"not an image"], pa.binary()),
            "caption": ["a photo", "junk"],
        }
    )
    pq.write_table(table, root / "table.parquet")
    (root / "README.txt").write_text("not read")


def _png(im: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A moto S3 server on a free port, the bucket holding a copy of a local dataset."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    patch.delenv("AWS_PROFILE", raising=False)
    local = tmp_path_factory.mktemp("bucket-copy") / "data"
    _dataset(local)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=BUCKET,
                Key=f"data/{path.relative_to(local).as_posix()}",
                Body=path.read_bytes(),
            )
    for name in SHARD_FILES:
        client.put_object(Bucket=BUCKET, Key=f"{SHARDS}/{name}", Body=(local / name).read_bytes())
    client.put_object(
        Bucket=BUCKET, Key=f"{SHARDS}/ok/p0.jpg", Body=(local / "photos" / "p0.jpg").read_bytes()
    )
    yield {"local": local, "client": client}
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()


def _rows(scan_dir: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(scan_dir / "images.parquet").to_pylist(), key=lambda r: r["key"])


def test_bucket_scans_to_the_same_rows_as_its_local_copy(
    s3: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    common = ["--workers", "1", "--model", "pixel", "-q"]
    assert main(["scan", str(s3["local"]), "-o", str(local_out), *common]) == 0
    assert main(["scan", f"s3://{BUCKET}/data", "-o", str(remote_out), *common]) == 0
    local_rows, remote_rows = _rows(local_out), _rows(remote_out)
    assert len(remote_rows) == 9  # 4 + 1 folder images, 2 tar members, 2 Parquet rows
    assert remote_rows == local_rows  # keys relative to the URL, as to the local folder
    keys = {r["key"]: r for r in remote_rows}
    assert keys["photos/truncated.jpg"]["error"]  # an undecodable object is a row
    assert keys["table.parquet/1"]["decodable"] is False
    assert json.loads(keys["web-000000.tar/s1.jpg"]["meta"])["json"] == {"caption": "sample 1"}
    assert pq.read_table(remote_out / "embeddings.parquet").equals(
        pq.read_table(local_out / "embeddings.parquet")
    )
    meta = json.loads((remote_out / "meta.json").read_text())
    assert meta["inputs"] == [f"s3://{BUCKET}/data"]
    paths = {s["id"]: s["path"] for s in meta["shards"]}
    assert paths["web-000000.tar"] == f"s3://{BUCKET}/data/web-000000.tar"
    assert paths["photos"] == f"s3://{BUCKET}/data/photos"
    skipped = {s["path"]: s["reason"] for s in meta["skipped"]}
    assert skipped[f"s3://{BUCKET}/data/photos/.hidden.jpg"] == "hidden file"
    assert f"s3://{BUCKET}/data/README.txt" in skipped


def test_rescan_of_an_unchanged_bucket_resumes_and_a_changed_object_is_rescanned(
    s3: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    argv = ["scan", f"s3://{BUCKET}/data/photos", "-o", str(out), "--workers", "1"]
    assert main([*argv, "--model", "none", "-q"]) == 0
    assert main([*argv, "--model", "none", "-q"]) == 0
    assert json.loads((out / "meta.json").read_text())["timing"]["chunks_computed"] == 0
    s3["client"].put_object(
        Bucket=BUCKET, Key="data/photos/p0.jpg", Body=jpeg_bytes(photo(0), quality=50)
    )
    try:
        assert main([*argv, "--model", "none", "-q"]) == 0
        assert json.loads((out / "meta.json").read_text())["timing"]["chunks_computed"] == 1
    finally:
        s3["client"].put_object(
            Bucket=BUCKET,
            Key="data/photos/p0.jpg",
            Body=(s3["local"] / "photos" / "p0.jpg").read_bytes(),
        )


def test_a_single_object_is_a_shard_keyed_by_its_name(s3: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "scan"
    url = f"s3://{BUCKET}/data/photos/p1.jpg"
    assert main(["scan", url, "-o", str(out), "--workers", "1", "--model", "none", "-q"]) == 0
    rows = _rows(out)
    assert [r["key"] for r in rows] == ["p1.jpg"]
    assert rows[0]["decodable"] is True


def test_missing_prefix_or_bucket_is_exit_2(
    s3: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in (f"s3://{BUCKET}/no-such-prefix", "s3://no-such-bucket/data"):
        capsys.readouterr()
        assert main(["scan", url, "-o", str(tmp_path / "x"), "--model", "none", "-q"]) == 2
        err = capsys.readouterr().err
        assert url in err and "no such object or prefix" in err


def test_object_that_cannot_be_read_is_an_error_row(s3: dict[str, Any], tmp_path: Path) -> None:
    """An object listed but gone (or refused) when a worker reads it is a row with its error."""
    from datagate.scanner.compute import compute_record
    from datagate.scanner.options import ScanOptions
    from datagate.scanner.readers import discover

    found = discover([f"s3://{BUCKET}/data/photos"])
    (shard,) = found.shards
    s3["client"].delete_object(Bucket=BUCKET, Key="data/photos/p2.jpg")
    try:
        rows = {r.member: compute_record(r, ScanOptions()).row for r in shard.records()}
    finally:
        s3["client"].put_object(
            Bucket=BUCKET,
            Key="data/photos/p2.jpg",
            Body=(s3["local"] / "photos" / "p2.jpg").read_bytes(),
        )
    assert rows["p2.jpg"]["error"].startswith("cannot read file: not found")
    assert rows["p2.jpg"]["decodable"] is False
    assert rows["p1.jpg"]["error"] is None


LOCKED = "datagate-locked"  # a bucket the restricted user may not list
#: What the restricted user may do: everything, but list the locked bucket or read three objects.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{LOCKED}"},
        {
            "Effect": "Deny",
            "Action": "s3:GetObject",
            "Resource": [
                f"arn:aws:s3:::{BUCKET}/data/photos/p2.jpg",
                *(f"arn:aws:s3:::{BUCKET}/{SHARDS}/{name}" for name in SHARD_FILES),
            ],
        },
    ],
}


@pytest.fixture
def restricted(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The scan runs as an IAM user under :data:`POLICY`, with moto enforcing IAM.

    moto's server checks every request against IAM once its "no auth" request count is
    spent; ``/moto-api/reset-auth`` sets that count (0: from now on), and back to
    unlimited afterwards. The user and bucket are made before, with the root test keys.
    """
    import s3fs

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if LOCKED not in {b["Name"] for b in s3["client"].list_buckets()["Buckets"]}:
        s3["client"].create_bucket(Bucket=LOCKED)
        s3["client"].put_object(
            Bucket=LOCKED, Key="data/p0.jpg", Body=(s3["local"] / "photos" / "p0.jpg").read_bytes()
        )
    iam = boto3.client("iam", endpoint_url=endpoint)
    user = f"datagate-reader-{len(iam.list_users()['Users'])}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="scan", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    def enforce(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
            method="POST",
        )
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200

    s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem keeps the old keys
    enforce("0")
    try:
        yield key["AccessKeyId"]
    finally:
        enforce("inf")
        s3fs.S3FileSystem.clear_instance_cache()


def test_prefix_that_may_not_be_listed_is_exit_2_access_denied_with_the_hint(
    restricted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{LOCKED}/data"
    assert main(["scan", url, "-o", str(tmp_path / "x"), "--model", "none", "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"{url}: access denied" in err
    assert "AWS_PROFILE" in err and "AWS_ACCESS_KEY_ID" in err
    assert f"AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}" in err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "x" / "images.parquet").exists()
    # the same user lists the other bucket: it is this prefix that is refused, not the keys
    argv = ["scan", f"s3://{BUCKET}/data/nested", "-o", str(tmp_path / "y"), "--model", "none"]
    assert main([*argv, "-q"]) == 0


def test_object_that_may_be_listed_but_not_read_is_an_access_denied_row(
    restricted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import s3fs

    out = tmp_path / "scan"
    url = f"s3://{BUCKET}/data/photos"
    assert main(["scan", url, "-o", str(out), "--workers", "1", "--model", "none", "-q"]) == 0
    rows = {r["member"]: r for r in _rows(out)}
    assert sorted(rows) == ["p0.jpg", "p1.jpg", "p2.jpg", "truncated.jpg"]
    assert rows["p2.jpg"]["error"].startswith("cannot read file: access denied")
    assert rows["p2.jpg"]["decodable"] is False
    assert rows["p0.jpg"]["error"] is None and rows["p1.jpg"]["decodable"] is True
    # named as the input, the object is refused before the scan starts (asked afresh, as a
    # new process would: this filesystem still holds the listing above)
    s3fs.S3FileSystem.clear_instance_cache()
    capsys.readouterr()
    one = f"{url}/p2.jpg"
    assert main(["scan", one, "-o", str(tmp_path / "one"), "--model", "none", "-q"]) == 2
    assert f"{one}: access denied" in " ".join(capsys.readouterr().err.split())


def _shard_records(
    url: str, fresh: bool, between: Callable[[], None] = lambda: None
) -> dict[str, list[Any]]:
    """The records of the tar and Parquet shard found under ``url``: discovered, then
    ``between`` done, then read; ``fresh``: read through a new filesystem, as a worker
    process does, not the one that holds the listing."""
    import s3fs

    from datagate.scanner.readers import discover

    shards = {s.id: s for s in discover([url]).shards}
    between()
    if fresh:
        s3fs.S3FileSystem.clear_instance_cache()
    return {name: list(shards[name].records()) for name in SHARD_FILES}


def test_tar_and_parquet_objects_that_may_be_listed_but_not_read_are_access_denied_rows(
    restricted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a folder's refused image: the scan goes on, the shard is one row saying why."""
    import s3fs

    out = tmp_path / "scan"
    url = f"s3://{BUCKET}/{SHARDS}"
    status = main(["scan", url, "-o", str(out), "--workers", "1", "--model", "none", "-q"])
    err = capsys.readouterr().err
    assert status == 0, err
    rows = {r["key"]: r for r in _rows(out)}
    assert sorted(rows) == ["ok/p0.jpg", "table.parquet/<parquet>", "web-000000.tar/<tar:0>"]
    for key in ("web-000000.tar/<tar:0>", "table.parquet/<parquet>"):
        error = rows[key]["error"]
        assert f"{url}/{key.partition('/')[0]}: access denied" in error, error
        assert "reading s3:GetObject on its objects" in error  # the hint
        assert rows[key]["decodable"] is False
    assert rows["web-000000.tar/<tar:0>"]["error"].startswith("tar shard unreadable")
    assert rows["table.parquet/<parquet>"]["error"].startswith("Parquet file not read")
    assert rows["ok/p0.jpg"]["error"] is None and rows["ok/p0.jpg"]["decodable"] is True
    # named as the input, each is refused before the scan starts
    for name in SHARD_FILES:
        s3fs.S3FileSystem.clear_instance_cache()
        one = f"{url}/{name}"
        assert main(["scan", one, "-o", str(tmp_path / name), "--model", "none", "-q"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{one}: access denied" in err and "AWS_ACCESS_KEY_ID" in err
        assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("fresh", [False, True], ids=["same-filesystem", "fresh-filesystem"])
def test_a_refused_tar_shard_read_by_a_worker_is_an_access_denied_row(
    restricted: str, fresh: bool
) -> None:
    url = f"s3://{BUCKET}/{SHARDS}"
    records = _shard_records(url, fresh)
    (tar,) = records["web-000000.tar"]
    assert tar.member == "<tar:0>" and tar.data is None
    assert f"{url}/web-000000.tar: access denied" in (tar.error or ""), tar.error
    assert "s3:GetObject" in (tar.error or "")
    (table,) = records["table.parquet"]  # refused when discovered: read by no worker
    assert table.member == "<parquet>"
    assert f"{url}/table.parquet: access denied" in (table.error or ""), table.error


@pytest.mark.parametrize("fresh", [False, True], ids=["same-filesystem", "fresh-filesystem"])
def test_tar_and_parquet_objects_deleted_after_discovery_are_not_found_rows(
    s3: dict[str, Any], fresh: bool
) -> None:
    url = f"s3://{BUCKET}/{SHARDS}"

    named: list[InputError] = []

    def delete() -> None:
        for name in SHARD_FILES:
            s3["client"].delete_object(Bucket=BUCKET, Key=f"{SHARDS}/{name}")
        # a Parquet object named as the input, gone between its listing and its opening
        gone = RemoteFile(f"{BUCKET}/{SHARDS}/table.parquet", 1, "etag")
        with pytest.raises(InputError) as raised:
            ParquetShard("t", Path(gone.path), url=f"{url}/table.parquet", remote=gone)
        named.append(raised.value)

    try:
        records = _shard_records(url, fresh, between=delete)
    finally:
        for name in SHARD_FILES:
            body = (s3["local"] / name).read_bytes()
            s3["client"].put_object(Bucket=BUCKET, Key=f"{SHARDS}/{name}", Body=body)
    (tar,) = records["web-000000.tar"]
    assert tar.member == "<tar:0>" and tar.data is None
    assert f"{url}/web-000000.tar: not found" in (tar.error or ""), tar.error
    (table,) = records["table.parquet"]  # its schema was read when discovered: no rows since
    assert table.member == "<parquet:0>"
    assert f"{url}/table.parquet: not found" in (table.error or ""), table.error
    assert "s3:GetObject" not in (tar.error or "") + (table.error or "")  # no credentials hint
    (error,) = named  # exit 2, as any input named on the command line that cannot be read
    assert error.message.startswith(f"{url}/table.parquet: not found")


def test_endpoint_gone_after_discovery_makes_error_rows_not_a_crash(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that starts once the endpoint has stopped answering (botocore's own error,
    no OSError: it escaped both readers)."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # fail at once
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    url = f"s3://{BUCKET}/{SHARDS}"
    with socket.socket() as sock:  # a free port, closed again: nothing answers there
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        records = _shard_records(
            url, True, between=lambda: monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
        )
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # made with the dead endpoint: not reused
    for name, member in (("web-000000.tar", "<tar:0>"), ("table.parquet", "<parquet:0>")):
        (record,) = records[name]
        assert record.member == member
        error = record.error or ""
        assert f"{url}/{name}: the storage endpoint does not answer" in error, error
        assert f"AWS_ENDPOINT_URL={dead}" in error  # the hint names the endpoint it tried


@pytest.mark.parametrize("missing", ["credentials", "endpoint"])
def test_no_credentials_or_no_endpoint_is_exit_2_with_the_hint_not_a_crash(
    s3: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    """botocore raises these itself (no OSError): they were exit 3, "a bug in datagate"."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # fail at once
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries too
    if missing == "credentials":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.setenv(name, str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        expected = "no usable credentials"
    else:
        with socket.socket() as sock:  # a free port, closed again: nothing answers there
            sock.bind(("127.0.0.1", 0))
            monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{sock.getsockname()[1]}")
        expected = "the storage endpoint does not answer"
    url = f"s3://{BUCKET}/data"
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        status = main(["scan", url, "-o", str(tmp_path / "x"), "--model", "none", "-q"])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # made with this environment: not reused
    err = " ".join(capsys.readouterr().err.split())
    assert status == 2, err
    assert f"{url}: {expected}" in err
    assert "AWS_ACCESS_KEY_ID" in err
    assert f"AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}" in err


def test_filesystem_not_installed_is_exit_2_with_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gcsfs", None)  # installed or not: import fails
    assert main(["scan", "gs://bucket/images", "-o", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "gs://bucket/images" in err and "datagate[cloud]" in err


def test_urls_survive_pathlib_and_local_names_stay_local(tmp_path: Path) -> None:
    assert as_url(Path("s3://bucket/a/b")) == "s3://bucket/a/b"
    assert as_url("hf://datasets/org/name") == "hf://datasets/org/name"
    assert as_url(Path("/data/images")) is None
    assert as_url("no-such-scheme://x") is None
    local = tmp_path / "s3:" / "bucket"
    local.mkdir(parents=True)
    assert as_url(local) is None  # a real local folder of that name is read as one
