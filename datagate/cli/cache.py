"""``datagate cache``: where the cache store is, how big, and pruning it."""

from __future__ import annotations

from typing import Annotated

import typer

from datagate.cli.app import cache_app
from datagate.cli.options import CacheDirOption, JsonOption
from datagate.errors import DatagateError, ExitCode


@cache_app.command("info")
def cache_info(cache_dir: CacheDirOption = None, json_output: JsonOption = False) -> int:
    """Show the cache store's location, size on disk, and entries per scan configuration
    and per embedder."""
    from dataclasses import asdict

    from datagate.cli import console
    from datagate.scanner.cache import CACHE_FILE, Store, default_cache_dir

    directory = cache_dir if cache_dir is not None else default_cache_dir()
    if not (directory / CACHE_FILE).exists():
        if json_output:
            console.print_json({"path": str(directory / CACHE_FILE), "bytes": 0, "exists": False})
        else:
            console.out.print(f"no cache at {directory / CACHE_FILE}", soft_wrap=True)
        return ExitCode.OK
    store = Store(directory)
    try:
        if store.error:
            raise DatagateError(store.error)
        info = store.info()
    finally:
        store.close()
    if json_output:
        console.print_json({**asdict(info), "exists": True})
        return ExitCode.OK
    console.out.print(f"{info.path}: {info.bytes / 2**20:,.1f} MiB", soft_wrap=True)
    for config, n in info.rows.items():
        console.out.print(f"  rows, scan configuration {config}: {n:,}", highlight=False)
    for model, n in info.embeddings.items():
        console.out.print(
            f"  vectors, {model}: {n:,}", soft_wrap=True, highlight=False, markup=False
        )
    return ExitCode.OK


@cache_app.command("prune")
def cache_prune(
    cache_dir: CacheDirOption = None,
    older_than: Annotated[
        float,
        typer.Option(help="Remove entries not written or used for this many days.", min=0),
    ] = 30.0,
) -> int:
    """Remove cache entries not used for a while (all of them with --older-than 0)."""
    from datagate.cli import console
    from datagate.scanner.cache import CACHE_FILE, Store, default_cache_dir

    directory = cache_dir if cache_dir is not None else default_cache_dir()
    if not (directory / CACHE_FILE).exists():
        console.out.print(f"no cache at {directory / CACHE_FILE}", soft_wrap=True)
        return ExitCode.OK
    store = Store(directory)
    try:
        before = store.info().bytes
        rows, vectors = store.prune(older_than)
        after = store.info().bytes
        if store.error:
            raise DatagateError(store.error)
    finally:
        store.close()
    console.out.print(
        f"removed {rows:,} rows and {vectors:,} vectors; {before / 2**20:,.1f} MiB -> "
        f"{after / 2**20:,.1f} MiB",
        soft_wrap=True,
    )
    return ExitCode.OK
