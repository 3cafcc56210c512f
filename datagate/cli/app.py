"""The ``datagate`` app: its command groups, global flags, and the exit-code contract.

Commands live in one module per group (:mod:`.scan`, :mod:`.enforce`, :mod:`.precommit`,
:mod:`.rules`, :mod:`.detector`, :mod:`.cache`) and register themselves on :data:`app`.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from datagate import __version__
from datagate.errors import DatagateError, ExitCode

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

cache_app = typer.Typer(help="Inspect and prune the cache store.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

_state = {"debug": False}


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
