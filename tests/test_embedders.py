"""Embedders: deterministic, offline-safe, cached, stored as fixed-size float16 Parquet."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagate.contract import EMBEDDINGS_FILE, load_embeddings
from datagate.embed.models import (
    DEFAULT_HUB_FILE,
    DEFAULT_MODEL,
    ModelUnavailable,
    PixelEmbedder,
    Preprocessing,
    cache_key,
    load_embedder,
    orientation_bins,
    prepare,
)
from datagate.errors import ConfigError
from datagate.measures.diversity import diversity_index
from datagate.scanner.cache import Store
from datagate.scanner.engine import scan

from .conftest import jpeg_bytes, photo


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_embedder("tiny").embedder


def embed(embedder, images: list[Image.Image]) -> np.ndarray:  # type: ignore[no-untyped-def]
    pixels = np.stack([prepare(im.convert("RGB"), embedder.preprocessing) for im in images])
    return embedder.embed(pixels)


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_prepare_gives_square_model_input(mode: str) -> None:
    prep = Preprocessing(size=32, resize_mode=mode)
    out = prepare(photo(1, (90, 40)), prep)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("which", ["pixel", "tiny"])
def test_embedders_are_deterministic_unit_vectors(which: str, tiny) -> None:  # type: ignore[no-untyped-def]
    embedder = PixelEmbedder() if which == "pixel" else tiny
    images = [photo(i) for i in range(6)]
    a = embed(embedder, images)
    again = PixelEmbedder() if which == "pixel" else load_embedder("tiny").embedder
    b = embed(again, images)
    assert a.shape == (6, embedder.dim)
    np.testing.assert_array_equal(a, b)  # same seed, same weights, same vectors
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert len({row.tobytes() for row in a}) == 6  # distinct images, distinct vectors


def test_tiny_model_runs_in_batches_like_one_at_a_time(tiny) -> None:  # type: ignore[no-untyped-def]
    images = [photo(i) for i in range(5)]
    together = embed(tiny, images)
    alone = np.concatenate([embed(tiny, [im]) for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_pixel_embedder_sees_colour_layout_and_texture() -> None:
    base = photo(3, (128, 128))
    copy = base.resize((120, 120))
    other = photo(4, (128, 128))
    v = embed(PixelEmbedder(), [base, copy, other])
    assert v[0] @ v[1] > 0.9 and v[0] @ v[2] < 0.5


def test_default_model_hub_file_matches_open_clip() -> None:
    from datagate.embed.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    name, tag = DEFAULT_MODEL.split(":")
    hub = open_clip.get_pretrained_cfg(name, tag)["hf_hub"].rstrip("/")
    assert tuple(hub.rsplit("/", 1)) == DEFAULT_HUB_FILE or hub == DEFAULT_HUB_FILE[0]


def test_uncached_pretrained_model_fails_fast_offline() -> None:
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as info:
        load_embedder("ViT-B-32:laion2b_s34b_b79k")
    assert time.perf_counter() - started < 30  # no download retries
    text = str(info.value)
    assert "not in the Hugging Face cache" in text
    for choice in ("auto", "pixel", "local-dir:", "hf-hub:"):
        assert choice in text
    with pytest.raises(ModelUnavailable, match="laion/CLIP-ViT-B-16-laion2B-s34B-b88K"):
        load_embedder("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K")  # Hub checkpoints too


def test_auto_falls_back_to_pixel_with_a_warning() -> None:
    choice = load_embedder("auto")
    assert isinstance(choice.embedder, PixelEmbedder)
    assert choice.warning and "pixel" in choice.warning and "ViT-B-32" in choice.warning


def test_unknown_model_and_tag_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'ViT-Q-99'"):
        load_embedder("ViT-Q-99")
    with pytest.raises(ConfigError, match="unknown pretrained tag 'nope'"):
        load_embedder("ViT-B-32:nope")
    with pytest.raises(ModelUnavailable, match=r"open_clip_config\.json"):
        load_embedder("local-dir:/nonexistent")


def test_local_dir_checkpoint_loads_the_same_weights(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    config = json.loads(
        (Path(__file__).parents[1] / "datagate/embed/model_configs/datagate-tiny.json").read_text()
    )
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    state = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    local = load_embedder(f"local-dir:{folder}").embedder
    assert local.id.startswith("open_clip:local-dir:ckpt@")
    images = [photo(i) for i in range(3)]
    np.testing.assert_allclose(embed(local, images), embed(tiny, images), atol=1e-5)


def test_scan_cli_names_the_choices_when_weights_are_missing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jpg").write_bytes(jpeg_bytes(photo(1)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datagate",
            "scan",
            str(tmp_path / "d"),
            "--model",
            "ViT-B-32:openai",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--model or DATAGATE_MODEL" in proc.stderr


# --------------------------------------------------------------------------- scan + cache


def _folder(root: Path, n: int, copies: int = 0) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"{i:03d}.jpg").write_bytes(jpeg_bytes(photo(i)))
    for i in range(copies):  # byte-identical copies
        (root / f"copy{i:03d}.jpg").write_bytes((root / f"{i:03d}.jpg").read_bytes())
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def test_scan_writes_fixed_size_float16_embeddings(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    data = _folder(tmp_path / "d", 10)
    store = Store(tmp_path / "cache")
    result = scan([data], tmp_path / "s", workers=1, embedder=tiny, store=store)
    table = pq.read_table(tmp_path / "s" / EMBEDDINGS_FILE)
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), tiny.dim)
    assert table.schema.metadata[b"datagate.embedder"].decode() == tiny.id
    loaded = load_embeddings(tmp_path / "s")
    assert loaded is not None and loaded.vectors.shape == (10, tiny.dim)  # broken: no vector
    assert loaded.vectors.dtype == np.float16
    direct = embed(tiny, [Image.open(data / f"{i:03d}.jpg") for i in range(10)])
    order = np.argsort(loaded.keys)
    np.testing.assert_allclose(loaded.vectors[order].astype(np.float32), direct, atol=2e-3)
    assert result.meta["embedder"]["id"] == tiny.id and result.meta["embedder"]["computed"] == 10


def test_cache_means_rescans_and_duplicate_bytes_never_recompute(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    data = _folder(tmp_path / "d", 8, copies=3)
    store = Store(tmp_path / "cache")
    first = scan([data], tmp_path / "a", workers=1, embedder=tiny, store=store)
    assert first.meta["embedder"]["computed"] == 8  # 11 images, 3 are identical bytes
    second = scan([data], tmp_path / "b", workers=2, embedder=tiny, store=store)
    assert second.meta["embedder"]["computed"] == 0
    a, b = load_embeddings(tmp_path / "a"), load_embeddings(tmp_path / "b")
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.vectors, b.vectors)
    digest = bytes.fromhex(pq.read_table(tmp_path / "a" / "images.parquet")["sha256"][0].as_py())
    assert store.get_vectors(cache_key(tiny), tiny.dim, [digest])  # stored for this model
    assert store.get_vectors("another-model|prep", tiny.dim, [digest]) == {}  # and only it


def test_an_unusable_cache_is_reported_and_skipped(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = Store(blocker)  # a file, not a folder
    assert store.error and "continuing without it" in store.error
    data = _folder(tmp_path / "d", 3)
    result = scan([data], tmp_path / "s", workers=1, embedder=tiny, store=store)
    assert result.meta["embedder"]["computed"] == 3


# --------------------------------------------------------------------------- diversity


def _near_copy(im: Image.Image, k: int) -> Image.Image:
    w, h = im.size
    crop = im.crop((k % 3, k % 2, w - 1 - k % 2, h - 1 - k % 3)).resize((w, h))
    return Image.open(__import__("io").BytesIO(jpeg_bytes(crop, quality=70 + k % 20)))


@pytest.mark.parametrize("which", ["pixel", "tiny"])
def test_index_falls_monotonically_as_a_dataset_collapses(which: str, tiny) -> None:  # type: ignore[no-untyped-def]
    embedder = PixelEmbedder() if which == "pixel" else tiny
    n = 200
    originals = [photo(i, (96, 96)) for i in range(n)]
    values = []
    for share in (0.0, 0.25, 0.5, 0.75, 0.95):
        replaced = int(share * n)
        images = originals[: n - replaced] + [
            _near_copy(originals[k % 4], k) for k in range(replaced)
        ]  # the tail becomes near-copies of four images
        values.append(diversity_index(embed(embedder, images)))
    assert all(a > b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("which", ["pixel", "tiny"])
def test_index_is_stable_under_random_subsampling(which: str, tiny) -> None:  # type: ignore[no-untyped-def]
    embedder = PixelEmbedder() if which == "pixel" else tiny
    x = embed(embedder, [photo(i, (96, 96)) for i in range(800)])
    full = diversity_index(x)
    rng = np.random.default_rng(0)
    for _ in range(5):
        half = x[rng.choice(len(x), 400, replace=False)]
        assert abs(diversity_index(half) - full) < 0.03


def test_orientation_bins_are_the_arctan2_bins_and_exact_on_edges() -> None:
    rng = np.random.default_rng(0)
    gx = rng.normal(size=100_000).astype(np.float32)
    gy = rng.normal(size=100_000).astype(np.float32)
    angle = np.mod(np.arctan2(gy.astype(np.float64), gx.astype(np.float64)), np.pi)
    expected = np.minimum((angle / (np.pi / 8)).astype(np.int64), 7)
    np.testing.assert_array_equal(orientation_bins(gx, gy), expected)
    # gradients exactly on a bin edge (common in pixels: gx = gy, gx = 0, gy = 0) go to the
    # bin the edge starts, whatever arctan2 would round to on this CPU
    v = np.float32(0.25)
    on_edges = np.array([[v, 0], [v, v], [0, v], [-v, v], [-v, 0], [-v, -v], [0, -v], [v, -v]])
    bins = orientation_bins(on_edges[:, 0].astype(np.float32), on_edges[:, 1].astype(np.float32))
    assert bins.tolist() == [0, 2, 4, 6, 0, 2, 4, 6]
