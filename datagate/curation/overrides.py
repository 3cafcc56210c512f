"""Overrides: what a person decided about an image, keyed by its content (sha256).

An overrides file is JSON Lines, one decision per line::

    {"sha256": "9f2c…", "decision": "human", "reviewer": "ana",
     "time": "2026-12-02T10:00:00Z", "note": "my photo"}

(one line each in the file).

``decision`` is ``human`` or ``synthetic`` (the image's origin, as evidence of its own:
source ``review``), ``keep`` (no per-image rule rejects it) or ``reject`` (dropped before the
rules). Keyed by sha256, a decision survives renames and re-sharding. When several lines
name the same image the latest line wins and the conflict is reported. A malformed line is
an error naming its line number, never skipped. Lines are appended one write at a time
(``O_APPEND`` and fsync), so a killed writer loses nothing already written; a final line
without its newline (a write cut short) is reported as malformed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datagate.errors import InputError

DECISIONS = ("human", "synthetic", "keep", "reject")
ORIGIN_DECISIONS = ("human", "synthetic")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: the overrides file a data repository commits (the pre-commit hook reads it when present)
DEFAULT_FILE = "datagate-overrides.jsonl"


@dataclass(frozen=True)
class Override:
    sha256: str
    decision: str
    reviewer: str = ""
    time: str = ""
    note: str = ""

    def line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


@dataclass
class Overrides:
    """The decisions in force (latest per image) and the images decided more than once."""

    source: str | None = None
    by_sha: dict[str, Override] = field(default_factory=dict)
    lines: int = 0
    #: sha256 -> every decision made, in file order, when they disagree
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_sha)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_line(text: str, where: str) -> Override:
    """One line as an Override, or an InputError saying what is wrong where."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not a JSON object: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"sha256", "decision", "reviewer", "time", "note"})
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {unknown} (expected sha256, decision, reviewer, time, note)"
        )
    sha = data.get("sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise InputError(f"{where}: sha256: expected 64 lowercase hex digits, got {sha!r:.80}")
    decision = data.get("decision")
    if decision not in DECISIONS:
        raise InputError(
            f"{where}: decision: expected one of {', '.join(DECISIONS)}, got {decision!r:.40}"
        )
    texts = {}
    for key in ("reviewer", "time", "note"):
        value = data.get(key, "")
        if not isinstance(value, str):
            raise InputError(f"{where}: {key}: expected a string, got {type(value).__name__}")
        texts[key] = value
    return Override(sha, decision, **texts)


def read_overrides(path: Path) -> Overrides:
    """Read an overrides file; a missing file is an input error (the user named it)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read overrides: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: overrides are not UTF-8 (byte {exc.start})") from None
    found = Overrides(source=str(path))
    history: dict[str, list[str]] = {}
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not text.endswith("\n"):
            raise InputError(
                f"{path}:{number}: the last line is incomplete (no newline: a write cut short?)",
                hint="finish or delete that line",
            )
        override = parse_line(line, f"{path}:{number}")
        found.by_sha[override.sha256] = override  # the latest line wins
        history.setdefault(override.sha256, []).append(override.decision)
        found.lines += 1
    found.conflicts = {s: d for s, d in history.items() if len(set(d)) > 1}
    return found


def append_override(path: Path, override: Override) -> None:
    """Append one decision durably: a single O_APPEND write of the whole line, then fsync."""
    data = (override.line() + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def summary(overrides: Overrides, applied: dict[str, int]) -> dict[str, Any]:
    """What report.json records of the overrides applied."""
    return {
        "source": overrides.source,
        "decisions": len(overrides),
        "lines": overrides.lines,
        "applied": applied,
        "conflicts": [
            {"sha256": sha, "decisions": decisions, "in_force": overrides.by_sha[sha].decision}
            for sha, decisions in sorted(overrides.conflicts.items())
        ],
    }
