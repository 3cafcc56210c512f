"""Safe, bounded image decoding: decode once, at the resolution the signals need.

* The pixel count is checked from the header before any pixel is decoded, so a file that
  declares 24000x24000 costs microseconds, not gigabytes.
* The decoded frame's bytes (pixels x the bytes Pillow holds per pixel of the mode) must fit
  the decode budget (by default 4 bytes per allowed pixel), so memory per image is bounded.
* JPEGs are decoded with libjpeg's DCT scaling (``Image.draft``) straight to the analysis
  resolution; other formats are decoded fully and reduced by an integer factor. Modes
  Pillow cannot reduce (16-bit, palette, bilevel) are converted and reduced in strips, so
  no full-size 8-bit or float copy is ever made.
* EXIF orientation is applied, the first frame of animations is used, and every Pillow mode
  (CMYK, 16-bit, palette with transparency, grey, float) is normalised to 8-bit RGB.
* Every failure raises :class:`DecodeError` with a message fit for a report row.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from datagate.scanner.defaults import ANALYSIS_SIZE, DEFAULT_MAX_PIXELS

__all__ = ["ANALYSIS_SIZE", "DEFAULT_MAX_PIXELS", "DecodeError", "Decoded", "decode"]

_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
#: Bytes Pillow holds per pixel, by mode; every other mode holds 4.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Default decode budget per allowed pixel (the largest pixel Pillow holds).
BUDGET_BYTES_PER_PIXEL = 4
#: Modes ``Image.reduce`` cannot take: converted to RGB and reduced strip by strip.
_STRIP_MODES = frozenset({"P", "PA", "1", "I;16", "I;16L", "I;16B", "I;16N"})
#: Pixels converted at a time in the strip path.
STRIP_PIXELS = 1024 * 1024
#: 16-bit value -> the 8-bit value :func:`to_rgb` gives it (a table: no float copies).
_LUT16 = np.clip(np.arange(65536, dtype=np.float64) * (255.0 / 65535.0), 0, 255).astype(np.uint8)


class DecodeError(Exception):
    """The bytes are not a decodable image; the message says why."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded image: what the header said and the analysis-resolution RGB pixels."""

    format: str | None
    width: int  # as displayed, after EXIF orientation
    height: int
    mode: str  # the file's own mode, before normalisation
    animated: bool
    orientation: int
    image: Image.Image  # RGB, shorter side in [ANALYSIS_SIZE, 2*ANALYSIS_SIZE) when larger
    #: What the container said beside the pixels: Pillow's ``info`` (text chunks, XMP, ICC
    #: name, comments) and the EXIF tags of IFD0 and the Exif sub-IFD, for provenance.
    info: dict[str, Any] = field(default_factory=dict)
    exif: dict[int, Any] = field(default_factory=dict)
    #: Least significant bits of the full-resolution alpha channel, column by column,
    #: packed (where hidden "stealth" metadata lives); ``None`` without alpha.
    alpha_lsb: bytes | None = None


def configure_pillow() -> None:
    """Let :func:`decode` own the pixel limit (called in scan worker processes)."""
    Image.MAX_IMAGE_PIXELS = None
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _bomb_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"image declares {width}x{height} = {width * height / 1e6:.1f} megapixels, over the "
        f"{max_pixels / 1e6:.1f}-megapixel limit (decompression-bomb guard; raise --max-pixels "
        "to allow)"
    )


