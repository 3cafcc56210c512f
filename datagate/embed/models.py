"""Image embedders behind one interface: open_clip models and a weight-free pixel embedder.

An embedder is chosen by a spec string (``--model`` or ``DATAGATE_MODEL``):

==========================  ===============================================================
``auto`` (default)          ``ViT-B-32:laion2b_s34b_b79k`` when its weights are cached or
                            downloadable, else ``pixel`` with a loud warning
``NAME:TAG``                an open_clip model and pretrained tag, e.g. ``ViT-L-14:openai``
``NAME``                    the model's first pretrained tag (``open_clip.list_pretrained``)
``NAME:random``             random weights from a fixed seed (speed benchmarks only)
``hf-hub:ORG/REPO``         an open_clip checkpoint on the Hugging Face Hub
``local-dir:PATH``          a folder with ``open_clip_config.json`` and the weights
``tiny``                    a tiny open_clip config with seeded random weights (tests)
``pixel``                   weight-free, deterministic pixel statistics (:class:`PixelEmbedder`)
``forensic``                weight-free forensic features (spectral peaks, noise residuals,
                            JPEG traces, output geometry; :mod:`datagate.embed.forensic`)
``forensic+SPEC``           the forensic features stacked with any pixel-input embedder above
                            (``forensic+ViT-B-32:openai``, ``forensic+pixel``;
                            :mod:`datagate.embed.stacked`), for a head that uses both
``none``                    no embeddings
==========================  ===============================================================

Work is split so that the scan's worker processes do all per-image work: they decode and
:func:`prepare` each image to the embedder's input size as uint8 pixels (no torch). The
main process stacks a batch and calls :meth:`Embedder.embed`, which normalises and runs the
model on the whole batch on the chosen device. Embeddings are returned L2-normalised.
Feature embedders (``forensic``) need more than resized pixels: their preprocessing is a
:class:`FeaturePreprocessing`, and the workers compute the features themselves from the
decoded sample and the file bytes (:func:`prepare_input`). Weight-free embedders (``pixel``,
``forensic``, ``forensic+pixel``: :func:`worker_embedder`) are cheap enough to run whole in
the workers, beside the signals; the main process then only merges their vectors.

Only this module imports torch and open_clip, lazily, so ``enforce`` and ``--help`` stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from datagate.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from datagate.scanner.decode import Decoded

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
#: Where open_clip fetches DEFAULT_MODEL's weights (a test keeps this in step with open_clip),
#: so that ``auto`` can fall back without importing torch when they cannot be had.
DEFAULT_HUB_FILE = ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin")
MODEL_ENV = "DATAGATE_MODEL"
TINY_MODEL = "datagate-tiny"
TINY_SEED = 0
_CONFIG_DIR = Path(__file__).parent / "model_configs"
#: Seconds to wait for the Hugging Face Hub before calling the network unreachable.
HUB_PROBE_TIMEOUT = 3.0

Pixels = np.ndarray[Any, np.dtype[np.uint8]]
Vectors = np.ndarray[Any, np.dtype[np.float32]]


class ModelUnavailable(ConfigError):
    """The requested model's weights are not cached and cannot be downloaded."""


@dataclass(frozen=True)
class Preprocessing:
    """How an analysis image becomes model input; part of the embedding cache key."""

    size: int = 224
    interpolation: str = "bicubic"  # bicubic | bilinear | nearest
    resize_mode: str = "shortest"  # shortest (resize + centre crop) | longest (pad) | squash
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fill: int = 0

    @property
    def id(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.resize_mode}{self.size}-{self.interpolation}-{_digest(text)[:8]}"


@dataclass(frozen=True)
class FeaturePreprocessing(Preprocessing):
    """An input computed in the scan's workers from the decoded sample, not only resized pixels.

    ``features`` names a feature set (``forensic-v1``) whose raw float32 values the worker
    computes from the analysis image and the file bytes; ``digest`` fingerprints the set's
    definition (its feature list and constants), so the cache key changes with it. With
    ``pixels``, the worker also prepares the image as the inherited :class:`Preprocessing`
    fields say, for a model stacked behind the features. The worker hands the main process one
    uint8 array per image: the features' little-endian float32 bytes, then the flattened
    pixels when ``pixels`` is set.
    """

    features: str = ""
    digest: str = ""
    pixels: bool = False

    def pixel_part(self) -> Preprocessing:
        """The plain preprocessing of the stacked model's pixels."""
        return Preprocessing(**{f.name: getattr(self, f.name) for f in fields(Preprocessing)})

    @property
    def id(self) -> str:
        own = f"{self.features}-{self.digest[:8]}"
        return f"{own}+{self.pixel_part().id}" if self.pixels else own


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
}


