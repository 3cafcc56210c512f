"""The overrides file as a review server writes it: one durable append per decision, and an
undo that only ever removes a line this server wrote.

Each decision is one :func:`~datagate.curation.overrides.append_override` (a single
``O_APPEND`` write, then fsync) made before the HTTP response returns, so a killed server
loses nothing already clicked. Undo truncates the file back to its size before this
server's last append, and refuses when the file has changed since (another writer appended,
or the line is no longer the one written) rather than remove someone else's line. What is in
force is re-read whenever the file changes underneath (another reviewer on the same file).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from datagate.curation.overrides import (
    DECISIONS,
    Override,
    Overrides,
    append_override,
    now,
    parse_line,
    read_overrides,
)
from datagate.errors import InputError


class Refused(Exception):
    """A decision or undo that was not made; the message says why (shown to the reviewer)."""


@dataclass(frozen=True)
class _Appended:
    override: Override
    start: int  # file size before the line
    data: bytes  # the line as written

    @property
    def end(self) -> int:
        return self.start + len(self.data)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class DecisionLog:
    """The decisions in force in one overrides file, and this server's appends to it."""

    def __init__(self, path: Path, reviewer: str = "") -> None:
        self.path = path
        self.reviewer = reviewer
        self.version = 0
        self._lock = threading.Lock()
        self._appended: list[_Appended] = []
        self._overrides = Overrides(source=str(path))
        self._signature: tuple[int, int, int] | None = None
        self._decided: Any = pa.array([], pa.string())
        self._load()

    def _load(self) -> None:
        """(Re-)read the file: a malformed file is an input error naming the bad line."""
        signature = _signature(self.path)
        found = read_overrides(self.path) if signature else Overrides(source=str(self.path))
        self._overrides, self._signature = found, signature
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._decided = pa.array(sorted(self._overrides.by_sha), pa.string())

    def _fresh(self) -> None:
        if _signature(self.path) != self._signature:
            try:
                self._load()
            except InputError as exc:
                raise Refused(str(exc)) from None

    def state(self) -> tuple[dict[str, Override], Any, int]:
        """The decisions in force (by sha256), the same as an Arrow array, and their version."""
        with self._lock:
            self._fresh()
            return dict(self._overrides.by_sha), self._decided, self.version

    def record(self, sha256: str, decision: str, note: str = "") -> Override:
        """Append one decision durably and put it in force."""
        if decision not in DECISIONS:
            raise Refused(f"unknown decision {decision!r} (expected one of {', '.join(DECISIONS)})")
        override = Override(sha256, decision, self.reviewer, now(), note)
        try:  # never write a line that reading the file back would refuse
            parse_line(override.line(), "decision")
        except InputError as exc:
            raise Refused(str(exc)) from None
        data = (override.line() + "\n").encode("utf-8")
        with self._lock:
            self._fresh()
            before = self._signature[1] if self._signature else 0
            append_override(self.path, override)
            signature = _signature(self.path)
            assert signature is not None
            # the file's size now, less this line: the size to truncate back to on undo (if
            # another writer appended in between, undo sees the line is not ours and refuses)
            self._appended.append(_Appended(override, signature[1] - len(data), data))
            if signature[1] == before + len(data):
                self._signature = signature
                self._overrides.by_sha[sha256] = override
                self._overrides.lines += 1
                self._changed()
            else:  # someone else wrote too: read what is in force now
                self._signature = None
                with contextlib.suppress(Refused):  # written; a bad line of theirs shows later
                    self._fresh()
        return override

    def undo(self) -> tuple[Override, Override | None]:
        """Remove this server's last line; the decision undone and the one now in force."""
        with self._lock:
            if not self._appended:
                raise Refused("nothing to undo: no decision made by this server is left")
            last = self._appended[-1]
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                raise Refused(f"{self.path} is gone: nothing to undo") from None
            try:
                size = os.fstat(fd).st_size
                if size != last.end:
                    raise Refused(
                        f"{self.path} changed since that decision ({size - last.end:+,} bytes): "
                        "not undone, so as not to remove another writer's line"
                    )
                if os.pread(fd, len(last.data), last.start) != last.data:
                    raise Refused(
                        f"{self.path}: its last line is not the one this server wrote: not undone"
                    )
                os.ftruncate(fd, last.start)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._appended.pop()
            try:
                self._load()  # an earlier decision for the same image may be in force again
            except InputError as exc:
                raise Refused(str(exc)) from None
            return last.override, self._overrides.by_sha.get(last.override.sha256)

    @property
    def undoable(self) -> int:
        return len(self._appended)
