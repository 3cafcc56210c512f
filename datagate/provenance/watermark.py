"""Invisible watermarks that generators embed: Stable Diffusion's dwtDct messages.

Decoded with invisible-watermark (``imwatermark``) at full resolution:

* Stable Diffusion 1.x/2.x reference scripts embed the bytes ``StableDiffusionV1``
  (136 bits) with ``dwtDct``;
* SDXL embeds a fixed 48-bit message with ``dwtDct``.

A message counts as present when its bit-error rate is at most :data:`MAX_BER` (documented
tolerance: JPEG re-encoding flips some bits). For 48 random bits the chance of a match by
accident at this tolerance is about 1e-10 per image; the false-positive rate measured on real
photographs is in the README (``benchmarks/bench_watermark.py``). Decoding costs about
0.15 s for a 512x512 image and 0.75 s for a 5-megapixel photograph, so scans check ``all``
images, a deterministic ``sample`` of them (chosen by content hash), or ``off``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110
SDXL_BITS = np.array([int(b) for b in bin(SDXL_MESSAGE)[2:]], dtype=np.uint8)
SD1_BYTES = b"StableDiffusionV1"
SD1_BITS = np.unpackbits(np.frombuffer(SD1_BYTES, dtype=np.uint8))
MAX_BER = 0.10
#: dwtDct needs enough pixels for its blocks; smaller images are not checked.
MIN_SIDE = 256


@dataclass(frozen=True)
class WatermarkResult:
    found: str | None  # "sdxl", "sd-v1" or None
    ber: float | None  # bit-error rate of the closest known message
    error: str | None = None


def selected(data: bytes, rate: float) -> bool:
    """Deterministic content-based sampling: the same bytes are always (not) selected."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    u = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2**64
    return u < rate


def _bgr(im: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def detect(im: Image.Image) -> WatermarkResult:
    """Look for the SD v1 and SDXL messages in a full-resolution image."""
    if min(im.size) < MIN_SIDE:
        return WatermarkResult(None, None, f"image smaller than {MIN_SIDE} px: not checked")
    try:
        from imwatermark import WatermarkDecoder
    except ImportError as exc:  # pragma: no cover - installed with datagate
        return WatermarkResult(None, None, f"invisible-watermark is not installed: {exc}")
    try:
        bgr = _bgr(im)
        best: tuple[float, str | None] = (1.0, None)
        for message, bits in (("sdxl", SDXL_BITS), ("sd-v1", SD1_BITS)):
            decoder = WatermarkDecoder("bits", len(bits))
            decoded = np.asarray(decoder.decode(bgr, "dwtDct"), dtype=np.uint8)[: len(bits)]
            error_rate = float(np.mean(decoded != bits))
            if error_rate < best[0]:
                best = (error_rate, message)
    except Exception as exc:  # a decoder failure is recorded, never raised
        return WatermarkResult(None, None, f"watermark decoder failed: {type(exc).__name__}: {exc}")
    ber, name = best
    return WatermarkResult(name if ber <= MAX_BER else None, round(ber, 4))


def embed_sdxl(im: Image.Image) -> Image.Image:
    """Embed SDXL's message the way SDXL's pipeline does (used by tests and benchmarks)."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", SDXL_BITS.tolist())
    bgr = encoder.encode(_bgr(im), "dwtDct")
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
