"""``datagate detector``: train and evaluate synthetic-content detector heads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from datagate.cli.app import detector_app
from datagate.cli.options import (
    DeviceOption,
    JsonOption,
    LabelledPathsArg,
    LabelsOption,
    ModelOption,
    PathsOption,
    QuietOption,
    WorkersOption,
    load_model,
)
from datagate.errors import DatagateError, ExitCode

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder


def _labelled(
    model: str | None,
    device: str,
    real: list[Path] | None,
    synthetic: list[Path] | None,
    labels: Path | None,
    paths: list[Path] | None,
    workers: int,
    quiet: bool,
) -> tuple[Embedder, Any]:
    import os

    from datagate.cli import console
    from datagate.detect.labelled import collect
    from datagate.scanner.cache import Store

    if paths and labels is None:
        raise DatagateError("PATHS need --labels CSV to say which images are synthetic")
    embedder = load_model(model or "auto", device)
    if embedder is None:
        raise DatagateError("a detector needs embeddings: --model none cannot be used here")
    store = Store()
    if store.error:
        console.warn(store.error)
    bar = console.ScanProgress("embedding", enabled=not quiet and console.err.is_terminal)
    try:
        data = collect(
            embedder,
            store,
            real=real or [],
            synthetic=synthetic or [],
            labels=labels,
            labelled=paths or [],
            workers=workers or (os.cpu_count() or 1),
            progress=bar,
            batch_size=256 if embedder.device.startswith("cuda") else 64,
        )
    finally:
        store.close()
    if not quiet:
        for path, why in data.skipped[:10]:
            console.warn(f"not used: {path}: {why}")
        if len(data.skipped) > 10:
            console.warn(f"... and {len(data.skipped) - 10} more images not used")
    return embedder, data


@detector_app.command("train")
def detector_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Head file to write (.safetensors).")],
    real: PathsOption = None,
    synthetic: PathsOption = None,
    labels: LabelsOption = None,
    paths: LabelledPathsArg = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    folds: Annotated[
        int, typer.Option(help="Cross-validation folds for the held-out figures.", min=2)
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed for the folds.")] = 0,
    workers: WorkersOption = 0,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Train a logistic-regression head on labelled images; print AUC, accuracy and TPR at
    1 % / 5 % FPR on held-out images, and store the calibration with the head.

      datagate detector train --real photos/ --synthetic generated/ --out head.safetensors
    """
    from datagate.cli import console
    from datagate.detect.head import save_head
    from datagate.detect.train import train_head
    from datagate.embed.models import model_spec

    embedder, data = _labelled(model, device, real, synthetic, labels, paths, workers, quiet)
    result = train_head(
        data.vectors,
        data.labels,
        embedder=embedder.id,
        preprocessing=embedder.preprocessing.id,
        model=model_spec(model) if model_spec(model) != "auto" else None,
        folds=folds,
        seed=seed,
        training={"inputs": [str(p) for p in [*(real or []), *(synthetic or []), *(paths or [])]]},
    )
    head = result.head
    if head.model is None:
        head = _with_model(head, embedder)
    save_head(head, out)
    summary: dict[str, Any] = {
        "head": str(out),
        "embedder": embedder.id,
        "threshold": head.calibration.threshold,
        "held_out": result.held_out,
    }
    if json_output:
        console.print_json(summary)
    elif not quiet:
        console.detector_metrics(f"held out ({folds}-fold cross-validation)", result.held_out, head)
        console.out.print(f"wrote {out}", soft_wrap=True)
    return ExitCode.OK


def _with_model(head: Head, embedder: Embedder) -> Head:
    from dataclasses import replace

    from datagate.embed.models import spec_for

    return replace(head, model=spec_for(embedder.id))


