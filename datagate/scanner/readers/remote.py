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

What the store or its client raises while reading is translated once, by
:func:`store_failure`: an object the store refuses reads "access denied", one gone since it
was listed "not found", and a missing credential or a dead endpoint says so, with the hint
where the settings come from. A loose image's row, a tar or Parquet shard's error row and
an input named on the command line (exit 2) all say it in those words.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from datagate.errors import InputError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

#: What to install for each protocol's filesystem (fsspec names the package in its error).
INSTALL_HINT = "pip install 'datagate[cloud]' (s3fs; gcsfs for gs://, huggingface_hub for hf://)"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
#: A URL that went through ``pathlib.Path``, which collapses ``//`` to ``/``.
_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)(.*)$")
_LOCAL = {"file", "local"}
#: Client libraries' errors that no filesystem translates to OSError (see :func:`client_errors`).
_CLIENT_ERRORS = (
    ("botocore.exceptions", ("BotoCoreError", "ClientError")),
    ("google.auth.exceptions", ("GoogleAuthError",)),
)
#: botocore's exceptions that mean "no usable credentials", and S3's codes for a refusal
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "403"}
#: S3's codes for an object or bucket that is not there (s3fs makes them FileNotFoundError)
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404"}
#: What a refused, missing or unreachable object's message says (see :func:`problem`).
Kind = Literal["denied", "missing", "credentials", "endpoint", "client"]


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
    except client_errors() as exc:  # e.g. AWS_PROFILE naming no profile
        if problem(exc)[0] is not None:
            raise unreachable(url, exc) from exc
        raise InputError(f"{url}: cannot open this filesystem: {exc}") from exc
    return fs, str(path)


def _library_errors() -> tuple[type[BaseException], ...]:
    """The client libraries' errors that no filesystem translates (botocore's missing
    credentials or unreachable endpoint, Google's auth errors). Only libraries already
    imported can have raised, so nothing is imported here."""
    found: list[type[BaseException]] = []
    for module, names in _CLIENT_ERRORS:
        loaded = sys.modules.get(module)
        found.extend(getattr(loaded, name) for name in names if hasattr(loaded, name))
    return tuple(found)


def client_errors() -> tuple[type[BaseException], ...]:
    """What listing or reading may raise: OSError and ValueError (fsspec's own, and what
    s3fs makes of an S3 error), and the client libraries' errors no filesystem translates."""
    return (OSError, ValueError, *_library_errors())


def problem(exc: BaseException) -> tuple[Kind | None, str]:
    """What went wrong with the store, as (kind, text): kind is ``"denied"`` (the store
    refused these credentials), ``"missing"`` (no such object), ``"credentials"`` (none
    found), ``"endpoint"`` (nothing answers) or None (anything else)."""
    if isinstance(exc, PermissionError):
        return "denied", _denied(exc)
    if isinstance(exc, FileNotFoundError):
        return "missing", _MISSING
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    if names & _NO_CREDENTIALS or module.startswith("google.auth"):
        return "credentials", f"no usable credentials ({exc})"
    if module.startswith("botocore") and "ClientError" in names:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in _DENIED_CODES:
            return "denied", _denied(exc)
        if code in _MISSING_CODES:
            return "missing", _MISSING
    if module.startswith("botocore") and "ConnectionError" in names:
        return "endpoint", f"the storage endpoint does not answer ({exc})"
    return None, f"{type(exc).__name__}: {exc}"


#: An object listed, then not there when read.
_MISSING = "not found (deleted or moved since it was listed?)"


def _denied(exc: BaseException) -> str:
    said = str(exc).strip()
    return "access denied" if said.lower() in ("", "access denied") else f"access denied ({said})"


def credentials_hint(url: str) -> str:
    """Where the credentials (and, for S3, the endpoint) of ``url``'s filesystem come from."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("s3", "s3a"):
        name = (
            "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        )
        endpoint = os.environ.get(name)
        where = f"{name}={endpoint}" if endpoint else "AWS_ENDPOINT_URL unset: AWS itself"
        return (
            "check the credentials in the environment (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY) and the endpoint ({where}); listing needs s3:ListBucket "
            "on the bucket, reading s3:GetObject on its objects"
        )
    if scheme in ("gs", "gcs"):
        return "check GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)"
    if scheme == "hf":
        return "check HF_TOKEN (or `huggingface-cli login`) and that it may read the repository"
    return "check the credentials this filesystem reads from the environment"


@dataclass(frozen=True)
class StoreFailure:
    """Why the object at ``url`` could not be read, when its store or the store's client is
    to blame: ``kind`` as :func:`problem` names it (``"client"``: another error of the
    client library), ``text`` what went wrong in words."""

    url: str
    kind: Kind
    text: str

    @property
    def hint(self) -> str | None:
        """How to fix it, when a setting may: where credentials and the endpoint come from."""
        return credentials_hint(self.url) if self.kind in _SETTINGS else None

    def __str__(self) -> str:
        """One line naming the URL, what went wrong and the hint: a shard's error row."""
        said = f"{self.url}: {self.text}"
        return f"{said}; hint: {self.hint}" if self.hint else said

    def input_error(self) -> InputError:
        """As the user's error, for an input named on the command line (exit 2)."""
        return InputError(f"{self.url}: {self.text}", hint=self.hint)

    def os_error(self) -> OSError:
        """As the OSError a loose image's reader raises (its row names the object):
        PermissionError when refused, FileNotFoundError when gone."""
        cls = {"denied": PermissionError, "missing": FileNotFoundError}.get(self.kind, OSError)
        return cls(self.text)


#: The kinds a setting may fix (credentials, the endpoint, a policy), given the hint.
_SETTINGS = frozenset({"denied", "credentials", "endpoint"})


def store_failure(url: str, exc: BaseException) -> StoreFailure | None:
    """``exc``, raised reading ``url``, as what the store said (see :class:`StoreFailure`); None
    when neither the store nor its client raised it (a corrupt file's own error, which its
    reader reports as it is)."""
    kind, text = problem(exc)
    if kind is not None:
        return StoreFailure(url, kind, text)
    errors = _library_errors()
    if isinstance(exc, errors) or isinstance(exc.__cause__, errors):  # s3fs keeps the cause
        return StoreFailure(url, "client", text)
    return None


def unreachable(url: str, exc: BaseException) -> InputError:
    """An input that cannot be listed or opened, as the user's error (exit 2)."""
    failure = store_failure(url, exc)
    if failure is not None and failure.kind == "missing":
        return InputError(f"{url}: no such object or prefix")
    if failure is not None and failure.kind != "client":
        return failure.input_error()
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
    except client_errors() as exc:
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
    """Read an object, refusing anything over ``max_bytes`` (as :func:`read_file`).

    Raises OSError (PermissionError when the store refuses, FileNotFoundError when the
    object is gone) with a message that says what went wrong, whatever the filesystem's
    client raised (:func:`store_failure`): the caller makes it the row's error.
    """
    from datagate.scanner.readers.base import too_large

    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as fh:
            data: bytes = fh.read(max_bytes + 1)
        size = int(fs.size(path) or len(data)) if len(data) > max_bytes else 0
    except client_errors() as exc:
        failure = store_failure(url, exc)
        if failure is None:
            raise
        raise failure.os_error() from exc
    if len(data) > max_bytes:
        raise ValueError(too_large(size, max_bytes))
    return data
