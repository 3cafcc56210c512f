"""Weight-free forensic features for synthetic-image detection (``--model forensic``).

Four families of cues that the forensic literature reports on generated images, computed in
the scan's worker processes from the one decode the scan already makes (the analysis image,
shorter side 256-511 px) and from the file's bytes (container and JPEG header, EXIF):

* ``spectral``: periodic peaks in the noise residual's spectrum at periods 2, 4 and 8 px
  (up-sampling layers, the JPEG grid; Durall et al. 2020, Corvi et al. 2023), the strongest
  isolated spectral peak, the azimuthally averaged power spectrum of the luma (its shape
  relative to a 1/f^2 prior), its slope, and axis/anisotropy ratios at high frequencies;
* ``residual``: statistics of a 4-neighbour Laplacian noise residual: energy (absolute and
  relative to contrast), kurtosis, cross-channel correlation (demosaicing and chroma
  sub-sampling correlate the channels), lag-1/lag-2 autocorrelation (interpolation), the
  noise floor of the flattest blocks and how noise grows with brightness (a camera's
  shot noise does; a decoder's output need not), block heterogeneity, flat and clipped area;
* ``compression``: container (JPEG, PNG, WebP), the JPEG quantisation tables (estimated
  IJG quality of luma and chroma, whether the tables are exactly libjpeg's scaled tables as
  platforms and software write them, or custom as cameras and some editors write them),
  chroma sub-sampling, progressive coding, APPn segments (an encoder's signature), and the
  strength of an 8x8 block grid in the pixels at any phase (a trace of earlier JPEG
  compression, also in PNGs);
* ``geometry``: output-geometry and camera priors from the header, never the pixels:
  megapixels, aspect ratio, squareness, sides that are multiples of 64/16/8 (latent
  generators' strides), exact sizes that generators document as their defaults
  (:data:`GENERATOR_SIZES`), camera-like sensor sizes, and EXIF camera fields (make/model,
  maker notes, exposure, software) and an ICC profile.

Generator metadata (PNG text chunks, C2PA, XMP) is deliberately not read: provenance decides
those definitively, and a head that learned "has a ComfyUI chunk" would learn nothing that
survives a re-save.

Every feature has a fixed, documented centre and scale (:data:`FEATURES`, chosen from the
feature's definition, not fitted to any data set). :meth:`ForensicEmbedder.embed`
standardises with them, clips to +-:data:`CLIP`, and stores ``s / R`` followed by one
norm-completing component ``sqrt(1 - |s|^2 / R^2)`` (``R = CLIP * sqrt(F)``): the vector is
exactly unit length, as every embedding is, and its first ``F`` components are a fixed
linear map of the standardised features, so no image's norm rescales another feature (a head
standardises per dimension again anyway). The definition is versioned: any change to the
list, the constants or the computation is a new :data:`VERSION`, and the preprocessing id
carries a digest of the table so caches and heads refuse mismatches.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from datagate.embed.models import FeaturePreprocessing, Pixels, Preprocessing, Vectors

if TYPE_CHECKING:
    from datagate.scanner.decode import Decoded

VERSION = "forensic-v1"
FAMILIES = ("spectral", "residual", "compression", "geometry")
#: Standardised values are clipped to this many scales before the vector is formed.
CLIP = 6.0
#: The largest centre crop of the analysis image the pixel cues look at.
CROP = 384

F64 = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class Feature:
    """One feature: its family, the fixed centre and scale it is standardised with, and what
    it measures. ``centre`` is also the value given when the feature cannot be measured (a
    JPEG table of a PNG, a spectrum of an image under 32 px), so "not measured" is neutral."""

    name: str
    family: str
    centre: float
    scale: float
    doc: str


def _radial_prior() -> list[float]:
    """Centred log10 power per radial band of a 1/f^2 spectrum: the profile's centres."""
    mids = [(i + 0.5) / 16 for i in range(8)]  # band centres in cycles/px over (0, 0.5]
    logs = [-2 * math.log10(f) for f in mids]
    mean = sum(logs) / len(logs)
    return [round(v - mean, 3) for v in logs]


_RADIAL = _radial_prior()

