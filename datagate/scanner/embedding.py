"""The scan's embedding stage: vectors by content from the cache, the model for the rest.

Workers hand back each image's vector when the embedder is weight-free and ran there
(:func:`datagate.embed.models.worker_embedder`), else its embedder input already computed
(pixels prepared to the model's input size, or a feature embedder's features); this stage
(in the process that holds the model) looks vectors up by image SHA-256 in the cache store,
runs the embedder in batches on the inputs of the rest, and, with a detector head, scores
each vector in the same pass. The scores are merged into ``images.parquet`` by
:func:`attach_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datagate.contract import DetectorInfo, EmbedderInfo
from datagate.io import write_table
from datagate.scanner.compute import ChunkResult
from datagate.scanner.schema import embeddings_schema

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder
    from datagate.scanner.cache import Store


class EmbedStage:
    """Vectors for chunks: cached ones by SHA-256, the model for the rest."""

    def __init__(
        self,
        embedder: Embedder,
        store: Store | None,
        batch_size: int,
        head: Head | None = None,
    ) -> None:
        from datagate.embed.models import cache_key

        self.embedder, self.store, self.batch_size = embedder, store, max(1, batch_size)
        self.model_key = cache_key(embedder)
        self.head = head
        self.computed = 0

    def vectors(
        self,
        digests: list[bytes],
        pixels: Sequence[np.ndarray[Any, Any] | None] | np.ndarray[Any, Any],
    ) -> tuple[np.ndarray[Any, np.dtype[np.float16]], np.ndarray[Any, np.dtype[np.bool_]]]:
        """(vectors, found): ``found[i]`` is False where neither cache nor pixels had one.

        ``pixels[i]``: the image's uint8 embedder input, its float32 vector when a worker
        embedded it (:class:`~datagate.scanner.compute.ChunkResult`), or None; or ``pixels``
        is one float32 array of every image's vector.
        """
        dim = self.embedder.dim
        out = np.zeros((len(digests), dim), dtype=np.float16)
        found = np.zeros(len(digests), dtype=bool)
        if not digests:
            return out, found
        store = self.store if self.store is not None and self.store.usable else None
        known = store.get_vectors(self.model_key, dim, digests) if store is not None else {}
        first: dict[bytes, int] = {}
        for i, digest in enumerate(digests):
            if digest not in known and pixels[i] is not None:
                first.setdefault(digest, i)  # duplicate bytes in a chunk: computed once
        todo = list(first.values())
        fresh: dict[bytes, np.ndarray[Any, Any]] = {}
        ready = [i for i in todo if _is_vector(pixels[i])]
        if ready:
            if isinstance(pixels, np.ndarray):  # a worker's vectors, as one buffer
                batch = pixels[ready]
            else:
                batch = np.stack([pixels[i] for i in ready])  # type: ignore[misc]
            fresh.update({digests[i]: v for i, v in zip(ready, batch.astype(np.float16))})
        inputs = [i for i in todo if not _is_vector(pixels[i])]
        for start in range(0, len(inputs), self.batch_size):
            rows = inputs[start : start + self.batch_size]
            batch = self.embedder.embed(np.stack([pixels[i] for i in rows]))  # type: ignore[misc]
            fresh.update({digests[i]: v for i, v in zip(rows, batch.astype(np.float16))})
        self.computed += len(todo)
        if store is not None:
            store.put_vectors(self.model_key, fresh)
        for i, digest in enumerate(digests):
            vector = known.get(digest)
            if vector is None:
                vector = fresh.get(digest)
            if vector is not None:
                out[i], found[i] = vector, True
        return out, found

    def write(self, result: ChunkResult, path: Path) -> None:
        """Write a chunk's vectors (and, with a head, their scores: the same forward pass).

        An image whose vector was cached when its worker looked but is gone now (a prune in
        between) is left out of the embeddings, as an image that could not be embedded.
        """
        vectors, found = self.vectors(result.digests, result.pixels)
        keys = [k for k, ok in zip(result.keys, found) if ok]
        vectors = vectors[found]
        scores = None
        if self.head is not None:
            scores = self.head.proba(vectors.astype(np.float32)).astype(np.float32)
        write_table(path, embeddings_table(keys, vectors, self.embedder, scores))

    def info(self) -> EmbedderInfo:
        """What meta.json records of the embedder: identity, and how much was computed."""
        store = self.store
        return {
            "id": self.embedder.id,
            "dim": self.embedder.dim,
            "preprocessing": asdict(self.embedder.preprocessing),
            "device": self.embedder.device,
            "computed": self.computed,
            "cache": None if store is None or not store.usable else str(store.path),
            "cache_hits": 0 if store is None else store.vector_hits,
        }


def _is_vector(value: np.ndarray[Any, Any] | None) -> bool:
    """A finished vector (float32, from a worker) rather than an embedder input (uint8)."""
    return value is not None and value.dtype == np.float32


def detector_info(head: Head) -> DetectorInfo:
    """What meta.json records of the detector head (enforce reads the calibration here)."""
    return {
        "id": head.id,
        "embedder": head.embedder,
        "preprocessing": head.preprocessing,
        "model": head.model,
        "calibration": asdict(head.calibration),
        "training": head.training,
    }


def embeddings_table(
    keys: Sequence[str],
    vectors: np.ndarray[Any, Any],
    embedder: Embedder,
    scores: np.ndarray[Any, Any] | None = None,
) -> pa.Table:
    schema = embeddings_schema(
        embedder.dim, embedder.id, embedder.preprocessing.id, scored=scores is not None
    )
    flat = _from_numpy(np.asarray(vectors, dtype=np.float16).ravel(), pa.float16())
    column = pa.FixedSizeListArray.from_arrays(flat, embedder.dim)
    arrays = [_strings(keys), column]
    if scores is not None:
        arrays.append(_from_numpy(np.asarray(scores, dtype=np.float32), pa.float32()))
    return pa.Table.from_arrays(arrays, schema=schema)


# ``pa.array`` imports pandas (half a second of the scan process's CPU, for an embeddings
# part): these build the same arrays from buffers.


def _from_numpy(values: np.ndarray[Any, Any], type_: pa.DataType) -> pa.Array:
    """A null-free Arrow array sharing a 1-D numpy array's buffer."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _strings(values: Sequence[str]) -> pa.Array:
    """``pa.array(values, pa.string())`` for non-null strings."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def attach_scores(
    table: pa.Table, keys: np.ndarray[Any, Any], scores: np.ndarray[Any, Any], schema: pa.Schema
) -> pa.Table:
    """Append the detector columns to scan rows: ``scores[i]`` belongs to ``keys[i]``.

    The result has ``schema``. ``p_synthetic`` is the head's score unless the row's
    provenance verdict is definitive, which then decides (1.0 synthetic, 0.0 human);
    ``p_synthetic_source`` says which.
    """
    n = table.num_rows
    index = {k: i for i, k in enumerate(np.asarray(keys).tolist())}
    score = np.full(n, np.nan, dtype=np.float32)
    for row, key in enumerate(table.column("key").to_pylist()):
        at = index.get(key)
        if at is not None:
            score[row] = scores[at]
    final = score.copy()
    source = np.full(n, None, dtype=object)
    source[~np.isnan(score)] = "detector"
    if "origin" in table.column_names:
        origin = np.asarray(table.column("origin").to_pylist(), dtype=object)
        strength = np.asarray(table.column("origin_strength").to_pylist(), dtype=object)
        definitive = (strength == "definitive") & np.isin(origin, ["human", "synthetic"])
        final[definitive] = (origin[definitive] == "synthetic").astype(np.float32)
        source[definitive] = "provenance"
    columns = {
        "detector_score": pa.array(score, pa.float32(), mask=np.isnan(score)),
        "p_synthetic": pa.array(final, pa.float32(), mask=np.isnan(final)),
        "p_synthetic_source": pa.array(source.tolist(), pa.string()),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table.cast(schema)  # ``images_schema(signals, detector_id)``
