"""The ``datagate`` console script, kept to the standard library until the CLI is loaded.

Loading the command line (typer, rich, pyarrow, pydantic) takes about half a second; a
Ctrl-C or SIGTERM in that time ends the command as one arriving later does — exit 130 or
143 and the resume message, no traceback — and :func:`datagate.cli.app.run` then installs
the handlers that stop a running scan cleanly.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from datagate.errors import INTERRUPTED_MESSAGE, ExitCode


def _early(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"error: {INTERRUPTED_MESSAGE}\n".encode())
    terminated = signum == signal.SIGTERM
    os._exit(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)


def run() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _early)
    from datagate.cli import run as cli

    cli()