def to_rgb(im: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB (alpha composited over white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)).convert(
            "RGB"
        )
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((arr - lo) * scale).astype(np.uint8)).convert("RGB")
    if (mode == "P" and "transparency" in im.info) or mode in ("LA", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes Pillow holds for a decoded ``mode`` frame of this size."""
    return width * height * _PIXEL_BYTES.get(mode, 4)


def _budget_message(mode: str, width: int, height: int, budget: int) -> str:
    return (
        f"image {width}x{height} in mode {mode} decodes to "
        f"{decoded_bytes(mode, width, height) / 2**20:,.0f} MiB, over the "
        f"{budget / 2**20:,.0f} MiB decode budget (raise --max-pixels to allow)"
    )


def reduce_in_strips(frame: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(frame).reduce(factor)``, computed a strip of rows at a time.

    Strips start at multiples of ``factor``, so every reduction box lies in one strip and the
    result equals the full-size computation pixel for pixel.
    """
    width, height = frame.size
    rows = max(factor, STRIP_PIXELS // max(width, 1) // factor * factor)
    sixteen = frame.mode.startswith("I;16")
    # 16-bit: grey stays grey, and reducing L then widening to RGB equals reducing the RGB
    out = Image.new("L" if sixteen else "RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = frame.crop((0, top, width, min(top + rows, height)))
        converted = Image.fromarray(_LUT16[np.asarray(strip)]) if sixteen else to_rgb(strip)
        out.paste(converted.reduce(factor), (0, top // factor))
    return out.convert("RGB") if sixteen else out


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    analysis_size: int = ANALYSIS_SIZE,
    max_decode_bytes: int | None = None,
) -> Decoded:
    """Decode ``data`` once into a :class:`Decoded`, or raise :class:`DecodeError`.

    ``max_decode_bytes``: the most bytes the decoded frame may hold (default
    ``BUDGET_BYTES_PER_PIXEL * max_pixels``).
    """
    budget = BUDGET_BYTES_PER_PIXEL * max_pixels if max_decode_bytes is None else max_decode_bytes
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(f"not a recognised image format (starts with {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression-bomb guard: {exc}") from None
    except Exception as exc:
        raise DecodeError(f"unreadable image header: {type(exc).__name__}: {exc}") from None
    rgb: Image.Image | None = None
    try:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise DecodeError(f"image declares an empty size {width}x{height}")
        if width * height > max_pixels:
            raise DecodeError(_bomb_message(width, height, max_pixels))
        fmt, mode = im.format, im.mode
        if decoded_bytes(mode, width, height) > budget:
            raise DecodeError(_budget_message(mode, width, height, budget))
        exif = _exif_tags(im)
        try:
            orientation = int(exif.get(_EXIF_ORIENTATION, 1))
        except (TypeError, ValueError):
            orientation = 1
        info = {
            k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, (str, bytes))
        }
        animated = bool(getattr(im, "is_animated", False))
        if fmt == "JPEG" and mode in ("RGB", "L", "YCbCr"):
            im.draft("RGB", (analysis_size, analysis_size))
        im.load()
        frame: Image.Image = im
        alpha_lsb = _alpha_lsb(frame)
        factor = min(frame.size) // analysis_size
        if factor >= 2 and frame.mode in _STRIP_MODES:
            rgb = reduce_in_strips(frame, factor)
        else:
            if factor >= 2:
                frame = frame.reduce(factor)
            rgb = to_rgb(frame)
        factor = min(rgb.size) // analysis_size
        if factor >= 2:
            rgb = rgb.reduce(factor)
        transpose = _ORIENTATION_TRANSPOSE.get(orientation)
        if transpose is not None:
            rgb = rgb.transpose(transpose)
            if orientation >= 5:
                width, height = height, width
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression-bomb guard: {exc}") from None
    except Exception as exc:
        raise DecodeError(
            f"cannot decode {im.format or 'image'}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if rgb is not im:
            im.close()
    return Decoded(fmt, width, height, mode, animated, orientation, rgb, info, exif, alpha_lsb)


#: Alpha LSBs read at most (bits); A1111's stealth metadata sits at the start.
MAX_ALPHA_BITS = 8 * 1024 * 1024
_EXIF_IFD = 0x8769


def _exif_tags(im: Image.Image) -> dict[int, Any]:
    """IFD0 and Exif sub-IFD tags; a malformed EXIF block yields what could be read."""
    try:
        exif = im.getexif()
        tags = dict(exif)
        with contextlib.suppress(Exception):
            tags.update(exif.get_ifd(_EXIF_IFD))
        return tags
    except Exception:
        return {}


def _alpha_lsb(frame: Image.Image) -> bytes | None:
    if frame.mode not in ("RGBA", "LA", "PA") or frame.format not in ("PNG", "WEBP"):
        return None
    # only the first columns hold the bits read: never copy the whole alpha plane
    columns = min(frame.width, -(-MAX_ALPHA_BITS // max(frame.height, 1)))
    part = frame if columns == frame.width else frame.crop((0, 0, columns, frame.height))
    alpha = np.asarray(part.getchannel("A"), dtype=np.uint8)
    bits = (alpha.T & 1).ravel()[:MAX_ALPHA_BITS]
    return np.packbits(bits).tobytes()
