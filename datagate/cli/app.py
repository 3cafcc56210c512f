"""The ``datagate`` command line. Thin: parse, call the library, map errors to exit codes."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from datagate import __version__
from datagate.errors import DatagateError, ExitCode

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

DEFAULT_SCAN_DIR = Path("datagate-out/scan")

app = typer.Typer(
    name="datagate",
    help=(
        "A data-quality gate for image datasets.\n\n"
        "Scan shards once (expensive), then enforce a policy on the scan (cheap):\n\n"
        "  datagate scan ./shards\n\n"
        "  datagate enforce --min-human 0.7\n\n"
        "Exit codes: 0 pass, 1 gate failed, 2 usage or input error, 3 internal error, "
        "130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
rules_app = typer.Typer(help="Work with rules files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
detector_app = typer.Typer(
    help="Train and evaluate synthetic-content detector heads over embeddings.",
    no_args_is_help=True,
)
app.add_typer(detector_app, name="detector")

_state = {"debug": False}

ScanDirArg = Annotated[Path, typer.Argument(help="Scan folder written by `datagate scan`.")]
RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        "-r",
        help="Rules file (default: ./rules/default.yaml if present, else the shipped policy).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a JSON summary on stdout instead of text.")
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        help="Embedder for diversity and semantic duplicates (env DATAGATE_MODEL): auto "
        "(ViT-B-32:laion2b_s34b_b79k if its weights are available, else pixel, with a "
        "warning), an open_clip NAME:TAG, hf-hub:ORG/REPO, local-dir:PATH, pixel (weight-free), "
        "tiny (seeded test model), or none.",
        show_default="auto",
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="Where the model runs: auto (cuda if present), cpu, cuda, cuda:N.")
]
DetectorOption = Annotated[
    Path | None,
    typer.Option(
        "--detector",
        help="Detector head (safetensors, from `datagate detector train`; env "
        "DATAGATE_DETECTOR): adds P(synthetic) per image, computed from the same embeddings. "
        "The model defaults to the head's.",
        show_default=False,
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and --json).")
]


def _version(value: bool) -> None:
    if value:
        print(f"datagate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for internal errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _embedder(model: str | None, device: str, precision: str = "auto") -> Embedder | None:
    """The embedder a --model option asks for, after printing any fallback warning."""
    from datagate.cli import console
    from datagate.embed.models import load_embedder, model_spec

    choice = load_embedder(model_spec(model), device=device, precision=precision)
    if choice.warning:
        console.warn(choice.warning)
    return choice.embedder


def _head(path: Path | None) -> Head | None:
    """The detector head from --detector or DATAGATE_DETECTOR (None when neither is set)."""
    import os

    from datagate.detect.head import DETECTOR_ENV, load_head

    if path is None and os.environ.get(DETECTOR_ENV):
        path = Path(os.environ[DETECTOR_ENV])
    return load_head(path) if path is not None else None


def _head_model(head: Head) -> str:
    """The --model spec that reproduces the embeddings a head was trained on."""
    return head.model or head.embedder.removeprefix("open_clip:")


@app.command()
def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Image folders, WebDataset .tar/.tar.gz shards, Parquet files, or folders.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Scan folder to write (images.parquet, meta.json).")
    ] = DEFAULT_SCAN_DIR,
    image_column: Annotated[
        str | None,
        typer.Option(help="Parquet column holding the images (default: auto-detect)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes for decoding and hashing (default: all cores).")
    ] = 0,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse images declaring more pixels (decompression-bomb guard).")
    ] = 178_956_970,
    max_bytes: Annotated[
        int, typer.Option(help="Refuse image files or members larger than this many bytes.")
    ] = 256 * 1024 * 1024,
    chunk_size: Annotated[
        int, typer.Option(help="Images per work unit (the granularity of resume).", min=1)
    ] = 256,
    signals: Annotated[
        str,
        typer.Option(
            help="Comma-separated signal families to compute: integrity, hashes, quality, "
            "provenance.",
        ),
    ] = "integrity,hashes,quality,provenance",
    watermark: Annotated[
        str,
        typer.Option(
            help="Decode invisible generator watermarks (~0.15 s per 512x512 image): off, all, or "
            "sample:N for a content-chosen sample of about N images.",
        ),
    ] = "off",
    model: ModelOption = None,
    detector: DetectorOption = None,
    device: DeviceOption = "auto",
    precision: Annotated[
        str,
        typer.Option(help="Model precision: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."),
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option(help="Images per model forward pass (default: 256 on GPU, 64 on CPU).")
    ] = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Embedding cache folder (env DATAGATE_CACHE_DIR; default ~/.cache/datagate).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Scan images into a Parquet table of signals, and their embeddings.

    Writes OUT/images.parquet (integrity, hashes, quality, provenance), OUT/embeddings.parquet
    (one vector per decodable image) and OUT/meta.json. Re-running the same command resumes an
    interrupted scan and skips finished work.
    """
    import os

    from datagate.cli import console
    from datagate.scanner.cache import EmbeddingCache
    from datagate.embed.models import cache_key
    from datagate.scanner.engine import ScanOptions
    from datagate.scanner.engine import scan as run_scan

    head = _head(detector)
    if head is not None and model is None and not os.environ.get("DATAGATE_MODEL"):
        model = _head_model(head)
    embedder = _embedder(model, device, precision)
    cache = None
    if embedder is not None:
        cache = EmbeddingCache(cache_key(embedder), embedder.dim, cache_dir)
        if cache.error:
            console.warn(cache.error)
        batch_size = batch_size or (256 if embedder.device.startswith("cuda") else 64)

    options = ScanOptions(
        signals=parse_signals(signals),
        image_column=image_column,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        chunk_size=chunk_size,
        watermark=watermark,
    )
    bar = console.ScanProgress(enabled=progress and not quiet and console.err.is_terminal)
    try:
        result = run_scan(
            paths,
            out,
            options,
            workers=workers or (os.cpu_count() or 1),
            progress=bar,
            embedder=embedder,
            cache=cache,
            batch_size=batch_size,
            head=head,
        )
    finally:
        if cache is not None:
            cache.close()
    if json_output:
        console.print_json(console.scan_json(result.meta, str(out)))
    elif not quiet:
        for path, reason in result.skipped[:20]:
            console.warn(f"skipped {path}: {reason}")
        if len(result.skipped) > 20:
            console.warn(f"... and {len(result.skipped) - 20} more skipped files (see meta.json)")
        console.scan_summary(result.meta, str(out))
    return ExitCode.OK


