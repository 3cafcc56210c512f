"""``datagate rules``: check rules files, and list every rule the registry knows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagate.cli.app import rules_app
from datagate.cli.options import JsonOption
from datagate.errors import ExitCode


@rules_app.command("validate")
def rules_validate(
    files: Annotated[list[Path], typer.Argument(help="Rules files to check.", show_default=False)],
) -> int:
    """Check rules files; print every problem with its key path."""
    from datagate.cli import console
    from datagate.errors import ConfigError
    from datagate.rules import load_policy

    failed = False
    for file in files:
        try:
            policy = load_policy(file)
        except ConfigError as exc:
            failed = True
            for line in str(exc).splitlines():
                console.error(line)
        else:
            n = len(policy.rules)
            console.out.print(f"[green]ok[/] {file}: {n} {'rule' if n == 1 else 'rules'}")
    return ExitCode.USAGE if failed else ExitCode.OK


@rules_app.command("list")
def rules_list(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the README's rules table.")
    ] = False,
    json_output: JsonOption = False,
) -> int:
    """List every rule: what it does, its keys with defaults, and its reason codes."""
    from datagate.cli import console
    from datagate.rules.docs import describe, markdown_table

    if markdown:
        print(markdown_table(), end="")
        return ExitCode.OK
    found = describe()
    if json_output:
        console.print_json(
            [
                {
                    "rule": cls.name(),
                    "scope": cls.scope,
                    "doc": cls.doc(),
                    "needs": sorted(cls.needs),
                    "keys": [vars(p) for p in keys],
                    "codes": cls.codes,
                }
                for cls, keys in found
            ]
        )
        return ExitCode.OK
    for cls, keys in found:
        needs = f" (needs {', '.join(sorted(cls.needs))})" if cls.needs else ""
        console.out.print(f"[bold]{cls.name()}[/] [dim]{cls.scope}{needs}[/]", highlight=False)
        console.out.print(f"  {cls.doc()}", soft_wrap=True, highlight=False, markup=False)
        for p in keys:
            line = f"    {p.name}: {p.type} = {p.default}" + (f"  # {p.doc}" if p.doc else "")
            console.out.print(line, soft_wrap=True, highlight=False, markup=False)
        for code, meaning in cls.codes.items():
            console.out.print(
                f"    code {code}: {meaning}", soft_wrap=True, highlight=False, markup=False
            )
    return ExitCode.OK
