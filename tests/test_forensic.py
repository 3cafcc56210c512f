"""The weight-free forensic embedder: its cues, the worker path, stacking, heads and gating."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.cli import main
from datagate.contract import load_embeddings
from datagate.detect.head import DetectorMismatch, load_head
from datagate.embed import forensic
from datagate.embed.models import (
    FeaturePreprocessing,
    PixelEmbedder,
    Preprocessing,
    cache_key,
    load_embedder,
    prepare,
    prepare_input,
    spec_for,
)
from datagate.embed.stacked import StackedEmbedder, semantic_vectors
from datagate.errors import ConfigError
from datagate.scanner.cache import Store
from datagate.scanner.decode import decode
from datagate.scanner.engine import scan

from .conftest import DATA, GOLDEN, jpeg_bytes, photo

#: The digest of forensic-v1's definition. If this test fails, the feature list, a constant
#: or the computation changed: bump forensic.VERSION (and FORENSIC_SPECS), then update this.
V1_DIGEST = "e76bfc29"


def raw(data: bytes) -> dict[str, float]:
    """Raw feature values of an encoded image, by name."""
    values = forensic.compute(decode(data), data)
    return dict(zip(forensic.NAMES, values.tolist()))


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _noisy(seed: int, size: tuple[int, int], sigma: float) -> Image.Image:
    """A smooth picture with Gaussian noise of ``sigma`` grey levels."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = Image.fromarray(rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)).resize((w, h))
    arr = np.asarray(low, dtype=np.float64) + rng.normal(0, sigma, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- definition


def test_feature_table_is_documented_and_versioned() -> None:
    assert forensic.VERSION == "forensic-v1" and forensic.VERSION in (
        __import__("datagate.embed.models", fromlist=["FORENSIC_SPECS"]).FORENSIC_SPECS
    )
    assert len(set(forensic.NAMES)) == forensic.N_FEATURES
    assert {f.family for f in forensic.FEATURES} == set(forensic.FAMILIES)
    assert all(f.scale > 0 and f.doc for f in forensic.FEATURES)
    table = forensic.feature_table()
    assert all(f"`{name}`" in table for name in forensic.NAMES)
    assert forensic.definition_digest()[:8] == V1_DIGEST, (
        "the forensic feature definition changed: bump forensic.VERSION and V1_DIGEST"
    )
    assert forensic.ForensicEmbedder.preprocessing.id == f"forensic-v1-{V1_DIGEST}"


def test_feature_values_match_the_golden_values_of_this_version(
    request: pytest.FixtureRequest,
) -> None:
    """The computation itself is part of the version: fixed inputs give the recorded values
    (rewrite with --update-golden only together with a new VERSION)."""
    inputs = {
        "photo.jpg": jpeg_bytes(photo(11, (400, 300)), 80),
        "smooth.png": png_bytes(_noisy(12, (1024, 1024), 0.5)),
    }
    found = {name: dict(zip(forensic.NAMES, forensic.compute(decode(d), d).tolist()))
             for name, d in inputs.items()}  # fmt: skip
    path = GOLDEN / f"{forensic.VERSION}.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    for name, values in expected.items():
        for feature, value in values.items():
            assert found[name][feature] == pytest.approx(value, rel=1e-3, abs=1e-3), (
                f"{name}: {feature} changed: a new forensic VERSION is due"
            )


def test_vectors_are_unit_length_and_an_exact_linear_map_of_the_features() -> None:
    embedder = forensic.ForensicEmbedder()
    images = [jpeg_bytes(photo(i, (300, 260))) for i in range(4)] + [png_bytes(photo(9))]
    inputs = np.stack([prepare_input(decode(d), d, embedder.preprocessing) for d in images])
    assert inputs.dtype == np.uint8 and inputs.shape == (5, 4 * forensic.N_FEATURES)
    v = embedder.embed(inputs)
    assert v.shape == (5, embedder.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    raws = np.stack([forensic.compute(decode(d), d) for d in images])
    np.testing.assert_allclose(forensic.features_of(v), forensic.standardise(raws), atol=1e-4)
    again = forensic.ForensicEmbedder().embed(
        np.stack([prepare_input(decode(d), d, embedder.preprocessing) for d in images])
    )
    np.testing.assert_array_equal(v, again)  # deterministic
    assert len({row.tobytes() for row in v}) == 5


@pytest.mark.parametrize(
    "name",
    ["animated.gif", "cmyk.jpg", "exif-rotated.jpg", "gray16.png", "grey.png",
     "palette-transparent.png"],
)  # fmt: skip
def test_every_odd_image_gets_finite_features(name: str) -> None:
    data = (DATA / name).read_bytes()
    values = forensic.compute(decode(data), data)
    assert values.shape == (forensic.N_FEATURES,) and np.all(np.isfinite(values))
    tiny = png_bytes(photo(1, (5, 4)))  # too small for any pixel cue: neutral values
    found = raw(tiny)
    assert found["spec_peak_p8"] == 0.0 and found["res_energy"] == pytest.approx(0.6)


# --------------------------------------------------------------------------- the cues


def test_jpeg_tables_quality_subsampling_and_container_are_read_from_the_bytes() -> None:
    im = photo(2, (256, 256))
    for quality in (50, 75, 95):
        found = raw(jpeg_bytes(im, quality))
        assert abs(found["jpg_quality_luma"] - quality) <= 1.0
        assert found["jpg_ijg_tables"] == 1.0  # Pillow writes libjpeg's scaled tables
        assert found["cmp_jpeg"] == 1.0 and found["cmp_png"] == -1.0
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, subsampling="4:4:4", progressive=True)
    full = raw(buf.getvalue())
    assert full["jpg_subsampled_h"] == -1.0 and full["jpg_subsampled_v"] == -1.0
    assert full["jpg_progressive"] == 1.0
    assert raw(jpeg_bytes(im))["jpg_subsampled_v"] == 1.0  # Pillow's default 4:2:0
    custom = [list(range(1, 65)), list(range(2, 66))]  # no libjpeg quality makes these
    buf = io.BytesIO()
    im.save(buf, "JPEG", qtables=custom)
    assert raw(buf.getvalue())["jpg_ijg_tables"] == -1.0
    png = raw(png_bytes(im))
    assert png["cmp_png"] == 1.0 and png["cmp_jpeg"] == -1.0
    assert png["jpg_quality_luma"] == 85.0 and png["jpg_ijg_tables"] == 0.0  # n/a: neutral


def test_geometry_and_camera_priors_come_from_the_header() -> None:
    square = raw(png_bytes(photo(3, (1024, 1024))))
    assert square["geo_generator_size"] == 1.0 and square["geo_mult64"] == 1.0
    assert square["geo_square"] == 1.0 and square["geo_log2_mp"] == pytest.approx(0.0, abs=0.1)
    odd = raw(png_bytes(photo(3, (1000, 750))))
    assert odd["geo_generator_size"] == -1.0 and odd["geo_mult64"] == -1.0
    assert odd["geo_mult8"] == -1.0 and odd["geo_aspect"] == pytest.approx(math.log(4 / 3), 1e-3)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Nikon", "D750"
    buf = io.BytesIO()
    photo(4, (300, 200)).save(buf, "JPEG", exif=exif.tobytes())
    camera = raw(buf.getvalue())
    assert camera["exif_camera"] == 1.0 and camera["exif_software"] == -1.0
    assert camera["jpg_app_segments"] == 2.0  # JFIF and Exif
    assert raw(jpeg_bytes(photo(4, (300, 200))))["exif_camera"] == -1.0


def test_a_periodic_upsampling_trace_raises_its_spectral_peak() -> None:
    base = np.asarray(_noisy(5, (320, 320), 4.0), dtype=np.float64)
    yy, xx = np.mgrid[0:320, 0:320]
    for period in (4, 8):
        grid = 3.0 * (((xx % period) == 0) | ((yy % period) == 0))
        traced = Image.fromarray(np.clip(base + grid[..., None], 0, 255).astype(np.uint8))
        clean = raw(png_bytes(Image.fromarray(base.astype(np.uint8))))
        found = raw(png_bytes(traced))
        assert found[f"spec_peak_p{period}"] > clean[f"spec_peak_p{period}"] + 0.2


def test_noise_residual_and_block_grid_respond_to_noise_blur_and_jpeg() -> None:
    quiet, loud = (
        raw(png_bytes(_noisy(6, (320, 320), 0.2))),
        raw(png_bytes(_noisy(6, (320, 320), 8.0))),
    )
    assert loud["res_energy"] > quiet["res_energy"] + 0.5
    assert loud["res_noise_floor"] > quiet["res_noise_floor"] + 0.5
    assert quiet["res_flat"] > loud["res_flat"]
    im = _noisy(7, (320, 320), 3.0)
    blocky = raw(jpeg_bytes(im, 20))  # 320 px: decoded at full scale, the 8-px grid shows
    assert blocky["cmp_blockiness"] > raw(png_bytes(im))["cmp_blockiness"] + 0.02


# --------------------------------------------------------------------------- specs and stacking


def test_specs_ids_and_cache_keys() -> None:
    f = load_embedder("forensic")
    assert isinstance(f.embedder, forensic.ForensicEmbedder) and f.warning is not None
    assert "detector heads" in f.warning
    assert load_embedder("forensic-v1").embedder.id == "forensic-v1"  # type: ignore[union-attr]
    fp = load_embedder("forensic+pixel").embedder
    ft = load_embedder("forensic+tiny").embedder
    assert fp is not None and ft is not None
    assert fp.id == "forensic-v1+pixel-v2" and fp.dim == forensic.N_FEATURES + 1 + 288
    assert ft.id == "forensic-v1+open_clip:datagate-tiny:random-seed0"
    keys = {cache_key(e) for e in (f.embedder, fp, ft, PixelEmbedder())}  # type: ignore[arg-type]
    assert len(keys) == 4
    assert fp.preprocessing.id.startswith(f"forensic-v1-{V1_DIGEST}+")
    assert fp.preprocessing.id.endswith(PixelEmbedder.preprocessing.id)
    changed = FeaturePreprocessing(features="forensic-v1", digest="0" * 12)
    assert changed.id != forensic.ForensicEmbedder.preprocessing.id  # definition in the key
    assert [spec_for(e.id) for e in (f.embedder, fp, ft)] == [  # type: ignore[union-attr]
        "forensic", "forensic+pixel", "forensic+datagate-tiny:random-seed0"
    ]  # fmt: skip
    for bad, says in [
        ("pixel+forensic", "come first"),
        ("forensic-v0", "computes the forensic features forensic-v1"),
        ("forensic+none", "needs a model"),
        ("forensic+forensic", "not a pixel model"),
    ]:
        with pytest.raises(ConfigError, match=says):
            load_embedder(bad)


def test_plain_preprocessing_still_gives_exactly_the_prepared_pixels() -> None:
    data = jpeg_bytes(photo(8, (300, 200)))
    decoded = decode(data)
    for prep in (PixelEmbedder.preprocessing, Preprocessing(size=32, resize_mode="squash")):
        np.testing.assert_array_equal(
            prepare_input(decoded, data, prep), prepare(decoded.image, prep)
        )


def test_stack_concatenates_both_unit_vectors_and_splits_them_back() -> None:
    stack = load_embedder("forensic+pixel").embedder
    assert isinstance(stack, StackedEmbedder)
    images = [jpeg_bytes(photo(i, (200, 180))) for i in range(3)]
    decoded = [decode(d) for d in images]
    v = stack.embed(
        np.stack([prepare_input(d, b, stack.preprocessing) for d, b in zip(decoded, images)])
    )
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    f = forensic.ForensicEmbedder().embed(
        np.stack([prepare_input(d, b, forensic.ForensicEmbedder.preprocessing)
                  for d, b in zip(decoded, images)])
    )  # fmt: skip
    p = PixelEmbedder().embed(
        np.stack([prepare(d.image, PixelEmbedder.preprocessing) for d in decoded])
    )
    np.testing.assert_allclose(v, np.concatenate([f, p], axis=1) / math.sqrt(2), atol=1e-6)
    sem = semantic_vectors(stack.id, v)
    assert sem is not None
    np.testing.assert_allclose(sem, p, atol=1e-5)
    assert semantic_vectors("forensic-v1", f) is None
    np.testing.assert_array_equal(semantic_vectors("pixel-v2", p), p)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the scan


def test_scan_computes_features_in_the_workers_and_caches_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i, (220, 160))))
    (data / "g.png").write_bytes(png_bytes(photo(7, (512, 512))))
    embedder = forensic.ForensicEmbedder()
    store = Store(tmp_path / "cache")
    try:
        first = scan([data], tmp_path / "a", embedder=embedder, store=store, workers=2)
        scan([data], tmp_path / "b", embedder=embedder, store=store, workers=1)
    finally:
        store.close()
    for out in (tmp_path / "a", tmp_path / "b"):
        emb = load_embeddings(out)
        assert emb is not None and emb.vectors.shape == (6, embedder.dim)
        assert emb.embedder == "forensic-v1" and emb.vectors.dtype == np.float16
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["embedder"]["computed"] == 0 and meta["embedder"]["cache_hits"] == 6
    assert meta["embedder"]["preprocessing"]["features"] == "forensic-v1"
    assert first.meta["counts"]["images"] == 6
    emb = load_embeddings(tmp_path / "a")
    assert emb is not None
    by_key = dict(zip(emb.keys.tolist(), emb.vectors.astype(np.float32)))
    rows = pq.read_table(tmp_path / "a" / "images.parquet").to_pylist()
    direct = {
        r["key"]: embedder.embed(
            prepare_input(decode(b := (data / r["member"]).read_bytes()), b,
                          embedder.preprocessing)[None]
        )[0]
        for r in rows
    }  # fmt: skip
    for key, vector in direct.items():
        np.testing.assert_allclose(by_key[key], vector, atol=2e-3)  # float16 storage


