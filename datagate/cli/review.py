"""``datagate review``: a local page to decide what the gate could not, one keypress each."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from datagate.cli.app import app
from datagate.curation.overrides import DEFAULT_FILE
from datagate.errors import ExitCode

DEFAULT_PORT = 8765


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment
        return ""


@app.command()
def review(
    gate_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder `datagate enforce` wrote (manifests/, report.json).", show_default=False
        ),
    ],
    overrides: Annotated[
        Path,
        typer.Option(
            "--overrides",
            help="Overrides file each decision is appended to (created on the first one); "
            "apply it with `datagate enforce --overrides FILE`.",
        ),
    ] = Path(DEFAULT_FILE),
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)
    ] = DEFAULT_PORT,
    scan: Annotated[
        Path | None,
        typer.Option(
            "--scan",
            help="Scan folder whose meta.json records the shards the images are read from "
            "(default: GATE_DIR/scan, else GATE_DIR).",
            show_default=False,
        ),
    ] = None,
    reviewer: Annotated[
        str | None,
        typer.Option(
            help="Name recorded with each decision (default: your login name).",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Serve a review page on 127.0.0.1: queues of unknown-origin, borderline, rejected and
    duplicate images; keys h/s/k/r decide (human, synthetic, keep, reject), space skips, u
    undoes. Each decision is appended to the overrides file at once. Ctrl-C stops it."""
    from datagate.review.server import ReviewApp, ReviewServer

    review_app = ReviewApp(
        gate_dir, overrides, scan=scan, reviewer=_login() if reviewer is None else reviewer
    )
    server = ReviewServer(review_app, port)
    try:
        totals = " · ".join(
            f"{q['title'].lower()} {q['total']:,}" for q in review_app.queues()["queues"]
        )
        print(f"datagate review: {server.url}", flush=True)
        print(f"  queues: {totals}", flush=True)
        print(
            f"  decisions are appended to {overrides} as they are made · Ctrl-C stops",
            flush=True,
        )
        server.serve_forever()
    finally:
        server.server_close()
    return ExitCode.OK
