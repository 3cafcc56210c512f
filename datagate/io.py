"""File output: every file datagate writes appears whole or not at all, and one process at a
time writes an output folder (:func:`output_lock`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datagate.errors import InputError

#: The lock file inside an output folder while a command writes it (removed when it ends)
LOCK_FILE = ".datagate.lock"

#: rows per Parquet row group: readers of a page of a large manifest (datagate review)
#: decode only the groups that hold it
ROW_GROUP = 65_536

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs follow the umask
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_table(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)


def write_rows(
    path: Path,
    table: pa.Table,
    mask: np.ndarray[Any, np.dtype[np.bool_]],
    extra: Sequence[tuple[pa.Field, np.ndarray[Any, Any]]] = (),
) -> None:
    """Write the rows of ``table`` that ``mask`` selects, with ``extra`` columns (a field and
    a table-length array of Python values each), batch by batch: never a second copy of the
    table in memory. Atomic like :func:`write_table`."""
    schema = table.schema
    for field, _ in extra:
        schema = schema.append(field)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        offset = 0
        for batch in table.to_batches(max_chunksize=ROW_GROUP):
            chosen = mask[offset : offset + batch.num_rows]
            rows = np.flatnonzero(chosen) + offset
            offset += batch.num_rows
            if not rows.size:
                continue
            part = batch.filter(pa.array(chosen))
            for field, values in extra:
                part = part.append_column(field, pa.array(values[rows].tolist(), field.type))
            writer.write_batch(part, row_group_size=ROW_GROUP)
        if offset == 0 or not mask.any():
            writer.write_table(schema.empty_table())


def cannot_write(path: Path, exc: OSError) -> InputError:
    """An output path the operating system refuses, as the user's error (exit 2)."""
    if isinstance(exc, FileExistsError) and Path(exc.filename or path) == path:
        reason = "it exists and is not a folder"
    else:
        reason = exc.strerror or type(exc).__name__
        if exc.filename and Path(exc.filename) != path:
            reason += f" ({exc.filename})"
    return InputError(f"cannot write {path}: {reason}", hint="choose another output folder (--out)")


def output_dir(path: Path) -> Path:
    """Create ``path`` as an output folder (with its parents); exit 2 if it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    return path


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[Path]:
    """Hold ``path`` (created if needed) as this process's output folder.

    A second datagate process that tries to write the same folder gets an input error naming
    the holder (pid, host, command, since) instead of deleting the first one's work. The lock
    is an advisory ``flock`` on ``path/.datagate.lock``: the kernel releases it when its holder
    exits, even by SIGKILL, so a stale lock never needs clearing by hand. A folder this call
    created and that is still empty when it ends (the command failed early) is removed.
    """
    created = not path.exists()
    output_dir(path)
    lock = path / LOCK_FILE
    fd = _acquire(lock, path)
    try:
        yield path
    finally:
        # unlink while holding the lock: a process that opened the old file retries (_acquire)
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty


def _acquire(lock: Path, folder: Path) -> int:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): write without the lock
        fcntl = None  # type: ignore[assignment]
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise cannot_write(folder, exc) from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(
                f"{folder} is being written by another datagate process ({holder})",
                hint="wait for it to finish, or write somewhere else (--out)",
            ) from None
        except OSError as exc:  # a file system without locks
            os.close(fd)
            raise cannot_write(folder, exc) from None
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65_536, 0))
        return f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are not readable yet"