def prepare(image: Image.Image, prep: Preprocessing) -> Pixels:
    """Resize and crop (or pad) an RGB image to ``prep.size`` square uint8 pixels."""
    size, resample = prep.size, _RESAMPLE[prep.interpolation]
    w, h = image.size
    if prep.resize_mode == "squash":
        image = image.resize((size, size), resample)
    elif prep.resize_mode == "longest":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (size, size), (prep.fill,) * 3)
        canvas.paste(image.resize((nw, nh), resample), ((size - nw) // 2, (size - nh) // 2))
        image = canvas
    else:
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), resample)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def prepare_input(decoded: Decoded, data: bytes | None, prep: Preprocessing) -> Pixels:
    """One image's embedder input, computed in a scan worker from its one decode.

    A plain :class:`Preprocessing` gives :func:`prepare`'s pixels, unchanged; a
    :class:`FeaturePreprocessing` gives the feature set's float32 values as bytes, followed by
    the prepared pixels (flattened) when the features are stacked with a model.
    """
    if not isinstance(prep, FeaturePreprocessing):
        return prepare(decoded.image, prep)
    values = feature_set(prep.features)(decoded, data)
    raw = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
    if not prep.pixels:
        return raw
    return np.concatenate([raw, prepare(decoded.image, prep.pixel_part()).ravel()])


def feature_set(name: str) -> Any:
    """The worker-side function computing a feature set's raw values (a registry as data)."""
    from datagate.embed import forensic

    sets = {forensic.VERSION: forensic.compute}
    if name not in sets:
        raise ConfigError(
            f"feature set {name!r} is not computed by this datagate (it computes "
            f"{', '.join(sets)})",
            hint="rescan and retrain with this version's --model forensic",
        )
    return sets[name]


def worker_embedder(embedder_id: str | None, prep: Preprocessing | None) -> Embedder | None:
    """The embedder a scan worker runs itself: a weight-free one (pixel statistics, the
    forensic features, their stack) with this id and preprocessing; None for models.

    An embedder's id names what its vectors are, so the worker's copy computes the same
    vectors as the scan process's would.
    """
    if embedder_id is None or prep is None:
        return None
    return _worker_embedder(embedder_id, prep)


@functools.lru_cache(maxsize=4)
def _worker_embedder(embedder_id: str, prep: Preprocessing) -> Embedder | None:
    from datagate.embed.forensic import ForensicEmbedder
    from datagate.embed.stacked import StackedEmbedder

    weight_free: dict[str, Callable[[], Embedder]] = {
        PixelEmbedder.id: PixelEmbedder,
        ForensicEmbedder.id: ForensicEmbedder,
        f"{ForensicEmbedder.id}+{PixelEmbedder.id}": lambda: StackedEmbedder(
            ForensicEmbedder(), PixelEmbedder()
        ),
    }
    make = weight_free.get(embedder_id)
    embedder = make() if make is not None else None
    return embedder if embedder is not None and embedder.preprocessing == prep else None


class Embedder(Protocol):
    """Turns a batch of prepared inputs into unit vectors (n, dim).

    The input of one image is what :func:`prepare_input` makes in the workers: uint8 pixels
    (size, size, 3) for models, or the feature bytes of a :class:`FeaturePreprocessing`.
    """

    #: Identifies the weights: two embedders with the same id give the same vectors.
    id: str
    dim: int
    preprocessing: Preprocessing
    device: str

    def embed(self, pixels: Pixels) -> Vectors: ...


def cache_key(embedder: Embedder) -> str:
    """What an embedding depends on besides the image bytes: weights and preprocessing."""
    return f"{embedder.id}|{embedder.preprocessing.id}"


