"""Review queues: which rows of a gate's manifests a person should look at, and in what order.

Queues hold row numbers only. They are built from a few narrow columns (``origin``,
``detector_score``, ``rule_id``, ``reason_code``); a page of a queue reads the row groups that
hold its rows, and only the columns an item shows, so a 100k-image queue costs one integer
array, never the whole table in Python objects. No image is read here.

* **unknown** — kept images whose origin is unknown (or not measured): the ones a person's
  ``human``/``synthetic`` decision turns into evidence;
* **borderline** — kept images the detector decides (no definitive provenance), closest to
  the threshold of the head's calibration first (0.5 without one); absent without a detector;
* **rejected** — every rejected image, grouped by rule, with its rule and reason;
* **duplicates** — images rejected as semantic duplicates, each shown beside the image it
  duplicates (``duplicate_of``).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datagate.contract import KEPT, REJECTED
from datagate.curation.overrides import Override
from datagate.errors import InputError
from datagate.rules.checks import QUALITY_MEASURES

Rows = npt.NDArray[np.int64]

#: the most items one page of a queue may hold
MAX_PAGE = 200
DEFAULT_THRESHOLD = 0.5
SEMANTIC_DUPLICATE = "semantic_duplicate"
#: scores an item shows, in this order, when the manifest has them
SCORES = ("detector_score", "p_synthetic", *QUALITY_MEASURES)
#: the columns an item is built from (those a manifest lacks are left out)
DETAIL_COLUMNS = (
    "key",
    "shard",
    "member",
    "sha256",
    "error",
    "width",
    "height",
    "format",
    "origin",
    "origin_strength",
    "generator",
    "provenance_conflict",
    "evidence",
    "p_synthetic_source",
    *SCORES,
    "rule_id",
    "reason",
    "reason_code",
    "duplicate_of",
    "override",  # the reviewed decision the enforce run applied
    "source",  # scan | reserve (top-up)
    "added_for",
)
MAX_EVIDENCE = 12
MAX_TEXT = 400


class Manifest:
    """One Parquet manifest, read a column or a few row groups at a time, never whole."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"{path}: manifest is unreadable: {exc}",
                hint="run `datagate enforce` to write the gate's manifests",
            ) from None
        self.names = frozenset(self._file.schema_arrow.names)
        if not {"key", "shard", "member"} <= self.names:
            raise InputError(f"{path}: not a datagate manifest (no key, shard and member columns)")
        meta = self._file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.num_rows = int(meta.num_rows)
        self._starts: Rows = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(
            np.int64
        )
        self._columns: dict[str, Any] = {}
        self._lock = threading.Lock()

    def column(self, name: str) -> Any:
        """One whole column as an Arrow array (cached), or None when the manifest lacks it.

        Only for the narrow columns queues are built and looked up on."""
        if name not in self.names:
            return None
        with self._lock:
            if name not in self._columns:
                self._columns[name] = self._file.read(columns=[name]).column(0).combine_chunks()
            return self._columns[name]

    def rows(self, rows: Rows, columns: Iterable[str]) -> list[dict[str, Any]]:
        """Rows by number, in the given order, reading only the row groups that hold them."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.names]
        if not len(rows):
            return []
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        needed = np.unique(groups)
        sizes = np.diff(self._starts)[needed]
        # where each needed group starts in the table read back (groups concatenated)
        base = np.zeros(int(needed.max()) + 1, dtype=np.int64)
        base[needed] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        local = rows - self._starts[groups] + base[groups]
        with self._lock:
            table = self._file.read_row_groups(needed.tolist(), columns=wanted)
        result: list[dict[str, Any]] = table.take(pa.array(local)).to_pylist()
        return result

    def find(self, keys: Iterable[str]) -> dict[str, int]:
        """Row number of each of ``keys`` present in this manifest."""
        wanted = pa.array(list(keys), pa.string())
        if not len(wanted):
            return {}
        column = self.column("key")
        rows = np.flatnonzero(
            pc.is_in(column, value_set=wanted).to_numpy(zero_copy_only=False)
        ).astype(np.int64)
        found: list[str] = column.take(pa.array(rows)).to_pylist()
        return dict(zip(found, rows.tolist()))

    def stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Queue:
    name: str
    title: str
    about: str
    manifest: Manifest
    rows: Rows  # manifest row numbers, in review order

    @property
    def total(self) -> int:
        return len(self.rows)


def _strings(column: Any) -> Any:
    """A string column with nulls as empty strings (for comparisons that must not be null)."""
    return pc.fill_null(column, "")


def _mask(array: Any) -> npt.NDArray[np.bool_]:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def build_queues(kept: Manifest, rejected: Manifest, threshold: float) -> dict[str, Queue]:
    """Every queue the manifests support, in display order."""
    queues: dict[str, Queue] = {}
    origin = kept.column("origin")
    if origin is None:  # provenance not measured: every image's origin is unknown
        unknown: Rows = np.arange(kept.num_rows, dtype=np.int64)
    else:
        text = _strings(origin)
        unknown = np.flatnonzero(_mask(pc.or_(pc.equal(text, ""), pc.equal(text, "unknown"))))
    queues["unknown"] = Queue(
        "unknown",
        "Unknown origin",
        "kept images with no evidence of their origin: is each human-made or synthetic?",
        kept,
        unknown.astype(np.int64),
    )
    score = kept.column("detector_score")
    if score is not None:
        values = np.asarray(
            pc.fill_null(score.cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False)
        )
        scored = ~np.isnan(values)
        source = kept.column("p_synthetic_source")
        if source is not None:  # where provenance decided, the score does not matter
            scored &= ~_mask(pc.equal(_strings(source), "provenance"))
        candidates = np.flatnonzero(scored)
        order = np.argsort(np.abs(values[candidates] - threshold), kind="stable")
        queues["borderline"] = Queue(
            "borderline",
            "Borderline scores",
            f"kept images the detector decides, closest to its threshold ({threshold:.3g}) first",
            kept,
            candidates[order].astype(np.int64),
        )
    rule_id = rejected.column("rule_id")
    by_rule: Rows = (
        np.arange(rejected.num_rows, dtype=np.int64)
        if rule_id is None
        else np.asarray(pc.sort_indices(_strings(rule_id)).to_numpy(), dtype=np.int64)
    )
    queues["rejected"] = Queue(
        "rejected", "Rejected", "images a rule rejected, grouped by rule", rejected, by_rule
    )
    code = rejected.column("reason_code")
    duplicates: Rows = (
        np.zeros(0, dtype=np.int64)
        if code is None
        else np.flatnonzero(_mask(pc.equal(_strings(code), SEMANTIC_DUPLICATE))).astype(np.int64)
    )
    queues["duplicates"] = Queue(
        "duplicates",
        "Semantic duplicates",
        "images rejected as near-identical in meaning to a kept image, shown beside it",
        rejected,
        duplicates,
    )
    return queues


class Gate:
    """A gate folder's manifests, as they were when opened, and the queues built from them."""

    def __init__(self, gate_dir: Path, threshold: float | None) -> None:
        self.gate_dir = gate_dir
        self.check(gate_dir)
        self.kept = Manifest(gate_dir / KEPT, "kept")
        self.rejected = Manifest(gate_dir / REJECTED, "rejected")
        self.signature = (self.kept.stat(), self.rejected.stat())
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.queues = build_queues(self.kept, self.rejected, self.threshold)
        self._decided: tuple[int, dict[str, npt.NDArray[np.bool_]]] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def check(gate_dir: Path) -> None:
        """An input error unless ``gate_dir`` holds the manifests ``enforce`` writes."""
        for name in (KEPT, REJECTED):
            if not (gate_dir / name).exists():
                raise InputError(
                    f"{gate_dir}: no {name} (not a folder `datagate enforce` wrote)",
                    hint="run `datagate enforce` first, and pass the folder it wrote to "
                    "(--out, default beside the scan)",
                )

    def changed(self) -> bool:
        """Whether either manifest was rewritten (``enforce`` re-run) since this was opened."""
        try:
            return (self.kept.stat(), self.rejected.stat()) != self.signature
        except OSError:
            return True

    def locate(self, key: str) -> tuple[Manifest, int] | None:
        """The manifest and row of an image key, or None when neither manifest holds it."""
        for manifest in (self.kept, self.rejected):
            row = manifest.find([key]).get(key)
            if row is not None:
                return manifest, row
        return None

    # ------------------------------------------------------------------ decided / progress

    def _decided_masks(self, decided: Any, version: int) -> dict[str, npt.NDArray[np.bool_]]:
        """Per manifest, which rows' images have a decision in force (cached per version)."""
        with self._lock:
            if self._decided is None or self._decided[0] != version:
                masks = {}
                for manifest in (self.kept, self.rejected):
                    sha = manifest.column("sha256")
                    masks[manifest.source] = (
                        np.zeros(manifest.num_rows, dtype=bool)
                        if sha is None
                        else _mask(pc.fill_null(pc.is_in(sha, value_set=decided), False))
                    )
                self._decided = (version, masks)
            return self._decided[1]

    def progress(self, decided: Any, version: int) -> dict[str, int]:
        """How many items of each queue have a decision in force."""
        masks = self._decided_masks(decided, version)
        return {
            name: int(masks[q.manifest.source][q.rows].sum()) for name, q in self.queues.items()
        }

    def next_undecided(self, name: str, start: int, decided: Any, version: int) -> int | None:
        """The first position at or after ``start`` (wrapping) still to be decided."""
        queue = self.queues[name]
        todo = ~self._decided_masks(decided, version)[queue.manifest.source][queue.rows]
        sha = queue.manifest.column("sha256")
        if sha is not None:  # an unreadable file has no content key and cannot be decided
            todo &= _mask(pc.is_valid(sha.take(pa.array(queue.rows))))
        positions = np.flatnonzero(todo)
        if not len(positions):
            return None
        after = positions[positions >= start]
        return int(after[0] if len(after) else positions[0])

    # ------------------------------------------------------------------ pages

    def page(
        self, name: str, offset: int, limit: int, decisions: Mapping[str, Override]
    ) -> list[dict[str, Any]]:
        """Items ``offset`` to ``offset + limit`` of a queue, each beside its original when it
        is a duplicate."""
        queue = self.queues[name]
        limit = max(0, min(limit, MAX_PAGE))
        rows = queue.rows[offset : offset + limit]
        items = [
            item(row, queue.manifest.source, decisions, offset + i)
            for i, row in enumerate(queue.manifest.rows(rows, DETAIL_COLUMNS))
        ]
        originals = {i["duplicate_of"] for i in items if i.get("duplicate_of")}
        if originals:
            found: dict[str, dict[str, Any]] = {}
            for manifest in (self.kept, self.rejected):
                where = manifest.find(originals - set(found))
                ordered = sorted(where.items(), key=lambda kv: kv[1])
                rows_found = np.array([r for _, r in ordered], dtype=np.int64)
                for row in manifest.rows(rows_found, DETAIL_COLUMNS):
                    found[row["key"]] = item(row, manifest.source, decisions, None)
            for entry in items:
                dup = entry.get("duplicate_of")
                if dup:
                    entry["original"] = found.get(dup) or {"key": dup, "missing": True}
        return items


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return float(f"{value:.4g}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def evidence_lines(evidence: str | None) -> list[str]:
    """The ``evidence`` JSON column as short lines: ``source: says (strength) — detail``."""
    if not evidence:
        return []
    try:
        entries = json.loads(evidence)
    except ValueError:
        return [f"unreadable evidence: {_text(evidence)}"]
    if not isinstance(entries, list):
        return [str(_text(json.dumps(entries)))]
    lines = []
    for e in entries[:MAX_EVIDENCE]:
        if not isinstance(e, dict):
            lines.append(str(_text(json.dumps(e))))
            continue
        line = f"{e.get('source', '?')}: {e.get('says') or 'no claim'} ({e.get('strength', '?')})"
        if e.get("detail"):
            line += f" — {e['detail']}"
        if e.get("error"):
            line += " [could not be read]"
        lines.append(str(_text(line)))
    if len(entries) > MAX_EVIDENCE:
        lines.append(f"… and {len(entries) - MAX_EVIDENCE} more")
    return lines


def item(
    row: Mapping[str, Any], source: str, decisions: Mapping[str, Override], position: int | None
) -> dict[str, Any]:
    """What the page shows of one manifest row (every value plain JSON, text bounded)."""
    sha = row.get("sha256")
    decided = decisions.get(sha) if sha else None
    width, height = row.get("width"), row.get("height")
    size = f"{width} x {height}" if width and height else None
    if size and row.get("format"):
        size += f" {row['format']}"
    return {
        "position": position,
        "key": row["key"],
        "sha256": sha,
        "source": source,
        "shard": _text(row.get("shard")),
        "member": _text(row.get("member")),
        "error": _text(row.get("error")),
        "size": size,
        "origin": row.get("origin") or "unknown",
        "origin_strength": row.get("origin_strength"),
        "generator": _text(row.get("generator")),
        "conflict": bool(row.get("provenance_conflict")),
        "evidence": evidence_lines(row.get("evidence")),
        "detector_source": row.get("p_synthetic_source"),
        "scores": [
            [name, value] for name in SCORES if (value := _number(row.get(name))) is not None
        ],
        "rule_id": row.get("rule_id"),
        "reason": _text(row.get("reason")),
        "reason_code": row.get("reason_code"),
        "duplicate_of": row.get("duplicate_of"),
        "applied": row.get("override"),
        "reserve": (row.get("added_for") or "top-up") if row.get("source") == "reserve" else None,
        "decision": asdict(decided) if decided else None,
    }
