from __future__ import annotations

import hashlib

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter

from datagate.scanner.decode import decode
from datagate.scanner.records import ImageRecord
from datagate.scanner.signals import SIGNALS, Sample
from datagate.scanner.signals.hashes import hash_thumbnail

from .conftest import jpeg_bytes, photo


def _sample(data: bytes) -> Sample:
    return Sample(ImageRecord("s", "m", "folder", data=data), data, decode(data), None)


def test_every_signal_declares_columns_it_returns() -> None:
    sample = _sample(jpeg_bytes(photo(1)))
    for cls in SIGNALS.values():
        values = cls().compute(sample)
        assert set(values) == {f.name for f in cls.fields}, cls.name
        assert cls.version >= 1


def test_hashes_match_imagehash_and_sha256() -> None:
    data = jpeg_bytes(photo(4, (300, 200)))
    values = SIGNALS["hashes"]().compute(_sample(data))
    assert values["sha256"] == hashlib.sha256(data).hexdigest()
    thumb = hash_thumbnail(decode(data).image.convert("L"))
    assert min(thumb.size) >= 64 and max(thumb.size) < 128
    assert f"{values['phash']:016x}" == str(imagehash.phash(thumb))
    assert f"{values['dhash']:016x}" == str(imagehash.dhash(thumb))


def test_hashes_of_undecodable_bytes_still_give_sha256() -> None:
    sample = Sample(ImageRecord("s", "m", "folder", data=b"xx"), b"xx", None, "broken")
    values = SIGNALS["hashes"]().compute(sample)
    assert values == {"sha256": hashlib.sha256(b"xx").hexdigest(), "phash": None, "dhash": None}


def test_quality_measures_order_images_as_a_person_would() -> None:
    quality = SIGNALS["quality"]()
    flat = quality.compute(_sample(jpeg_bytes(Image.new("RGB", (200, 200), (128, 128, 128)))))
    sharp_im = photo(5, (400, 300))
    sharp = quality.compute(_sample(jpeg_bytes(sharp_im, quality=95)))
    blurred = quality.compute(
        _sample(jpeg_bytes(sharp_im.filter(ImageFilter.GaussianBlur(4)), quality=95))
    )
    dark = quality.compute(
        _sample(jpeg_bytes(Image.fromarray((np.asarray(sharp_im) // 20).astype(np.uint8))))
    )
    assert flat["contrast"] < 0.01 and flat["entropy"] < 0.5
    assert sharp["blur"] > 5 * blurred["blur"]
    assert dark["brightness"] < 0.05 < sharp["brightness"]
    assert sharp["entropy"] > 5
    assert abs(sharp["aspect_ratio"] - 4 / 3) < 1e-6


def test_quality_values_match_direct_numpy_definitions() -> None:
    data = jpeg_bytes(photo(6, (300, 300)))
    values = SIGNALS["quality"]().compute(_sample(data))
    g = np.asarray(decode(data).image.convert("L"), dtype=np.float64)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    assert values["brightness"] == pytest.approx(g.mean() / 255, rel=1e-6)
    assert values["contrast"] == pytest.approx(g.std() / 255, rel=1e-5)
    assert values["blur"] == pytest.approx(lap.var(), rel=1e-4)
