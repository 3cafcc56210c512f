"""The ``datagate`` command line: one module per command group; the library does the work."""

from __future__ import annotations

from datagate.cli.app import app, main, run

__all__ = ["app", "main", "run"]
