"""The scan's fast paths compute exactly what they replaced.

* pHash and dHash (numpy DCT with a precomputed matrix) equal imagehash's on every test image
  and on ~200 generated ones (flat, 1-pixel, grey, CMYK, 16-bit, palette, noise, ...);
* the Laplacian variance (int16 on the flattened image) equals its float32 definition;
* a scan of tests/data gives the hash and quality values the previous implementation
  (imagehash and scipy, float32 Laplacian) wrote to ``golden/scan-signals.txt``, and pixel
  vectors equal ``golden/pixel-v2.json`` to 1e-6 (pixel-v2: orientation bins decided by
  comparisons, the same on every CPU; see test_embedders);
* weight-free embedders run in the scan's workers: their vectors equal the ones the scan
  process computes from the same inputs, and a scan's embeddings equal vectors computed here.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main
from datagate.embed import models as models_mod
from datagate.embed.forensic import ForensicEmbedder
from datagate.embed.models import (
    PixelEmbedder,
    Preprocessing,
    load_embedder,
    orientation_bins,
    prepare_input,
    worker_embedder,
)
from datagate.scanner.compute import _embed_here, compute_chunk
from datagate.scanner.decode import DecodeError, decode
from datagate.scanner.embedding import EmbedStage, embeddings_table
from datagate.scanner.options import ScanOptions
from datagate.scanner.records import ImageRecord
from datagate.scanner.signals import SIGNALS, Sample
from datagate.scanner.signals import hashes as hashes_mod
from datagate.scanner.signals.hashes import dhash, hash_thumbnail, hash_to_uint64, phash
from datagate.scanner.signals.quality import _laplacian_variance

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
SIZES = [
    (1, 1),
    (1, 9),
    (9, 1),
    (2, 3),
    (8, 8),
    (31, 33),
    (64, 64),
    (65, 127),
    (127, 64),
    (128, 128),
    (201, 131),
    (300, 300),
]


def _content(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    w, h = size
    if kind == "flat":
        return np.full((h, w, 3), int(rng.integers(0, 256)), dtype=np.uint8)
    if kind == "black":
        return np.zeros((h, w, 3), dtype=np.uint8)
    if kind == "white":
        return np.full((h, w, 3), 255, dtype=np.uint8)
    if kind == "near-flat":
        return (128 + rng.integers(-1, 2, size=(h, w, 3))).astype(np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    if kind == "gradient":
        x = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        return x.astype(np.uint8)
    if kind == "checker":
        yy, xx = np.indices((h, w))
        return np.repeat((((yy // 4 + xx // 4) % 2) * 255)[..., None], 3, axis=2).astype(np.uint8)
    if kind == "dot":
        a = np.zeros((h, w, 3), dtype=np.uint8)
        a[h // 2, w // 2] = 255
        return a
    raise AssertionError(kind)


KINDS = ("flat", "black", "white", "near-flat", "noise", "gradient", "checker", "dot")
MODES = ("RGB", "L", "CMYK", "RGBA", "P", "I;16", "1", "LA")


def generated() -> Iterator[tuple[str, Image.Image]]:
    """192 images: every size x content twice, in two Pillow modes that vary with both."""
    rng = np.random.default_rng(20261202)
    for si, size in enumerate(SIZES):
        for ki, kind in enumerate(KINDS):
            for shift in (0, 3):
                mode = MODES[(si + ki + shift) % len(MODES)]
                rgb = Image.fromarray(_content(kind, size, rng))
                if mode == "I;16":
                    grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
                    image = Image.fromarray(grey.astype(np.uint16))
                else:
                    image = rgb.convert(mode)
                yield f"{kind}-{size[0]}x{size[1]}-{mode}", image


def _reference(image: Image.Image) -> tuple[int, int]:
    return hash_to_uint64(imagehash.phash(image)), hash_to_uint64(imagehash.dhash(image))


def test_hashes_equal_imagehash_on_generated_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directly on each image (any mode, any size), on its hash thumbnail, and through
    decode + the Hashes signal; imagehash decides only coefficients tied with the median."""
    fell_back: set[str] = set()
    real = imagehash.phash
    name = ""

    def counted(image: Image.Image, *args: Any, **kwargs: Any) -> imagehash.ImageHash:
        fell_back.add(name)
        return real(image, *args, **kwargs)

    images = list(generated())
    assert len(images) == 192
    checked = 0
    for name, image in images:
        monkeypatch.setattr(imagehash, "phash", counted)
        fast = (phash(image), dhash(image))
        thumb = hash_thumbnail(image.convert("L"))
        fast_thumb = (phash(thumb), dhash(thumb))
        monkeypatch.setattr(imagehash, "phash", real)
        assert fast == _reference(image), name
        assert fast_thumb == _reference(thumb), name
        checked += 2
        for fmt in {"CMYK": ("TIFF", "JPEG"), "I;16": ("PNG", "TIFF")}.get(image.mode, ("PNG",)):
            buffer = io.BytesIO()
            image.save(buffer, fmt)
            data = buffer.getvalue()
            try:
                decoded = decode(data)
            except DecodeError:
                continue
            values = SIGNALS["hashes"]().compute(
                Sample(ImageRecord("s", name, "folder", data=data), data, decoded, None)
            )
            expected = _reference(hash_thumbnail(decoded.image.convert("L")))
            assert (values["phash"], values["dhash"]) == expected, (name, fmt)
            checked += 1
    assert checked >= 500
    # imagehash decides ties only: flat images (coefficients all rounding noise), never noise
    # (but 16-bit noise is flat white to imagehash's convert("L"), and 1-px-wide images have
    # exact zero coefficients)
    assert {"flat-64x64-L", "black-64x64-CMYK", "white-300x300-I;16", "black-1x1-P"} <= fell_back
    noise = {n for n, _ in images if n.startswith("noise-") and not n.endswith("I;16")}
    noise = {n for n in noise if min(int(v) for v in n.split("-")[1].split("x")) >= 8}
    assert len(noise) >= 14 and not noise & fell_back


