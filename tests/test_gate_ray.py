"""``datagate enforce --engine ray``: every Backend operation on Ray Data gives what the local
backend gives, and the gate's decisions are the same with either engine.

One small local Ray (2 CPUs, 200 MB object store, no dashboard) serves the module and is
shut down at its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagate.cli import main
from datagate.contract import KEPT, REJECTED, REPORT_JSON
from datagate.measures import neardup, semantic
from datagate.measures.backend import LOCAL

from .conftest import ROOT, start_small_ray

ray = pytest.importorskip("ray")

from datagate import gate_ray  # noqa: E402  (needs Ray only when an operation runs)


@pytest.fixture(scope="module")
def backend() -> Iterator[gate_ray.RayBackend]:
    start_small_ray(ray)
    found = gate_ray.ray_backend()  # joins the Ray above: closing it leaves that Ray up
    yield found
    found.close()
    assert ray.is_initialized()
    ray.shutdown()


# -- the operations, against the local backend --------------------------------------------------


def test_equal_groups_are_the_local_ids_with_nulls_across_chunks(
    backend: gate_ray.RayBackend,
) -> None:
    rng = np.random.default_rng(3)
    values = [None if rng.random() < 0.05 else f"{rng.integers(0, 2500):064x}" for _ in range(9000)]
    values[1] = ""  # an empty string is a value, not a null
    values[4000] = ""
    chunked = pa.chunked_array([pa.array(values[:3001]), pa.array(values[3001:])])
    got = backend.equal_groups(chunked)
    want = LOCAL.equal_groups(chunked)
    assert got.dtype == want.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (got == -1).sum() == sum(v is None for v in values) > 0
    assert got[1] == got[4000] >= 0 and len(np.unique(got[got >= 0])) < 2600


def _planted(count: int, seed: int, bits: int = 6) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """Distinct random 64-bit hashes, a tenth of them a few bits from another."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    near = rng.choice(count, count // 10, replace=False)
    flips = rng.integers(1, 2**bits, near.size).astype(np.uint64)
    h[near] = h[rng.integers(0, count, near.size)] ^ (flips << np.uint64(rng.integers(0, 58)))
    return np.unique(h)


def _same_pairs(got: Any, want: Any) -> None:
    assert [a.dtype for a in got] == [np.dtype(np.int64)] * 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_near_pairs_of_a_few_thousand_hashes_are_the_local_ones(
    backend: gate_ray.RayBackend,
) -> None:
    h = _planted(3000, seed=1)
    got = backend.distinct_pairs(h, 6)
    _same_pairs(got, neardup.distinct_pairs(h, 6))
    assert len(got[0]) > 100


@pytest.mark.parametrize("r", [0, 6, 10])
def test_near_pairs_through_the_bands_are_the_local_ones(
    backend: gate_ray.RayBackend, monkeypatch: pytest.MonkeyPatch, r: int
) -> None:
    h = np.random.default_rng(r).permutation(_planted(20_000, seed=2, bits=10))  # unsorted
    assert len(h) > gate_ray.LOCAL_MAX
    want = neardup.distinct_pairs(h, r)

    def no_fallback(*_: Any) -> Any:
        raise AssertionError("the banded search fell back to the local one")

    monkeypatch.setattr(neardup, "distinct_pairs", no_fallback)
    got = backend.distinct_pairs(h, r)
    _same_pairs(got, want)
    assert (len(got[0]) > 500) == (r > 0)
    assert np.all(got[0] < got[1]) and np.all(got[2] <= r)