FEATURES: tuple[Feature, ...] = (
    # ---- spectral: luma residual and luma spectra over tiles of the centre crop
    Feature("spec_peak_p2", "spectral", 0.0, 0.3,
            "log10 residual power at period-2 bins (0,16),(16,0),(16,16) of 32-px tiles / "
            "median of their 8 neighbours"),
    Feature("spec_peak_p4", "spectral", 0.0, 0.3,
            "the same at period 4 (bins 8 of 32): 2x up-sampling, JPEG grid at 1/2 scale"),
    Feature("spec_peak_p8", "spectral", 0.0, 0.3,
            "the same at period 8 (bins 4 of 32): 8x up-sampling (VAE), the JPEG grid"),
    Feature("spec_peak_max", "spectral", 0.3, 0.3,
            "largest log10 ratio of any non-DC residual bin to its 8 neighbours' median"),
    *(
        Feature(f"spec_radial_{i}", "spectral", _RADIAL[i], 1.0,
                f"log10 luma power in radial band {i} of 8 over (0, 0.5] cycles/px (64-px "
                "Hann tiles), minus the mean over bands; centre: a 1/f^2 spectrum")
        for i in range(8)
    ),
    Feature("spec_slope", "spectral", -2.5, 0.7,
            "least-squares slope of log10 luma power against log10 frequency (1/32-1/2)"),
    Feature("spec_hv", "spectral", 0.0, 0.4,
            "log10 of horizontal over vertical luma power above 0.25 cycles/px"),
    Feature("spec_axes", "spectral", 0.3, 0.5,
            "log10 of mean residual power on the axes over off the axes above 0.25 cycles/px"),
    # ---- residual: r = x - mean of the 4 neighbours, per channel and for the luma
    Feature("res_energy", "residual", 0.6, 0.4, "log10 std of the luma residual (grey levels)"),
    Feature("res_energy_rel", "residual", -1.0, 0.4,
            "log10 of the luma residual's std over the luma's std (contrast-free)"),
    Feature("res_kurtosis", "residual", 1.0, 0.4,
            "log10 kurtosis of the luma residual (3 for Gaussian noise)"),
    Feature("res_corr_rg", "residual", 1.5, 0.7,
            "Fisher z of the correlation of the R and G residuals"),
    Feature("res_corr_gb", "residual", 1.5, 0.7, "the same for G and B"),
    Feature("res_corr_rb", "residual", 1.5, 0.7, "the same for R and B"),
    Feature("res_acf1", "residual", 0.0, 0.3,
            "lag-1 autocorrelation of the luma residual (mean of horizontal and vertical)"),
    Feature("res_acf2", "residual", 0.0, 0.2, "the same at lag 2 (colour-filter-array period)"),
    Feature("res_hv", "residual", 0.0, 0.2,
            "log10 of horizontal over vertical first-difference std of the luma"),
    Feature("res_noise_floor", "residual", 0.0, 0.5,
            "log10 of the 10th percentile of 8x8-block residual std: the flattest areas' noise"),
    Feature("res_noise_slope", "residual", 0.3, 1.0,
            "slope of log block noise (20th percentile per brightness band) against log "
            "brightness: signal-dependent (shot) noise"),
    Feature("res_block_cv", "residual", 0.0, 0.3,
            "log10 coefficient of variation of the 8x8-block residual std"),
    Feature("res_flat", "residual", -1.5, 0.5,
            "log10(share of 8x8 blocks with residual std < 0.5 grey levels + 0.01)"),
    Feature("res_clipped", "residual", -2.0, 1.0,
            "log10(share of pixels with a channel at 0 or 255 + 0.001)"),
    # ---- compression: the container and the JPEG header, from the file's bytes
    Feature("cmp_jpeg", "compression", 0.0, 1.0, "+1 JPEG container, -1 otherwise"),
    Feature("cmp_png", "compression", 0.0, 1.0, "+1 PNG container, -1 otherwise"),
    Feature("cmp_webp", "compression", 0.0, 1.0, "+1 WebP container, -1 otherwise"),
    Feature("jpg_quality_luma", "compression", 85.0, 15.0,
            "IJG quality (1-100) whose scaled table has the luma table's sum, rounded to a "
            "whole number; n/a: centre"),
    Feature("jpg_quality_chroma", "compression", 85.0, 15.0, "the same for the chroma table"),
    Feature("jpg_ijg_tables", "compression", 0.0, 1.0,
            "+1 tables exactly libjpeg's scaled tables (software, platforms), -1 custom "
            "(cameras, some editors), 0 n/a"),
    Feature("jpg_subsampled_h", "compression", 0.0, 1.0,
            "+1 chroma sub-sampled horizontally (4:2:x), -1 not, 0 n/a"),
    Feature("jpg_subsampled_v", "compression", 0.0, 1.0,
            "+1 chroma sub-sampled vertically (4:2:0), -1 not, 0 n/a"),
    Feature("jpg_progressive", "compression", 0.0, 1.0, "+1 progressive, -1 baseline, 0 n/a"),
    Feature("jpg_app_segments", "compression", 1.0, 1.0,
            "distinct APPn and COM segment types (JFIF, Exif, XMP, MPF, ICC, Adobe, comment); "
            "n/a: centre"),
    Feature("jpg_adobe", "compression", 0.0, 1.0,
            "+1 an Adobe APP14 or Photoshop APP13 segment, -1 none, 0 n/a"),
    Feature("cmp_blockiness", "compression", 0.05, 0.1,
            "log10 of the 8x8 block-grid strength in the pixels at the strongest phase (the "
            "grid period at the analysis scale must be a whole 2-8 px; else 0)"),
    # ---- geometry and camera priors: header and EXIF only
    Feature("geo_log2_mp", "geometry", 0.0, 2.0, "log2 of megapixels (as displayed)"),
    Feature("geo_aspect", "geometry", 0.3, 0.3, "|ln(width / height)|"),
    Feature("geo_square", "geometry", 0.0, 1.0, "+1 square, -1 not"),
    Feature("geo_mult64", "geometry", 0.0, 1.0, "+1 both sides multiples of 64, -1 not"),
    Feature("geo_mult16", "geometry", 0.0, 1.0, "+1 both sides multiples of 16, -1 not"),
    Feature("geo_mult8", "geometry", 0.0, 1.0, "+1 both sides multiples of 8, -1 not"),
    Feature("geo_generator_size", "geometry", 0.0, 1.0,
            "+1 exactly a size generators document as a default (GENERATOR_SIZES), -1 not"),
    Feature("geo_camera_size", "geometry", 0.0, 1.0,
            "+1 at least 5 MP with a 4:3, 3:2 or 16:9 sensor aspect (within 1 %), -1 not"),
    Feature("exif_camera", "geometry", 0.0, 1.0, "+1 EXIF Make or Model, -1 none"),
    Feature("exif_makernote", "geometry", 0.0, 1.0, "+1 EXIF MakerNote, -1 none"),
    Feature("exif_exposure", "geometry", 0.0, 1.0,
            "+1 EXIF ExposureTime, FNumber or ISO, -1 none"),
    Feature("exif_software", "geometry", 0.0, 1.0, "+1 EXIF Software, -1 none"),
    Feature("icc_profile", "geometry", 0.0, 1.0, "+1 an embedded ICC profile, -1 none"),
)  # fmt: skip

