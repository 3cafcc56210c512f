from __future__ import annotations

import pytest
from PIL import Image

from datagate.scanner.decode import DecodeError, configure_pillow, decode, to_rgb

from .conftest import DATA, jpeg_bytes, photo

configure_pillow()

# file, decodable, format, mode, displayed (w, h), animated, error words
CASES = [
    ("exif-rotated.jpg", True, "JPEG", "RGB", (64, 96), False, None),
    ("cmyk.jpg", True, "JPEG", "CMYK", (96, 64), False, None),
    ("gray16.png", True, "PNG", "I;16", (96, 64), False, None),
    ("palette-transparent.png", True, "PNG", "P", (96, 64), False, None),
    ("grey.png", True, "PNG", "L", (96, 64), False, None),
    ("animated.gif", True, "GIF", "P", (48, 32), True, None),
    ("truncated.jpg", False, None, None, None, None, "truncated"),
    ("empty.jpg", False, None, None, None, None, "empty file (0 bytes)"),
    ("text-named.jpg", False, None, None, None, None, "not a recognised image format"),
    ("bomb-24000x24000.png", False, None, None, None, None, "24000x24000 = 576.0 megapixels"),
]


@pytest.mark.parametrize(("name", "ok", "fmt", "mode", "size", "animated", "words"), CASES)
def test_edge_case_files(
    name: str,
    ok: bool,
    fmt: str | None,
    mode: str | None,
    size: tuple[int, int] | None,
    animated: bool | None,
    words: str | None,
) -> None:
    data = (DATA / name).read_bytes()
    if not ok:
        with pytest.raises(DecodeError) as info:
            decode(data)
        assert words is not None and words in str(info.value)
        return
    d = decode(data)
    assert (d.format, d.mode, (d.width, d.height), d.animated) == (fmt, mode, size, animated)
    assert d.image.mode == "RGB"
    # analysis image follows the displayed orientation
    assert (d.image.width > d.image.height) == (d.width > d.height)


def test_pixel_limit_is_configurable() -> None:
    data = jpeg_bytes(photo(1, (200, 100)))
    with pytest.raises(DecodeError, match=r"over the 0\.0-megapixel limit"):
        decode(data, max_pixels=10_000)
    assert decode(data, max_pixels=20_000).width == 200


def test_jpeg_is_decoded_at_analysis_resolution() -> None:
    d = decode(jpeg_bytes(photo(2, (2048, 1536))), analysis_size=256)
    assert (d.width, d.height) == (2048, 1536)
    assert 256 <= min(d.image.size) < 512


def test_large_png_is_reduced_for_analysis() -> None:
    import io

    buf = io.BytesIO()
    photo(3, (1200, 1000)).save(buf, "PNG")
    d = decode(buf.getvalue(), analysis_size=256)
    assert 256 <= min(d.image.size) < 512


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    im = Image.new("I;16", (4, 4), 65535)
    assert to_rgb(im).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("I;16", (4, 4), 32896)).getpixel((0, 0)) == (128, 128, 128)


def test_transparency_composited_over_white() -> None:
    im = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_rgb(im).getpixel((0, 0)) == (255, 255, 255)