@detector_app.command("eval")
def detector_eval(
    head_path: Annotated[Path, typer.Argument(help="Head file (.safetensors).")],
    paths: LabelledPathsArg = None,
    labels: LabelsOption = None,
    real: PathsOption = None,
    synthetic: PathsOption = None,
    device: DeviceOption = "auto",
    workers: WorkersOption = 0,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Measure a head on labelled images it was not trained on: AUC, accuracy, TPR at
    1 % / 5 % FPR, and the estimated human share with its 95 % interval against the truth.

      datagate detector eval head.safetensors ./heldout --labels heldout/labels.csv
    """
    import numpy as np

    from datagate.cli import console
    from datagate.detect.head import load_head
    from datagate.detect.prevalence import ShareModel
    from datagate.detect.train import metrics

    head = load_head(head_path)
    spec = head.model_spec
    embedder, data = _labelled(spec, device, real, synthetic, labels, paths, workers, quiet)
    head.check(embedder.id, embedder.preprocessing.id, embedder.dim)
    p = head.proba(data.vectors)
    found = metrics(p, data.labels, head.calibration.threshold)
    share = ShareModel(0, 0, p, 0, "not_human", head.calibration).estimate()
    truth = float(np.mean(data.labels == 0))
    summary = {
        "head": str(head_path),
        "embedder": head.embedder,
        "metrics": found,
        "human_share": {"true": truth, **share.as_dict()},
    }
    if json_output:
        console.print_json(summary)
    elif not quiet:
        console.detector_metrics("evaluation", found, head)
        console.out.print(console.share_line(share, truth), soft_wrap=True)
    return ExitCode.OK


@detector_app.command("stability")
def detector_stability(
    paths: LabelledPathsArg = None,
    labels: LabelsOption = None,
    real: PathsOption = None,
    synthetic: PathsOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> int:
    """[experimental] Measure the training-free stability score on labelled images.

    Each image's embedding is compared with the embeddings of lightly perturbed copies
    (noise, JPEG, blur, resize); the score is 1 - mean cosine, higher meaning more likely
    synthetic. Prints its AUC (0.5: no signal; below 0.5: the opposite direction).
    """
    import numpy as np

    from datagate.cli import console
    from datagate.detect.labelled import read_labels
    from datagate.detect.stability import instability, prepared_images
    from datagate.detect.train import metrics
    from datagate.embed.models import FeaturePreprocessing

    embedder = load_model(model or "auto", device)
    if embedder is None:
        raise DatagateError("the stability score needs embeddings: choose a --model")
    if isinstance(embedder.preprocessing, FeaturePreprocessing):
        raise DatagateError(
            f"the stability score perturbs a model's input pixels; {embedder.id} is computed "
            "from the decoded file",
            hint="choose an image model: --model pixel, tiny or NAME:TAG",
        )
    wanted: dict[str, int] = {}
    inputs: list[Path] = []
    for group, label in ((real or [], 0), (synthetic or [], 1)):
        for path in group:
            inputs.append(path)
            wanted.update({p: label for p, _, _ in prepared_images([path], embedder.preprocessing)})
    if labels is not None:
        wanted.update(read_labels(labels))
        inputs += paths or [labels.parent]
    pixels, y = [], []
    for where, image, _ in prepared_images(inputs, embedder.preprocessing):
        if image is not None and where in wanted:
            pixels.append(image)
            y.append(wanted[where])
    if not pixels:
        raise DatagateError("no labelled images could be read", hint="give --labels or folders")
    scores = instability(embedder, np.stack(pixels))
    found = metrics(scores, np.array(y), float(np.median(scores)))
    summary = {"embedder": embedder.id, "score": "instability", "metrics": found}
    if json_output:
        console.print_json(summary)
    else:
        auc = "n/a" if found["auc"] is None else f"{found['auc']:.3f}"
        console.out.print(
            f"[experimental] stability score with {embedder.id} on {found['n_real']:,} real + "
            f"{found['n_synthetic']:,} synthetic images: AUC {auc}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    return ExitCode.OK
