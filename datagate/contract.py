"""The scan folder: what ``scan`` writes and ``enforce`` reads, typed and loaded in one place.

A scan folder holds ``images.parquet`` (one row per image, schema in
:mod:`datagate.scanner.schema`), ``embeddings.parquet`` (when the scan embeds) and
``meta.json`` (:class:`ScanMeta`). ``enforce`` writes ``manifests/kept.parquet``,
``manifests/rejected.parquet`` and ``report.json`` (:class:`Report`), rendered as
``report.md`` and ``report.html``. Readers of these files go through the loaders here,
which turn a missing, corrupt or foreign file into a clear input error (exit 2), never a
traceback.

:func:`load_scan` also checks that the table is the one the scan wrote: its SHA-256 (which
``scan`` records in ``meta.json`` as ``counts.table_sha256``), its row count, every column of
the signals it recorded, and that neither file comes from a newer datagate. A table edited
after the scan (rows cut or duplicated, a column dropped) is refused with a hint to re-scan;
scans written before the digest was recorded load without the digest check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from packaging.version import InvalidVersion, Version
from pydantic import TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from datagate import __version__
from datagate.errors import InputError
from datagate.scanner.schema import DETECTOR_FIELDS, IDENTITY_FIELDS, SCHEMA_VERSION
from datagate.scanner.signals import SIGNALS

IMAGES_FILE = "images.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
META_FILE = "meta.json"
PARTS_DIR = "parts"
KEPT = "manifests/kept.parquet"
REJECTED = "manifests/rejected.parquet"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_VERSION = 1


# --------------------------------------------------------------------------- meta.json


class Counts(TypedDict):
    images: int
    """Rows of ``images.parquet`` (one per image, unreadable ones included)."""
    errors: int
    shards: int
    skipped_files: int
    table_sha256: NotRequired[str]
    """SHA-256 of the ``images.parquet`` bytes as the scan wrote them (absent in scans
    written before datagate recorded it)."""
    embeddings_sha256: NotRequired[str]
    """SHA-256 of the ``embeddings.parquet`` bytes, when the scan wrote embeddings."""


class ShardInfo(TypedDict):
    id: str
    kind: str
    path: str
    images: int
    errors: int


class Skipped(TypedDict):
    path: str
    reason: str


class Timing(TypedDict, total=False):
    seconds: float
    images_per_second: float | None
    workers: int
    executor: str
    chunks_computed: int
    chunks_resumed: int
    rows_cached: int
    rows_computed: int
    #: "merged": the parts were concatenated; "reused": the same parts as the last scan,
    #: whose files were kept as they were
    merge: str


class EmbedderInfo(TypedDict):
    id: str
    dim: int
    preprocessing: dict[str, Any]
    device: str
    computed: int
    cache: str | None
    cache_hits: int


class DetectorInfo(TypedDict):
    id: str
    embedder: str
    preprocessing: str
    model: str | None
    calibration: dict[str, Any]
    training: dict[str, Any]


class MergeInfo(TypedDict):
    key: str
    files: dict[str, list[int]]


class ScanMeta(TypedDict):
    """``meta.json``: what was scanned, how, and what came of it."""

    counts: Counts
    shards: list[ShardInfo]
    skipped: list[Skipped]
    datagate_version: str
    schema_version: int
    signals: dict[str, int]
    config: dict[str, Any]
    config_hash: str
    inputs: list[str]
    created_at: str
    timing: Timing
    embedder: NotRequired[EmbedderInfo]
    detector: NotRequired[DetectorInfo]
    #: which engine ran the chunks: local or ray
    engine: NotRequired[str]
    #: what the merged files were made of (a digest of the parts in order) and each file's
    #: size and modification time then: a re-run with the same parts reuses them unread
    merged: NotRequired[MergeInfo]


# --------------------------------------------------------------------------- report.json


class RuleOutcomeInfo(TypedDict):
    id: str
    rule: str
    scope: Literal["image", "dataset"]
    params: dict[str, Any]
    rejected: int
    passed: bool | None
    code: str | None
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any]


class ReportCounts(TypedDict):
    images: int
    kept: int
    rejected: int
    errors: int


class ShardOutcome(TypedDict):
    shard: str
    images: int
    kept: int
    rejected: int
    errors: int


class Report(TypedDict):
    """``report.json``: the verdict and everything the Markdown and HTML reports show."""

    report_version: int
    datagate_version: str
    verdict: Literal["pass", "fail"]
    counts: ReportCounts
    rules: list[RuleOutcomeInfo]
    composition: dict[str, Any]
    diversity: dict[str, Any]
    synthetic: dict[str, Any]
    reference: NotRequired[dict[str, Any]]
    overrides: NotRequired[dict[str, Any]]
    top_up: NotRequired[dict[str, Any]]
    #: seconds spent: loading, each rule (by id), the report sections, writing
    timing: NotRequired[dict[str, Any]]
    shards: list[ShardOutcome]
    sources: dict[str, int]
    policy: dict[str, Any]
    scan: dict[str, Any]
    outputs: dict[str, str]


# --------------------------------------------------------------------------- loaders

T = TypeVar("T")


def _load_json(path: Path, kind: type[T], what: str) -> T:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"{path}: {what} is unreadable: {exc}",
            hint="re-run the command that wrote it (it is written atomically, so this file "
            "was changed by something else)",
        ) from None
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise InputError(
            f"{path}: not a datagate {what}: {where}: {first['msg'].lower()}",
            hint="re-run the command that wrote it with this version of datagate",
        ) from None


def load_meta(scan_dir: Path) -> ScanMeta:
    return _load_json(scan_dir / META_FILE, ScanMeta, "scan meta.json")


def load_report(out: Path) -> Report:
    return _load_json(out / REPORT_JSON, Report, "report.json")


RESCAN = (
    "re-run `datagate scan` on the inputs to rebuild the scan folder (change what is "
    "kept with the rules or an overrides file, never by editing the table)"
)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (the scan table's digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_versions(scan_dir: Path, meta: ScanMeta) -> None:
    """Refuse a scan from a newer datagate, or of another scan schema version."""
    written = meta["datagate_version"]
    try:
        newer = Version(written) > Version(__version__)
    except InvalidVersion:
        raise InputError(
            f"{scan_dir / META_FILE}: datagate_version {written[:40]!r} is not a version",
            hint=RESCAN,
        ) from None
    if newer or meta["schema_version"] > SCHEMA_VERSION:
        raise InputError(
            f"{scan_dir / META_FILE}: written by datagate {written[:40]} (scan schema version "
            f"{meta['schema_version']}), newer than this datagate {__version__} (schema "
            f"version {SCHEMA_VERSION})",
            hint="upgrade datagate to read it, or re-scan with this version",
        )
    if meta["schema_version"] != SCHEMA_VERSION:
        raise InputError(
            f"{scan_dir / META_FILE}: scan schema version {meta['schema_version']}, this "
            f"datagate reads version {SCHEMA_VERSION}",
            hint="re-run `datagate scan` with this version of datagate",
        )


def _check_table(images: Path, table: pa.Table, meta: ScanMeta) -> None:
    """The rows and columns the scan recorded are all there."""
    expected = meta["counts"]["images"]
    if table.num_rows != expected:
        raise InputError(
            f"{images}: {table.num_rows:,} rows, but the scan wrote {expected:,} "
            f"({META_FILE} counts.images): the table was cut or rows were added",
            hint=RESCAN,
        )
    fields = list(IDENTITY_FIELDS)
    for name, version in meta["signals"].items():
        signal = SIGNALS.get(name)
        if signal is None:
            raise InputError(
                f"{images}: the scan measured signal {name!r}, which this datagate does not "
                f"know (known: {', '.join(SIGNALS)})",
                hint="install the plugin that registers it, or re-scan with this datagate",
            )
        if signal.version == version:  # an older signal version may have had fewer columns
            fields.extend(signal.fields)
    if "detector" in meta:
        fields.extend(DETECTOR_FIELDS)
    problems = []
    for field in fields:
        if field.name not in table.column_names:
            problems.append(f"{field.name} (missing)")
        elif not table.schema.field(field.name).type.equals(field.type):
            found = table.schema.field(field.name).type
            problems.append(f"{field.name} (type {found}, expected {field.type})")
    if problems:
        raise InputError(
            f"{images}: not the table the scan wrote: columns {', '.join(problems)}",
            hint=RESCAN,
        )


def load_scan(scan_dir: Path) -> tuple[pa.Table, ScanMeta]:
    """Read a scan folder's table and metadata, with a clear error if it is not one, or not
    as the scan wrote it (see the module docstring)."""
    images = scan_dir / IMAGES_FILE
    if not images.exists() or not (scan_dir / META_FILE).exists():
        raise InputError(
            f"{scan_dir}: not a datagate scan (expected {IMAGES_FILE} and {META_FILE})",
            hint="run `datagate scan PATH` first, or pass the folder it wrote to",
        )
    meta = load_meta(scan_dir)
    _check_versions(scan_dir, meta)
    recorded = meta["counts"].get("table_sha256")
    if recorded is not None:
        try:
            found = file_sha256(images)
        except OSError as exc:
            raise InputError(f"{images}: scan table is unreadable: {exc}") from exc
        if found != recorded:
            raise InputError(
                f"{images}: the file changed after the scan (SHA-256 {found[:12]}…, "
                f"{META_FILE} records {recorded[:12]}…): it was edited, cut or replaced",
                hint=RESCAN,
            )
    try:
        table = pq.read_table(images)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{images}: scan table is unreadable: {exc}") from exc
    pa.default_memory_pool().release_unused()  # the decoding buffers, back to the system
    version = (table.schema.metadata or {}).get(b"datagate.schema_version", b"?").decode()
    if version != str(SCHEMA_VERSION):
        raise InputError(
            f"{images}: scan table schema version {version[:40]}, this datagate reads "
            f"version {SCHEMA_VERSION}",
            hint="re-run `datagate scan` with this version of datagate",
        )
    _check_table(images, table, meta)
    return table, meta


def value_codes(column: pa.Array | pa.ChunkedArray) -> tuple[list[Any], np.ndarray[Any, Any]]:
    """A column of few distinct values as those values (Python objects, in order of first
    appearance, a null among them where there are nulls) and each row's position among them
    (int64): Arrow's dictionary encoding, no Python object per row."""
    encoded = pc.dictionary_encode(
        column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column,
        null_encoding="encode",
    )
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return encoded.dictionary.to_pylist(), codes


