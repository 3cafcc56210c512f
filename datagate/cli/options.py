"""Options shared by several commands, and the helpers that turn them into objects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from datagate.detect.head import Head
    from datagate.embed.models import Embedder

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
        "tiny (seeded test model), forensic (weight-free forensic features for detector "
        "heads), forensic+SPEC (those stacked with a model, e.g. forensic+ViT-B-32:openai), "
        "or none.",
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
WorkersOption = Annotated[
    int, typer.Option(help="Worker processes for decoding (0: one per core).", min=0)
]
LabelledPathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Inputs labelled by --labels.", show_default=False),
]


def load_model(model: str | None, device: str, precision: str = "auto") -> Embedder | None:
    """The embedder a --model option asks for, after printing any fallback warning."""
    from datagate.cli import console
    from datagate.embed.models import load_embedder, model_spec

    choice = load_embedder(model_spec(model), device=device, precision=precision)
    if choice.warning:
        console.warn(choice.warning)
    return choice.embedder


def detector_path(path: Path | None) -> Path | None:
    """--detector, else DATAGATE_DETECTOR (None when neither is set)."""
    from datagate.detect.head import DETECTOR_ENV

    if path is None and os.environ.get(DETECTOR_ENV):
        return Path(os.environ[DETECTOR_ENV])
    return path


def load_detector(path: Path | None) -> Head | None:
    """The detector head from --detector or DATAGATE_DETECTOR (None when neither is set)."""
    from datagate.detect.head import load_head

    found = detector_path(path)
    return load_head(found) if found is not None else None


CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Cache store folder (env DATAGATE_CACHE_DIR; default ~/.cache/datagate).",
        show_default=False,
    ),
]
