"""Detector heads, the estimated human share, min_human filtering and max_generation."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from datagate.cli import main
from datagate.contract import load_embeddings
from datagate.detect.head import (
    Calibration,
    DetectorMismatch,
    load_head,
    save_head,
)
from datagate.detect.prevalence import ShareModel, separates
from datagate.detect.train import train_head
from datagate.errors import InputError
from datagate.rules import apply_policy, parse_policy

from .conftest import jpeg_bytes, photo

FAIR = Calibration(
    platt_a=1.0, platt_b=0.0, threshold=0.5, tpr=0.8, fpr=0.2, n_synthetic=400, n_real=400
)


def _separable(n: int = 200, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(np.int64)
    x = rng.normal(size=(n, dim))
    x[:, 0] += np.where(y == 1, 3.0, -3.0)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


# --------------------------------------------------------------------------- heads


def test_head_round_trip_and_held_out_figures(tmp_path: Path) -> None:
    x, y = _separable()
    result = train_head(x, y, embedder="pixel-v2", preprocessing="p1", model="pixel")
    assert result.held_out["auc"] > 0.97
    cal = result.head.calibration
    assert cal.tpr > 0.9 and cal.fpr < 0.1 and (cal.n_synthetic, cal.n_real) == (100, 100)
    assert separates(cal)
    path = tmp_path / "head.safetensors"
    save_head(result.head, path)
    loaded = load_head(path)
    assert loaded.id == result.head.id
    assert loaded.calibration == cal and loaded.model == "pixel"
    np.testing.assert_allclose(loaded.proba(x), result.head.proba(x), atol=1e-5)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_a_head_on_random_labels_is_not_used() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 16))
    y = rng.integers(0, 2, 120)
    head = train_head(x, y, embedder="e", preprocessing="p").head
    assert not separates(head.calibration)
    model = ShareModel(10, 0, head.proba(x), 0, "not_human", head.calibration)
    estimate = model.estimate()
    assert not model.usable and "does not clearly separate" in (estimate.note or "")
    # nothing known about the 120 scored images: the interval is the identification bound
    assert estimate.share == pytest.approx(10 / 130)
    assert (estimate.low, estimate.high) == (pytest.approx(10 / 130), pytest.approx(1.0))


def test_head_refuses_another_models_embeddings() -> None:
    x, y = _separable()
    head = train_head(x, y, embedder="pixel-v2", preprocessing="p1", model="pixel").head
    with pytest.raises(DetectorMismatch, match="trained on embeddings of pixel-v2"):
        head.check("open_clip:ViT-B-32:openai", "p1")
    with pytest.raises(DetectorMismatch, match="expects 16-dimensional"):
        head.check("pixel-v2", "p1", dim=288)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "head.safetensors"
    evil.write_bytes(pickle.dumps({"weight": _Boom()}))
    with pytest.raises(InputError, match="not a safetensors file"):
        load_head(evil)
    assert not (tmp_path / "PWNED").exists()
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(InputError, match="not a datagate detector head"):
        load_head(other)


# --------------------------------------------------------------------------- share


def _mixture(rng: np.random.Generator, humans: int, synthetic: int) -> np.ndarray:
    """Scores whose rates at 0.5 are TPR 0.8 / FPR 0.2 (as in FAIR)."""
    real = np.where(
        rng.random(humans) < 0.2, rng.uniform(0.5, 1, humans), rng.uniform(0, 0.5, humans)
    )
    fake = np.where(
        rng.random(synthetic) < 0.8, rng.uniform(0.5, 1, synthetic), rng.uniform(0, 0.5, synthetic)
    )
    return np.r_[real, fake]


def test_interval_covers_the_true_share_on_simulated_mixtures() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    trials = 200
    for trial in range(trials):
        n = 400
        humans = rng.binomial(n, 0.7)
        scores = _mixture(rng, humans, n - humans)
        # rates measured on a finite held-out sample, as a real head's are
        cal_real, cal_fake = _mixture(rng, 400, 0), _mixture(rng, 0, 400)
        cal = Calibration(
            1.0,
            0.0,
            0.5,
            float((cal_fake >= 0.5).mean()),
            float((cal_real >= 0.5).mean()),
            400,
            400,
        )
        est = ShareModel(30, 10, scores, 0, "not_human", cal, seed=trial).estimate()
        truth = (30 + humans) / (n + 40)
        assert est.low is not None and est.high is not None
        hits += est.low <= truth <= est.high
    assert hits / trials >= 0.9


def test_provenance_only_share_is_exact() -> None:
    est = ShareModel(7, 3, np.array([]), 0, "exclude", None).estimate()
    assert est.share == est.low == est.high == pytest.approx(0.7)
    assert est.method == "provenance counts"


def test_filter_drops_the_fewest_most_synthetic_images() -> None:
    rng = np.random.default_rng(3)
    scores = _mixture(rng, 300, 300)
    model = ShareModel(50, 40, scores, 0, "not_human", FAIR)
    assert model.estimate().share < 0.6
    for bound in ("estimate", "lower"):
        drops = model.filter_to(0.7, bound)  # type: ignore[arg-type]
        assert drops is not None
        after = model.estimate(*drops)
        value = after.share if bound == "estimate" else after.low
        assert value is not None and value >= 0.7
        assert drops[0] == 40  # every synthetic-by-provenance image goes first
        fewer = model.estimate(drops[0], drops[1] - 1)
        assert (fewer.share if bound == "estimate" else fewer.low) < 0.7
    # no human evidence and a floor above what keeping every image could show
    assert ShareModel(0, 5, scores[:10], 0, "not_human", FAIR).filter_to(0.99, "lower") is None


# --------------------------------------------------------------------------- rules


def _table(scores: np.ndarray, origin: list[str], generation: list[int | None] | None = None):  # type: ignore[no-untyped-def]
    n = len(origin)
    columns = {
        "key": [f"k{i}" for i in range(n)],
        "error": [None] * n,
        "decodable": [True] * n,
        "origin": origin,
        "origin_strength": [None if o == "unknown" else "definitive" for o in origin],
        "generator": [None] * n,
        "detector_score": pa.array(
            [None if np.isnan(s) else float(s) for s in scores], pa.float32()
        ),
    }
    if generation is not None:
        columns["generation"] = pa.array(generation, pa.int32())
    return pa.table(columns)


def test_min_human_filter_keeps_human_evidence_and_drops_likely_synthetic() -> None:
    rng = np.random.default_rng(5)
    scores = _mixture(rng, 200, 200)
    origin = ["human"] * 60 + ["synthetic"] * 20 + ["unknown"] * 400
    table = _table(np.r_[np.full(80, np.nan), scores], origin)
    rules = "rules: [{rule: min_human, min: 0.7, bound: %s, action: %s}]"
    failed = apply_policy(table, parse_policy(rules % ("estimate", "fail"), "t"), calibration=FAIR)
    assert not failed.passed and failed.kept.all()  # fail only judges
    for bound in ("estimate", "lower"):
        d = apply_policy(table, parse_policy(rules % (bound, "filter"), "t"), calibration=FAIR)
        outcome = d.outcomes[0]
        assert d.passed and outcome.value is not None and outcome.value >= 0.7
        assert d.kept[:60].all()  # every human-evidenced image stays
        assert not d.kept[60:80].any()  # synthetic provenance goes first
        dropped = np.flatnonzero(~d.kept[80:]) + 80
        kept_scored = np.flatnonzero(d.kept[80:]) + 80
        all_scores = np.r_[np.full(80, np.nan), scores]
        assert all_scores[dropped].min() >= all_scores[kept_scored].max()
        assert all(r.startswith("likely synthetic: P(synthetic)") for r in d.reason[dropped])
        assert "estimate" in outcome.details and outcome.details["bound"] == bound
    lower = apply_policy(table, parse_policy(rules % ("lower", "filter"), "t"), calibration=FAIR)
    estimate = apply_policy(
        table, parse_policy(rules % ("estimate", "filter"), "t"), calibration=FAIR
    )
    assert (~lower.kept).sum() > (~estimate.kept).sum()  # the lower bound asks for more


def test_min_human_message_names_the_interval() -> None:
    rng = np.random.default_rng(6)
    table = _table(_mixture(rng, 150, 50), ["unknown"] * 200)
    d = apply_policy(
        table, parse_policy("rules: [{rule: min_human, min: 0.7}]", "t"), calibration=FAIR
    )
    message = d.outcomes[0].message
    assert message.startswith("estimated human share ") and "95% interval" in message
    assert "200 scored by the detector" in message


def test_max_generation_with_explicit_unknown_policy() -> None:
    table = _table(
        np.full(4, np.nan), ["human", "synthetic", "synthetic", "unknown"], [0, 1, 3, None]
    )
    keep = apply_policy(
        table, parse_policy("rules: [{rule: max_generation, max: 1, unknown: keep}]", "t")
    )
    assert keep.kept.tolist() == [True, True, False, True]
    assert keep.reason[2] == "generation 3 > 1"
    reject = apply_policy(
        table, parse_policy("rules: [{rule: max_generation, max: 1, unknown: reject}]", "t")
    )
    assert reject.kept.tolist() == [True, True, False, False]
    with pytest.raises(Exception, match="unknown"):
        parse_policy("rules: [{rule: max_generation, max: 1}]", "t")


def test_generation_is_read_from_metadata() -> None:
    from datagate.provenance import evidence as prov

    human = prov.decide([prov.Evidence("c2pa", "human", "strong", "x")])
    unsigned = prov.decide([prov.Evidence("sidecar", "human", "strong", "x")])
    unknown = prov.decide([])
    assert prov.generation({}, {}, unsigned) == (None, None)  # an unsigned claim weighs weak
    assert prov.generation({"json": {"generation": 2}}, {}, unknown) == (2, "sidecar")
    assert prov.generation({"generation": "1"}, {}, unknown) == (1, "metadata")
    assert prov.generation({}, {"datagate:generation": "3"}, unknown) == (3, "text chunk")
    assert prov.generation({}, {}, human) == (0, "human provenance")
    assert prov.generation({"json": {"generation": "many"}}, {}, unknown) == (None, None)


# --------------------------------------------------------------------------- end to end


def _smooth(seed: int) -> Image.Image:
    """A flat, gradient-like picture: visibly unlike ``photo``'s noisy texture."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(2, 2, 3)).astype(np.uint8)
    return Image.fromarray(low).resize((160, 120), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    for i in range(24):
        (root / "real" / f"r{i}.jpg").write_bytes(jpeg_bytes(photo(100 + i)))
        (root / "fake" / f"f{i}.jpg").write_bytes(jpeg_bytes(_smooth(200 + i)))
    return root


def test_train_scan_enforce_with_a_detector(labelled: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    head_path = tmp_path / "head.safetensors"
    code = main(
        [
            "detector", "train", "--real", str(labelled / "real"), "--synthetic",
            str(labelled / "fake"), "--out", str(head_path), "--model", "pixel", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["held_out"]["auc"] > 0.9 and summary["held_out"]["n_real"] == 24
    assert set(summary["held_out"]["tpr_at_fpr"]) == {"0.01", "0.05"}

    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        (data / f"new-real-{i}.jpg").write_bytes(jpeg_bytes(photo(300 + i)))
        (data / f"new-fake-{i}.jpg").write_bytes(jpeg_bytes(_smooth(400 + i)))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Model: dreamshaper_8")
    buf = io.BytesIO()
    photo(500).save(buf, "PNG", pnginfo=info)  # looks real, says synthetic: provenance wins
    (data / "declared.png").write_bytes(buf.getvalue())
    out = tmp_path / "scan"
    assert main(["scan", str(data), "-o", str(out), "--detector", str(head_path), "-q"]) == 0
    rows = {r["member"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}
    declared = rows["declared.png"]
    assert declared["p_synthetic"] == 1.0 and declared["p_synthetic_source"] == "provenance"
    assert declared["detector_score"] < 0.5
    real = [r for m, r in rows.items() if m.startswith("new-real")]
    fake = [r for m, r in rows.items() if m.startswith("new-fake")]
    assert all(r["p_synthetic_source"] == "detector" for r in real)
    assert min(r["detector_score"] for r in fake) > max(r["detector_score"] for r in real)
    # the scores are the head applied to the very vectors the scan stored
    head = load_head(head_path)
    emb = load_embeddings(out)
    assert emb is not None
    by_key = dict(zip(emb.keys.tolist(), head.proba(emb.vectors.astype(np.float32))))
    for row in rows.values():
        assert row["detector_score"] == pytest.approx(by_key[row["key"]], abs=1e-5)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["detector"]["id"] == head.id and meta["config"]["detector"] == head.id

    rules = tmp_path / "r.yaml"
    rules.write_text("rules: [{rule: min_human, min: 0.6, action: filter}]\n")
    assert main(["enforce", str(out), "-r", str(rules), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    outcome = report["rules"][0]
    assert outcome["details"]["estimate"]["scored"] <= 12
    rejected = pq.read_table(tmp_path / "manifests" / "rejected.parquet")
    assert "declared.png" in set(
        rejected.column("member").to_pylist()
    )  # synthetic by provenance dropped first

    # a head refuses a scan with another embedder, before any work
    code = main(["scan", str(data), "-o", str(tmp_path / "s2"), "--detector", str(head_path),
                 "--model", "tiny", "-q"])  # fmt: skip
    assert code == 2
    assert "trained on embeddings of pixel-v2" in capsys.readouterr().err

    assert main(["detector", "eval", str(head_path), "--real", str(data), "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["metrics"]["n_real"] == 13 and evaluation["human_share"]["true"] == 1.0


def test_stability_score_runs_on_labelled_folders(labelled: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(
        ["detector", "stability", "--real", str(labelled / "real"), "--synthetic",
         str(labelled / "fake"), "--model", "pixel", "--json"]
    )  # fmt: skip
    assert code == 0
    found = json.loads(capsys.readouterr().out)
    assert found["score"] == "instability" and 0.0 <= found["metrics"]["auc"] <= 1.0
    assert found["metrics"]["n_real"] == found["metrics"]["n_synthetic"] == 24


def test_training_from_the_real_labelled_evaldata(evaldata: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    labels = evaldata / "detect" / "labels.csv"
    out = tmp_path / "head.safetensors"
    assert main(["detector", "train", "--labels", str(labels), "--out", str(out),
                 "--model", "pixel", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    held = summary["held_out"]
    assert (held["n_real"], held["n_synthetic"]) == (56, 119)  # every labelled image used
    assert 0.0 <= held["auc"] <= 1.0 and load_head(out).embedder == "pixel-v2"


def test_precommit_hook_scores_with_a_head(labelled: Path, tmp_path: Path) -> None:
    from datagate.detect.labelled import collect
    from datagate.embed.models import PixelEmbedder
    from datagate.precommit import run_hook

    embedder = PixelEmbedder()
    data = collect(
        embedder, None, real=[labelled / "real"], synthetic=[labelled / "fake"], workers=1
    )
    head = train_head(
        data.vectors, data.labels, embedder=embedder.id, preprocessing=embedder.preprocessing.id
    ).head
    policy = parse_policy("rules: [{rule: min_human, min: 0.4}]", "t")
    state = tmp_path / ".datagate"
    tables = []
    for _ in range(2):  # the second run comes from the caches
        run = run_hook([labelled], policy, source="t", state_dir=state, workers=1,
                       embedder=embedder, head=head)  # fmt: skip
        estimate = run.report["rules"][0]["details"]["estimate"]
        assert estimate["scored"] == 48 and estimate["low"] < estimate["share"]
        assert run.passed  # half of the images are real photographs
        tables.append(pq.read_table(state / "scan" / "images.parquet"))
    assert run.cached == 48
    assert tables[0].column("detector_score").equals(tables[1].column("detector_score"))
    scored = dict(
        zip(tables[1].column("member").to_pylist(), tables[1].column("detector_score").to_pylist())
    )
    assert min(v for m, v in scored.items() if m.startswith("f")) > 0.5