#: rows of ``embeddings.parquet`` decoded at a time
EMBEDDING_BATCH = 16_384


@dataclass(frozen=True)
class Embeddings:
    """A scan's vectors: ``keys[i]`` has ``vectors[i]`` (unit length, float16)."""

    keys: np.ndarray[Any, np.dtype[np.object_]]
    vectors: np.ndarray[Any, np.dtype[np.float16]]
    embedder: str
    preprocessing: str


def load_embeddings(scan_dir: Path) -> Embeddings | None:
    """Read ``embeddings.parquet`` into numpy without per-row Python; None if absent."""
    path = scan_dir / EMBEDDINGS_FILE
    if not path.exists():
        return None
    try:
        # batch by batch into one array: never the whole column twice (Arrow and numpy).
        # Small batches on this thread: a page or two decoded at a time (at a million rows
        # 65,536-row batches held ~0.4 GB more at the peak, and took longer)
        source = pq.ParquetFile(path, pre_buffer=False)
        schema = source.schema_arrow
        dim = schema.field("embedding").type.list_size
        vectors = np.empty((source.metadata.num_rows, dim), dtype=np.float16)
        keys: list[Any] = []
        done = 0
        for batch in source.iter_batches(
            batch_size=EMBEDDING_BATCH, columns=["key", "embedding"], use_threads=False
        ):
            flat = batch.column("embedding").values.to_numpy(zero_copy_only=False)
            vectors[done : done + batch.num_rows] = flat.reshape(-1, dim)
            keys.append(batch.column("key").to_numpy(zero_copy_only=False))
            done += batch.num_rows
        del source
    except (pa.ArrowException, OSError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: unreadable: {exc}") from exc
    pa.default_memory_pool().release_unused()  # the decoding buffers, back to the system
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    return Embeddings(
        keys=np.concatenate(keys) if keys else np.empty(0, dtype=object),
        vectors=vectors[:done],
        embedder=meta.get("datagate.embedder", "?"),
        preprocessing=meta.get("datagate.preprocessing", "?"),
    )
