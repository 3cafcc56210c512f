"""Model collapse, measured: a generative model retrained on its own outputs, gated by datagate.

Generation 0 is real photographs: the real photographs of the evaluation data
(``../shared/evaldata/detect``, label ``real``; ``DATAGATE_EVALDATA`` overrides) and the
photographs scikit-image and scikit-learn ship (as ``examples/make_demo_shards.py`` loads
them), cut into square 64x64 crops. A small generative model — PCA of the thumbnails'
pixels, then a Gaussian mixture over the PCA scores — is fitted on each generation's training
set, and its samples feed the next, under five schedules:

* ``synthetic``: the fully synthetic loop, each generation only the previous model's samples;
* ``mix-0.5``, ``mix-1``, ``mix-2``: Martínez et al.'s mixing schedules, the real images plus
  alpha x as many samples of the previous model (alpha = 0.5, 1, 2);
* ``design``: the composition of the design's illustration (0, 50, 80, 95 % synthetic, then
  95 %), the real part a fixed random subset of generation 0.

Every image carries its generation (PNG text chunk ``datagate:generation``) and its origin
(an XMP packet with the IPTC digital source type: ``minorHumanEdits`` for the crops,
``trainedAlgorithmicMedia`` for the samples). datagate scans each generation's training set
(``datagate.scan``, pixel embedder) and gates it (``datagate.enforce``) with the shipped
policy plus the reference rules of ``reference-rules.yaml`` against generation 0; the
table (CSV, JSON, Markdown, HTML) and a plot go to the output folder.

    python examples/collapse/run.py [--out DIR] [--images N] [--generations G] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import importlib.util
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageOps, PngImagePlugin

import datagate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = HERE / "out"
EVALDATA = Path(os.environ.get("DATAGATE_EVALDATA", ROOT.parent / "shared" / "evaldata"))
SEED = 20261202
SIZE = 64  # thumbnails are SIZE x SIZE RGB: the pixel embedder's own input size
MARKER = ".datagate-collapse"  # an output folder this script made (safe to refresh)
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: the design's illustration (DESIGN.md, "The collapse figures the product answers")
DESIGN_TABLE = (
    ("1 (human-trained)", "100 %", 0.89),
    ("2 (50 % synthetic)", "73 %", 0.71),
    ("3 (80 % synthetic)", "42 %", 0.53),
    ("4 (95 % synthetic)", "18 %", 0.31),
)
DESIGN_SHARES = (0.0, 0.5, 0.8, 0.95)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Config:
    images: int = 400  # real images in generation 0 (and the held-out set)
    generations: int = 10  # generations after 0
    components: int = 64  # PCA components of the model
    mixture: int = 16  # Gaussian-mixture components of the model
    schedules: tuple[str, ...] = ("synthetic", "mix-0.5", "mix-1", "mix-2", "design")
    seed: int = SEED
    workers: int = 2
    model: str = "pixel"  # datagate's embedder (weight-free); CLIP where its weights are at hand


QUICK = {"images": 96, "generations": 3, "components": 16, "mixture": 4}


@dataclass(frozen=True)
class Schedule:
    """How many real (generation-0) and synthetic images generation g's training set holds."""

    name: str
    label: str
    counts: Callable[[int, int], tuple[int, int]]  # (generation, N) -> (real, synthetic)


def _mix(alpha: float) -> Callable[[int, int], tuple[int, int]]:
    return lambda g, n: (n, round(alpha * n)) if g else (n, 0)


def _design(g: int, n: int) -> tuple[int, int]:
    share = DESIGN_SHARES[min(g, len(DESIGN_SHARES) - 1)]
    synthetic = round(share * n)
    return n - synthetic, synthetic


SCHEDULES = {
    s.name: s
    for s in (
        Schedule("synthetic", "fully synthetic", lambda g, n: (0, n) if g else (n, 0)),
        Schedule("mix-0.5", "real + 0.5x synthetic", _mix(0.5)),
        Schedule("mix-1", "real + 1x synthetic", _mix(1.0)),
        Schedule("mix-2", "real + 2x synthetic", _mix(2.0)),
        Schedule("design", "design's shares (0/50/80/95 %)", _design),
    )
}