def test_near_pairs_in_several_rounds_and_candidate_batches(
    backend: gate_ray.RayBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hashes that differ only in their low 20 bits share most blocks: long runs, many
    # candidates per bucket, cut into small batches; every choice of blocks in its own round
    rng = np.random.default_rng(4)
    h = np.unique(rng.integers(0, 2**20, 6000).astype(np.uint64) | np.uint64(0xABCD << 40))
    want = neardup.distinct_pairs(h, 4)
    monkeypatch.setattr(gate_ray, "ROUND_SHARE", 1e-12)
    monkeypatch.setattr(neardup, "PAIR_BATCH", 1000)
    _same_pairs(backend.distinct_pairs(h, 4), want)
    assert len(want[0]) > 5000


@pytest.mark.parametrize("probes", [1, 2])
def test_kmeans_labels_are_the_local_ones(backend: gate_ray.RayBackend, probes: int) -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(30, 24))
    x = (centres[rng.integers(0, 30, 70_000)] + rng.normal(0, 0.3, (70_000, 24))).astype(
        np.float16
    )  # more rows than one chunk of diversity.CHUNK_ROWS
    got = backend.kmeans_labels(x, 30, seed=7, probes=probes)
    want = LOCAL.kmeans_labels(x, 30, seed=7, probes=probes)
    assert got.shape == want.shape and got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    one = backend.kmeans_labels(x[:50], 1, probes=probes)
    np.testing.assert_array_equal(one, LOCAL.kmeans_labels(x[:50], 1, probes=probes))


def _with_copies(n: int, dim: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 4, replace=False)
    x[copies] = x[rng.integers(0, n, copies.size)] + rng.normal(0, 0.05, (copies.size, dim))
    x[: n // 20] = x[n // 20 : n // 10]  # exact copies tie on similarity
    return x


def _same_rows(x: Any, got: Any, want: Any) -> None:
    """The same rows, or where not, exact copies of them: the BLAS of a one-thread worker may
    round a product's last bit otherwise than the driver's, and break a tie between two
    copies the other way (the similarities agree to 1e-6)."""
    differ = np.flatnonzero(got != want)
    assert differ.size <= len(got) // 100
    assert (got[differ] >= 0).all() and (want[differ] >= 0).all()
    np.testing.assert_array_equal(x[got[differ]], x[want[differ]])


@pytest.mark.parametrize("redundancy", [False, True])
def test_cluster_matches_are_the_local_ones(backend: gate_ray.RayBackend, redundancy: bool) -> None:
    x = _with_copies(4000, 32, seed=6)
    labels = LOCAL.kmeans_labels(x, 6, seed=0, probes=2)
    rank = np.random.default_rng(7).permutation(len(x))
    got = backend.cluster_matches(x, labels, rank, 0.95, redundancy)
    want = LOCAL.cluster_matches(x, labels, rank, 0.95, redundancy)
    assert [a.dtype for a in got] == [a.dtype for a in want]
    _same_rows(x, got[0], want[0])  # the row each row duplicates
    _same_rows(x, got[2], want[2])  # its most similar row
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[3], want[3], rtol=0, atol=1e-6)
    assert (got[0] >= 0).sum() > 800
    assert (got[2] >= 0).all() == redundancy


def test_semantic_duplicates_on_ray_decide_as_locally(backend: gate_ray.RayBackend) -> None:
    x = _with_copies(3000, 16, seed=8).astype(np.float16)
    preference = np.random.default_rng(9).permutation(len(x))
    kwargs: dict[str, Any] = {"preference": preference, "clusters": 5, "redundancy": True}
    got = semantic.semantic_duplicates(x, 0.95, backend=backend, **kwargs)
    want = semantic.semantic_duplicates(x, 0.95, **kwargs)
    _same_rows(x, got.duplicate_of, want.duplicate_of)
    _same_rows(x, got.nearest, want.nearest)
    assert got.clusters == want.clusters == 5 and got.dropped.sum() > 500


def test_group_stats_are_the_local_sums(backend: gate_ray.RayBackend) -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=(30_000, 12)).astype(np.float16)
    groups = rng.integers(0, 9, len(x))
    groups[groups == 4] = 5  # group 4 has no rows
    got = backend.group_stats(x, groups, 10)
    want = LOCAL.group_stats(x, groups, 10)
    assert len(got) == len(want) == 10
    for a, b in zip(got, want):
        assert a.count == b.count and a.dim == b.dim
        # float32 products summed over other blocks of rows (diversity.outer_sum)
        np.testing.assert_allclose(a.outer, b.outer, rtol=1e-6, atol=1e-6 * max(a.count, 1))
        np.testing.assert_allclose(a.total, b.total, rtol=1e-6, atol=1e-6 * max(a.count, 1))
        assert a.value("index") == pytest.approx(b.value("index"), abs=1e-7)
    assert got[4].count == 0 and got[9].count == 0 and got[5].count > 0


