"""Error types and the exit-code contract shared by every command."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes; a contract for CI systems and pre-commit."""

    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM: 128 + 15, as a shell reports a process the signal ended


#: what every interrupted command says (Ctrl-C, SIGTERM), whenever it comes
INTERRUPTED_MESSAGE = "interrupted; finished work is kept: re-run the same command to resume"


class DatagateError(Exception):
    """A problem with the user's input or configuration (exit code 2).

    The message says where, what was expected and what was found; ``hint`` says how to fix it.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(DatagateError):
    """A rules file (or flag) that does not validate."""


class InputError(DatagateError):
    """An input path or shard that cannot be read as a whole."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's ``KeyboardInterrupt``, so that every
    path that cleans up after an interrupt (the scan stopping its workers) handles it too."""
