"""Provenance extraction on crafted files: each evidence source, precedence, hostile input."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from datagate.provenance import evidence as prov
from datagate.scanner.decode import decode
from datagate.scanner.records import ImageRecord
from datagate.scanner.signals import SIGNALS, Sample

from .conftest import jpeg_bytes, photo


def _row(data: bytes, meta: dict | None = None, rate: float = 0.0) -> dict:  # type: ignore[type-arg]
    try:
        decoded = decode(data)
    except Exception:
        decoded = None
    record = ImageRecord("s", "m", "webdataset", data=data, meta=meta or {})
    return SIGNALS["provenance"]().compute(Sample(record, data, decoded, None, rate))


def _png(text: dict[str, str], mode: str = "RGB") -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    photo(1).convert(mode).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _jpeg_with_exif(**tags: object) -> bytes:
    exif = Image.Exif()
    names = {"make": 0x010F, "model": 0x0110, "software": 0x0131, "description": 0x010E}
    for name, value in tags.items():
        exif[names[name]] = value
    buf = io.BytesIO()
    photo(2).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_no_metadata_is_unknown() -> None:
    row = _row(jpeg_bytes(photo(3)))
    assert (row["origin"], row["origin_strength"], row["evidence"]) == ("unknown", None, None)
    assert row["c2pa_state"] == "absent"


def test_a1111_parameters_are_definitive_and_name_the_model() -> None:
    params = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Model: dreamshaper_8"
    row = _row(_png({"parameters": params}))
    assert (row["origin"], row["origin_strength"], row["generator"]) == (
        "synthetic",
        "definitive",
        "dreamshaper_8",
    )


def test_comfyui_workflow_names_the_checkpoint() -> None:
    prompt = json.dumps(
        {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}}}
    )
    row = _row(_png({"prompt": prompt, "workflow": "{}"}))
    assert (row["origin"], row["generator"]) == ("synthetic", "sdxl.safetensors")


def test_camera_exif_is_weak_and_loses_to_generator_metadata() -> None:
    camera = _row(_jpeg_with_exif(make="Canon", model="EOS R5"))
    assert (camera["origin"], camera["origin_strength"]) == ("human", "weak")
    both = _row(_jpeg_with_exif(make="Canon", model="EOS R5", software="Midjourney v6"))
    assert (both["origin"], both["origin_strength"], both["generator"]) == (
        "synthetic",
        "strong",
        "Midjourney",
    )
    assert both["provenance_conflict"] is True


def test_iptc_digital_source_type_in_xmp() -> None:
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    buf = io.BytesIO()
    photo(4).save(buf, "JPEG", xmp=xmp.encode())
    row = _row(buf.getvalue())
    assert (row["origin"], row["origin_strength"]) == ("synthetic", "strong")
    assert "trainedAlgorithmicMedia" in row["evidence"]


def test_sidecar_declarations() -> None:
    data = jpeg_bytes(photo(5))
    assert _row(data, {"json": {"origin": "human"}})["origin"] == "human"
    row = _row(data, {"json": {"ai_generated": True, "generator": "flux-dev"}})
    assert (row["origin"], row["generator"]) == ("synthetic", "flux-dev")


def test_stealth_pnginfo_in_alpha_bits() -> None:
    text = b"Steps: 20, Sampler: Euler, Model: hidden_model"
    bits = np.unpackbits(
        np.frombuffer(b"stealth_pnginfo" + (len(text) * 8).to_bytes(4, "big") + text, np.uint8)
    )
    w, h = 64, 64
    alpha = np.full(w * h, 254, dtype=np.uint8)
    alpha[: len(bits)] |= bits
    rgba = np.dstack([np.asarray(photo(6, (w, h))), alpha.reshape(w, h).T])  # column-major
    buf = io.BytesIO()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buf, "PNG")
    row = _row(buf.getvalue())
    assert (row["origin"], row["generator"]) == ("synthetic", "hidden_model")


def test_hostile_metadata_is_recorded_never_raised() -> None:
    # malformed XMP, an oversized text chunk, a binary text chunk, a broken JUMBF box
    buf = io.BytesIO()
    photo(7).save(buf, "JPEG", xmp=b"<x:xmpmeta><<<not xml \x00\xff")
    malformed = _row(buf.getvalue())
    assert malformed["origin"] == "unknown" and "XMP unreadable" in malformed["provenance_errors"]
    big = _row(_png({"parameters": "Steps: 1, Sampler: x " + "a" * (prov.MAX_TEXT + 10)}))
    assert big["origin"] == "unknown" and "not parsed" in big["provenance_errors"]
    assert _row(_png({"Comment": "\x00\x01\x02binary\xff"}))["origin"] == "unknown"
    jpeg = jpeg_bytes(photo(8))
    junk = b"JP\x00\x00\x00\x01\x00\x00\x00\x20jumb\x00\x00\x00\x10jumdc2pa" + b"\xff" * 40
    broken = jpeg[:2] + b"\xff\xeb" + struct.pack(">H", len(junk) + 2) + junk + jpeg[2:]
    row = _row(broken)
    assert row["c2pa_state"] in ("error", "absent", "invalid")
    assert row["origin"] == "unknown"


def test_decide_precedence_and_conflicts() -> None:
    E = prov.Evidence
    v = prov.decide([E("camera", "human", "weak", "x"), E("xmp", "synthetic", "strong", "y")])
    assert (v.origin, v.strength, v.conflict) == ("synthetic", "strong", True)
    tie = prov.decide([E("sidecar", "human", "strong", "x"), E("xmp", "synthetic", "strong", "y")])
    assert tie.origin == "synthetic"  # equal strength: the costly error is a false "human"
    human = prov.decide(
        [E("c2pa", "human", "definitive", "x"), E("xmp", "synthetic", "strong", "y")]
    )
    assert (human.origin, human.conflict) == ("human", True)
    assert prov.decide([E("c2pa", None, "weak", "invalid")]).origin == "unknown"


@pytest.fixture(scope="module")
def marked() -> bytes:
    pytest.importorskip("imwatermark")
    from datagate.provenance.watermark import embed_sdxl

    buf = io.BytesIO()
    embed_sdxl(photo(9, (512, 512))).save(buf, "PNG")
    return buf.getvalue()


def test_sdxl_watermark_found_only_where_embedded(marked: bytes) -> None:
    row = _row(marked, rate=1.0)
    assert (row["watermark"], row["origin"], row["generator"]) == ("sdxl", "synthetic", "SDXL")
    assert row["watermark_ber"] <= 0.1 and row["watermark_checked"] is True
    clean = _row(jpeg_bytes(photo(9, (512, 512))), rate=1.0)
    assert clean["watermark"] is None and clean["watermark_checked"] is True
    skipped = _row(marked, rate=0.0)
    assert skipped["watermark_checked"] is False and skipped["origin"] == "unknown"


def test_watermark_sampling_is_deterministic() -> None:
    from datagate.provenance.watermark import selected

    datas = [bytes([i, j]) for i in range(40) for j in range(25)]
    picked = [d for d in datas if selected(d, 0.1)]
    assert 60 <= len(picked) <= 140
    assert picked == [d for d in datas if selected(d, 0.1)]


def test_scan_records_watermark_mode(tmp_path: Path) -> None:
    from datagate.scanner.engine import scan
    from datagate.scanner.options import ScanOptions

    from .conftest import DATA

    result = scan([DATA / "grey.png"], tmp_path, ScanOptions(watermark="sample:10"), workers=1)
    assert result.meta["config"]["watermark"] == "sample:10"
    assert result.meta["config"]["watermark_rate"] == 1.0
    from datagate.errors import InputError

    with pytest.raises(InputError, match="expected off, all or sample:N"):
        scan([DATA / "grey.png"], tmp_path / "x", ScanOptions(watermark="some"), workers=1)


def test_sidecar_digital_source_type_alone() -> None:
    data = jpeg_bytes(photo(10))
    row = _row(data, {"json": {"digital_source_type": "trainedAlgorithmicMedia", "model": "sd3"}})
    assert (row["origin"], row["generator"]) == ("synthetic", "sd3")
    human = _row(
        data,
        {
            "json": {
                "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
            }
        },
    )
    assert human["origin"] == "human"