def test_tie_with_the_median_is_decided_by_imagehash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fallback, flat images (all-noise coefficients) would get other bits."""
    flat = Image.new("L", (64, 64), 77)
    assert phash(flat) == _reference(flat)[0]
    monkeypatch.setattr(hashes_mod, "PHASH_TIE", -1.0)
    mismatched = [
        value
        for value in range(0, 256, 5)
        if phash(Image.new("L", (64, 64), value)) != _reference(Image.new("L", (64, 64), value))[0]
    ]
    assert mismatched, "flat images no longer need the fallback: PHASH_TIE can go"


def test_hashes_equal_imagehash_on_test_data_images() -> None:
    for path in sorted(DATA.iterdir()):
        try:
            decoded = decode(path.read_bytes())
        except DecodeError:
            continue
        thumb = hash_thumbnail(decoded.image.convert("L"))
        assert (phash(thumb), dhash(thumb)) == _reference(thumb), path.name


def _laplacian_definition(g: np.ndarray[Any, Any]) -> float:
    """The float32 computation the scan tables were written with (quality v1)."""
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    lap = np.add(g[:-2, 1:-1], g[2:, 1:-1], dtype=np.float32)
    lap += g[1:-1, :-2]
    lap += g[1:-1, 2:]
    lap -= np.multiply(g[1:-1, 1:-1], 4.0, dtype=np.float32)
    flat = np.ascontiguousarray(lap).ravel()
    mean = float(flat.sum(dtype=np.float64)) / flat.size
    return max(0.0, float(np.dot(flat, flat)) / flat.size - mean * mean)


def test_laplacian_variance_equals_its_float32_definition() -> None:
    rng = np.random.default_rng(3)
    greys = [np.asarray(image.convert("L")) for _, image in generated()]
    greys += [
        rng.integers(0, 256, size=(h, w)).astype(np.uint8)
        for h, w in [(3, 3), (3, 500), (500, 3), (257, 256), (511, 384)]
    ]
    greys.append(np.ascontiguousarray(rng.integers(0, 256, (90, 80)).astype(np.uint8).T))
    greys.append(rng.integers(0, 256, (90, 80)).astype(np.uint8)[::2, ::3])  # not contiguous
    for g in greys:
        assert _laplacian_variance(g) == _laplacian_definition(g), g.shape


def _scan_rows(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "scan"
    code = main(["scan", str(DATA), "--out", str(out), "--no-progress", "--workers", "1", *args])
    assert code == 0
    rows: list[dict[str, Any]] = pq.read_table(out / "images.parquet").to_pylist()
    return rows


def test_scan_of_test_data_equals_the_previous_implementation(tmp_path: Path, golden) -> None:  # type: ignore[no-untyped-def]
    """Hashes and quality of every tests/data row, as imagehash and the float32 Laplacian
    wrote them (golden/scan-signals.txt: regenerate only when a signal's version changes)."""
    rows = _scan_rows(tmp_path, "--signals", "integrity,hashes,quality", "--model", "none")
    columns = (
        "decodable",
        "sha256",
        "phash",
        "dhash",
        "brightness",
        "contrast",
        "blur",
        "entropy",
        "aspect_ratio",
    )
    lines = [
        "\t".join([row["key"], *(repr(row[c]) for c in columns)])
        for row in sorted(rows, key=lambda r: str(r["key"]))
    ]
    golden("scan-signals.txt", "\n".join(lines) + "\n")


def _pixel_inputs() -> dict[str, np.ndarray[Any, Any]]:
    inputs = {}
    prep = PixelEmbedder.preprocessing
    for path in sorted(DATA.iterdir()):
        try:
            data = path.read_bytes()
            inputs[path.name] = prepare_input(decode(data), data, prep)
        except (DecodeError, IsADirectoryError):
            continue
    for name, image in list(generated())[::12]:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
        data = buffer.getvalue()
        inputs[name] = prepare_input(decode(data), data, prep)
    return inputs


def test_pixel_vectors_equal_the_previous_implementation(request: pytest.FixtureRequest) -> None:
    inputs = _pixel_inputs()
    vectors = PixelEmbedder().embed(np.stack(list(inputs.values())))
    path = GOLDEN / "pixel-v2.json"
    if request.config.getoption("--update-golden"):
        path.write_text(vectors_json(dict(zip(inputs, vectors))), encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert sorted(expected) == sorted(inputs)
    for name, vector in zip(inputs, vectors):
        np.testing.assert_allclose(vector, expected[name], rtol=0, atol=1e-6, err_msg=name)


def vectors_json(vectors: dict[str, np.ndarray[Any, Any]]) -> str:
    """One vector per line, each float32 value in the 9 digits that give it back exactly."""
    lines = [f"{json.dumps(k)}: [{', '.join(f'{x:.9g}' for x in v)}]" for k, v in vectors.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _records() -> list[ImageRecord]:
    return [
        ImageRecord("data", p.name, "folder", data=p.read_bytes())
        for p in sorted(DATA.iterdir())
        if p.suffix in (".jpg", ".png", ".gif")
    ]


@pytest.mark.parametrize("spec", ["pixel", "forensic", "forensic+pixel"])
def test_weight_free_embedders_run_in_the_workers(spec: str) -> None:
    embedder = load_embedder(spec).embedder
    assert embedder is not None
    options = ScanOptions(embedder=embedder.id, preprocessing=embedder.preprocessing)
    result = compute_chunk(_records(), options)
    assert len(result.pixels) == 6  # the decodable images
    assert all(
        v is not None and v.dtype == np.float32 and v.shape == (embedder.dim,)
        for v in result.pixels
    )
    # what the scan process computes from the same inputs, as it did before
    inputs = [
        prepare_input(decode(r.data or b""), r.data, embedder.preprocessing)
        for r in _records()
        if r.key in result.keys
    ]
    main_side = embedder.embed(np.stack(inputs))
    np.testing.assert_allclose(np.stack(result.pixels), main_side, rtol=0, atol=1e-6)  # type: ignore[arg-type]
    stage = EmbedStage(embedder, None, 64)
    vectors, found = stage.vectors(result.digests, result.pixels)
    assert found.all() and stage.computed == len(set(result.digests))
    np.testing.assert_array_equal(vectors, main_side.astype(np.float16))


def test_models_get_inputs_prepared_in_the_workers() -> None:
    """A model (anything but the weight-free embedders) runs in the scan process."""
    prep = Preprocessing(size=32, resize_mode="squash")
    assert worker_embedder("open_clip:ViT-B-32:openai", prep) is None
    assert worker_embedder(PixelEmbedder.id, prep) is None  # another preprocessing: not ours
    assert worker_embedder(None, None) is None
    assert worker_embedder(ForensicEmbedder.id, ForensicEmbedder.preprocessing) is not None
    options = ScanOptions(embedder="open_clip:ViT-B-32:openai", preprocessing=prep)
    result = compute_chunk(_records(), options)
    assert all(
        v is not None and v.dtype == np.uint8 and v.shape == (32, 32, 3) for v in result.pixels
    )


def test_parallel_scan_embeddings_equal_vectors_computed_here(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    code = main(
        [
            "scan",
            str(DATA),
            "--out",
            str(out),
            "--no-progress",
            "--workers",
            "2",
            "--model",
            "pixel",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    table = pq.read_table(out / "embeddings.parquet").to_pylist()
    assert len(table) == 7  # the 6 decodable files and the decodable tar member
    files = [row for row in table if row["key"].startswith("./")]
    stored = np.array([row["embedding"] for row in files], dtype=np.float16)
    prep = PixelEmbedder.preprocessing
    expected = PixelEmbedder().embed(
        np.stack(
            [prepare_input(decode((DATA / r["key"][2:]).read_bytes()), None, prep) for r in files]
        )
    )
    assert len(files) == 6
    np.testing.assert_array_equal(stored, expected.astype(np.float16))


def _orientation_bins_by_select(gx: np.ndarray[Any, Any], gy: np.ndarray[Any, Any]) -> Any:
    """pixel-v2's orientation bins as first written (np.select over the turned gradient)."""
    flip = (gy < 0) | ((gy == 0) & (gx < 0))
    x = np.where(flip, -gx, gx)
    y = np.where(flip, -gy, gy)
    quarter = np.select([(x > 0) & (y < x), (x > 0), (y > -x)], [0, 1, 2], 3)
    along = np.select([quarter == 0, quarter == 1, quarter == 2], [x, x + y, y], y - x)
    across = np.select([quarter == 0, quarter == 1, quarter == 2], [y, y - x, -x], -x - y)
    return (quarter * 2 + (across >= models_mod._TAN_EIGHTH * along)).astype(np.int64)


def test_orientation_bins_equal_their_first_definition() -> None:
    """On pixel gradients (differences of grey levels: zeros, equal and opposite components
    all the time) and on random ones, every bin is the one np.select gave."""
    rng = np.random.default_rng(11)
    grey = rng.integers(0, 4, size=200_000).astype(np.float32) / 255.0
    levels = grey[:100_000] - grey[100_000:]
    gx, gy = rng.permutation(levels), rng.permutation(levels)
    some = rng.random(gx.size) < 0.3
    gy[some] = np.where(rng.random(some.sum()) < 0.5, gx[some], -gx[some])
    normal = rng.normal(size=(2, 50_000)).astype(np.float32)
    for x, y in ((gx, gy), (normal[0], normal[1]), (gx[:0], gy[:0])):
        assert orientation_bins(x, y).tolist() == _orientation_bins_by_select(x, y).tolist()


def test_worker_vectors_come_back_as_one_buffer_and_keep_cached_gaps() -> None:
    embedder = PixelEmbedder()
    rng = np.random.default_rng(2)
    inputs: list[np.ndarray[Any, Any] | None] = [
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)
    ]
    whole = _embed_here(embedder, list(inputs))
    assert isinstance(whole, np.ndarray) and whole.shape == (3, 288) and whole.dtype == np.float32
    np.testing.assert_array_equal(whole, embedder.embed(np.stack(inputs)))  # type: ignore[arg-type]
    gapped = _embed_here(embedder, [inputs[0], None, inputs[2]])
    assert isinstance(gapped, list) and gapped[1] is None
    np.testing.assert_array_equal(gapped[0], whole[0])
    np.testing.assert_array_equal(gapped[2], whole[2])
    # the scan process takes either form
    stage = EmbedStage(embedder, None, 64)
    vectors, found = stage.vectors([b"a", b"b", b"c"], whole)
    assert found.all()
    np.testing.assert_array_equal(vectors, whole.astype(np.float16))
    vectors, found = stage.vectors([b"a", b"b", b"c"], gapped)
    assert found.tolist() == [True, False, True]


def test_embeddings_table_equals_arrow_conversion_without_importing_pandas() -> None:
    """The scan process writes an embeddings part per chunk; pa.array would import pandas
    there (half a second of CPU) only to build three plain columns."""
    keys = ["./a.jpg", "shard.tar/é.png", ""]
    vectors = np.random.default_rng(0).normal(size=(3, 288)).astype(np.float16)
    scores = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    table = embeddings_table(keys, vectors, PixelEmbedder(), scores)
    table.validate(full=True)
    assert table.column("key").to_pylist() == keys
    expected = np.array(table.column("embedding").to_pylist(), dtype=np.float16)
    np.testing.assert_array_equal(expected, vectors)
    assert table.column(2).to_pylist() == pytest.approx(scores.tolist())
    code = (
        "import sys, numpy as np\n"
        "from datagate.embed.models import PixelEmbedder\n"
        "from datagate.scanner.embedding import embeddings_table\n"
        "embeddings_table(['k'], np.zeros((1, 288), np.float16), PixelEmbedder(),"
        " np.zeros(1, np.float32))\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
