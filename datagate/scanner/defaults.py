"""The scan's defaults, importable without the decoding stack (the CLI shows them in --help)."""

from __future__ import annotations

#: Signal families a scan computes unless ``--signals`` says otherwise.
DEFAULT_SIGNALS: tuple[str, ...] = ("integrity", "hashes", "quality", "provenance")
#: Images declaring more pixels are refused (Pillow's decompression-bomb limit).
DEFAULT_MAX_PIXELS = 178_956_970
#: Largest single file or member read into memory; larger ones become error rows.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Signals see an image whose shorter side is in [ANALYSIS_SIZE, 2*ANALYSIS_SIZE).
ANALYSIS_SIZE = 256
#: Images per work unit (the granularity of resume), and the bytes that end a unit early.
DEFAULT_CHUNK_SIZE = 256
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
#: Where ``datagate scan`` writes, and ``enforce`` reads, by default.
DEFAULT_SCAN_DIR = "datagate-out/scan"
#: The pre-commit hook's cache and outputs, inside the data repository.
DEFAULT_STATE_DIR = ".datagate"
