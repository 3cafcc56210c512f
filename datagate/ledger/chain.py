"""The ledger: an append-only, hash-chained, signed log of dataset versions, as plain files.

Layout of a ledger folder (``.datagate/ledger`` by default)::

    ledger.pub              the public key every signature here verifies with
    checkpoint.json         signed: how many entries, the last one's hash, the Merkle root
    entries/000001.json     one signed entry per gate run or model record
    runs/000001.parquet     a run's sha256 -> verdict index (its digest is in the entry)

Each entry carries the hash of the one before it and an ed25519 signature over its
canonical JSON; the checkpoint, signed after the entry is written, is the commit point. A
process killed between the two leaves an *uncommitted* entry: verification reports it and
the next append replaces it. Every write is atomic (:mod:`datagate.io`), so a reader never
sees half a file; an edit, deletion, insertion, reorder or truncation of committed entries
fails verification, naming the first bad entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from datagate.contract import file_sha256
from datagate.errors import InputError
from datagate.io import write_json, write_table, write_text
from datagate.ledger import keys, merkle

LEDGER_VERSION = 1
DEFAULT_LEDGER = Path(".datagate/ledger")
ENTRIES = "entries"
RUNS = "runs"
CHECKPOINT = "checkpoint.json"
LOCK = ".lock"
GENESIS = "0" * 64
ENTRY_DOMAIN = b"datagate.ledger.entry.v1\x00"
CHECKPOINT_DOMAIN = b"datagate.ledger.checkpoint.v1\x00"
_ENTRY_NAME = re.compile(r"^(\d{6,})\.json$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class LedgerError(InputError):
    """A ledger that does not verify, or a reference into it that does not resolve."""


def canonical(obj: Any) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def plain(obj: Any) -> Any:
    """``obj`` as JSON-native values (numpy scalars, paths... become JSON)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def entry_name(seq: int) -> str:
    return f"{seq:06d}.json"


def index_name(seq: int) -> str:
    return f"{RUNS}/{seq:06d}.parquet"


@dataclass(frozen=True)
class Entry:
    """One verified ledger entry: its position, hash and signed body."""

    seq: int
    hash: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def time(self) -> str:
        return str(self.body.get("time", ""))

    @property
    def payload(self) -> dict[str, Any]:
        value = self.body.get(self.kind)
        return value if isinstance(value, dict) else {}

    @property
    def ref(self) -> str:
        return f"#{self.seq}"


