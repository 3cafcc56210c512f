"""The ``datagate`` app: its command groups, global flags, and the exit-code contract.

Commands live in one module per group (:mod:`.scan`, :mod:`.enforce`, :mod:`.precommit`,
:mod:`.rules`, :mod:`.detector`, :mod:`.cache`) and register themselves on :data:`app`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from datagate import __version__
from datagate.errors import INTERRUPTED_MESSAGE, DatagateError, ExitCode, Terminated

DEFAULT_SCAN_DIR = Path("datagate-out/scan")

app = typer.Typer(
    name="datagate",
    help=(
        "A data-quality gate for image datasets.\n\n"
        "Scan shards once (expensive), then enforce a policy on the scan (cheap):\n\n"
        "  datagate scan ./shards\n\n"
        "  datagate enforce --min-human 0.7\n\n"
        "Exit codes: 0 pass, 1 gate failed, 2 usage or input error, 3 internal error, "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
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

cache_app = typer.Typer(help="Inspect and prune the cache store.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

_state = {"debug": False, "signal": 0}

INTERRUPTED = INTERRUPTED_MESSAGE


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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see :class:`datagate.errors.ExitCode`)."""
    previous = _handle_signals()
    try:
        return _dispatch(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run() -> None:
    # the handlers stay for the interpreter's exit: a second Ctrl-C there exits at once
    _handle_signals()
    try:
        code = _dispatch(None)
    except KeyboardInterrupt as exc:  # a signal between the handlers' start and dispatch
        code = _interrupted(exc)
    sys.exit(code)


def _handle_signals() -> dict[int, Any]:
    """Turn SIGINT and SIGTERM into exceptions in the main thread (so that the scan stops its
    workers and keeps its finished parts); a second one while stopping exits at once."""
    _state["signal"] = 0
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state["signal"]:
        os.write(2, f"\nerror: {INTERRUPTED}\n".encode())
        os._exit(_interrupt_code())
    _state["signal"] = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _interrupt_code() -> int:
    return ExitCode.TERMINATED if _state["signal"] == signal.SIGTERM else ExitCode.INTERRUPTED


def _interrupted(exc: BaseException | None = None) -> int:
    from datagate.cli import console

    if isinstance(exc, Terminated) and not _state["signal"]:
        _state["signal"] = signal.SIGTERM
    console.error(INTERRUPTED)
    return _interrupt_code()


def _dispatch(argv: list[str] | None) -> int:
    try:
        command = typer.main.get_command(app)
        result = command.main(args=argv, prog_name="datagate", standalone_mode=False)
    except typer.Exit as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # typer's wrapping of an interrupt
            return _interrupted(exc.__cause__)
        return int(exc.exit_code)
    except typer.Abort as exc:  # click's wrapping of EOF at a prompt (and of an interrupt)
        cause = exc.__cause__
        if isinstance(cause, KeyboardInterrupt) or _state["signal"]:
            return _interrupted(cause)
        from datagate.cli import console

        console.error("aborted")
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return ExitCode.USAGE
    except Exception as exc:
        from datagate.cli import console

        if _state["signal"]:  # e.g. the worker pool breaking as the signal reached it too
            return _interrupted()
        if isinstance(exc, DatagateError):
            console.error(exc.message, exc.hint)
            return exc.exit_code
        if _state["debug"]:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {exc}")
        console.err.print("  this is a bug in datagate; re-run with --debug for a traceback")
        return ExitCode.INTERNAL
    if _state["signal"] or result == ExitCode.INTERRUPTED:
        return _interrupted()  # typer returns 130 for a KeyboardInterrupt it caught
    return int(result) if isinstance(result, int) else ExitCode.OK
