"""Synthetic-content detection on real labelled images, and the human-share interval.

Data: ``../shared/evaldata/detect`` (``labels.csv``: path, label ai/real, three sources:
ml72, comfyui, necenzurat; the top folder of each path). For every embedder available
without downloading weights (pixel, tiny, ViT-B-32 with random weights as a control, the
weight-free ``forensic`` features and their stacks with pixel and tiny):

1. leave-one-source-out: train a head on two sources, test on the third: AUC with a 95 %
   stratified-bootstrap interval (test images resampled; the head is held fixed), accuracy
   at the head's threshold, TPR at 5 % FPR (AUC is undefined for a source with one class;
   AUC and TPR are computed from the calibrated log-odds, whose order is that of the
   head's probabilities without the ties of probabilities saturated at 0 or 1);
2. the head's cross-validated (out-of-fold) figures on all sources pooled;
3. coverage of the 95 % human-share interval on held-out mixtures of known composition:
   repeatedly split the images in half (stratified by label and source), train on one half,
   draw mixtures with a known human share from the other half, and count how often the
   interval contains the true share;
4. the experimental stability score's AUC (pixel-input embedders only);
5. the forensic features' ablation: each family alone and all but each family, and the
   "pixel cues" (spectral + residual: what the pixels say, not the file's container, tables
   or size, which this data set's collection confounds with the label);
6. robustness: items 1 and 5 again after every image is re-encoded as JPEG quality 85
   (``jpeg85``), resized by 0.75 (``resize0.75``: Lanczos, saved in its own format, JPEGs
   with their own quantisation tables and sub-sampling), and, as a control for the
   collection's size confound, resized to a 512-px shorter side and re-encoded as JPEG 85
   (``equalised``). Transformed copies live in a temporary folder, never in the repository.

OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= .venv/bin/python benchmarks/bench_detect.py  # 6-19 min
.venv/bin/python benchmarks/bench_detect.py --models pixel --conditions original --splits 4
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DATA = HERE.parent.parent / "shared" / "evaldata" / "detect"

MODELS = ["pixel", "tiny", "ViT-B-32:random", "forensic", "forensic+pixel", "forensic+tiny"]
ROBUST_MODELS = ["pixel", "tiny", "forensic", "forensic+pixel", "forensic+tiny"]
CONDITIONS = ["original", "jpeg85", "resize0.75", "equalised"]
FAMILIES = ("spectral", "residual", "compression", "geometry")
PIXEL_CUES = ("spectral", "residual")


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


def auc_interval(
    p: np.ndarray, y: np.ndarray, rounds: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % percentile interval of the AUC over stratified bootstrap resamples of the test set.

    It covers the test sample's uncertainty only (the head is held fixed), which dominates
    with 6 real images; ties count a half, as in the AUC itself.
    """
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return None
    rng = np.random.default_rng(seed)
    a = pos[rng.integers(0, len(pos), (rounds, len(pos)))]
    b = neg[rng.integers(0, len(neg), (rounds, len(neg)))]
    wins = (a[:, :, None] > b[:, None, :]).mean(axis=(1, 2))
    ties = (a[:, :, None] == b[:, None, :]).mean(axis=(1, 2))
    aucs = wins + 0.5 * ties
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