# --------------------------------------------------------------------------- pixel


class PixelEmbedder:
    """Weight-free features from pixel statistics, for when no model weights can be had.

    From a 64x64 centre crop, four blocks, each centred and scaled to unit length, then
    concatenated and scaled to unit length (288 dimensions):

    * colour: square roots of a 4x4x4 joint RGB histogram, minus their mean (64);
    * layout: an 8x8 grey thumbnail, minus its mean (64);
    * chroma layout: 4x4 block means of the opponent channels R-G and (R+G)/2-B (32);
    * texture: 8-bin gradient-orientation histograms (magnitude weighted) over 4x4 cells,
      each cell minus its mean (128).

    It sees colour, composition and texture, not meaning: two photographs of different
    dogs on grass are close. Diversity indices from it are comparable only with each other.
    """

    id = "pixel-v2"
    dim = 288
    device = "cpu"
    preprocessing = Preprocessing(size=64, interpolation="box", resize_mode="shortest")

    def embed(self, pixels: Pixels) -> Vectors:
        n = len(pixels)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = np.divide(pixels, np.float32(255.0), dtype=np.float32)  # = astype, then / 255
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        level = pixels >> 6  # 4 levels per channel, in uint8
        idx = ((level[..., 0] << 4) | (level[..., 1] << 2) | level[..., 2]).reshape(n, -1)
        cells = idx.astype(np.intp)
        cells += 64 * np.arange(n)[:, None]
        hist = np.bincount(cells.ravel(), minlength=64 * n)
        colour = np.sqrt(hist.reshape(n, 64) / idx.shape[1])
        gray = 0.299 * r + 0.587 * g + 0.114 * b
        layout = gray.reshape(n, 8, 8, 8, 8).mean(axis=(2, 4)).reshape(n, 64)
        rg = (r - g).reshape(n, 4, 16, 4, 16).mean(axis=(2, 4)).reshape(n, 16)
        yb = ((r + g) / 2 - b).reshape(n, 4, 16, 4, 16).mean(axis=(2, 4)).reshape(n, 16)
        chroma = np.concatenate([rg, yb], axis=1)
        gx = np.zeros_like(gray)
        gy = np.zeros_like(gray)
        np.subtract(gray[:, :, 2:], gray[:, :, :-2], out=gx[:, :, 1:-1])
        np.subtract(gray[:, 2:, :], gray[:, :-2, :], out=gy[:, 1:-1, :])
        magnitude = np.hypot(gx, gy)
        flat = _texture_cells(n)
        flat += _orientation_bins(gx, gy)
        texture = np.bincount(flat.ravel(), weights=magnitude.ravel(), minlength=128 * n)
        texture = texture.reshape(n, 16, 8)
        texture = _unit(texture - texture.mean(axis=2, keepdims=True), axis=2).reshape(n, 128)
        blocks = [
            colour - colour.mean(axis=1, keepdims=True),
            layout - layout.mean(axis=1, keepdims=True),
            chroma,
            texture,
        ]
        out = np.concatenate([_unit(block, axis=1) for block in blocks], axis=1)
        return _unit(out, axis=1).astype(np.float32)


