"""Signal registry: name -> class. Adding a signal is one module and one entry here."""

from __future__ import annotations

from datagate.scanner.defaults import DEFAULT_SIGNALS
from datagate.scanner.signals.base import Sample, Signal
from datagate.scanner.signals.hashes import Hashes
from datagate.scanner.signals.integrity import Integrity
from datagate.scanner.signals.provenance import Provenance
from datagate.scanner.signals.quality import Quality

SIGNALS: dict[str, type[Signal]] = {
    Integrity.name: Integrity,
    Hashes.name: Hashes,
    Quality.name: Quality,
    Provenance.name: Provenance,
}

__all__ = ["DEFAULT_SIGNALS", "SIGNALS", "Sample", "Signal"]