@dataclass
class Ledger:
    """A verified ledger: its committed entries in order, and what lies beyond the checkpoint."""

    dir: Path
    public: Ed25519PublicKey
    entries: list[Entry]
    checkpoint: dict[str, Any]
    uncommitted: list[int] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.entries[-1].hash if self.entries else GENESIS

    def resolve(self, ref: str) -> Entry:
        """An entry by number (``3``, ``#3``) or by a prefix (8+ hex digits) of its hash."""
        text = ref.strip().lstrip("#").lower()
        if text.isdigit() and len(text) < 8:
            seq = int(text)
            if 1 <= seq <= len(self.entries):
                return self.entries[seq - 1]
        elif _HEX.match(text):
            found = [e for e in self.entries if e.hash.startswith(text)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise LedgerError(f"{self.dir}: {ref!r} matches {len(found)} entries")
        raise LedgerError(
            f"{self.dir}: no entry {ref!r} (expected an entry number 1-{len(self.entries)} "
            "or 8+ hex digits of an entry hash)",
            hint="`datagate ledger show` lists the entries",
        )

    def index(self, entry: Entry) -> pa.Table:
        """A run entry's sha256 -> verdict index (its digest was checked on open)."""
        return pq.read_table(self.dir / entry.payload["index"]["path"])

    def models(self) -> dict[str, Entry]:
        """Recorded generators by lower-cased name; a later record of a name wins."""
        return {
            str(e.payload["name"]).strip().lower(): e for e in self.entries if e.kind == "model"
        }


def _bad(ledger_dir: Path, seq: int | None, what: str, hint: str | None = None) -> LedgerError:
    where = f"entry {seq} ({ENTRIES}/{entry_name(seq)})" if seq is not None else CHECKPOINT
    return LedgerError(
        f"{ledger_dir}: ledger does not verify: first bad: {where}: {what}",
        hint=hint or "restore the ledger folder from version control or a backup",
    )


def _signed(
    path: Path, what: str, ledger_dir: Path, seq: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body, envelope) of a signed JSON file, or a verification error."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(ledger_dir, seq, f"{what} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad(ledger_dir, seq, f"{what} is not valid JSON ({exc})") from None
    body = doc.get(what) if isinstance(doc, dict) else None
    signature = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(body, dict) or not isinstance(signature, dict):
        raise _bad(ledger_dir, seq, f"expected {{{what!r}: ..., 'signature': ...}}")
    return body, doc


def _check_signature(
    public: Ed25519PublicKey, domain: bytes, body: dict[str, Any], doc: dict[str, Any]
) -> str | None:
    """Why the signature of ``doc`` over ``body`` fails, or None."""
    signature = doc["signature"]
    if signature.get("keyid") != keys.key_id(public):
        return "signed by another key (keyid differs from the public key's)"
    if not keys.verifies(public, domain + canonical(body), str(signature.get("sig", ""))):
        return "signature does not verify (the entry was changed after it was signed)"
    return None


def open_ledger(ledger_dir: Path, pub: Path | None = None) -> Ledger:
    """Read and verify a whole ledger; raise :class:`LedgerError` at the first bad entry."""
    if not ledger_dir.is_dir():
        raise LedgerError(
            f"{ledger_dir}: no ledger here (expected a folder with {keys.PUBLIC_FILE})",
            hint="create one with `datagate keygen` or `datagate ledger init`",
        )
    public = keys.load_public(pub if pub is not None else ledger_dir / keys.PUBLIC_FILE)
    cp_body, cp_doc = _signed(ledger_dir / CHECKPOINT, "checkpoint", ledger_dir, None)
    problem = _check_signature(public, CHECKPOINT_DOMAIN, cp_body, cp_doc)
    if problem:
        raise _bad(ledger_dir, None, problem)
    size = cp_body.get("size")
    if not isinstance(size, int) or size < 0:
        raise _bad(ledger_dir, None, f"size: expected a count, found {size!r}")

    found: dict[int, Path] = {}
    leftovers: list[str] = []
    entries_dir = ledger_dir / ENTRIES
    for path in sorted(entries_dir.iterdir()) if entries_dir.is_dir() else []:
        m = _ENTRY_NAME.match(path.name)
        if m:
            found[int(m.group(1))] = path
        elif path.name.startswith(".") and path.name.endswith(".tmp"):
            leftovers.append(path.name)  # an atomic write that a killed process left behind
        else:
            raise LedgerError(
                f"{ledger_dir}: ledger does not verify: unexpected file {ENTRIES}/{path.name} "
                f"(expected entries named like {entry_name(1)})"
            )

    entries: list[Entry] = []
    uncommitted: list[int] = []
    prev = GENESIS
    last = max([size, *found])
    for seq in range(1, last + 1):
        if seq not in found:
            if seq <= size:
                raise _bad(
                    ledger_dir,
                    seq,
                    f"missing (the checkpoint records {size} entries)",
                )
            raise _bad(ledger_dir, seq, "missing, yet later entries exist")
        body, doc = _signed(found[seq], "entry", ledger_dir, seq)
        digest = hashlib.sha256(canonical(body)).hexdigest()
        if body.get("seq") != seq:
            raise _bad(
                ledger_dir,
                seq,
                f"records position {body.get('seq')!r}, not {seq} (entries were removed, "
                "inserted or reordered)",
            )
        if body.get("prev") != prev:
            raise _bad(
                ledger_dir,
                seq,
                "does not chain to the entry before it (an entry was removed, inserted or "
                "replaced)",
            )
        problem = _check_signature(public, ENTRY_DOMAIN, body, doc)
        if problem:
            raise _bad(ledger_dir, seq, problem)
        if doc.get("hash") not in (None, digest):
            raise _bad(ledger_dir, seq, "stored hash differs from the entry's hash")
        if body.get("kind") not in ("run", "model") or not isinstance(body.get(body["kind"]), dict):
            raise _bad(ledger_dir, seq, f"unknown kind {body.get('kind')!r}")
        entry = Entry(seq=seq, hash=digest, body=body)
        if seq > size:
            uncommitted.append(seq)
        else:
            if entry.kind == "run":
                _check_index(ledger_dir, entry)
            entries.append(entry)
        prev = digest

    hashes = [bytes.fromhex(e.hash) for e in entries]
    head = entries[-1].hash if entries else GENESIS
    if cp_body.get("head") != head or cp_body.get("root") != merkle.root(hashes):
        raise _bad(
            ledger_dir,
            size or None,
            "the checkpoint's head or root does not match the entries (entries were replaced)",
        )
    return Ledger(ledger_dir, public, entries, cp_body, uncommitted, leftovers)


def _check_index(ledger_dir: Path, entry: Entry) -> None:
    index = entry.payload.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("path"), str):
        raise _bad(ledger_dir, entry.seq, "a run entry without its verdict index")
    path = ledger_dir / index["path"]
    try:
        digest = file_sha256(path)
    except OSError:
        raise _bad(ledger_dir, entry.seq, f"its verdict index {index['path']} is missing") from None
    if digest != index.get("sha256"):
        raise _bad(ledger_dir, entry.seq, f"its verdict index {index['path']} was changed")


