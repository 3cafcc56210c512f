"""Signal registry: name -> class. Adding a signal is one module and one :func:`register`.

A signal declares its ``name``, ``version`` and Parquet ``fields`` and computes them from a
:class:`Sample` (one decoded image). Its columns join the scan table's schema, ``--signals``
accepts its name, the row cache keys on its version, and rules read its columns — all from
this registry. Signals registered outside datagate must be importable by worker processes:
the local executor's workers import every registered signal's module when they start.
"""

from __future__ import annotations

from datagate.errors import ConfigError
from datagate.scanner.defaults import DEFAULT_SIGNALS
from datagate.scanner.signals.base import Sample, Signal
from datagate.scanner.signals.hashes import Hashes
from datagate.scanner.signals.integrity import Integrity
from datagate.scanner.signals.provenance import Provenance
from datagate.scanner.signals.quality import Quality

SIGNALS: dict[str, type[Signal]] = {s.name: s for s in (Integrity, Hashes, Quality, Provenance)}


def register(cls: type[Signal]) -> type[Signal]:
    """Add a signal class to the registry (usable as a class decorator)."""
    from datagate.scanner.schema import DETECTOR_FIELDS, IDENTITY_FIELDS

    taken = {f.name for f in (*IDENTITY_FIELDS, *DETECTOR_FIELDS)}
    for other in SIGNALS.values():
        if other is not cls and other.name != cls.name:
            taken |= {f.name for f in other.fields}
    clash = sorted(taken & {f.name for f in cls.fields})
    if clash:
        raise ConfigError(f"signal {cls.name!r}: column(s) {clash} already belong to the table")
    if cls.name in SIGNALS and SIGNALS[cls.name] is not cls:
        raise ConfigError(f"signal {cls.name!r} is registered twice")
    SIGNALS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    SIGNALS.pop(name, None)


__all__ = ["DEFAULT_SIGNALS", "SIGNALS", "Sample", "Signal", "register", "unregister"]
