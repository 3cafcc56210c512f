"""The report galleries: which images to show, and their thumbnails read back from the
shards a scan recorded.

Only the few images a report shows are read again (never extracted to disk), each through
the same bounded decoder as the scan, shrunk to a small JPEG and inlined as a data URI, so a
report stays one self-contained file of bounded size. Images whose shard moved or vanished
are shown as missing, never an error.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagate.contract import Report, ScanMeta, value_codes
from datagate.errors import InputError
from datagate.rules.checks import QUALITY_MEASURES
from datagate.scanner.compute import read_record
from datagate.scanner.decode import DecodeError, decode
from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers import reopen

THUMB_PX = 112
THUMB_QUALITY = 70


def thumbnail(data: bytes) -> str | None:
    """A data-URI JPEG thumbnail, or None when the bytes do not decode."""
    try:
        image = decode(data, analysis_size=THUMB_PX).image
    except DecodeError:
        return None
    image.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_thumbnails(
    scan_meta: ScanMeta | None, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """Thumbnails for (shard, member) pairs, reading each shard at most once."""
    wanted: dict[str, set[str]] = {}
    for shard, member in keys:
        wanted.setdefault(shard, set()).add(member)
    shards: dict[str, Any] = {s["id"]: s for s in scan_meta["shards"]} if scan_meta else {}
    image_column = scan_meta["config"].get("image_column") if scan_meta else None
    found: dict[tuple[str, str], str | None] = {}
    for shard_id, members in wanted.items():
        info = shards.get(shard_id, {})
        path = Path(info["path"]) if info.get("path") else None
        for member, data in _read(info.get("kind"), shard_id, path, members, image_column):
            found[(shard_id, member)] = thumbnail(data) if data else None
        for member in members:
            found.setdefault((shard_id, member), None)
    return found


def _read(
    kind: str | None, shard_id: str, path: Path | None, members: set[str], image_column: str | None
) -> Iterable[tuple[str, bytes | None]]:
    if kind is None or path is None or not path.exists():
        return
    remaining = set(members)
    try:
        for record in reopen(kind, shard_id, path, list(members), image_column).records():
            if record.member in remaining:
                remaining.discard(record.member)
                data, _ = read_record(record, DEFAULT_MAX_BYTES)
                yield record.member, data
                if not remaining:
                    break
    except (InputError, OSError):
        return


GALLERY_SIZE = 12
DUPLICATE_PAIRS = 8
QUALITY_KEYS = QUALITY_MEASURES
#: A kept image is borderline when a quality measure is within this fraction of a bound's
#: magnitude from it (brightness max 0.98: 0.882 and up; blur min 20: up to 22).
BORDERLINE_MARGIN = 0.10


def select_galleries(
    report: Report, kept: pa.Table, rejected: pa.Table, scan_meta: ScanMeta | None
) -> dict[str, list[dict[str, Any]]]:
    """Pick the images the HTML report shows and load their thumbnails (bounded count)."""
    # rejected: round-robin over the rules, so every rule that fired is shown; only the
    # first few rows of each rule become Python objects (a million rows would not)
    by_rule: dict[str, list[dict[str, Any]]] = {}
    if rejected.num_rows:
        rules, codes = value_codes(rejected.column("rule_id"))  # in order of first appearance
        firsts = [np.flatnonzero(codes == c)[:GALLERY_SIZE] for c in range(len(rules))]
        rows = rejected.select(["key", "shard", "member", "rule_id", "reason"]).take(
            pa.array(np.concatenate(firsts), pa.int64())
        )
        for row in rows.to_pylist():
            by_rule.setdefault(row["rule_id"], []).append(row)
    chosen: list[dict[str, Any]] = []
    while len(chosen) < GALLERY_SIZE and any(by_rule.values()):
        for listed in by_rule.values():
            if listed and len(chosen) < GALLERY_SIZE:
                chosen.append(listed.pop(0))
    rejected_items = [
        {
            "key": r["key"],
            "shard": r["shard"],
            "member": r["member"],
            "caption": f"{r['rule_id']}: {r['reason']}",
        }
        for r in chosen
    ]
    # duplicates: dropped copy beside the kept original
    duplicates: list[dict[str, Any]] = []
    if "duplicate_of" in rejected.column_names and rejected.num_rows:
        of = rejected.column("duplicate_of")
        named = pc.fill_null(pc.and_(pc.is_valid(of), pc.not_equal(of, "")), False)
        first = np.flatnonzero(np.asarray(named.to_numpy(zero_copy_only=False)))
        dups = (
            rejected.select(["key", "shard", "member", "duplicate_of"])
            .take(pa.array(first[:DUPLICATE_PAIRS], pa.int64()))
            .to_pylist()
        )
        wanted = pa.array(sorted({r["duplicate_of"] for r in dups}), pa.string())
        originals = kept.select(["key", "shard", "member"]).filter(
            pc.is_in(kept.column("key"), value_set=wanted)
        )
        where = {r["key"]: r for r in originals.to_pylist()}
        for r in dups:
            original = where.get(r["duplicate_of"])
            if original is None:
                continue
            duplicates.append(
                {
                    "key": r["key"],
                    "shard": r["shard"],
                    "member": r["member"],
                    "caption": f"copy: {r['key']}",
                    "original": {**original, "caption": f"kept: {original['key']}"},
                }
            )
    borderline = _borderline(report, kept)
    items = [*rejected_items, *duplicates, *[d["original"] for d in duplicates], *borderline]
    thumbs = load_thumbnails(scan_meta, [(i["shard"], i["member"]) for i in items])
    for item in items:
        item["thumb"] = thumbs.get((item["shard"], item["member"]))
    return {"rejected": rejected_items, "duplicates": duplicates, "borderline": borderline}


def _borderline(report: Report, kept: pa.Table) -> list[dict[str, Any]]:
    """Kept images within :data:`BORDERLINE_MARGIN` of a quality bound (relative to the
    bound), closest first; none when no kept image is that close."""
    bounds: list[tuple[str, float]] = []
    for rule in report["rules"]:  # every {min, max} bound on a quality measure
        for name in QUALITY_KEYS:
            for side in ("min", "max"):
                limit = (rule["params"].get(name) or {}).get(side)
                if limit is not None and name in kept.column_names:
                    bounds.append((name, float(limit)))
    if not bounds or kept.num_rows == 0:
        return []
    margin = np.full(kept.num_rows, np.inf)
    which = np.full(kept.num_rows, -1, dtype=np.int64)  # the closest bound of each row
    columns = {}
    for b, (name, limit) in enumerate(bounds):
        values = np.asarray(kept.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        columns[name] = values
        rel = np.abs(values - limit) / max(abs(limit), 1e-6)
        closer = np.nan_to_num(rel, nan=np.inf) < margin
        margin[closer] = rel[closer]
        which[closer] = b
    close = np.flatnonzero(margin <= BORDERLINE_MARGIN)
    order = close[np.argsort(margin[close], kind="stable")][:GALLERY_SIZE]
    rows = kept.select(["key", "shard", "member"]).take(pa.array(order)).to_pylist()
    out = []
    for r, i in zip(rows, order.tolist()):
        if np.isfinite(margin[i]):
            name, limit = bounds[which[i]]
            caption = f"{name} {columns[name][i]:.3g} (bound {limit:g})"
            out.append({**r, "caption": f"{caption}: {r['key']}"})
    return out
