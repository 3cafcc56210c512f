"""The ``datagate`` command line: one module per command group; the library does the work.

Only this package and the console touch typer and rich. Importing it registers every
command on :data:`datagate.cli.app.app`.
"""

from __future__ import annotations

from datagate.cli import cache, detector, enforce, ledger, precommit, review, rules, scan
from datagate.cli.app import app, main, run

COMMANDS = (scan, enforce, precommit, rules, detector, cache, review, ledger)

__all__ = ["app", "main", "run"]
