"""RFC 9162 (Certificate Transparency v2) Merkle tree hashes over sha256 leaves.

A run's kept and rejected content hashes enter its ledger entry as one Merkle root each, and
every checkpoint carries the root over all entry hashes, the same shape as a transparency
log's signed tree head: a log server could hand out inclusion proofs against it unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_root(leaves[:k]), _root(leaves[k:]))


def root(items: Sequence[bytes]) -> str:
    """MTH(items), hex; the empty tree's hash is sha256 of nothing."""
    if not items:
        return EMPTY_ROOT
    return _root([leaf_hash(x) for x in items]).hex()


def content_root(hashes: Sequence[str]) -> str:
    """The root over a set of hex sha256 content hashes, sorted and de-duplicated first."""
    return root([bytes.fromhex(h) for h in sorted(set(hashes))])


def inclusion_proof(items: Sequence[bytes], index: int) -> list[str]:
    """The audit path of ``items[index]`` (RFC 9162 section 2.1.3.1), hex."""
    leaves = [leaf_hash(x) for x in items]

    def path(m: int, d: Sequence[bytes]) -> list[bytes]:
        if len(d) == 1:
            return []
        k = _split(len(d))
        if m < k:
            return [*path(m, d[:k]), _root(d[k:])]
        return [*path(m - k, d[k:]), _root(d[:k])]

    return [h.hex() for h in path(index, leaves)]


def verify_inclusion(
    item: bytes, index: int, size: int, proof: Sequence[str], root_hex: str
) -> bool:
    """Check an audit path against a root (RFC 9162 section 2.1.3.2)."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(item)
    for p in (bytes.fromhex(x) for x in proof):
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == root_hex
