"""Inputs on object storage and the Hub: any fsspec URL (``s3://``, ``gs://``, ``hf://``...).

The readers stay the same three (:mod:`.folder`, :mod:`.webdataset`, :mod:`.parquet`); a
shard on a remote filesystem carries the fsspec filesystem it lives on (``fs``) and its URL,
and opens its files through it. Credentials come from the usual environment of each
filesystem (``AWS_*`` and ``~/.aws`` for s3fs, ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs,
``HF_TOKEN`` for the Hub), and an ``s3fs`` endpoint from ``AWS_ENDPOINT_URL``.

Discovery lists the prefix once (``find``) and groups what it finds exactly as a local walk
does: each "directory" of loose images is one folder shard, each tar or Parquet object one
shard, hidden names and other files are skipped with their reason. Keys are relative to the
given URL, so a bucket and its local copy scan to the same keys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any

from datagate.errors import InputError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

#: What to install for each protocol's filesystem (fsspec names the package in its error).
INSTALL_HINT = "pip install 'datagate[cloud]' (s3fs; gcsfs for gs://, huggingface_hub for hf://)"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
#: A URL that went through ``pathlib.Path``, which collapses ``//`` to ``/``.
_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)(.*)$")
_LOCAL = {"file", "local"}


def as_url(path: str | PurePath) -> str | None:
    """The fsspec URL ``path`` names, or None for a local path.

    A URL given as a ``Path`` (``Path("s3://b/k")`` is ``s3:/b/k``) is recognised by its
    scheme, when fsspec knows that scheme and no local file of that name exists.
    """
    text = str(path)
    match = _URL.match(text)
    if match is None and isinstance(path, PurePath):
        match = _COLLAPSED.match(text)
        if match is not None and os.path.exists(text):
            return None
    if match is None:
        return None
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in _LOCAL or len(scheme) == 1:  # c:/... on Windows
        return None
    from fsspec import available_protocols

    if scheme not in available_protocols():
        return None
    return f"{scheme}://{rest}"


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path on it; exit 2 if it cannot be had."""
    from fsspec.core import url_to_fs  # type: ignore[import-untyped]

    try:
        fs, path = url_to_fs(url)
    except ImportError as exc:
        raise InputError(f"{url}: {exc}", hint=INSTALL_HINT) from exc
    except (ValueError, OSError) as exc:
        raise InputError(f"{url}: cannot open this filesystem: {exc}") from exc
    return fs, str(path)


def unreachable(url: str, exc: BaseException) -> InputError:
    """An input that cannot be listed or opened, as the user's error (exit 2)."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{url}: no such object or prefix")
    if isinstance(exc, PermissionError):
        return InputError(
            f"{url}: access denied ({exc})",
            hint="check the credentials in the environment (AWS_PROFILE / AWS_ACCESS_KEY_ID, "
            "GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN) and the bucket's policy",
        )
    return InputError(f"{url}: cannot be read: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RemoteFile:
    """One object found under a prefix: its path on the filesystem, size and version tag."""

    path: str
    size: int
    tag: str


def _tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "blob_id", "LastModified", "mtime", "updated"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def describe(fs: AbstractFileSystem, path: str, url: str) -> RemoteFile | list[RemoteFile]:
    """``path`` as one object, or the objects under it (a prefix), in name order."""
    try:
        info = fs.info(path)
        if info.get("type") != "directory":
            return RemoteFile(path, int(info.get("size") or 0), _tag(info))
        found = fs.find(path, detail=True, withdirs=False)
    except (OSError, ValueError) as exc:
        raise unreachable(url, exc) from exc
    return [
        RemoteFile(p, int(i.get("size") or 0), _tag(i))
        for p, i in sorted(found.items())
        if i.get("type") != "directory"
    ]


def join_url(url: str, rel: str) -> str:
    """``url`` with a relative posix path appended."""
    return url.rstrip("/") + "/" + rel if rel not in ("", ".") else url


def relative(path: str, root: str) -> str:
    return PurePosixPath(path).relative_to(PurePosixPath(root)).as_posix()


def url_of(fs: AbstractFileSystem, path: str) -> str:
    """The full URL of a path on ``fs`` (what a worker elsewhere opens it by)."""
    return str(fs.unstrip_protocol(path))


def read_url(url: str, max_bytes: int) -> bytes:
    """Read an object, refusing anything over ``max_bytes`` (as :func:`read_file`)."""
    from datagate.scanner.readers.base import too_large

    fs, path = filesystem(url)
    with fs.open(path, "rb") as fh:
        data: bytes = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(too_large(int(fs.size(path) or len(data)), max_bytes))
    return data