def _texture_cells(n: int) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Each pixel's texture bin less its orientation: image * 128 + 4x4 cell * 8 (n, 64, 64)."""
    cell = (np.arange(64) // 16)[:, None] * 4 + (np.arange(64) // 16)[None, :]
    return np.arange(n, dtype=np.intp)[:, None, None] * 128 + cell[None] * 8


#: tan(pi/8): the boundary between the two bins of each quarter turn
_TAN_EIGHTH = np.float32(np.tan(np.pi / 8))


def orientation_bins(gx: np.ndarray[Any, Any], gy: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The bin of each gradient's orientation in [0, pi), eight bins of pi/8: what
    ``floor(mod(arctan2(gy, gx), pi) / (pi/8))`` means, decided by comparisons instead.

    Pixel gradients fall exactly on bin edges all the time (gx = gy, gx = 0, gy = 0), and
    arctan2's last bit there depends on the CPU's vector instructions (AVX-512 and AVX2
    builds of numpy disagree), so the arctan2 form put the same image's edges in different
    bins on different machines. Here the quarter turn comes from exact sign and equality
    tests, and the half within it from one rounded product against tan(pi/8) (never an
    exact tie for pixel values): the same bins on every machine."""
    return _orientation_bins(gx, gy).astype(np.int64)


def _orientation_bins(
    gx: np.ndarray[Any, Any], gy: np.ndarray[Any, Any]
) -> np.ndarray[Any, np.dtype[np.int8]]:
    """:func:`orientation_bins` as int8, from the gradients' absolute values.

    Turned into the upper half plane (x, y) = (+-gx, +-gy), y >= 0, the gradient lies in
    quarter 0 (x > 0, y < x), 1 (x > 0, y >= x), 2 (x <= 0, y > -x) or 3 (x <= 0, y <= -x);
    turned back by the quarter, it is (along, across) = (x, y), (x + y, y - x), (y, -x) or
    (y - x, -x - y). With big = max(|x|, y) and small = min(|x|, y), that is (big, small) in
    quarters 0 and 2 and (big + small, big - small) in 1 and 3: the same float32 sums and
    products as the turned gradient's, so every comparison decides as it did.
    """
    ax = np.abs(gx)
    ay = np.abs(gy)  # = y, the turned gradient's (a turn flips both signs or neither)
    right = np.where(gy < 0, gx < 0, gx > 0)  # x > 0
    right |= (gy == 0) & (gx != 0)
    odd = np.where(right, ay >= ax, ay <= ax)  # quarter 1 or 3
    small = np.minimum(ax, ay)
    big = np.maximum(ax, ay, out=ax)
    along = big.copy()
    np.add(big, small, out=along, where=odd)
    along *= _TAN_EIGHTH
    across = np.subtract(big, small, out=small, where=odd)  # small where even
    out: np.ndarray[Any, np.dtype[np.int8]]
    out = np.greater_equal(across, along).view(np.int8)  # the half within the quarter
    out += odd.view(np.int8) << 1
    out += np.logical_not(right).view(np.int8) << 2
    return out


def _unit(x: np.ndarray[Any, Any], axis: int) -> np.ndarray[Any, Any]:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    out: np.ndarray[Any, Any] = np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)
    return out


# --------------------------------------------------------------------------- open_clip


class OpenClipEmbedder:
    """An open_clip image tower, run in batches under ``torch.inference_mode``."""

    def __init__(self, spec: str, *, device: str = "auto", precision: str = "auto") -> None:
        import torch

        from datagate.embed.torchvision_compat import ensure_torchvision

        ensure_torchvision()
        import open_clip

        open_clip.add_model_config(_CONFIG_DIR)
        self.device = resolve_device(device)
        name, pretrained, self.id = _resolve_open_clip(spec)
        seed = _random_seed(pretrained)
        with _offline_if_cached(name, pretrained):
            quiet: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if seed is not None:  # random weights on purpose: open_clip's warning is noise
                torch.manual_seed(seed)
                pretrained = None
                quiet = _logging_disabled()
            try:
                with quiet:
                    model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
            except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
                raise ModelUnavailable(f"cannot load model {spec!r}: {exc}", hint=_CHOICES) from exc
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.preprocessing = Preprocessing(
            size=int(size if isinstance(size, int) else size[0]),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=str(cfg.get("resize_mode", "shortest")),
            mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
            fill=int(cfg.get("fill_color", 0)),
        )
        self.dtype = _dtype(precision, self.device)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.dim = int(getattr(model.visual, "output_dim", 0) or self._probe_dim())
        self._mean = torch.tensor(self.preprocessing.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.preprocessing.std, device=self.device).view(1, 3, 1, 1)

    def _probe_dim(self) -> int:
        size = self.preprocessing.size
        return int(self.embed(np.zeros((1, size, size, 3), dtype=np.uint8)).shape[1])

    def embed(self, pixels: Pixels) -> Vectors:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels))
            if self.device != "cpu":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(self._mean).div_(self._std)
            features = self.model.encode_image(x.to(self.dtype))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
            return features.cpu().numpy().astype(np.float32)


@contextlib.contextmanager
def _logging_disabled() -> Any:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here")
    return device


def _dtype(precision: str, device: str) -> torch.dtype:
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise ConfigError(f"--precision: expected auto, fp32, fp16 or bf16, got {precision!r}")
    return table[precision]


def _random_seed(pretrained: str | None) -> int | None:
    if pretrained is None or not pretrained.startswith("random"):
        return None
    _, _, seed = pretrained.partition("-seed")
    return int(seed) if seed.isdigit() else TINY_SEED


def _resolve_open_clip(spec: str) -> tuple[str, str | None, str]:
    """(open_clip model name, pretrained tag or None, embedder id) for a spec."""
    import open_clip

    if spec == "tiny":
        return (
            TINY_MODEL,
            f"random-seed{TINY_SEED}",
            f"open_clip:{TINY_MODEL}:random-seed{TINY_SEED}",
        )
    if spec.startswith("hf-hub:"):
        return spec, None, f"open_clip:{spec}"
    if spec.startswith("local-dir:"):
        path = Path(spec.removeprefix("local-dir:")).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise ModelUnavailable(
                f"{spec}: expected a folder with open_clip_config.json and the model weights",
                hint=_CHOICES,
            )
        return f"local-dir:{path}", None, f"open_clip:local-dir:{_dir_fingerprint(path)}"
    name, _, tag = spec.partition(":")
    if name not in open_clip.list_models():
        raise ConfigError(
            f"unknown model {name!r}",
            hint=f"{_CHOICES}; open_clip models include {', '.join(open_clip.list_models()[:8])}…",
        )
    if tag == "random":
        tag = f"random-seed{TINY_SEED}"
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not tags:
            raise ModelUnavailable(f"{name} has no pretrained weights; pass {name}:random")
        tag = tags[0]
    elif not tag.startswith("random") and tag not in open_clip.list_pretrained_tags_by_model(name):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(f"model {name}: unknown pretrained tag {tag!r}; known: {known}")
    return name, tag, f"open_clip:{name}:{tag}"


def _dir_fingerprint(path: Path) -> str:
    """A local checkpoint is identified by its folder name and its files' sizes and times."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        stat = f.stat()
        h.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return f"{path.name}@{h.hexdigest()[:12]}"


def _hub_file(name: str, pretrained: str | None) -> tuple[str, str] | None:
    """(repo id, file name) of a model's weights on the Hub, or None if not hub-hosted."""
    import open_clip

    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:"), "open_clip_config.json"
    if name.startswith("local-dir:") or pretrained is None or pretrained.startswith("random"):
        return None
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub[:-1], "")
    return repo, filename or "open_clip_pytorch_model.bin"


def _is_cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    stem = filename.rsplit(".", 1)[0]
    candidates = [filename, f"{stem}.safetensors", "open_clip_model.safetensors"]
    return any(isinstance(try_to_load_from_cache(repo, c), str) for c in candidates)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face Hub answers a TCP connect within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1]
    host, _, port = endpoint.split("/")[0].partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_if_cached(name: str, pretrained: str | None) -> Any:
    """Fail fast when weights are neither cached nor downloadable; never wait on retries."""
    hub = _hub_file(name, pretrained)
    if hub is None:
        yield
        return
    repo, filename = hub
    if _is_cached(repo, filename):
        previous = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # cached: never touch the network
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        return
    if not hub_reachable():
        raise ModelUnavailable(_unreachable(f"{name}:{pretrained}", repo, filename), hint=_CHOICES)
    yield


