from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
EVALDATA = Path(os.environ.get("DATAGATE_EVALDATA", ROOT.parent / "shared" / "evaldata"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DATAGATE_CACHE_DIR", tempfile.mkdtemp(prefix="datagate-test-cache-"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files from current output"
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with tests/golden/NAME; rewrite it with --update-golden."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.write_text(text, encoding="utf-8")
        assert path.exists(), f"golden file {name} is missing: create it with --update-golden"
        assert text == path.read_text(encoding="utf-8"), f"{name} differs (--update-golden)"

    return check


@pytest.fixture
def evaldata() -> Path:
    if not EVALDATA.is_dir():
        pytest.skip(f"real evaluation data not found at {EVALDATA}")
    return EVALDATA


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A deterministic, textured RGB picture distinct for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    im = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, size=(h, w, 3))
    arr = np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder of 12 distinct JPEGs in two sub-folders, plus a README (skipped)."""
    root = tmp_path / "images"
    for i in range(12):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i:02d}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (root / "README.md").write_text("not an image")
    return root


def build_demo(dest: Path, per_source: int = 3) -> Path:
    """The example shards (examples/make_demo_shards.py), small, written to ``dest``."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from make_demo_shards import build
    finally:
        sys.path.pop(0)
    build(dest, per_source=per_source)
    return dest


def scan_five_photos(tmp: Path) -> Path:
    """Five distinct photographs and a byte copy of one, scanned into ``tmp/scan`` with the
    pixel embedder (a small gate input for the ledger and attestation tests); returns tmp."""
    import datagate

    data = tmp / "data"
    data.mkdir()
    for i in range(5):
        (data / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (data / "copy.jpg").write_bytes((data / "0.jpg").read_bytes())
    datagate.scan(data, tmp / "scan", model="pixel", workers=1, cache_dir=tmp / "cache")
    return tmp


def start_small_ray(ray: Any) -> None:
    """The tests' local Ray: 2 CPUs, a 200 MB object store, no dashboard, quiet."""
    import logging

    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
