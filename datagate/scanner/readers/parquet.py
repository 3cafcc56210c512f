"""Reader for Parquet files with an image column.

The image column holds raw bytes (``binary``) or the ``{bytes, path}`` struct that Hugging
Face ``datasets`` writes for its ``Image`` feature. It is auto-detected from the schema or
named with ``--image-column``. Scalar columns (captions, URLs, labels) become metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datagate.errors import InputError
from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import too_large
from datagate.scanner.readers.remote import RemoteFile, client_errors, store_failure
from datagate.scanner.records import ImageRecord

#: Preferred names when several columns could hold images.
PREFERRED_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "bytes", "image_bytes")
BATCH_ROWS = 128


def _is_binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def image_column_kind(t: pa.DataType) -> str | None:
    """'binary' or 'struct' if a column of this type can hold encoded images."""
    if _is_binary(t):
        return "binary"
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if "bytes" in names and _is_binary(t.field(names.index("bytes")).type):
            return "struct"
    return None


def _is_scalar(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
    )


def choose_image_column(
    schema: pa.Schema, path: Path | str, requested: str | None
) -> tuple[str, str]:
    def describe() -> str:
        return ", ".join(f"{f.name}: {f.type}" for f in schema)

    if requested is not None:
        if requested not in schema.names:
            raise InputError(
                f"{path}: no column named {requested!r} (columns: {describe()})",
                hint="pass --image-column with one of the columns above",
            )
        kind = image_column_kind(schema.field(requested).type)
        if kind is None:
            raise InputError(
                f"{path}: column {requested!r} has type {schema.field(requested).type}; "
                "expected binary image bytes or a {bytes, path} struct",
            )
        return requested, kind
    candidates = [(f.name, k) for f in schema if (k := image_column_kind(f.type)) is not None]
    if not candidates:
        raise InputError(
            f"{path}: no image column found; expected a binary column or a {{bytes, path}} "
            f"struct (columns: {describe()})",
            hint="pass --image-column NAME if the images are stored under another type",
        )
    for preferred in PREFERRED_NAMES:
        for name, kind in candidates:
            if name.lower() == preferred:
                return name, kind
    return candidates[0]


@dataclass
class ParquetShard:
    """A Parquet file's rows, one record per row.

    ``strict`` (a file named as an input): an unreadable or unsuitable file is an
    :class:`InputError`. Otherwise (found inside a folder) it becomes one error row. On a
    remote filesystem (:mod:`.remote`), ``url`` is the object's URL and ``remote`` its
    listing entry; the file is read through fsspec, and an object the store refuses or no
    longer has says so in the store's words (:func:`.remote.store_failure`), naming its URL.
    """

    id: str
    path: Path
    image_column: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    strict: bool = True
    kind: str = "parquet"
    fingerprint: str = field(init=False)
    size_hint: int | None = field(init=False)
    column_kind: str = field(init=False)
    #: why the file cannot be read (only when not ``strict``)
    problem: str | None = field(init=False, default=None)
    url: str | None = None
    remote: RemoteFile | None = None

    def _version(self) -> str:
        if self.remote is not None:
            return f"{self.remote.size}:{self.remote.tag}"
        st = os.stat(self.path)
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"  # as git's index compares

    @property
    def where(self) -> str:
        """The file, as messages name it (its URL when remote)."""
        return self.url if self.url is not None else str(self.path)

    def _open(self) -> pq.ParquetFile:
        if self.url is not None:
            from datagate.scanner.readers.remote import filesystem

            fs, path = filesystem(self.url)
            return pq.ParquetFile(fs.open(path, "rb"))
        return pq.ParquetFile(self.path)

    def __post_init__(self) -> None:
        version = self._version()
        self.fingerprint = f"{version}:{self.image_column}"
        self._meta_columns: list[str] = []
        self.column_kind = "binary"
        self.size_hint = 1
        try:
            try:
                pf = self._open()
            except (pa.ArrowException, OSError, *client_errors()) as exc:
                failure = store_failure(self.url, exc) if self.url is not None else None
                if failure is not None and not self.strict:
                    self.problem = str(failure)  # names the URL, with the hint
                    return
                if failure is not None:
                    raise failure.input_error() from exc
                if not isinstance(exc, pa.ArrowException | OSError):
                    raise
                raise InputError(f"{self.where}: not a readable Parquet file: {exc}") from exc
            schema = pf.schema_arrow
            if schema.metadata and b"datagate.schema_version" in schema.metadata:
                raise InputError(
                    f"{self.where}: a table datagate wrote (scan table or manifest), not images"
                )
            self.image_column, self.column_kind = choose_image_column(
                schema, self.where, self.image_column
            )
        except InputError as exc:
            if self.strict:
                raise
            self.problem = str(exc).removeprefix(f"{self.where}: ")
            return
        self._meta_columns = [
            f.name for f in schema if f.name != self.image_column and _is_scalar(f.type)
        ]
        self.size_hint = pf.metadata.num_rows
        self.fingerprint = f"{version}:{self.image_column}"

    @property
    def location(self) -> Path:
        return self.path

    def records(self) -> Iterator[ImageRecord]:
        if self.problem is not None:
            yield self._error("<parquet>", f"Parquet file not read: {self.problem}")
            return
        row = 0
        try:
            for record in self._rows():
                yield record
                row += 1
        except (pa.ArrowException, OSError, ValueError, *client_errors()) as exc:
            failure = store_failure(self.url, exc) if self.url is not None else None
            yield self._error(
                f"<parquet:{row}>",
                f"Parquet file unreadable after {row} rows: {exc if failure is None else failure}",
            )

    def _error(self, member: str, error: str) -> ImageRecord:
        return ImageRecord(shard=self.id, member=member, reader=self.kind, error=error)

    def _rows(self) -> Iterator[ImageRecord]:
        assert self.image_column is not None
        pf = self._open()
        row = 0
        columns = [self.image_column, *self._meta_columns]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            images = batch.column(0)
            if self.column_kind == "struct":
                struct = images
                names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
                data_values = struct.field("bytes").to_pylist()
                paths = struct.field("path").to_pylist() if "path" in names else None
            else:
                data_values = images.to_pylist()
                paths = None
            metas: dict[str, list[Any]] = {
                name: batch.column(i + 1).to_pylist() for i, name in enumerate(self._meta_columns)
            }
            for i, data in enumerate(data_values):
                meta = {name: values[i] for name, values in metas.items()}
                if paths is not None and paths[i] is not None:
                    meta["path"] = paths[i]
                error = None
                if data is None:
                    error = f"no image bytes in column {self.image_column!r} (null)"
                elif len(data) > self.max_bytes:
                    error, data = too_large(len(data), self.max_bytes), None
                yield ImageRecord(
                    shard=self.id,
                    member=str(row),
                    reader=self.kind,
                    data=data,
                    meta=meta,
                    error=error,
                )
                row += 1