NAMES = tuple(f.name for f in FEATURES)
N_FEATURES = len(FEATURES)
_INDEX = {name: i for i, name in enumerate(NAMES)}
_CENTRE = np.array([f.centre for f in FEATURES], dtype=np.float64)
_SCALE = np.array([f.scale for f in FEATURES], dtype=np.float64)
RADIUS = CLIP * math.sqrt(N_FEATURES)

#: Exact output sizes (either orientation) that generators document as defaults or
#: supported sizes: SD 1.x/2.x (512, 768), DALL-E 2 (256, 512, 1024), SDXL's training
#: buckets, DALL-E 3 (1024x1792), gpt-image-1 (1024x1536), Imagen 3 (896x1280, 768x1408),
#: Qwen-Image (1328x1328, 928x1664). From model cards and API documentation, never from
#: evaluation data.
GENERATOR_SIZES = frozenset(
    {
        (256, 256), (512, 512), (768, 768), (1024, 1024), (2048, 2048),
        (896, 1152), (832, 1216), (768, 1344), (640, 1536),
        (1024, 1792), (1024, 1536), (896, 1280), (768, 1408),
        (1328, 1328), (928, 1664),
    }
)  # fmt: skip
_CAMERA_ASPECTS = (4 / 3, 3 / 2, 16 / 9)

