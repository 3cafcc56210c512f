"""What a scan computes: its options, their defaults, and how they are parsed from flags.

Everything here changes the scan's output and is hashed into ``config_hash``; how the work
is scheduled (workers, executor, batch sizes) is not, so any executor resumes any other's
work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from datagate.embed.models import Preprocessing
from datagate.errors import InputError
from datagate.scanner.defaults import (
    ANALYSIS_SIZE,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SIGNALS,
)
from datagate.scanner.schema import SCHEMA_VERSION, signal_versions
from datagate.scanner.signals import SIGNALS

WATERMARK_MODES = "off, all or sample:N"


@dataclass(frozen=True)
class ScanOptions:
    """Everything that changes what a scan computes (hashed into ``config_hash``)."""

    signals: tuple[str, ...] = DEFAULT_SIGNALS
    image_column: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    analysis_size: int = ANALYSIS_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    watermark: str = "off"  # off | all | sample:N
    #: Derived at scan start from ``watermark`` and the dataset size (``sample:N`` checks a
    #: content-chosen share of N / images; a new size changes which images are checked).
    watermark_rate: float = 0.0
    #: The embedder's id and its input preprocessing (None: no embeddings).
    embedder: str | None = None
    preprocessing: Preprocessing | None = None
    #: The id of the detector head applied to the embeddings (None: no synthetic score).
    detector: str | None = None

    def config_hash(self) -> str:
        return _digest(
            {
                **asdict(self),
                "schema_version": SCHEMA_VERSION,
                "signal_versions": signal_versions(self.signals),
            }
        )

    def row_config(self) -> str:
        """What a cached row's values depend on: the signals and decoding, not chunking or
        the embedder (vectors are cached on their own, by embedder)."""
        payload = {
            "schema_version": SCHEMA_VERSION,
            "signals": signal_versions(self.signals),
            "image_column": self.image_column,
            "max_pixels": self.max_pixels,
            "max_bytes": self.max_bytes,
            "analysis_size": self.analysis_size,
            "watermark": self.watermark,
            "watermark_rate": self.watermark_rate,
        }
        return _digest(payload)

    def check(self) -> None:
        """Refuse options that cannot run (exit 2), before any work starts."""
        check_signals(self.signals, "signals")
        parse_watermark(self.watermark)
        for flag, value, unit in (
            ("--max-pixels", self.max_pixels, "pixels"),
            ("--max-bytes", self.max_bytes, "bytes"),
            ("--chunk-size", self.chunk_size, "images"),
            ("analysis_size", self.analysis_size, "pixels"),
            ("chunk_bytes", self.chunk_bytes, "bytes"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{flag}: expected a positive number of {unit}, got {value!r}")


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_signals(names: Sequence[str], where: str = "--signals") -> None:
    unknown = [n for n in names if n not in SIGNALS]
    if unknown or not names:
        raise InputError(
            f"{where}: unknown signal(s) {', '.join(unknown) or '(none given)'}; "
            f"expected a comma-separated list of: {', '.join(SIGNALS)}"
        )


def parse_signals(text: str) -> tuple[str, ...]:
    """``--signals a,b`` as a tuple; integrity is always computed (every row says whether
    its image decodes)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    check_signals(names)
    if "integrity" not in names:
        names = ("integrity", *names)
    return names


def parse_watermark(mode: str) -> int | None:
    """``off`` / ``all`` -> None; ``sample:N`` -> N. Anything else is an input error."""
    if mode in ("off", "all"):
        return None
    kind, _, number = mode.partition(":")
    if kind != "sample" or not number.isdigit() or int(number) <= 0:
        raise InputError(
            f"--watermark: expected {WATERMARK_MODES} (N a positive integer), got {mode!r}"
        )
    return int(number)


def watermark_rate(mode: str, total: int) -> float:
    """Share of images to check for invisible watermarks under ``off | all | sample:N``."""
    if mode == "off":
        return 0.0
    sample = parse_watermark(mode)
    if sample is None:
        return 1.0
    return min(1.0, sample / total) if total else 1.0