def test_a_failing_feature_loses_the_vector_never_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datagate.embed import models

    def broken(decoded, data):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(models, "feature_set", lambda name: broken)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg_bytes(photo(1)))
    scan([data], tmp_path / "out", embedder=forensic.ForensicEmbedder(), workers=1)
    row = pq.read_table(tmp_path / "out" / "images.parquet").to_pylist()[0]
    assert row["decodable"] is True
    assert "embedder input failed: RuntimeError: boom" in row["error"]


# --------------------------------------------------------------------------- heads and gating


def _smooth(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(2, 2, 3)).astype(np.uint8)
    return Image.fromarray(low).resize((240, 180), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noisy 'photos' as JPEG (real) against smooth renders as PNG (synthetic)."""
    root = tmp_path_factory.mktemp("forensic-labelled")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    for i in range(40):
        (root / "real" / f"r{i}.jpg").write_bytes(jpeg_bytes(photo(100 + i, (240, 180))))
        (root / "fake" / f"f{i}.png").write_bytes(png_bytes(_smooth(200 + i)))
    return root


@pytest.mark.parametrize("model", ["forensic", "forensic+pixel"])
def test_train_scan_gate_and_report_with_forensic_heads(
    model: str, labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head_path = tmp_path / "head.safetensors"
    code = main(
        ["detector", "train", "--real", str(labelled / "real"), "--synthetic",
         str(labelled / "fake"), "--out", str(head_path), "--model", model, "--json"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    embedder_id = "forensic-v1" if model == "forensic" else "forensic-v1+pixel-v2"
    assert summary["embedder"] == embedder_id and summary["held_out"]["auc"] > 0.9
    head = load_head(head_path)
    assert head.embedder == embedder_id and head.model == model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(30):
        (data / f"real-{i}.jpg").write_bytes(jpeg_bytes(photo(300 + i, (240, 180))))
    for i in range(10):
        (data / f"fake-{i}.png").write_bytes(png_bytes(_smooth(400 + i)))
    out = tmp_path / "scan"
    # --detector alone picks the head's embedder (forensic, or the stack)
    assert main(["scan", str(data), "-o", str(out), "--detector", str(head_path), "-q"]) == 0
    rows = {r["member"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}
    fake = [r["detector_score"] for m, r in rows.items() if m.startswith("fake")]
    real = [r["detector_score"] for m, r in rows.items() if m.startswith("real")]
    assert min(fake) > max(real)
    emb = load_embeddings(out)
    assert emb is not None and emb.embedder == embedder_id
    by_key = dict(zip(emb.keys.tolist(), head.proba(emb.vectors.astype(np.float32))))
    for row in rows.values():  # the scores are the head on the very vectors stored
        assert row["detector_score"] == pytest.approx(by_key[row["key"]], abs=1e-5)

    rules = tmp_path / "r.yaml"
    rules.write_text("rules: [{rule: min_human, min: 0.7, bound: lower, action: filter}]\n")
    code = main(["enforce", str(out), "-r", str(rules), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rules"][0]["passed"] is True
    rejected = set(pq.read_table(tmp_path / "manifests" / "rejected.parquet")
                   .column("member").to_pylist())  # fmt: skip
    assert rejected and all(m.startswith("fake") for m in rejected)  # most synthetic first
    assert report["rules"][0]["details"]["estimate"]["low"] >= 0.7
    md = (tmp_path / "report.md").read_text()
    assert f"over `{embedder_id}` embeddings" in md  # the report names the embedder

    # a forensic head refuses vectors of another embedder, before any work
    other = ["--model", "pixel"] if model == "forensic" else ["--model", "forensic"]
    code = main(["scan", str(data), "-o", str(tmp_path / "s2"), "--detector", str(head_path),
                 *other, "-q"])  # fmt: skip
    assert code == 2
    assert f"trained on embeddings of {embedder_id}" in capsys.readouterr().err


def test_a_head_refuses_another_forensic_version() -> None:
    from datagate.detect.train import train_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, forensic.ForensicEmbedder.dim))
    y = np.r_[np.zeros(20), np.ones(20)].astype(np.int64)
    head = train_head(
        x, y, embedder="forensic-v1", preprocessing=forensic.ForensicEmbedder.preprocessing.id
    ).head
    head.check("forensic-v1", forensic.ForensicEmbedder.preprocessing.id, head.dim)
    with pytest.raises(DetectorMismatch):
        head.check("forensic-v1", "forensic-v1-00000000", head.dim)  # definition changed
    with pytest.raises(DetectorMismatch):
        head.check("forensic-v2", forensic.ForensicEmbedder.preprocessing.id, head.dim)


def test_stability_refuses_feature_embedders(
    labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["detector", "stability", "--real", str(labelled / "real"), "--synthetic",
                 str(labelled / "fake"), "--model", "forensic"])  # fmt: skip
    assert code == 2 and "perturbs a model's input pixels" in capsys.readouterr().err


def test_enforce_measures_diversity_on_the_semantic_part_only(tmp_path: Path) -> None:
    """A forensic-only scan has no semantic vectors (diversity is unmeasurable, never a
    false duplicate); a stack is measured on its model part, as a plain scan would be."""
    import numpy as np

    from datagate.contract import Embeddings
    from datagate.embed.stacked import semantic_embeddings

    keys = np.array(["a", "b"], dtype=object)
    plain = Embeddings(keys, np.eye(2, dtype=np.float16), "pixel-v2", "p")
    assert semantic_embeddings(plain) is plain
    forensic = Embeddings(keys, np.ones((2, 4), dtype=np.float16), "forensic-v1", "f")
    assert semantic_embeddings(forensic) is None
    from datagate.embed.forensic import N_FEATURES

    stacked = np.zeros((2, N_FEATURES + 1 + 2), dtype=np.float16)
    stacked[:, : N_FEATURES + 1] = 0.1  # the forensic part: nearly identical for both
    stacked[0, -2:], stacked[1, -2:] = (0.7, 0.0), (0.0, 0.7)  # the model part: orthogonal
    found = semantic_embeddings(Embeddings(keys, stacked, "forensic-v1+pixel-v2", "s"))
    assert found is not None
    np.testing.assert_allclose(found.vectors.astype(np.float32), np.eye(2), atol=1e-3)
