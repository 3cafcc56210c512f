"""Ledger keys: an ed25519 key pair, the private half outside the ledger, the public half in it.

``datagate keygen`` writes the private key as PKCS#8 PEM with mode 0600 (default
``$DATAGATE_LEDGER_KEY``, else ``$XDG_CONFIG_HOME/datagate/ledger.key``, else
``~/.config/datagate/ledger.key``) and copies the public key into the ledger folder, so that
anyone holding the ledger can verify it and nobody holding only the ledger can sign.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from datagate.errors import InputError

KEY_ENV = "DATAGATE_LEDGER_KEY"
PUBLIC_FILE = "ledger.pub"


def default_key_path() -> Path:
    """Where the signing key lives unless ``--key`` says otherwise."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "datagate" / "ledger.key"


def key_id(public: Ed25519PublicKey) -> str:
    """The sha256 of the raw public key, hex: names the key in signatures and envelopes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate(out: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Write a new private key to ``out`` (mode 0600, atomically); refuse to replace one."""
    if out.exists() and not force:
        raise InputError(
            f"{out}: a key already exists (expected no file here)",
            hint="keep it (every entry it signed verifies only with it), or pass --force",
        )
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the key: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return private


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{path}: {what} not found",
            hint="create one with `datagate keygen`, or pass its path"
            if what == "signing key"
            else "pass the ledger's public key with --pub",
        ) from None
    except OSError as exc:
        raise InputError(f"{path}: {what} is unreadable: {exc.strerror or exc}") from None


def load_private(path: Path) -> Ed25519PrivateKey:
    """The ed25519 signing key in ``path`` (PEM), or an input error saying what is wrong."""
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(
            f"{path}: not an unencrypted PEM private key ({str(exc).splitlines()[0]})",
            hint="pass the file `datagate keygen` wrote",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: expected an ed25519 key, found {type(key).__name__}")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The ed25519 public key in ``path`` (PEM), or an input error saying what is wrong."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(
            f"{path}: not a PEM public key ({str(exc).splitlines()[0]})",
            hint="pass the ledger.pub that `datagate keygen` wrote",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: expected an ed25519 public key, found {type(key).__name__}")
    return key


def sign(private: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(private.sign(message)).decode("ascii")


def verifies(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