@app.command()
def enforce(
    scan_dir: ScanDirArg = DEFAULT_SCAN_DIR,
    rules: RulesOption = None,
    min_human: Annotated[
        float | None,
        typer.Option(help="Override min_human.min: floor on the share of human-made images."),
    ] = None,
    max_rejected_fraction: Annotated[
        float | None,
        typer.Option(help="Override max_rejected_fraction.max."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (default: beside the scan: datagate-out/ for datagate-out/scan).",
        ),
    ] = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Apply rules to a scan: write kept/rejected manifests and reports; exit 1 on failure."""
    from datagate.cli import console
    from datagate.gate import enforce as run_enforce
    from datagate.rules.policy import default_rules_path, load_policy, with_overrides

    path = rules if rules is not None else default_rules_path()
    overrides = {
        k: v
        for k, v in {"min_human": min_human, "max_rejected_fraction": max_rejected_fraction}.items()
        if v is not None
    }
    policy = with_overrides(load_policy(path), **overrides)
    result = run_enforce(scan_dir, policy, source=str(path), out=out, overrides=overrides)
    if json_output:
        console.print_json(console.enforce_json(result.report))
    elif not quiet:
        console.enforce_summary(result.report)
    return ExitCode.OK if result.passed else ExitCode.GATE_FAILED


@app.command()
def report(
    scan_dir: ScanDirArg = DEFAULT_SCAN_DIR,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where `datagate enforce` wrote (default: beside the scan)."
        ),
    ] = None,
) -> int:
    """Re-render report.md and report.html from a scan and its decisions (nothing recomputed)."""
    from datagate.cli import console
    from datagate.gate import rerender

    result = rerender(scan_dir, out)
    outputs = result["outputs"]
    console.out.print(
        f"report: {outputs['report_md']}, {outputs.get('report_html')}", soft_wrap=True
    )
    return ExitCode.OK


@app.command()
def precommit(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Data folders or shards to gate (default: the current directory).",
            show_default=False,
        ),
    ] = None,
    rules: RulesOption = None,
    state_dir: Annotated[
        Path, typer.Option(help="Cache and outputs (add it to .gitignore).")
    ] = Path(".datagate"),
    workers: Annotated[int, typer.Option(help="Worker processes for new images.")] = 0,
    model: ModelOption = None,
    detector: DetectorOption = None,
    device: DeviceOption = "auto",
) -> int:
    """Gate a data repository (pre-commit hook): re-scan only new content, enforce the rules.

    Exit 1 refuses the commit; the message says which dataset rule failed and why.
    """
    import os

    from datagate.cli import console
    from datagate.rules.policy import default_rules_path, load_policy
    from datagate.precommit import run_hook

    path = rules if rules is not None else default_rules_path()
    policy = load_policy(path)
    head = _head(detector)
    if head is not None and model is None and not os.environ.get("DATAGATE_MODEL"):
        model = _head_model(head)
    needs_model = policy.needs_embeddings() or head is not None
    run = run_hook(
        paths or [Path(".")],
        policy,
        source=str(path),
        state_dir=state_dir,
        workers=workers or (os.cpu_count() or 1),
        embedder=_embedder(model, device) if needs_model else None,
        head=head,
    )
    console.hook_summary(run.result.report, run.images, run.cached, run.computed, run.seconds)
    return ExitCode.OK if run.result.passed else ExitCode.GATE_FAILED


@rules_app.command("validate")
def rules_validate(
    files: Annotated[list[Path], typer.Argument(help="Rules files to check.", show_default=False)],
) -> int:
    """Check rules files; print every problem with its key path."""
    from datagate.cli import console
    from datagate.errors import ConfigError
    from datagate.rules.policy import load_policy

    failed = False
    for file in files:
        try:
            policy = load_policy(file)
        except ConfigError as exc:
            failed = True
            for line in str(exc).splitlines():
                console.error(line)
        else:
            console.out.print(f"[green]ok[/] {file}: {len(policy.rules)} rules")
    return ExitCode.USAGE if failed else ExitCode.OK


PathsOption = Annotated[
    list[Path] | None,
    typer.Option(help="Images of this class (any input `datagate scan` reads; repeatable)."),
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(
        help="CSV with 'path' and 'label' (ai/synthetic/fake or real/human) columns; paths are "
        "relative to the CSV. Its images are read from PATHS, or from the CSV's folder.",
    ),
]
WorkersOption = Annotated[int, typer.Option(help="Worker processes for decoding.")]
LabelledPathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Inputs labelled by --labels.", show_default=False),
]


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
    from datagate.scanner.cache import EmbeddingCache
    from datagate.embed.models import cache_key
    from datagate.detect.labelled import collect

    if paths and labels is None:
        raise DatagateError("PATHS need --labels CSV to say which images are synthetic")
    embedder = _embedder(model or "auto", device)
    if embedder is None:
        raise DatagateError("a detector needs embeddings: --model none cannot be used here")
    cache = EmbeddingCache(cache_key(embedder), embedder.dim)
    if cache.error:
        console.warn(cache.error)
    bar = console.ScanProgress("embedding", enabled=not quiet and console.err.is_terminal)
    try:
        data = collect(
            embedder,
            cache,
            real=real or [],
            synthetic=synthetic or [],
            labels=labels,
            labelled=paths or [],
            workers=workers or (os.cpu_count() or 1),
            progress=bar,
            batch_size=256 if embedder.device.startswith("cuda") else 64,
        )
    finally:
        cache.close()
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
    from datagate.detect.head import save_head, train_head
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

    from datagate.embed.models import PixelEmbedder

    spec = "pixel" if embedder.id == PixelEmbedder.id else embedder.id.removeprefix("open_clip:")
    return replace(head, model=spec)


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
    from datagate.detect.head import load_head, metrics
    from datagate.detect.prevalence import ShareModel

    head = load_head(head_path)
    spec = _head_model(head)
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
    from datagate.detect.head import metrics
    from datagate.detect.stability import instability, prepared_images
    from datagate.detect.labelled import read_labels

    embedder = _embedder(model or "auto", device)
    if embedder is None:
        raise DatagateError("the stability score needs embeddings: choose a --model")
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


def parse_signals(text: str) -> tuple[str, ...]:
    from datagate.scanner.signals import SIGNALS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SIGNALS]
    if unknown or not names:
        raise DatagateError(
            f"--signals: unknown signal(s) {', '.join(unknown) or '(none given)'}; "
            f"expected a comma-separated list of: {', '.join(SIGNALS)}"
        )
    if "integrity" not in names:
        names = ("integrity", *names)  # every scan records whether each image decodes
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see :class:`datagate.errors.ExitCode`)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="datagate", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return ExitCode.INTERRUPTED
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return ExitCode.USAGE
    except DatagateError as exc:
        from datagate.cli import console

        console.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        from datagate.cli import console

        console.error("interrupted; finished work is kept: re-run the same command to resume")
        return ExitCode.INTERRUPTED
    except Exception as exc:
        from datagate.cli import console

        if _state["debug"]:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {exc}")
        console.err.print("  this is a bug in datagate; re-run with --debug for a traceback")
        return ExitCode.INTERNAL
    return int(result) if isinstance(result, int) else ExitCode.OK


def run() -> None:
    sys.exit(main())
