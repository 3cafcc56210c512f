"""``datagate precommit``: the gate as a pre-commit hook of a data repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagate.cli.app import app
from datagate.cli.options import (
    DetectorOption,
    DeviceOption,
    ModelOption,
    RulesOption,
    load_detector,
    load_model,
)
from datagate.errors import ExitCode
from datagate.scanner.defaults import DEFAULT_STATE_DIR


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
    ] = Path(DEFAULT_STATE_DIR),
    workers: Annotated[int, typer.Option(help="Worker processes for new images.")] = 0,
    model: ModelOption = None,
    detector: DetectorOption = None,
    device: DeviceOption = "auto",
    overrides: Annotated[
        Path | None,
        typer.Option(
            help="Reviewed decisions to apply (default: ./datagate-overrides.jsonl when present).",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Gate a data repository (pre-commit hook): re-scan only new content, enforce the rules.

    Exit 1 refuses the commit; the message says which dataset rule failed and why.
    """
    import os

    from datagate.cli import console
    from datagate.embed.models import MODEL_ENV
    from datagate.precommit import run_hook
    from datagate.rules import default_rules_path, load_policy

    path = rules if rules is not None else default_rules_path()
    policy = load_policy(path)
    head = load_detector(detector)
    if head is not None and model is None and not os.environ.get(MODEL_ENV):
        model = head.model_spec
    needs_model = policy.needs("vectors") or head is not None
    run = run_hook(
        paths or [Path(".")],
        policy,
        source=str(path),
        state_dir=state_dir,
        workers=workers or (os.cpu_count() or 1),
        embedder=load_model(model, device) if needs_model else None,
        head=head,
        overrides=overrides,
    )
    console.hook_summary(run.report, run.images, run.cached, run.computed, run.seconds, run.reused)
    return ExitCode.OK if run.passed else ExitCode.GATE_FAILED
