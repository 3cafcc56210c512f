"""The provenance ledger: signed, hash-chained records of dataset versions and the models
trained on them; gate attestations; Croissant metadata.

* :mod:`.keys` — the ed25519 key pair (``datagate keygen``);
* :mod:`.chain` — the ledger folder: append, verify, resolve entries;
* :mod:`.merkle` — RFC 9162 Merkle roots (content sets, checkpoints);
* :mod:`.runs` — what a gate run records, and its sha256 -> verdict index;
* :mod:`.lineage` — generations from the models recorded in the ledger;
* :mod:`.attest` — in-toto statements in DSSE envelopes, and their verification;
* :mod:`.croissant` — Croissant 1.1 + RAI metadata for the kept set.

When does ``enforce`` use it: ``datagate enforce`` (and :func:`datagate.enforce`) appends
to a ledger when ``--ledger DIR`` is given or the default ``.datagate/ledger`` exists in the
working folder (nothing is written there otherwise), and signs an attestation whenever a
signing key is found (``--key``, else the default key file when it exists). Without a key it
writes ``croissant.json`` only. :func:`datagate.gate.enforce` itself uses no defaults, so
the pre-commit hook neither appends nor signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datagate.errors import InputError
from datagate.ledger import keys
from datagate.ledger.chain import DEFAULT_LEDGER, Entry, Ledger, LedgerError, open_ledger

__all__ = [
    "DEFAULT_LEDGER",
    "Entry",
    "GateSigning",
    "Ledger",
    "LedgerError",
    "default_paths",
    "open_ledger",
    "signing_for_gate",
]


@dataclass(frozen=True)
class GateSigning:
    """What a gate run records into and signs with; both may be absent."""

    ledger: Ledger | None
    private: Ed25519PrivateKey | None
    key_path: Path | None


def default_paths(ledger: Path | None, key: Path | None) -> tuple[Path | None, Path | None]:
    """``--ledger`` and ``--key`` with their defaults filled in: the default ledger when it
    exists in the working folder, the default key file when it exists."""
    if ledger is None and DEFAULT_LEDGER.is_dir():
        ledger = DEFAULT_LEDGER
    if key is None and keys.default_key_path().is_file():
        key = keys.default_key_path()
    return ledger, key


def signing_for_gate(ledger: Path | None, key: Path | None) -> GateSigning:
    """Open ``ledger`` and load ``key`` before a gate run does any work: the ledger is
    verified, and the key must be the ledger's. None means none (no defaults here)."""
    if ledger is not None and key is None:
        raise InputError(
            f"{ledger}: appending to the ledger needs its signing key, and none was found "
            f"(looked for --key, then {keys.default_key_path()})",
            hint="pass --key FILE, or set $DATAGATE_LEDGER_KEY",
        )
    private = keys.load_private(key) if key is not None else None
    opened = open_ledger(ledger) if ledger is not None else None
    if opened is not None and private is not None:
        mine, theirs = keys.key_id(private.public_key()), keys.key_id(opened.public)
        if mine != theirs:
            raise LedgerError(
                f"{key}: not this ledger's key ({ledger} was created for keyid "
                f"{theirs[:16]}..., this key is {mine[:16]}...)",
                hint="pass the key the ledger was created with (--key)",
            )
    return GateSigning(ledger=opened, private=private, key_path=key)
