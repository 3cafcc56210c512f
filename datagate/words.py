"""Wording shared by the terminal and the reports."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 shard``, ``2 shards``: the count and the noun, plural when it is not one."""
    return f"{n:,} {noun if n == 1 else (many or noun + 's')}"
