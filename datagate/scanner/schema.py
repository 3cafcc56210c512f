"""The scan table's explicit, versioned schema.

``images.parquet`` has the identity columns below followed by each signal's columns in
registry order. The schema version and the signal versions are stored in the Parquet
file's key-value metadata (``datagate.schema_version``, ``datagate.signals``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from datagate.scanner.signals import SIGNALS

SCHEMA_VERSION = 1

IDENTITY_FIELDS: tuple[pa.Field, ...] = (
    pa.field("key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("member", pa.string(), nullable=False),
    pa.field("reader", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("meta", pa.string()),  # sidecar / Parquet metadata as a JSON object
)


def signal_versions(names: Sequence[str]) -> dict[str, int]:
    return {name: SIGNALS[name].version for name in names}


#: Appended when the scan applies a detector head (``datagate scan --detector``).
DETECTOR_FIELDS: tuple[pa.Field, ...] = (
    pa.field("detector_score", pa.float32()),  # the head's calibrated P(synthetic)
    pa.field("p_synthetic", pa.float32()),  # after definitive provenance (1.0 / 0.0)
    pa.field("p_synthetic_source", pa.string()),  # provenance | detector | None
)


def images_schema(signal_names: Sequence[str], detector: str | None = None) -> pa.Schema:
    """The scan table's schema; ``detector`` is the id of the head the scan applied."""
    fields = list(IDENTITY_FIELDS)
    for name in signal_names:
        fields.extend(SIGNALS[name].fields)
    metadata = {
        "datagate.schema_version": str(SCHEMA_VERSION),
        "datagate.signals": json.dumps(signal_versions(signal_names), sort_keys=True),
    }
    if detector is not None:
        fields.extend(DETECTOR_FIELDS)
        metadata["datagate.detector"] = detector
    return pa.schema(fields, metadata=metadata)


def describe(schema: pa.Schema) -> str:
    """A stable text rendering of a schema (used for golden-file tests)."""
    lines = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in schema]
    for key, value in sorted((schema.metadata or {}).items()):
        lines.append(f"# {key.decode()} = {value.decode()}")
    return "\n".join(lines) + "\n"


#: How ``embeddings.parquet`` is written: no dictionary (vectors never repeat a value often
#: enough to pay for one: reading a million dictionary-encoded float16 vectors took 15 s
#: of CPU, plain 4.5 s) and the float16 bytes split by stream, which zstd compresses
#: better (~10 % smaller).
EMBEDDINGS_WRITE = {
    "compression": "zstd",
    "use_dictionary": False,
    "column_encoding": {"embedding.list.element": "BYTE_STREAM_SPLIT"},
}


def embeddings_schema(
    dim: int, embedder: str, preprocessing: str, scored: bool = False
) -> pa.Schema:
    """``embeddings.parquet``: one unit-length float16 vector per decodable image.

    ``scored``: the scan's parts also carry the detector head's score of each vector
    (merged into ``images.parquet``; ``embeddings.parquet`` itself holds vectors only).
    """
    score = [pa.field("detector_score", pa.float32())] if scored else []
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float16(), dim), nullable=False),
            *score,
        ],
        metadata={
            "datagate.schema_version": str(SCHEMA_VERSION),
            "datagate.embedder": embedder,
            "datagate.preprocessing": preprocessing,
        },
    )