# --------------------------------------------------------------------------- generation 0


def photographs() -> list[tuple[str, Image.Image]]:
    """The real photographs, in a fixed order: evaldata's (label real), then the bundled."""
    found: list[tuple[str, Image.Image]] = []
    labels = EVALDATA / "detect" / "labels.csv"
    if labels.is_file():
        with labels.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["label"] != "real":
                    continue
                with Image.open(labels.parent / row["path"]) as im:
                    im.draft("RGB", (4 * SIZE, 4 * SIZE))  # JPEG: decode at 1/2..1/8 scale
                    upright = ImageOps.exif_transpose(im.convert("RGB"))
                    found.append((f"evaldata:{row['path']}", upright))
    else:
        print(f"warning: no evaluation data at {EVALDATA}: bundled photographs only", flush=True)
    # scikit-image's and scikit-learn's photographs, as examples/make_demo_shards.py loads them
    spec = importlib.util.spec_from_file_location(
        "make_demo_shards", HERE.parent / "make_demo_shards.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    found += [(f"bundled:{name}", im) for name, im in demo.source_photos().items()]
    return found


def crop(photo: Image.Image, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """A random square crop (40-90 % of the shorter side), flipped half the time, 64x64."""
    w, h = photo.size
    side = max(8, int(min(w, h) * rng.uniform(0.4, 0.9)))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    im = photo.crop((x, y, x + side, y + side))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im.resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def crops(
    photos: list[tuple[str, Image.Image]], n: int, seed: int, stream: int
) -> tuple[np.ndarray[Any, Any], list[str]]:
    """n crops, image i from photograph i mod P; ``stream`` separates independent sets."""
    pixels, sources = [], []
    for i in range(n):
        p = i % len(photos)
        name, photo = photos[p]
        pixels.append(crop(photo, np.random.default_rng([seed, stream, p, i // len(photos)])))
        sources.append(name)
    return np.stack(pixels), sources


# --------------------------------------------------------------------------- the model


class PcaMixture:
    """A small generative model of thumbnails: PCA of the pixels (``components``), then a
    full-covariance Gaussian mixture (``mixture`` components) over the PCA scores. Sampling
    draws scores from the mixture and maps them back to pixels through the PCA."""

    def __init__(self, components: int, mixture: int, seed: int) -> None:
        self.components, self.mixture, self.seed = components, mixture, seed

    def fit(self, pixels: np.ndarray[Any, Any]) -> PcaMixture:
        from sklearn.decomposition import PCA
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
        self.pca = PCA(
            n_components=min(self.components, len(x) - 1),
            svd_solver="randomized",
            random_state=self.seed,
        ).fit(x)
        scores = self.pca.transform(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gmm = GaussianMixture(
                n_components=min(self.mixture, len(x) // 4),
                covariance_type="full",
                reg_covar=1e-3,
                max_iter=200,
                random_state=self.seed,
            ).fit(scores)
        return self

    def sample(self, n: int) -> np.ndarray[Any, Any]:
        rng = np.random.default_rng([self.seed, 1])
        weights = self.gmm.weights_ / self.gmm.weights_.sum()
        counts = rng.multinomial(n, weights)
        parts = []
        for mean, cov, count in zip(self.gmm.means_, self.gmm.covariances_, counts):
            root = np.linalg.cholesky((cov + cov.T) / 2)
            parts.append(mean + rng.standard_normal((count, len(mean))) @ root.T)
        scores = np.concatenate(parts)[rng.permutation(n)]
        x = self.pca.inverse_transform(scores)
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).reshape(n, SIZE, SIZE, 3)


# --------------------------------------------------------------------------- files


def xmp(source_type: str, tool: str) -> str:
    """An XMP packet stating the IPTC digital source type (what datagate's provenance reads)."""
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        f'Iptc4xmpExt:DigitalSourceType="{IPTC}{source_type}" '
        f'xmp:CreatorTool="{html.escape(tool)}"/></rdf:RDF></x:xmpmeta>'
    )


def write_pngs(
    folder: Path, pixels: np.ndarray[Any, Any], generation: int, tool: str, sources: list[str]
) -> None:
    """PNG files carrying their generation and origin; the same input gives the same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    packet = xmp("minorHumanEdits" if generation == 0 else "trainedAlgorithmicMedia", tool)
    for i, (image, source) in enumerate(zip(pixels, sources)):
        info = PngImagePlugin.PngInfo()
        info.add_text("datagate:generation", str(generation))
        info.add_text("datagate:source", source)
        info.add_itxt("XML:com.adobe.xmp", packet)
        Image.fromarray(image).save(folder / f"g{generation:02d}-{i:05d}.png", pnginfo=info)


# --------------------------------------------------------------------------- datagate


@dataclass
class Row:
    """One gated training set: what datagate measured and decided."""

    schedule: str
    generation: int
    images: int
    kept: int
    synthetic_share: float
    generation_mix: dict[str, int]
    mean_generation: float
    diversity: float
    diversity_kept: float
    coverage: float
    recall: float
    precision: float
    frechet: float
    samples_diversity: float | None
    samples_coverage: float | None
    samples_recall: float | None
    passed: bool
    failing: list[str]
    failing_detail: list[str]
    gate: str


def compose_policy(out: Path, reference_scan: Path) -> Path:
    """The shipped default policy plus reference-rules.yaml, with generation 0 as reference."""
    policy = yaml.safe_load((ROOT / "rules" / "default.yaml").read_text(encoding="utf-8"))
    extra = yaml.safe_load((HERE / "reference-rules.yaml").read_text(encoding="utf-8"))
    policy["name"] = "default + reference (collapse example)"
    policy["description"] = (
        "rules/default.yaml plus examples/collapse/reference-rules.yaml against generation 0"
    )
    policy["reference"] = os.path.relpath(reference_scan, out)
    policy["rules"] = [*policy["rules"], *extra["rules"]]
    path = out / "policy.yaml"
    path.write_text(
        "# written by examples/collapse/run.py\n" + yaml.safe_dump(policy, sort_keys=False),
        encoding="utf-8",
    )
    from datagate.rules import load_policy

    load_policy(path)  # validated now, not at the first gate
    return path


# --------------------------------------------------------------------------- the experiment


class Experiment:
    """Builds every generation's training set, scans and gates it, and keeps the rows."""

    def __init__(self, cfg: Config, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.images, self.scans, self.gates = out / "images", out / "scans", out / "gates"
        self.rows: list[Row] = []
        self.seconds = {"images": 0.0, "model": 0.0, "scan": 0.0, "enforce": 0.0}
        self.policy = out / "policy.yaml"

    # -- datagate
    def scan(self, inputs: Sequence[Path], scan_dir: Path) -> None:
        start = time.perf_counter()
        datagate.scan(
            list(inputs),
            scan_dir,
            model=self.cfg.model,
            workers=self.cfg.workers,
            cache_dir=self.out / "cache",
            cache_rows=True,
        )
        self.seconds["scan"] += time.perf_counter() - start

    def enforce(self, scan_dir: Path, gate_dir: Path) -> dict[str, Any]:
        start = time.perf_counter()
        gate = datagate.enforce(scan_dir, self.policy, out=gate_dir)
        self.seconds["enforce"] += time.perf_counter() - start
        return dict(gate.report)

    def gate(
        self, schedule: str, generation: int, inputs: Sequence[Path], samples: Path | None = None
    ) -> Row:
        """Scan and gate one training set (and, for a mixed set, its samples alone)."""
        name = f"gen{generation:02d}"
        scan_dir, gate_dir = self.scans / schedule / name, self.gates / schedule / name
        if not (scan_dir / "meta.json").is_file():  # generation 0 is scanned before the policy
            self.scan(inputs, scan_dir)
        report = self.enforce(scan_dir, gate_dir)
        reference = report["reference"]["scanned"]
        scanned = report["composition"]["scanned"]
        n = report["counts"]["images"]
        mix = {str(k): v for k, v in sorted(scanned["generation"].items())}
        failing = [r for r in report["rules"] if r["scope"] == "dataset" and not r["passed"]]
        row = Row(
            schedule=schedule,
            generation=generation,
            images=n,
            kept=report["counts"]["kept"],
            synthetic_share=scanned["origin"].get("synthetic", 0) / n,
            generation_mix=mix,
            mean_generation=sum(int(g) * c for g, c in mix.items() if g.isdigit()) / n,
            diversity=report["diversity"]["overall"]["scanned"]["index"],
            diversity_kept=report["diversity"]["overall"]["kept"]["index"],
            coverage=reference["coverage"],
            recall=reference["recall"],
            precision=reference["precision"],
            frechet=reference["frechet"],
            samples_diversity=None,
            samples_coverage=None,
            samples_recall=None,
            passed=report["verdict"] == "pass",
            failing=[r["id"] for r in failing],
            failing_detail=[_detail(r) for r in failing],
            gate=os.path.relpath(gate_dir / "report.html", self.out),
        )
        if samples is None and schedule == "synthetic" and generation > 0:
            row = replace(
                row,
                samples_diversity=row.diversity,
                samples_coverage=row.coverage,
                samples_recall=row.recall,
            )
        elif samples is not None:
            own = self.scans / schedule / f"{name}-samples"
            self.scan([samples], own)
            alone = self.enforce(own, self.gates / schedule / f"{name}-samples")
            row = replace(
                row,
                samples_diversity=alone["diversity"]["overall"]["scanned"]["index"],
                samples_coverage=alone["reference"]["scanned"]["coverage"],
                samples_recall=alone["reference"]["scanned"]["recall"],
            )
        self.rows.append(row)
        print(_progress(row), flush=True)
        return row

    # -- the loop
    def run(self) -> list[Row]:
        cfg = self.cfg
        start = time.perf_counter()
        photos = photographs()
        real, sources = crops(photos, cfg.images, cfg.seed, stream=0)
        held, held_sources = crops(photos, cfg.images, cfg.seed, stream=1)
        gen0, held_dir = self.images / "gen00", self.images / "held-out"
        tool = "datagate examples/collapse: crop of a photograph"
        write_pngs(gen0, real, 0, tool, sources)
        write_pngs(held_dir, held, 0, tool, held_sources)
        self.sources = [name for name, _ in photos]
        self.seconds["images"] += time.perf_counter() - start

        self.scan([gen0], self.scans / "real" / "gen00")
        compose_policy(self.out, self.scans / "real" / "gen00")
        self.gate("real", 0, [gen0])
        self.gate("held-out", 0, [held_dir])

        for name in cfg.schedules:
            self.loop(SCHEDULES[name], real, gen0)
        return self.rows

    def loop(self, schedule: Schedule, real: Any, gen0: Path) -> None:
        cfg = self.cfg
        index = list(SCHEDULES).index(schedule.name)  # seeds do not depend on --schedules
        order = np.random.default_rng([cfg.seed, 99]).permutation(len(real))
        train = real
        for g in range(1, cfg.generations + 1):
            start = time.perf_counter()
            n_real, n_synthetic = schedule.counts(g, cfg.images)
            model = PcaMixture(cfg.components, cfg.mixture, seed=_seed(cfg.seed, g, index))
            samples = model.fit(train).sample(n_synthetic)
            self.seconds["model"] += time.perf_counter() - start
            start = time.perf_counter()
            folder = self.images / schedule.name / f"gen{g:02d}"
            tool = (
                f"datagate examples/collapse: PCA + Gaussian mixture, model {g - 1} "
                f"({schedule.label})"
            )
            if schedule.name == "design":
                synthetic_dir, real_dir = folder / "synthetic", folder / "real"
                write_pngs(synthetic_dir, samples, g, tool, [tool] * n_synthetic)
                picked = np.sort(order[:n_real])
                real_dir.mkdir(parents=True, exist_ok=True)
                for i in picked:
                    shutil.copyfile(gen0 / f"g00-{i:05d}.png", real_dir / f"g00-{i:05d}.png")
                inputs, alone = [real_dir, synthetic_dir], synthetic_dir
                train = np.concatenate([real[picked], samples])
            elif n_real:
                write_pngs(folder, samples, g, tool, [tool] * n_synthetic)
                inputs, alone = [gen0, folder], folder
                train = np.concatenate([real, samples])
            else:
                write_pngs(folder, samples, g, tool, [tool] * n_synthetic)
                inputs, alone = [folder], None
                train = samples
            self.seconds["images"] += time.perf_counter() - start
            self.gate(schedule.name, g, inputs, alone)


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**31 - 1))


def _detail(outcome: dict[str, Any]) -> str:
    value, threshold = outcome.get("value"), outcome.get("threshold")
    if value is None or threshold is None:
        return f"{outcome['id']} ({outcome['code']})"
    sign = "<" if outcome["code"].endswith(("below_min", "below_floor")) else ">"
    return f"{outcome['id']} {value:.3g} {sign} {threshold:g}"


def _progress(row: Row) -> str:
    verdict = "pass" if row.passed else "FAIL " + ", ".join(row.failing)
    return (
        f"{row.schedule:>9} gen {row.generation}: {row.images:5d} images, "
        f"synthetic {row.synthetic_share:4.0%}, diversity {row.diversity:.3f}, "
        f"coverage {row.coverage:.3f}, recall {row.recall:.3f}, Fréchet {row.frechet:.3f}"
        f" -> {verdict}"
    )


# --------------------------------------------------------------------------- outputs

COLUMNS = (
    ("schedule", "schedule"),
    ("gen", "gen"),
    ("images", "images"),
    ("rejected", "rejected by per-image rules"),
    ("synthetic", "synthetic"),
    ("generation mix", "generation mix"),
    ("diversity", "diversity index"),
    ("coverage", "coverage vs gen 0"),
    ("recall", "recall vs gen 0"),
    ("Fréchet", "Fréchet vs gen 0"),
    ("samples' recall", "recall of the samples alone"),
    ("gate", "gate (failing rules)"),
)


def thresholds(policy: Path) -> dict[str, float]:
    """The limits the plot draws, read from the policy that judged the sets."""
    found: dict[str, float] = {}
    for rule in yaml.safe_load(policy.read_text(encoding="utf-8"))["rules"]:
        for key in ("min", "max"):
            if key in rule:
                found[rule["rule"]] = float(rule[key])
    return found


def cells(row: Row) -> list[str]:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    mix = " · ".join(f"{g}: {c}" for g, c in row.generation_mix.items())
    gate = "pass" if row.passed else "FAIL: " + ", ".join(row.failing)
    return [
        row.schedule,
        str(row.generation),
        str(row.images),
        str(row.images - row.kept),
        f"{row.synthetic_share:.0%}",
        mix,
        fmt(row.diversity),
        fmt(row.coverage),
        fmt(row.recall),
        fmt(row.frechet),
        fmt(row.samples_recall),
        gate,
    ]


def first_failures(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per schedule: the first generation the gate fails and why, and each rule's first."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.schedule for r in rows if r.generation > 0):
        series = [r for r in rows if r.schedule == name]
        first = next((r for r in series if not r.passed), None)
        per_rule: dict[str, int] = {}
        for r in series:
            for rule in r.failing:
                per_rule.setdefault(rule, r.generation)
        out[name] = {
            "generation": None if first is None else first.generation,
            "rules": [] if first is None else first.failing_detail,
            "per_rule": per_rule,
        }
    return out


def series(rows: list[Row], name: str) -> list[Row]:
    """A schedule's rows, generation 0 (the real set every schedule starts from) first."""
    return [r for r in rows if r.schedule == "real"] + [r for r in rows if r.schedule == name]


def plot(rows: list[Row], path: Path, limits: dict[str, float], schedules: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = (  # the measure, its title, the rule that judges it
        ("synthetic_share", "synthetic share", "min_human"),
        ("mean_generation", "mean generation of the images", None),
        ("diversity", "diversity index", "min_diversity"),
        ("coverage", "coverage of generation 0", "min_coverage"),
        ("recall", "recall of generation 0", "min_recall"),
        ("frechet", "Fréchet distance to generation 0", "max_frechet"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2), constrained_layout=True)
    held = [r for r in rows if r.schedule == "held-out"]
    for ax, (field, title, rule) in zip(axes.flat, panels):
        limit = limits.get(rule) if rule else None
        if rule == "min_human" and limit is not None:
            limit = 1.0 - limit  # the largest synthetic share the floor allows
        for k, name in enumerate(schedules):
            part = series(rows, name)
            x = [r.generation for r in part]
            y = [getattr(r, field) for r in part]
            ax.plot(x, y, marker="o", ms=4, color=f"C{k}", label=SCHEDULES[name].label)
            if field == "recall" and name != "synthetic":  # the set holds the real images:
                alone = [(r.generation, r.samples_recall) for r in part[1:]]  # the samples' own
                ax.plot(*zip(*alone), ls="--", lw=1, color=f"C{k}")
            bad = [(r.generation, getattr(r, field)) for r in part if rule in r.failing]
            if bad:
                ax.scatter(*zip(*bad), marker="x", s=50, color="black", zorder=3)
        if held and field in ("diversity", "coverage", "recall", "frechet"):
            ax.axhline(getattr(held[0], field), color="C7", lw=1, ls=":")
        if limit is not None:
            ax.axhline(limit, color="C3", lw=1, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles += [
        plt.Line2D([], [], color="C3", ls="--", lw=1),
        plt.Line2D([], [], color="C7", ls=":", lw=1),
        plt.Line2D([], [], color="black", marker="x", ls=""),
        plt.Line2D([], [], color="black", ls="--", lw=1),
    ]
    labels += [
        "policy limit",
        "held-out real crops",
        "the panel's rule fails",
        "recall of the samples alone",
    ]
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=9, frameon=False)
    fig.suptitle("Recursive training on two cores: datagate measures of each generation")
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def samples_grid(out: Path, schedule: str, generations: int, per_row: int = 10) -> Path | None:
    """Thumbnails of the first images of each generation of one schedule, one row each."""
    rows = []
    for g in range(generations + 1):
        folder = out / "images" / ("gen00" if g == 0 else f"{schedule}/gen{g:02d}")
        files = sorted(folder.rglob("*.png"))[:per_row] if folder.is_dir() else []
        if files:
            rows.append(np.concatenate([np.asarray(Image.open(f)) for f in files], axis=1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = out / f"samples-{schedule}.png"
    Image.fromarray(np.concatenate(rows)).save(path)
    return path


def design_comparison(rows: list[Row]) -> list[list[str]]:
    """The design's illustration beside the design schedule's measured generations 0-3."""
    measured = series(rows, "design")
    out = []
    for (label, retention, diversity), row in zip(DESIGN_TABLE, measured):
        out.append(
            [
                label,
                retention,
                f"{diversity:.2f}",
                f"{row.generation} ({row.synthetic_share:.0%} synthetic)",
                f"{row.recall:.2f}",
                f"{row.coverage:.2f}",
                f"{row.diversity:.2f}",
            ]
        )
    return out


DESIGN_HEADER = [
    "design: generation",
    "unique feature retention",
    "style diversity index",
    "measured: generation",
    "recall vs gen 0",
    "coverage vs gen 0",
    "diversity index",
]


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in body]
    return "\n".join(lines)


def html_table(header: Sequence[str], body: Sequence[Sequence[str]], links: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for r, link in zip(body, links):
        tds = [f"<td>{html.escape(c)}</td>" for c in r[:-1]]
        cls = "pass" if r[-1] == "pass" else "fail"
        tds.append(f'<td class="{cls}"><a href="{html.escape(link)}">{html.escape(r[-1])}</a></td>')
        lines.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def describe(cfg: Config, command: str, sources: list[str]) -> list[str]:
    evaldata = sum(s.startswith("evaldata:") for s in sources)
    return [
        f"Command: `{command}`",
        f"Generation 0: {cfg.images} square crops (64x64) of {len(sources)} real photographs "
        f"({evaldata} from the evaluation data, {len(sources) - evaldata} bundled with "
        "scikit-image and scikit-learn); held-out row: another set of crops of the same "
        "photographs.",
        f"Model: PCA ({cfg.components} components) + Gaussian mixture ({cfg.mixture} "
        f"full-covariance components), refitted every generation; {cfg.generations} "
        "generations.",
        (
            "Embedder: datagate's weight-free `pixel` embedder (colour, layout, texture; no "
            "meaning)."
            if cfg.model == "pixel"
            else f"Embedder: `{cfg.model}`."
        )
        + " Policy: rules/default.yaml + examples/collapse/reference-rules.yaml against "
        "generation 0 (policy.yaml).",
    ]


def write_outputs(exp: Experiment, command: str, elapsed: float) -> dict[str, Path]:
    out, rows, cfg = exp.out, exp.rows, exp.cfg
    limits = thresholds(exp.policy)
    failures = first_failures(rows)
    paths = {
        "csv": out / "collapse.csv",
        "json": out / "collapse.json",
        "md": out / "collapse.md",
        "html": out / "collapse.html",
        "plot": out / "collapse.png",
    }
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        fields = list(asdict(rows[0]))
        writer.writerow(fields)
        for row in rows:
            values = asdict(row)
            values["generation_mix"] = json.dumps(values["generation_mix"])
            values["failing"] = ";".join(values["failing"])
            values["failing_detail"] = ";".join(values["failing_detail"])
            writer.writerow([values[k] for k in fields])
    paths["json"].write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "command": command,
                "photographs": exp.sources,
                "embedder": cfg.model,
                "policy": str(exp.policy.relative_to(out)),
                "rows": [asdict(r) for r in rows],
                "first_failures": failures,
                "seconds": {k: round(v, 1) for k, v in exp.seconds.items()}
                | {"total": round(elapsed, 1)},
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    plot(rows, paths["plot"], limits, cfg.schedules)
    grid = samples_grid(out, cfg.schedules[0], cfg.generations)

    header = [h for h, _ in COLUMNS]
    body = [cells(r) for r in rows]
    notes = describe(cfg, command, exp.sources)
    failure_lines = []
    for name, found in failures.items():
        if found["generation"] is None:
            first = "never fails"
        else:
            first = f"first fails at generation {found['generation']}: " + "; ".join(found["rules"])
        each = ", ".join(f"{rule} at {g}" for rule, g in found["per_rule"].items()) or "none"
        failure_lines.append(
            f"**{name}** ({SCHEDULES[name].label}): {first}. Each rule's first failure: {each}."
        )
    design = design_comparison(rows) if "design" in cfg.schedules else []
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in exp.seconds.items())

    md = ["# Model collapse, measured by datagate", "", *[f"- {n}" for n in notes], ""]
    md += ["![datagate measures per generation](collapse.png)", ""]
    md += [markdown_table(header, body), ""]
    md += [
        "Diversity, coverage, recall and Fréchet distance are of the scanned set; the gate "
        "judges the kept set (rows rejected by per-image rules left out).",
        "",
    ]
    md += ["## When the gate first fails", "", *[f"- {line}" for line in failure_lines], ""]
    if design:
        md += ["## Beside the design's illustration", "", markdown_table(DESIGN_HEADER, design), ""]
    if grid is not None:
        md += [f"![first images of each generation, {cfg.schedules[0]}]({grid.name})", ""]
    md += [f"Time: {elapsed:.0f} s ({timing}).", ""]
    paths["md"].write_text("\n".join(md), encoding="utf-8")

    def data_uri(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    page = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>datagate: model collapse, measured</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}",
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right}td:first-child,td:last-child,th{text-align:left}",
        ".pass a{color:#176317}.fail a{color:#a11}img{max-width:100%}code{background:#f3f3f3}",
        "</style></head><body><h1>Model collapse, measured by datagate</h1><ul>",
        *[f"<li>{_inline(n)}</li>" for n in notes],
        f"</ul><img alt='datagate measures per generation' src='{data_uri(paths['plot'])}'>",
        html_table(header, body, [r.gate for r in rows]),
        "<p>Diversity, coverage, recall and Fréchet distance are of the scanned set; the gate "
        "judges the kept set. Each gate links to its datagate report.</p>",
        "<h2>When the gate first fails</h2><ul>",
        *[f"<li>{_inline(line)}</li>" for line in failure_lines],
        "</ul>",
    ]
    if design:
        page += [
            "<h2>Beside the design's illustration</h2>",
            html_table(DESIGN_HEADER, design, [""] * len(design))
            .replace('<a href="">', "")
            .replace("</a>", ""),
        ]
    if grid is not None:
        page += [
            f"<h2>First images of each generation ({cfg.schedules[0]})</h2>",
            f"<img alt='samples' src='{data_uri(grid)}' style='image-rendering:pixelated'>",
        ]
    page += [f"<p>Time: {elapsed:.0f} s ({html.escape(timing)}).</p></body></html>"]
    paths["html"].write_text("\n".join(page) + "\n", encoding="utf-8")
    return paths


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` as HTML (the notes are written once for both)."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# --------------------------------------------------------------------------- main


def single_threaded() -> Any:
    """One BLAS/OpenMP thread per process. On two cores shared with anything else, the
    OpenMP runtime faiss brings spins its threads at every barrier, and datagate.enforce on a
    few hundred images took 5-20 s instead of 0.2 s; one thread costs the model fits little."""
    import faiss  # noqa: F401  (loaded now, so the limit reaches its OpenMP runtime)
    import sklearn.mixture  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def prepare(out: Path) -> None:
    """Refresh an output folder this script made; refuse to touch any other non-empty one."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SystemExit(f"error: {out} is not empty and was not written by this script")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by examples/collapse/run.py\n", encoding="utf-8")
    for name in ("images", "scans", "gates"):  # the cache (by content) is kept
        shutil.rmtree(out / name, ignore_errors=True)


def parse(argv: Sequence[str] | None) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (%(default)s)")
    p.add_argument("--images", type=int, help="real images in generation 0 (400; quick: 96)")
    p.add_argument("--generations", type=int, help="generations after 0 (10; quick: 3)")
    p.add_argument("--components", type=int, help="PCA components of the model (64; quick: 16)")
    p.add_argument("--mixture", type=int, help="mixture components of the model (16; quick: 4)")
    p.add_argument(
        "--schedules",
        help=f"comma-separated, from {', '.join(SCHEDULES)} (all; the first is pictured)",
    )
    p.add_argument("--workers", type=int, default=2, help="scan worker processes (%(default)s)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--model",
        default="pixel",
        help="datagate embedder (%(default)s; e.g. ViT-B-32:laion2b_s34b_b79k where its weights "
        "are cached; the reference-rule limits are the pixel embedder's)",
    )
    p.add_argument("--quick", action="store_true", help="a reduced run of a few seconds")
    args = p.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for key in ("images", "generations", "components", "mixture"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.schedules:
        names = tuple(s.strip() for s in args.schedules.split(",") if s.strip())
        unknown = [n for n in names if n not in SCHEDULES]
        if unknown:
            p.error(f"unknown schedule {unknown[0]!r} (known: {', '.join(SCHEDULES)})")
        values["schedules"] = names
    cfg = Config(**values, seed=args.seed, workers=args.workers, model=args.model)
    if cfg.images < 16 or cfg.generations < 1:
        p.error("--images must be at least 16 and --generations at least 1")
    return cfg, args.out.resolve()


def main(argv: Sequence[str] | None = None) -> int:
    cfg, out = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = "python examples/collapse/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    prepare(out)
    exp = Experiment(cfg, out)
    with single_threaded():
        exp.run()
    paths = write_outputs(exp, command.strip(), time.perf_counter() - start)
    print(f"\n{len(exp.rows)} training sets gated in {time.perf_counter() - start:.0f} s")
    for name, found in first_failures(exp.rows).items():
        when = "never" if found["generation"] is None else f"generation {found['generation']}"
        print(f"  {name:>9}: gate first fails at {when}: {'; '.join(found['rules']) or '-'}")
    print(
        "summary: "
        + ", ".join(
            str(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p)
            for p in paths.values()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
