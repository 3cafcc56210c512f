"""Gate attestations: an in-toto Statement v1 about a gate run's outputs, in a DSSE envelope.

The statement's subjects are the manifests, report.json and croissant.json with their
sha256; its predicate (:data:`PREDICATE_TYPE`) records the policy, counts, human share with
its interval, diversity, versions, the overrides digest and the ledger entry. The envelope
is signed with the ledger key by securesystemslib's DSSE implementation (PAE per the DSSE
spec), so any DSSE/in-toto verifier given the public key can check it.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from datagate.contract import file_sha256
from datagate.errors import InputError
from datagate.io import write_json
from datagate.ledger import keys
from datagate.ledger.chain import canonical

ATTESTATION = "attestation.intoto.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://datagate.dev/attestations/gate/v1"


def _sslib_key(public: Ed25519PublicKey) -> Any:
    # imported when signing or verifying: enforce without a key never pays for it
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    return SSlibKey.from_crypto(public, keyid=keys.key_id(public))


def statement(out: Path, subjects: list[str], predicate: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 naming each file (relative to ``out``) by its sha256."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": file_sha256(out / name)}} for name in subjects
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def write_attestation(out: Path, stmt: dict[str, Any], private: Ed25519PrivateKey) -> Path:
    """Sign ``stmt`` into a DSSE envelope and write it as ``out/attestation.intoto.json``."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    envelope = Envelope(payload=canonical(stmt), payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(CryptoSigner(private, _sslib_key(private.public_key())))
    path = out / ATTESTATION
    write_json(path, envelope.to_dict())
    return path


@dataclass(frozen=True)
class Verified:
    """A gate attestation whose signature and every subject digest checked out."""

    path: Path
    keyid: str
    statement: dict[str, Any]

    @property
    def subjects(self) -> list[dict[str, Any]]:
        return list(self.statement["subject"])

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement["predicate"])


def verify_gate(gate_dir: Path, pub: Path) -> Verified:
    """Check a gate folder's attestation: the DSSE signature with ``pub``, then every subject's
    sha256 against the file. Any failure is an :class:`InputError` saying which."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import (
        FormatError,
        UnsupportedAlgorithmError,
        VerificationError,
    )

    path = gate_dir / ATTESTATION
    public = keys.load_public(pub)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no attestation here (expected {ATTESTATION} in the gate output folder)",
            hint="`datagate enforce` writes it when a signing key is available (datagate keygen)",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: attestation is unreadable: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list):
        raise InputError(f"{path}: not a DSSE envelope (expected payload, payloadType, signatures)")
    try:
        envelope = Envelope.from_dict(
            {**doc, "signatures": [dict(s) for s in doc["signatures"] if isinstance(s, dict)]}
        )
    except (KeyError, TypeError, ValueError, FormatError, binascii.Error) as exc:
        raise InputError(f"{path}: not a DSSE envelope ({type(exc).__name__}: {exc})") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise InputError(
            f"{path}: payloadType {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}"
        )
    key = _sslib_key(public)
    try:
        envelope.verify([key], 1)
    except (VerificationError, UnsupportedAlgorithmError, FormatError, ValueError):
        raise InputError(
            f"{path}: signature does not verify with {pub} (keyid {key.keyid[:16]}...): "
            "signed by another key, or changed after signing",
            hint="pass the public key of the ledger that signed it with --pub",
        ) from None
    try:
        stmt = json.loads(envelope.payload)
    except ValueError as exc:
        raise InputError(f"{path}: the signed payload is not JSON ({exc})") from None
    if (
        not isinstance(stmt, dict)
        or stmt.get("_type") != STATEMENT_TYPE
        or stmt.get("predicateType") != PREDICATE_TYPE
        or not isinstance(stmt.get("subject"), list)
    ):
        found = stmt.get("predicateType") if isinstance(stmt, dict) else type(stmt).__name__
        raise InputError(
            f"{path}: not a datagate gate attestation (expected an in-toto Statement v1 with "
            f"predicateType {PREDICATE_TYPE}, found {found!r})"
        )
    for subject in stmt["subject"]:
        name = str(subject.get("name", ""))
        want = (subject.get("digest") or {}).get("sha256")
        target = (gate_dir / name).resolve()
        if Path(name).is_absolute() or gate_dir.resolve() not in target.parents:
            raise InputError(f"{path}: subject {name!r} lies outside the gate folder")
        try:
            got = file_sha256(target)
        except OSError:
            raise InputError(f"{gate_dir / name}: attested file is missing") from None
        if got != want:
            raise InputError(
                f"{gate_dir / name}: sha256 {got[:16]}... differs from the attested "
                f"{str(want)[:16]}... (the file changed after the gate run)"
            )
    sig = next(iter(envelope.signatures))
    return Verified(path=path, keyid=sig, statement=stmt)