def loso(x: np.ndarray, y: np.ndarray, src: np.ndarray, info: dict[str, str]) -> dict:
    from datagate.detect.train import metrics

    out = {}
    for held in sorted(set(src)):
        test = src == held
        head = train(x[~test], y[~test], info)
        p = head.proba(x[test])
        m = metrics(p, y[test], head.calibration.threshold)
        # ranks from the calibrated log-odds a*z + b: the order of p (also when a < 0, i.e.
        # the calibration turned a head's scores round), without the ties of probabilities
        # that saturate at 0 or 1 when a source lies far outside the training set
        cal = head.calibration
        z = cal.platt_a * head.logits(x[test]) + cal.platt_b
        r = metrics(z, y[test], 0.0)
        out[held] = {
            "auc": r["auc"],
            "auc_ci95": auc_interval(z, y[test]),
            "accuracy": m["accuracy"],
            "tpr_at_5pct_fpr": r["tpr_at_fpr"]["0.05"],
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
        for stratum in sorted(set(strata)):  # a fixed order: the splits do not depend on
            # the interpreter's string-hash seed
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


# --------------------------------------------------------------------------- forensic parts


def forensic_columns(model: str, dim: int, families: tuple[str, ...]) -> np.ndarray:
    """Columns of a forensic embedder's ``dim``-wide vectors holding the given families, plus
    a stacked model's own columns (the norm-completing component is left out)."""
    from datagate.embed import forensic

    chosen = sorted(i for f in families for i in forensic.family_columns(f))
    rest = np.arange(forensic.N_FEATURES + 1, dim) if model != "forensic" else []
    return np.r_[np.array(chosen, dtype=np.int64), np.asarray(rest, dtype=np.int64)]


def variants(model: str, dim: int) -> dict[str, np.ndarray | None]:
    """The feature subsets measured for a model: all of it, and for forensic stacks the pixel
    cues only; for ``forensic`` itself every family alone and all but each family."""
    out: dict[str, np.ndarray | None] = {"all": None}
    if not model.startswith("forensic"):
        return out
    out["pixel cues (spectral+residual)"] = forensic_columns(model, dim, PIXEL_CUES)
    if model == "forensic":
        for family in FAMILIES:
            out[f"{family} only"] = forensic_columns(model, dim, (family,))
            rest = tuple(f for f in FAMILIES if f != family)
            out[f"without {family}"] = forensic_columns(model, dim, rest)
    return out


# --------------------------------------------------------------------------- conditions


def _save_like(im, source, dest: Path) -> None:  # type: ignore[no-untyped-def]
    """Save ``im`` in ``source``'s format; a JPEG keeps its quantisation tables and
    sub-sampling, so only the resize differs."""
    from PIL import JpegImagePlugin

    if source.format == "JPEG":
        sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(
            JpegImagePlugin.get_sampling(source), "4:2:0"
        )
        im.save(dest, "JPEG", qtables=source.quantization, subsampling=sampling)
    else:
        im.save(dest, source.format or "PNG")


def transform(condition: str) -> Callable[[Path, Path], Path]:
    """A function writing one transformed copy: (source file, destination stem) -> path."""
    from PIL import Image, ImageOps

    def jpeg85(src: Path, stem: Path) -> Path:
        with Image.open(src) as im:
            dest = stem.with_suffix(".jpg")
            ImageOps.exif_transpose(im).convert("RGB").save(dest, "JPEG", quality=85)
        return dest

    def resize(src: Path, stem: Path) -> Path:
        with Image.open(src) as im:
            w, h = im.size
            small = im.convert("RGB").resize(
                (max(1, round(w * 0.75)), max(1, round(h * 0.75))), Image.Resampling.LANCZOS
            )
            dest = stem.with_suffix(src.suffix)
            _save_like(small, im, dest)
        return dest

    def equalised(src: Path, stem: Path) -> Path:
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            scale = 512 / min(w, h)
            im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
            dest = stem.with_suffix(".jpg")
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            dest.write_bytes(buf.getvalue())
        return dest

    table = {"jpeg85": jpeg85, "resize0.75": resize, "equalised": equalised}
    if condition not in table:
        raise SystemExit(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    return table[condition]


def transformed(data: Path, condition: str, root: Path) -> Path:
    """A copy of the labelled data under ``root`` with every image transformed."""
    make = transform(condition)
    out = root / condition
    with (data / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        stem = out / Path(row["path"]).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        row["path"] = make(data / row["path"], stem).relative_to(out).as_posix()
    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


# --------------------------------------------------------------------------- main


def measure(
    model: str, data: Path, y: np.ndarray, src: np.ndarray, args: argparse.Namespace, full: bool
) -> dict:
    """Every figure for one embedder on one version of the data."""
    from datagate.detect.train import train_head

    paths, _, _ = load(data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DATAGATE_CACHE_DIR"] = cache
        x, info = embed(model, data, paths)
    row: dict = {"embedder": info["id"], "dim": int(x.shape[1]), "variants": {}}
    for name, cols in variants(model, int(x.shape[1])).items():
        xv = x if cols is None else x[:, cols]
        found: dict = {"loso": loso(xv, y, src, info)}
        if name == "all" or name.startswith("pixel cues"):
            pooled = train_head(xv, y, embedder=info["id"], preprocessing=info["preprocessing"])
            found["pooled_held_out"] = {
                k: pooled.held_out[k] for k in ("auc", "accuracy", "tpr", "fpr", "tpr_at_fpr")
            }
        row["variants"][name] = found
    row["loso"] = row["variants"]["all"]["loso"]
    row["pooled_held_out"] = row["variants"]["all"]["pooled_held_out"]
    if full:
        row["coverage"] = coverage(
            x, y, src, info, args.splits, args.mixtures, args.size, (0.3, 0.5, 0.7)
        )
        if not args.no_stability and not model.startswith("forensic"):
            row["stability_auc"] = stability(model, data, paths, y, src)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument(
        "--robust-models", nargs="*", default=ROBUST_MODELS, help="embedders measured on the "
        "transformed copies (LOSO and ablation only)"
    )  # fmt: skip
    ap.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=CONDITIONS)
    ap.add_argument("--splits", type=int, default=10, help="random half splits for coverage")
    ap.add_argument("--mixtures", type=int, default=10, help="mixtures per split and share")
    ap.add_argument("--size", type=int, default=40, help="images per mixture")
    ap.add_argument("--no-stability", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _, y, src = load(args.data)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "data": {"images": len(y), "real": int((y == 0).sum()), "synthetic": int(y.sum())},
        "models": {},
        "conditions": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="datagate-bench-detect-") as tmp:
        for condition in args.conditions:
            original = condition == "original"
            data = args.data if original else transformed(args.data, condition, Path(tmp))
            rows: dict = {}
            for model in args.models if original else args.robust_models:
                rows[model] = measure(model, data, y, src, args, full=original)
                brief = {v: r["loso"] for v, r in rows[model]["variants"].items()}
                print(json.dumps({condition: {model: brief}}), file=sys.stderr)
            results["conditions"][condition] = rows
            if original:
                results["models"] = rows
    results["seconds"] = round(time.perf_counter() - started, 1)
    OUT.mkdir(exist_ok=True)
    (OUT / "detect.json").write_text(json.dumps(results, indent=1))
    text = render(results)
    (OUT / "detect.md").write_text(text + "\n")
    print(text)


# --------------------------------------------------------------------------- tables


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _auc(m: dict) -> str:
    ci = m.get("auc_ci95")
    return _f(m["auc"]) + ("" if not ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def render(results: dict) -> str:
    lines = [
        f"machine: {results['machine']}; data: {results['data']}",
        "",
        "| embedder | held-out source | AUC [95 % CI] | accuracy | TPR@5%FPR | mean P(syn) |",
        "|---|---|---|---|---|---|",
    ]
    for model, row in results["models"].items():
        for name, found in row["variants"].items():
            if name != "all" and not name.startswith("pixel cues"):
                continue
            label = model if name == "all" else f"{model}, {name}"
            for source, m in found["loso"].items():
                lines.append(
                    f"| {label} | {source} ({m['n_real']} real, {m['n_synthetic']} ai) | "
                    f"{_auc(m)} | {_f(m['accuracy'])} | {_f(m['tpr_at_5pct_fpr'])} | "
                    f"{_f(m['mean_p_synthetic'])} |"
                )
    lines += [
        "",
        "| embedder | pooled CV AUC | interval coverage | by true share (coverage / "
        "mean width / mean error) | stability AUC (all; per source) |",
        "|---|---|---|---|---|",
    ]
    for model, row in results["models"].items():
        cov = row.get("coverage")
        if cov is None:
            continue
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
    conditions = results.get("conditions", {})
    names = list(conditions)
    sources = ["ml72", "necenzurat", "comfyui"]
    forensic = {c: conditions[c].get("forensic") for c in names if "forensic" in conditions[c]}
    if forensic:
        lines += [
            "",
            "Forensic ablation: held-out AUC on ml72 / necenzurat, and accuracy on comfyui "
            "(all AI), per condition",
            "",
            "| features | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        first = next(iter(forensic.values()))
        for name in first["variants"]:
            cells = []
            for c in names:
                lo = forensic[c]["variants"][name]["loso"] if c in forensic else {}
                cells.append(
                    " / ".join(
                        _f(lo[s]["auc"] if s != "comfyui" else lo[s]["accuracy"])
                        for s in sources
                        if s in lo
                    )
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(names) > 1:
        lines += [
            "",
            "Robustness: held-out AUC [95 % CI] (ml72; necenzurat) and comfyui accuracy",
            "",
            "| embedder | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        models = [m for m in conditions[names[-1]] if all(m in conditions[c] for c in names)]
        for model in models:
            for name in conditions[names[0]][model]["variants"]:
                if name != "all" and not name.startswith("pixel cues"):
                    continue
                label = model if name == "all" else f"{model}, {name}"
                cells = []
                for c in names:
                    lo = conditions[c][model]["variants"][name]["loso"]
                    cells.append(
                        "; ".join(_auc(lo[s]) for s in ("ml72", "necenzurat") if s in lo)
                        + (f"; {_f(lo['comfyui']['accuracy'])}" if "comfyui" in lo else "")
                    )
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