@contextlib.contextmanager
def locked(ledger_dir: Path) -> Iterator[None]:
    """Hold the ledger's append lock (one writer at a time; readers need none)."""
    ledger_dir.mkdir(parents=True, exist_ok=True)
    with open(ledger_dir / LOCK, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_checkpoint(ledger_dir: Path, private: Ed25519PrivateKey, entries: list[Entry]) -> None:
    body = {
        "ledger_version": LEDGER_VERSION,
        "size": len(entries),
        "head": entries[-1].hash if entries else GENESIS,
        "root": merkle.root([bytes.fromhex(e.hash) for e in entries]),
        "time": now(),
    }
    signature = {
        "keyid": keys.key_id(private.public_key()),
        "sig": keys.sign(private, CHECKPOINT_DOMAIN + canonical(body)),
    }
    write_json(ledger_dir / CHECKPOINT, {"checkpoint": body, "signature": signature})


def init(ledger_dir: Path, private: Ed25519PrivateKey) -> bool:
    """Create an empty ledger for ``private``'s public key; False when one already exists.

    An existing ledger is kept when it is for this key; for another key it is an error."""
    with locked(ledger_dir):
        pub = ledger_dir / keys.PUBLIC_FILE
        if pub.exists() or (ledger_dir / CHECKPOINT).exists():
            existing = open_ledger(ledger_dir)
            if keys.key_id(existing.public) != keys.key_id(private.public_key()):
                raise LedgerError(
                    f"{ledger_dir}: this ledger belongs to another key "
                    f"(keyid {keys.key_id(existing.public)[:16]}...)",
                    hint="use that key (--key), or another --ledger folder",
                )
            return False
        write_text(pub, keys.public_pem(private.public_key()).decode("ascii"))
        _write_checkpoint(ledger_dir, private, [])
    return True


def append(
    ledger_dir: Path,
    private: Ed25519PrivateKey,
    kind: str,
    payload: dict[str, Any],
    index: pa.Table | None = None,
) -> Entry:
    """Verify the ledger, then add one signed entry (and a run's verdict index) and commit it."""
    with locked(ledger_dir):
        ledger = open_ledger(ledger_dir)
        if keys.key_id(ledger.public) != keys.key_id(private.public_key()):
            raise LedgerError(
                f"{ledger_dir}: the signing key is not this ledger's "
                f"(ledger keyid {keys.key_id(ledger.public)[:16]}..., "
                f"key {keys.key_id(private.public_key())[:16]}...)",
                hint="pass the key this ledger was created with (--key)",
            )
        _discard_uncommitted(ledger)
        seq = len(ledger.entries) + 1
        payload = dict(payload)
        if index is not None:
            path = ledger_dir / index_name(seq)
            write_table(path, index)
            payload["index"] = {"path": index_name(seq), "sha256": file_sha256(path)}
        body = plain(
            {
                "ledger_version": LEDGER_VERSION,
                "seq": seq,
                "prev": ledger.head,
                "kind": kind,
                "time": now(),
                kind: payload,
            }
        )
        digest = hashlib.sha256(canonical(body)).hexdigest()
        signature = {
            "keyid": keys.key_id(private.public_key()),
            "sig": keys.sign(private, ENTRY_DOMAIN + canonical(body)),
        }
        write_json(
            ledger_dir / ENTRIES / entry_name(seq),
            {"entry": body, "hash": digest, "signature": signature},
        )
        entry = Entry(seq=seq, hash=digest, body=body)
        _write_checkpoint(ledger_dir, private, [*ledger.entries, entry])
    return entry


def _discard_uncommitted(ledger: Ledger) -> None:
    """Remove what a killed append left: entries past the checkpoint, their indexes, temp files."""
    size = len(ledger.entries)
    for name in ledger.leftovers:
        (ledger.dir / ENTRIES / name).unlink(missing_ok=True)
    for seq in ledger.uncommitted:
        (ledger.dir / ENTRIES / entry_name(seq)).unlink(missing_ok=True)
    runs = ledger.dir / RUNS
    for path in runs.iterdir() if runs.is_dir() else []:
        stem = path.name.split(".")[0] if not path.name.startswith(".") else ""
        if path.name.startswith(".") or (stem.isdigit() and int(stem) > size):
            path.unlink(missing_ok=True)