#: libjpeg's (IJG) standard tables at quality 50, natural (row-major) order.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)  # fmt: skip
_IJG_CHROMA = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32,
    dtype=np.int64,
)  # fmt: skip
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34,
    27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37,
    44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
], dtype=np.int64)  # fmt: skip


def definition_digest() -> str:
    """A digest of the feature table and constants: part of the preprocessing id."""
    payload = {
        "version": VERSION,
        "features": [asdict(f) for f in FEATURES],
        "clip": CLIP,
        "crop": CROP,
        "generator_sizes": sorted(GENERATOR_SIZES),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- embedder


class ForensicEmbedder:
    """Standardised forensic features as unit vectors; the features come from the workers.

    Its input for one image is the little-endian float32 bytes of :func:`compute`'s raw
    feature values (``4 * N_FEATURES`` uint8), which the scan's workers produce
    (:func:`datagate.embed.models.prepare_input`); :meth:`embed` only standardises them.
    """

    id = VERSION
    dim = N_FEATURES + 1
    device = "cpu"
    n_features = N_FEATURES
    preprocessing: Preprocessing = FeaturePreprocessing(
        size=0,
        interpolation="none",
        resize_mode="none",
        features=VERSION,
        digest=definition_digest(),
    )

    def embed(self, pixels: Pixels) -> Vectors:
        raw = unpack(pixels, N_FEATURES)
        return to_vectors(raw)


def unpack(inputs: Pixels, n_features: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Raw feature values (n, F) from the worker's bytes (n, 4F)."""
    flat = np.ascontiguousarray(inputs, dtype=np.uint8).reshape(len(inputs), -1)
    if flat.shape[1] != 4 * n_features:
        raise ValueError(
            f"forensic input has {flat.shape[1]} bytes per image, expected {4 * n_features}"
        )
    return flat.view("<f4").astype(np.float32)


def standardise(raw: np.ndarray[Any, Any]) -> F64:
    """Fixed per-feature standardisation, clipped to +-CLIP; non-finite values become 0."""
    z = (np.asarray(raw, dtype=np.float64) - _CENTRE) / _SCALE
    z = np.where(np.isfinite(z), z, 0.0)
    return np.asarray(np.clip(z, -CLIP, CLIP), dtype=np.float64)


def to_vectors(raw: np.ndarray[Any, Any]) -> Vectors:
    """Unit vectors ``[s / R, sqrt(1 - |s|^2 / R^2)]`` of standardised features ``s``."""
    s = standardise(raw) / RADIUS
    rest = np.sqrt(np.clip(1.0 - np.sum(s * s, axis=1, keepdims=True), 0.0, 1.0))
    return np.concatenate([s, rest], axis=1).astype(np.float32)


def features_of(vectors: np.ndarray[Any, Any]) -> F64:
    """Standardised features back from stored vectors (the inverse of :func:`to_vectors`)."""
    return np.asarray(vectors, dtype=np.float64)[:, :N_FEATURES] * RADIUS


def family_columns(family: str) -> list[int]:
    """Indices of a family's features in the vector (for ablations)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown feature family {family!r}; known: {', '.join(FAMILIES)}")
    return [i for i, f in enumerate(FEATURES) if f.family == family]


# --------------------------------------------------------------------------- features


def compute(decoded: Decoded, data: bytes | None) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Raw values of every feature for one decoded image (in :data:`FEATURES` order)."""
    values = _CENTRE.copy()
    found: dict[str, float] = {}
    rgb = np.asarray(decoded.image.convert("RGB"), dtype=np.float64)
    found.update(_pixel_features(rgb))
    found.update(_blockiness(rgb, decoded))
    found.update(_compression(decoded, data))
    found.update(_geometry(decoded))
    for name, value in found.items():
        if math.isfinite(value):
            values[_INDEX[name]] = value
    return values.astype(np.float32)


def _luma(rgb: F64) -> F64:
    return np.asarray(rgb @ np.array([0.299, 0.587, 0.114]), dtype=np.float64)


def _centre_crop(a: F64, limit: int) -> F64:
    h, w = a.shape[:2]
    ch, cw = min(h, limit), min(w, limit)
    top, left = (h - ch) // 2, (w - cw) // 2
    return a[top : top + ch, left : left + cw]


def _residual(x: F64) -> F64:
    """``x`` minus the mean of its 4 neighbours (interior pixels), per channel if 3-d."""
    return np.asarray(
        x[1:-1, 1:-1] - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]),
        dtype=np.float64,
    )


