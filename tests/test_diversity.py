"""Diversity measures: exact against the nxn definitions, stable, and monotone in collapse."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from datagate.measures.diversity import (
    cluster_coverage,
    diversity_index,
    mean_cosine_distance,
    normalise,
    vendi_score,
)


def mixture(
    n: int, d: int = 64, centres: int = 40, spread: float = 0.6, seed: int = 0
) -> np.ndarray:
    """Embeddings drawn around ``centres`` random directions (a dataset of distinct subjects)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d))
    return means[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d))


def naive_vendi(x: np.ndarray, q: float) -> float:
    u = normalise(x).astype(np.float64)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    if q == 1:
        return math.exp(-(lam * np.log(lam)).sum())
    if math.isinf(q):
        return 1 / lam.max()
    return (lam**q).sum() ** (1 / (1 - q))


@pytest.mark.parametrize("q", [1.0, 2.0, 0.5, math.inf])
def test_vendi_through_covariance_equals_the_n_by_n_definition(q: float) -> None:
    x = mixture(300, d=32)
    assert vendi_score(x, q) == pytest.approx(naive_vendi(x, q), rel=1e-5)


def test_extremes() -> None:
    one = np.tile(np.random.default_rng(1).normal(size=(1, 16)), (500, 1))
    assert vendi_score(one) == pytest.approx(1.0) and diversity_index(one) == pytest.approx(0.0)
    basis = np.eye(16)[np.arange(1600) % 16]  # spread evenly over every direction
    assert vendi_score(basis) == pytest.approx(16.0) and diversity_index(basis) == pytest.approx(
        1.0
    )


def test_mean_cosine_distance_equals_the_pairwise_mean() -> None:
    x = mixture(200, d=16)
    u = normalise(x).astype(np.float64)
    sims = u @ u.T
    naive = 1 - (sims.sum() - np.trace(sims)) / (len(u) * (len(u) - 1))
    assert mean_cosine_distance(x) == pytest.approx(naive, rel=1e-6)


def test_index_is_stable_under_random_subsampling() -> None:
    x = mixture(40_000)
    full = diversity_index(x)
    rng = np.random.default_rng(7)
    for size in (20_000, 8_000, 4_000):
        sub = x[rng.choice(len(x), size, replace=False)]
        assert abs(diversity_index(sub) - full) < 0.02, size


def test_index_falls_monotonically_as_a_dataset_collapses() -> None:
    """Images replaced by near-copies of a few originals, as in model collapse."""
    rng = np.random.default_rng(3)
    x = mixture(6_000)
    pool = rng.choice(len(x), 30, replace=False)  # the modes the data collapses onto
    values = []
    for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95):
        y = x.copy()
        victims = rng.choice(len(y), int(fraction * len(y)), replace=False)
        sources = rng.choice(pool, len(victims))
        y[victims] = x[sources] + 0.05 * rng.normal(size=(len(victims), x.shape[1]))  # near-copies
        values.append(diversity_index(y))
    assert all(a > b for a, b in itertools.pairwise(values)), values


def test_cluster_coverage() -> None:
    x = mixture(4_000, centres=20, spread=0.1)
    everything = np.ones(len(x), dtype=bool)
    assert cluster_coverage(x, everything, k=20) == 1.0
    # keep only the first half of the subjects' images: coverage drops to about half
    rng = np.random.default_rng(0)
    means = rng.normal(size=(20, 64))
    subject = np.argmax(normalise(x) @ normalise(means).T, axis=1)
    half = subject < 10
    assert 0.3 < cluster_coverage(x, half, k=20) < 0.7


def test_the_shipped_floor_passes_real_photographs_of_any_size_and_fails_collapsed_ones(
    tmp_path: Path, evaldata: Path
) -> None:
    """The default policy's min_diversity on real photographs (pixel embedder, as offline):
    distinct pictures pass at 8 to 56 images; near copies of 3 of them fail at every size."""
    from PIL import Image

    import datagate
    from datagate.contract import load_embeddings
    from datagate.measures.diversity import Running
    from datagate.rules.diversity import MinDiversity
    from datagate.rules.policy import load_policy

    real = sorted((evaldata / "detect" / "ml72" / "real").iterdir())
    real += sorted((evaldata / "detect" / "necenzurat" / "real").iterdir())
    shipped = load_policy(Path(datagate.__file__).parent / "policies" / "default.yaml")
    floor = next(r for r in shipped.rules if isinstance(r, MinDiversity))
    assert floor.metric == "index"
    folders = [evaldata / "detect" / "ml72" / "real", evaldata / "detect" / "necenzurat" / "real"]
    datagate.scan(folders, tmp_path / "real", workers=1, model="pixel")
    distinct = load_embeddings(tmp_path / "real")
    assert distinct is not None and len(distinct.keys) == len(real) == 56
    collapsed_dir = tmp_path / "collapsed"
    collapsed_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(56):
        with Image.open(real[i % 3]) as im:
            base = np.asarray(im.convert("RGB").resize((256, 256)), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(collapsed_dir / f"{i}.png")
    datagate.scan([collapsed_dir], tmp_path / "collapsed-scan", workers=1, model="pixel")
    collapsed = load_embeddings(tmp_path / "collapsed-scan")
    assert collapsed is not None
    for size in (8, 16, 32, 56):
        pick = rng.choice(56, size, replace=False)
        real_index = Running(distinct.vectors[pick]).value("index")
        copies_index = Running(collapsed.vectors[pick]).value("index")
        assert real_index >= floor.min > copies_index, (size, real_index, copies_index)