def test_counts_are_the_local_counts(backend: gate_ray.RayBackend) -> None:
    rng = np.random.default_rng(11)
    groups = rng.integers(-1, 4, 5000)  # -1: not counted; 3: outside [0, 3)
    got = backend.counts(groups, 3)
    want = LOCAL.counts(groups, 3)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert got.sum() == ((groups >= 0) & (groups < 3)).sum()
    np.testing.assert_array_equal(backend.counts(np.full(4, -1), 2), [0, 0])


# -- end to end: the gate with either engine ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo shards (exact, near and semantic duplicates), scanned with the pixel model."""
    root = tmp_path_factory.mktemp("gate-ray")
    shards = root / "shards"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_demo_shards.py"), str(shards)],
        check=True,
        capture_output=True,
    )
    scan = root / "scan"
    assert main(["scan", str(shards), "-o", str(scan), "--model", "pixel", "-q"]) == 0
    return scan


def _judged(out: Path) -> tuple[list[Any], list[Any], dict[str, Any]]:
    kept = sorted(pq.read_table(out / KEPT, columns=["key"]).column("key").to_pylist())
    columns = ["key", "rule_id", "reason_code", "duplicate_of"]
    rejected = pq.read_table(out / REJECTED, columns=columns).to_pylist()
    report = json.loads((out / REPORT_JSON).read_text())
    return kept, sorted(rejected, key=lambda r: r["key"]), report


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_enforce_on_ray_decides_as_the_local_engine(
    backend: gate_ray.RayBackend, demo_scan: Path, tmp_path: Path, policy: str
) -> None:
    rules = str(ROOT / "rules" / f"{policy}.yaml")
    outs = {}
    codes = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / engine
        argv = ["enforce", str(demo_scan), "--rules", rules, "--out", str(outs[engine]), "-q"]
        codes[engine] = main([*argv, "--engine", engine])
    assert codes["local"] == codes["ray"] in (0, 1)
    kept, rejected, report = _judged(outs["ray"])
    local_kept, local_rejected, local_report = _judged(outs["local"])
    assert kept == local_kept and rejected == local_rejected
    reasons = {r["reason_code"] for r in rejected}
    assert {"exact_duplicate", "near_duplicate"} <= reasons  # the backend's work decided
    assert report["verdict"] == local_report["verdict"]

    def outcomes(r: dict[str, Any]) -> list[Any]:
        return [(o["id"], o["passed"], o["code"]) for o in r["rules"]]

    assert outcomes(report) == outcomes(local_report)
    for ours, local in zip(report["rules"], local_report["rules"]):  # sums of other blocks
        assert ours["value"] == (local["value"] and pytest.approx(local["value"], rel=1e-6))
    assert report["counts"] == local_report["counts"]
    assert report["diversity"] == local_report["diversity"]  # rounded to 4 decimals


def test_ray_address_that_answers_nothing_is_exit_2(
    demo_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gate"
    argv = ["enforce", str(demo_scan), "--out", str(out), "--engine", "ray", "-q"]
    assert main([*argv, "--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--ray-address 127.0.0.1:1" in err and "nothing answers there" in err
    assert "ray start --head" in err
    assert not (out / KEPT).exists()


def test_ray_not_installed_is_exit_2_with_the_install_hint(
    demo_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["enforce", str(demo_scan), "--out", str(tmp_path / "gate"), "--engine", "ray", "-q"]
    assert main(argv) == 2
    assert "pip install 'datagate[ray]'" in capsys.readouterr().err