def _tiles(x: F64, size: int) -> F64:
    h, w = (x.shape[0] // size) * size, (x.shape[1] // size) * size
    t = x[:h, :w].reshape(h // size, size, w // size, size).transpose(0, 2, 1, 3)
    return np.asarray(t.reshape(-1, size, size), dtype=np.float64)


def _power(x: F64, size: int) -> F64 | None:
    """Mean power spectrum over Hann-windowed, mean-removed tiles (None: too small)."""
    tiles = _tiles(x, size)
    if not len(tiles):
        return None
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(size), np.hanning(size))
    spec = np.abs(np.fft.fft2(tiles * window)) ** 2
    return np.asarray(spec.mean(axis=0), dtype=np.float64)


def _corr(a: F64, b: F64) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0 else float("nan")


def _fisher(c: float) -> float:
    return math.atanh(min(0.999, max(-0.999, c))) if math.isfinite(c) else float("nan")


def _pixel_features(rgb: F64) -> dict[str, float]:
    out: dict[str, float] = {}
    crop = _centre_crop(rgb, CROP)
    if min(crop.shape[:2]) < 8:
        return out
    y = _luma(crop)
    res = _residual(crop)
    ry = _residual(y)
    eps = 1e-9
    std = float(ry.std())
    out["res_energy"] = math.log10(std + 0.01)
    out["res_energy_rel"] = math.log10((std + 0.01) / (float(y.std()) + 1.0))
    m2 = float(np.mean((ry - ry.mean()) ** 2))
    m4 = float(np.mean((ry - ry.mean()) ** 4))
    out["res_kurtosis"] = math.log10(m4 / (m2 * m2) + eps) if m2 > 0 else float("nan")
    r, g, b = res[..., 0], res[..., 1], res[..., 2]
    out["res_corr_rg"] = _fisher(_corr(r, g))
    out["res_corr_gb"] = _fisher(_corr(g, b))
    out["res_corr_rb"] = _fisher(_corr(r, b))
    if min(ry.shape) > 3:
        out["res_acf1"] = (_corr(ry[:, 1:], ry[:, :-1]) + _corr(ry[1:], ry[:-1])) / 2
        out["res_acf2"] = (_corr(ry[:, 2:], ry[:, :-2]) + _corr(ry[2:], ry[:-2])) / 2
    dx, dy = float(np.diff(y, axis=1).std()), float(np.diff(y, axis=0).std())
    out["res_hv"] = math.log10((dx + 0.01) / (dy + 0.01))
    out["res_clipped"] = math.log10(
        float(np.mean(np.any((crop <= 0) | (crop >= 255), axis=2))) + 0.001
    )
    out.update(_block_noise(ry, y[1:-1, 1:-1]))
    out.update(_spectral(y, ry))
    return out


def _block_noise(ry: F64, y: F64) -> dict[str, float]:
    blocks = _tiles(ry, 8)
    if len(blocks) < 4:
        return {}
    sigma = blocks.std(axis=(1, 2))
    level = _tiles(y, 8).mean(axis=(1, 2))
    out = {
        "res_noise_floor": math.log10(float(np.percentile(sigma, 10)) + 0.01),
        "res_flat": math.log10(float(np.mean(sigma < 0.5)) + 0.01),
    }
    mean_sigma = float(sigma.mean())
    if mean_sigma > 0:
        out["res_block_cv"] = math.log10(float(sigma.std()) / mean_sigma + 0.01)
    edges = np.linspace(16, 240, 9)
    xs, ys = [], []
    for lo, hi in itertools.pairwise(edges.tolist()):
        chosen = sigma[(level >= lo) & (level < hi)]
        if len(chosen) >= 4:
            xs.append(math.log10((lo + hi) / 2))
            ys.append(math.log10(float(np.percentile(chosen, 20)) + 0.01))
    if len(xs) >= 3 and max(xs) - min(xs) > 0.1:
        out["res_noise_slope"] = float(np.polyfit(xs, ys, 1)[0])
    return out


def _peak_ratio(p: F64, u: int, v: int) -> float:
    n = p.shape[0]
    neighbours = [
        p[(u + du) % n, (v + dv) % n]
        for du in (-1, 0, 1)
        for dv in (-1, 0, 1)
        if (du, dv) != (0, 0)
    ]
    return math.log10((p[u, v] + 1e-12) / (float(np.median(neighbours)) + 1e-12))


def _spectral(y: F64, ry: F64) -> dict[str, float]:
    out: dict[str, float] = {}
    p = _power(ry, 32)
    if p is not None:
        for period in (2, 4, 8):
            k = 32 // period
            bins = [(0, k), (k, 0), (k, k), (k, (32 - k) % 32)]
            out[f"spec_peak_p{period}"] = float(np.mean([_peak_ratio(p, *b) for b in set(bins)]))
        logp = np.log10(p + 1e-12)
        padded = np.pad(logp, 1, mode="wrap")
        stack = np.stack(
            [
                padded[1 + du : 33 + du, 1 + dv : 33 + dv]
                for du in (-1, 0, 1)
                for dv in (-1, 0, 1)
                if (du, dv) != (0, 0)
            ]
        )
        ratio = logp - np.median(stack, axis=0)
        ratio[0, 0] = -np.inf
        out["spec_peak_max"] = float(ratio.max())
        f = np.fft.fftfreq(32)
        fu, fv = np.meshgrid(f, f, indexing="ij")
        high = np.hypot(fu, fv) > 0.25
        axes = high & ((fu == 0) | (fv == 0))
        off = high & (fu != 0) & (fv != 0)
        if axes.any() and off.any():
            out["spec_axes"] = math.log10(
                (float(p[axes].mean()) + 1e-12) / (float(p[off].mean()) + 1e-12)
            )
    q = _power(y, 64)
    if q is not None:
        f = np.fft.fftfreq(64)
        fu, fv = np.meshgrid(f, f, indexing="ij")
        rho = np.hypot(fu, fv)
        bands = []
        for i in range(8):
            ring = (rho > i / 16) & (rho <= (i + 1) / 16)
            bands.append(math.log10(float(q[ring].mean()) + 1e-12))
        mean = sum(bands) / len(bands)
        for i, v in enumerate(bands):
            out[f"spec_radial_{i}"] = v - mean
        fit = (rho >= 1 / 32) & (rho <= 0.5)
        out["spec_slope"] = float(np.polyfit(np.log10(rho[fit]), np.log10(q[fit] + 1e-12), 1)[0])
        hx = float(q[np.abs(fv) > 0.25].sum())  # horizontal frequencies: along a row
        hy = float(q[np.abs(fu) > 0.25].sum())
        out["spec_hv"] = math.log10((hx + 1e-12) / (hy + 1e-12))
    return out


def _blockiness(rgb: F64, decoded: Decoded) -> dict[str, float]:
    """Strength of an 8x8 grid (at the analysis scale) in the luma's first differences."""
    h, w = rgb.shape[:2]
    period = 8 * w / max(1, decoded.width)
    whole = round(period)
    if whole < 2 or abs(period - whole) > 0.01 * period or min(h, w) < 4 * whole:
        return {}
    y = _luma(rgb)
    strengths = []
    for d in (np.abs(np.diff(y, axis=1)).mean(axis=0), np.abs(np.diff(y, axis=0)).mean(axis=1)):
        n = (len(d) // whole) * whole
        by_phase = d[:n].reshape(-1, whole).mean(axis=0)
        base = float(np.median(by_phase))
        if base <= 0:
            return {}
        strengths.append(float(by_phase.max()) / base)
    return {"cmp_blockiness": math.log10(math.sqrt(strengths[0] * strengths[1]))}


def _ijg_quality(table: np.ndarray[Any, Any], standard: np.ndarray[Any, Any]) -> float:
    """The IJG quality whose scaled standard table has ``table``'s sum, rounded to a whole number.

    A whole number, as qualities are: a fractional estimate would tell encoders apart by
    their rounding (74.76 vs 74.75), a difference a head would blow up to any size when it
    is the only variation in its training set.
    """
    scale = 100.0 * float(table.sum()) / float(standard.sum())
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(min(100, max(1, round(quality))))


def _ijg_table(standard: np.ndarray[Any, Any], quality: int) -> np.ndarray[Any, Any]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.asarray(np.clip((standard * scale + 50) // 100, 1, 255), dtype=np.int64)


def _is_ijg(table: np.ndarray[Any, Any], standard: np.ndarray[Any, Any], quality: float) -> bool:
    for q in range(max(1, int(quality) - 2), min(100, int(quality) + 2) + 1):
        scaled = _ijg_table(standard, q)
        if np.array_equal(table, scaled) or np.array_equal(table, scaled[_ZIGZAG]):
            return True
    return False


def _app_segments(data: bytes) -> set[int]:
    """APPn / COM marker codes before the first scan of a JPEG."""
    found: set[int] = set()
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image
            break
        if marker == 0xFF:
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            found.add(marker)
        at += 2 + length
    return found


def _sign(flag: bool) -> float:
    return 1.0 if flag else -1.0


def _compression(decoded: Decoded, data: bytes | None) -> dict[str, float]:
    fmt = decoded.format or ""
    out = {
        "cmp_jpeg": _sign(fmt == "JPEG"),
        "cmp_png": _sign(fmt == "PNG"),
        "cmp_webp": _sign(fmt == "WEBP"),
    }
    if fmt != "JPEG" or not data:
        return out
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as im:
        tables = getattr(im, "quantization", None) or {}
        luma = np.asarray(tables.get(0, []), dtype=np.int64)
        chroma = np.asarray(tables.get(1, []), dtype=np.int64)
        if luma.size == 64:
            q = _ijg_quality(luma, _IJG_LUMA)
            out["jpg_quality_luma"] = q
            ijg = _is_ijg(luma, _IJG_LUMA, q)
            if chroma.size == 64:
                qc = _ijg_quality(chroma, _IJG_CHROMA)
                out["jpg_quality_chroma"] = qc
                ijg = ijg and _is_ijg(chroma, _IJG_CHROMA, qc)
            out["jpg_ijg_tables"] = _sign(ijg)
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(im)
        if sampling >= 0 and im.mode not in ("L", "1"):
            out["jpg_subsampled_h"] = _sign(sampling >= 1)
            out["jpg_subsampled_v"] = _sign(sampling == 2)
        out["jpg_progressive"] = _sign(
            bool(im.info.get("progressive") or im.info.get("progression"))
        )
    segments = _app_segments(data)
    out["jpg_app_segments"] = float(len(segments))
    out["jpg_adobe"] = _sign(0xEE in segments or 0xED in segments)
    return out


_MAKE, _MODEL, _SOFTWARE = 0x010F, 0x0110, 0x0131
_MAKERNOTE, _EXPOSURE, _FNUMBER, _ISO = 0x927C, 0x829A, 0x829D, 0x8827


def _geometry(decoded: Decoded) -> dict[str, float]:
    w, h = decoded.width, decoded.height
    mp = w * h / 1e6
    aspect = max(w, h) / max(1, min(w, h))
    exif = decoded.exif
    return {
        "geo_log2_mp": math.log2(max(mp, 1e-6)),
        "geo_aspect": abs(math.log(max(w, 1) / max(h, 1))),
        "geo_square": _sign(w == h),
        "geo_mult64": _sign(w % 64 == 0 and h % 64 == 0),
        "geo_mult16": _sign(w % 16 == 0 and h % 16 == 0),
        "geo_mult8": _sign(w % 8 == 0 and h % 8 == 0),
        "geo_generator_size": _sign((min(w, h), max(w, h)) in GENERATOR_SIZES),
        "geo_camera_size": _sign(
            mp >= 5 and any(abs(aspect - a) <= 0.01 * a for a in _CAMERA_ASPECTS)
        ),
        "exif_camera": _sign(bool(exif.get(_MAKE) or exif.get(_MODEL))),
        "exif_makernote": _sign(_MAKERNOTE in exif),
        "exif_exposure": _sign(any(t in exif for t in (_EXPOSURE, _FNUMBER, _ISO))),
        "exif_software": _sign(bool(exif.get(_SOFTWARE))),
        "icc_profile": _sign(bool(decoded.info.get("icc_profile"))),
    }


def feature_table() -> str:
    """The feature list as a Markdown table (docs/detection.md)."""
    lines = [
        "| # | feature | family | centre | scale | what it measures |",
        "|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(FEATURES):
        lines.append(f"| {i} | `{f.name}` | {f.family} | {f.centre:g} | {f.scale:g} | {f.doc} |")
    return "\n".join(lines)
