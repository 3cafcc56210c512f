"""Generations from lineage: a generator recorded in the ledger as trained on dataset versions
makes images of generation 1 + the highest generation kept in those versions.

Human-made images are generation 0; a synthetic image whose generator the ledger does not
know keeps what the scan says (a stated generation, else unknown). The ledger's record wins
over a generation stated in the image's metadata: it is signed, the metadata is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from datagate.ledger.chain import Entry, Ledger, LedgerError

GENERATION = "generation"
SOURCE = "generation_source"


def kept_generations(table: pa.Table, kept: np.ndarray[Any, np.dtype[np.bool_]]) -> dict[str, Any]:
    """The generation mix of the kept rows and its highest known generation."""
    if GENERATION in table.column_names:
        values = table.column(GENERATION).to_pylist()
    else:
        values = [None] * table.num_rows
    chosen = [v for v, k in zip(values, kept.tolist()) if k]
    counts: dict[str, int] = {}
    for v in chosen:
        name = "unknown" if v is None else str(int(v))
        counts[name] = counts.get(name, 0) + 1
    known = [int(v) for v in chosen if v is not None]
    ordered = dict(sorted(counts.items(), key=lambda kv: (kv[0] == "unknown", kv[0].zfill(6))))
    return {"kept": ordered, "max_kept": max(known) if known else None}


def model_generation(runs: list[Entry]) -> int | None:
    """1 + the highest generation kept in the training runs; None when none is known."""
    highest = [
        r.payload.get("generations", {}).get("max_kept")
        for r in runs
        if r.payload.get("generations", {}).get("max_kept") is not None
    ]
    return 1 + max(int(h) for h in highest) if highest else None


def training_runs(ledger: Ledger, refs: list[str]) -> list[Entry]:
    """The run entries named by ``refs`` (numbers or hash prefixes); models are refused."""
    if not refs:
        raise LedgerError("--trained-on: name at least one dataset version (a run entry)")
    runs = []
    for ref in refs:
        entry = ledger.resolve(ref)
        if entry.kind != "run":
            raise LedgerError(
                f"--trained-on {ref}: entry {entry.ref} records a model, not a dataset version",
                hint="`datagate ledger show` lists the run entries",
            )
        runs.append(entry)
    return runs


def apply_lineage(table: pa.Table, ledger: Ledger | None) -> tuple[pa.Table, dict[str, Any]]:
    """Set the generation of every row made by a generator the ledger records.

    Returns the table (its ``generation`` and ``generation_source`` columns updated) and a
    summary for the report: per recorded model, its entry, generation and images matched."""
    models = ledger.models() if ledger is not None else {}
    if not models or "generator" not in table.column_names:
        return table, {"models": {}, "images": 0}
    n = table.num_rows
    generator = table.column("generator").to_pylist()
    gen = table.column(GENERATION).to_pylist() if GENERATION in table.column_names else [None] * n
    source = table.column(SOURCE).to_pylist() if SOURCE in table.column_names else [None] * n
    summary: dict[str, Any] = {}
    changed = 0
    for row, name in enumerate(generator):
        entry = models.get(str(name).strip().lower()) if name else None
        if entry is None:
            continue
        generation = entry.payload.get("generation")
        info = summary.setdefault(
            str(entry.payload["name"]),
            {"entry": entry.seq, "generation": generation, "images": 0},
        )
        info["images"] += 1
        if generation is None:  # trained on data of unknown generation: the scan's view stands
            continue
        gen[row] = int(generation)
        source[row] = f"ledger: model {entry.payload['name']} (entry {entry.ref})"
        changed += 1
    table = _replace(table, pa.field(GENERATION, pa.int32()), pa.array(gen, pa.int32()))
    table = _replace(table, pa.field(SOURCE, pa.string()), pa.array(source, pa.string()))
    return table, {"models": summary, "images": changed}


def _replace(table: pa.Table, field: pa.Field, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(field.name)
    if i < 0:
        return table.append_column(field, values)
    return table.set_column(i, table.schema.field(i), values.cast(table.schema.field(i).type))