def _unreachable(model: str, repo: str, filename: str) -> str:
    return (
        f"the weights of {model} ({repo}/{filename}) are not in the Hugging Face cache and "
        "the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1)"
    )


def _fallback(why: str) -> str:
    return (
        f"--model auto: {why}. Falling back to the weight-free pixel embedder: diversity and "
        "semantic duplicates will reflect colour, layout and texture, not meaning."
    )


_CHOICES = (
    "choose with --model or DATAGATE_MODEL: 'auto' (this model if available, else the "
    "weight-free 'pixel' embedder), 'pixel', 'local-dir:PATH' (open_clip_config.json + "
    "weights), 'hf-hub:ORG/REPO' or 'NAME:TAG' once its weights are downloaded "
    '(e.g. on a machine with network: python -c "import open_clip; '
    "open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k')\"), or 'none'"
)


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Choice:
    """The embedder a spec resolved to, and a warning to show when it fell back."""

    embedder: Embedder | None
    warning: str | None = None


def model_spec(option: str | None) -> str:
    """The spec in effect: the option, else ``DATAGATE_MODEL``, else ``auto``."""
    return (option or os.environ.get(MODEL_ENV) or "auto").strip()


def load_embedder(spec: str, *, device: str = "auto", precision: str = "auto") -> Choice:
    """Resolve a spec to an embedder; ``auto`` falls back to ``pixel`` with a warning."""
    if spec == "none":
        return Choice(None)
    if spec in ("pixel", PixelEmbedder.id):
        return Choice(PixelEmbedder())
    if spec in FORENSIC_SPECS:
        from datagate.embed.forensic import ForensicEmbedder

        return Choice(ForensicEmbedder(), warning=FORENSIC_NOTE)
    head, plus, rest = spec.partition("+")
    if plus and head in FORENSIC_SPECS:
        return _stacked(rest, device=device, precision=precision)
    if spec.endswith(tuple(f"+{name}" for name in FORENSIC_SPECS)):
        raise ConfigError(
            f"--model {spec}: the forensic features come first in a stack",
            hint=f"--model forensic+{spec.rpartition('+')[0]}",
        )
    if spec.startswith("forensic"):
        from datagate.embed.forensic import VERSION

        raise ConfigError(
            f"--model {spec}: this datagate computes the forensic features {VERSION}",
            hint="use --model forensic (or forensic+SPEC), and retrain heads of another version",
        )
    if spec == "auto":
        if not _clip_installed():
            return Choice(
                PixelEmbedder(), warning=_fallback("torch and open_clip are not installed")
            )
        if not _is_cached(*DEFAULT_HUB_FILE) and not hub_reachable():
            return Choice(
                PixelEmbedder(), warning=_fallback(_unreachable(DEFAULT_MODEL, *DEFAULT_HUB_FILE))
            )
        try:
            return Choice(OpenClipEmbedder(DEFAULT_MODEL, device=device, precision=precision))
        except ModelUnavailable as exc:
            return Choice(PixelEmbedder(), warning=_fallback(exc.message))
    if not _clip_installed():
        raise ConfigError(
            f"--model {spec}: torch and open_clip are not installed",
            hint="pip install 'datagate[clip]', or use --model pixel",
        )
    return Choice(OpenClipEmbedder(spec, device=device, precision=precision))


