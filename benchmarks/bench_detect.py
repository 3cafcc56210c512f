"""Synthetic-content detection on real labelled images, and the human-share interval.

Data: ``../shared/evaldata/detect`` (``labels.csv``: path, label ai/real, three sources:
ml72, comfyui, necenzurat; the top folder of each path). For every embedder available
without downloading weights (pixel, tiny, ViT-B-32 with random weights as a control):

1. leave-one-source-out: train a head on two sources, test on the third: AUC, accuracy at
   the head's threshold, TPR at 5 % FPR (AUC is undefined for a source with one class);
2. the head's cross-validated (out-of-fold) figures on all sources pooled;
3. coverage of the 95 % human-share interval on held-out mixtures of known composition:
   repeatedly split the images in half (stratified by label and source), train on one half,
   draw mixtures with a known human share from the other half, and count how often the
   interval contains the true share;
4. the experimental stability score's AUC.

.venv/bin/python benchmarks/bench_detect.py                 # ~6 min on 2 cores
.venv/bin/python benchmarks/bench_detect.py --models pixel --splits 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DATA = HERE.parent.parent / "shared" / "evaldata" / "detect"


def load(data: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Absolute paths, labels (1 synthetic) and sources from labels.csv."""
    paths, labels, sources = [], [], []
    with (data / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            paths.append(str((data / row["path"]).resolve()))
            labels.append(1 if row["label"] == "ai" else 0)
            sources.append(row["path"].split("/")[0])
    return paths, np.array(labels), np.array(sources)


def embed(model: str, data: Path, paths: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    from datagate.detect.labelled import embed_inputs
    from datagate.embed.models import load_embedder

    embedder = load_embedder(model).embedder
    assert embedder is not None
    found, vectors, _ = embed_inputs([data], embedder, None, workers=os.cpu_count() or 1)
    at = {p: i for i, p in enumerate(found)}
    missing = [p for p in paths if p not in at]
    if missing:
        raise SystemExit(f"{len(missing)} labelled images were not embedded: {missing[:3]}")
    info = {"id": embedder.id, "preprocessing": embedder.preprocessing.id}
    return vectors[[at[p] for p in paths]], info


def train(x: np.ndarray, y: np.ndarray, info: dict[str, str], seed: int = 0):
    from datagate.detect.train import train_head

    return train_head(
        x, y, embedder=info["id"], preprocessing=info["preprocessing"], seed=seed
    ).head


def loso(x: np.ndarray, y: np.ndarray, src: np.ndarray, info: dict[str, str]) -> dict:
    from datagate.detect.train import metrics

    out = {}
    for held in sorted(set(src)):
        test = src == held
        head = train(x[~test], y[~test], info)
        p = head.proba(x[test])
        m = metrics(p, y[test], head.calibration.threshold)
        out[held] = {
            "auc": m["auc"],
            "accuracy": m["accuracy"],
            "tpr_at_5pct_fpr": m["tpr_at_fpr"]["0.05"],
            "n_real": m["n_real"],
            "n_synthetic": m["n_synthetic"],
            "mean_p_synthetic": float(np.mean(p)),
        }
    return out


def coverage(
    x: np.ndarray,
    y: np.ndarray,
    src: np.ndarray,
    info: dict[str, str],
    splits: int,
    mixtures: int,
    size: int,
    shares: tuple[float, ...],
) -> dict:
    from datagate.detect.prevalence import ShareModel, separates

    rng = np.random.default_rng(0)
    hits: dict[float, list[bool]] = defaultdict(list)
    widths: dict[float, list[float]] = defaultdict(list)
    errors: dict[float, list[float]] = defaultdict(list)
    usable = 0
    used_hits: list[bool] = []
    strata = np.array([f"{a}-{b}" for a, b in zip(y, src)])
    for split in range(splits):
        train_mask = np.zeros(len(y), dtype=bool)
        for stratum in set(strata):
            members = rng.permutation(np.flatnonzero(strata == stratum))
            train_mask[members[: len(members) // 2]] = True
        head = train(x[train_mask], y[train_mask], info, seed=split)
        used = separates(head.calibration)
        usable += used
        p = head.proba(x[~train_mask])
        y_test = y[~train_mask]
        real, fake = np.flatnonzero(y_test == 0), np.flatnonzero(y_test == 1)
        for share in shares:
            n_real = min(round(share * size), len(real))
            n_fake = min(size - n_real, len(fake))
            for trial in range(mixtures):
                chosen = np.r_[
                    rng.choice(real, n_real, replace=False), rng.choice(fake, n_fake, replace=False)
                ]
                truth = n_real / (n_real + n_fake)
                est = ShareModel(
                    0, 0, p[chosen], 0, "not_human", head.calibration, seed=trial
                ).estimate()
                assert est.low is not None and est.high is not None and est.share is not None
                hits[share].append(est.low <= truth <= est.high)
                if used:
                    used_hits.append(est.low <= truth <= est.high)
                widths[share].append(est.high - est.low)
                errors[share].append(est.share - truth)
    every = [h for v in hits.values() for h in v]
    return {
        "trials": len(every),
        "splits": splits,
        "splits_head_used": usable,
        "coverage_when_head_used": float(np.mean(used_hits)) if used_hits else None,
        "coverage": float(np.mean(every)),
        "by_share": {
            f"{s:.1f}": {
                "coverage": float(np.mean(hits[s])),
                "mean_width": float(np.mean(widths[s])),
                "mean_error": float(np.mean(errors[s])),
            }
            for s in shares
        },
    }


def stability(model: str, data: Path, paths: list[str], y: np.ndarray, src: np.ndarray) -> dict:
    from datagate.detect.stability import instability, prepared_images
    from datagate.detect.train import metrics
    from datagate.embed.models import load_embedder

    embedder = load_embedder(model).embedder
    assert embedder is not None
    images = {p: im for p, im, _ in prepared_images([data], embedder.preprocessing)}
    scores = instability(embedder, np.stack([images[p] for p in paths]))
    out = {"all": metrics(scores, y, float(np.median(scores)))["auc"]}
    for s in sorted(set(src)):
        m = src == s
        out[s] = metrics(scores[m], y[m], 0.0)["auc"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", nargs="+", default=["pixel", "tiny", "ViT-B-32:random"])
    ap.add_argument("--splits", type=int, default=10, help="random half splits for coverage")
    ap.add_argument("--mixtures", type=int, default=10, help="mixtures per split and share")
    ap.add_argument("--size", type=int, default=40, help="images per mixture")
    ap.add_argument("--no-stability", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths, y, src = load(args.data)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "data": {"images": len(y), "real": int((y == 0).sum()), "synthetic": int(y.sum())},
        "models": {},
    }
    for model in args.models:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            os.environ["DATAGATE_CACHE_DIR"] = cache
            x, info = embed(model, args.data, paths)
        row: dict = {"embedder": info["id"]}
        row["loso"] = loso(x, y, src, info)
        from datagate.detect.train import train_head

        pooled = train_head(x, y, embedder=info["id"], preprocessing=info["preprocessing"])
        row["pooled_held_out"] = {
            k: pooled.held_out[k] for k in ("auc", "accuracy", "tpr", "fpr", "tpr_at_fpr")
        }
        row["coverage"] = coverage(
            x, y, src, info, args.splits, args.mixtures, args.size, (0.3, 0.5, 0.7)
        )
        if not args.no_stability:
            row["stability_auc"] = stability(model, args.data, paths, y, src)
        row["seconds"] = round(time.perf_counter() - started, 1)
        results["models"][model] = row
        print(json.dumps({model: row}, indent=1), file=sys.stderr)
    OUT.mkdir(exist_ok=True)
    (OUT / "detect.json").write_text(json.dumps(results, indent=1))
    print(render(results))


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render(results: dict) -> str:
    lines = [
        f"machine: {results['machine']}; data: {results['data']}",
        "",
        "| embedder | held-out source | AUC | accuracy | TPR@5%FPR | mean P(syn) |",
        "|---|---|---|---|---|---|",
    ]
    for model, row in results["models"].items():
        for source, m in row["loso"].items():
            lines.append(
                f"| {model} | {source} ({m['n_real']} real, {m['n_synthetic']} ai) | "
                f"{_f(m['auc'])} | {_f(m['accuracy'])} | {_f(m['tpr_at_5pct_fpr'])} | "
                f"{_f(m['mean_p_synthetic'])} |"
            )
    lines += [
        "",
        "| embedder | pooled CV AUC | interval coverage | by true share (coverage / "
        "mean width / mean error) | stability AUC (all; per source) |",
        "|---|---|---|---|---|",
    ]
    for model, row in results["models"].items():
        cov = row["coverage"]
        parts = "; ".join(
            f"{s}: {v['coverage']:.2f} / {v['mean_width']:.2f} / {v['mean_error']:+.2f}"
            for s, v in cov["by_share"].items()
        )
        st = row.get("stability_auc") or {}
        stab = "; ".join(f"{k} {_f(v)}" for k, v in st.items()) or "not run"
        lines.append(
            f"| {model} | {_f(row['pooled_held_out']['auc'])} | {cov['coverage']:.3f} "
            f"({cov['trials']} trials; head used in {cov['splits_head_used']}/{cov['splits']} "
            f"splits, coverage then {_f(cov['coverage_when_head_used'])}) | {parts} | {stab} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