#: Specs naming the forensic features: the short name and the current version's id.
FORENSIC_SPECS = ("forensic", "forensic-v1")
FORENSIC_NOTE = (
    "--model forensic: these vectors describe how each file was made (spectrum, noise, JPEG "
    "tables, size), not what it shows. They are for detector heads; diversity and "
    "semantic_duplicates computed from them are meaningless (most pairs of images have a "
    "cosine above 0.95). To scan with a detector and keep semantic measures, stack the "
    "features with a model: --model forensic+SPEC."
)


def _stacked(rest: str, *, device: str, precision: str) -> Choice:
    from datagate.embed.forensic import ForensicEmbedder
    from datagate.embed.stacked import StackedEmbedder

    if not rest or rest == "none":
        raise ConfigError("--model forensic+SPEC needs a model after the '+' (e.g. forensic+pixel)")
    inner = load_embedder(rest, device=device, precision=precision)
    if inner.embedder is None:
        raise ConfigError(f"--model forensic+{rest}: nothing to stack the features with")
    return Choice(StackedEmbedder(ForensicEmbedder(), inner.embedder), warning=inner.warning)


def spec_for(embedder_id: str) -> str:
    """The ``--model`` spec that loads an embedder of this id again (a head's hint)."""
    from datagate.embed.forensic import VERSION

    if embedder_id == PixelEmbedder.id:
        return "pixel"
    if embedder_id == VERSION:
        return "forensic"
    if embedder_id.startswith(f"{VERSION}+"):
        return f"forensic+{spec_for(embedder_id.removeprefix(f'{VERSION}+'))}"
    return embedder_id.removeprefix("open_clip:")


def _clip_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "open_clip"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
