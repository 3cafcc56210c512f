"""``datagate scan``: measure images into a scan folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagate.cli.app import app
from datagate.cli.options import (
    CacheDirOption,
    DetectorOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    QuietOption,
    detector_path,
)
from datagate.errors import ExitCode
from datagate.scanner.defaults import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SCAN_DIR,
    DEFAULT_SIGNALS,
)


@app.command()
def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Image folders, WebDataset .tar/.tar.gz shards, Parquet files, or folders.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Scan folder to write (images.parquet, meta.json).")
    ] = Path(DEFAULT_SCAN_DIR),
    image_column: Annotated[
        str | None,
        typer.Option(help="Parquet column holding the images (default: auto-detect)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes for decoding and hashing (default: all cores).")
    ] = 0,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse images declaring more pixels (decompression-bomb guard).")
    ] = DEFAULT_MAX_PIXELS,
    max_bytes: Annotated[
        int, typer.Option(help="Refuse image files or members larger than this many bytes.")
    ] = DEFAULT_MAX_BYTES,
    chunk_size: Annotated[
        int, typer.Option(help="Images per work unit (the granularity of resume).", min=1)
    ] = DEFAULT_CHUNK_SIZE,
    signals: Annotated[
        str,
        typer.Option(
            help="Comma-separated signal families to compute (`datagate signals` lists them).",
        ),
    ] = ",".join(DEFAULT_SIGNALS),
    watermark: Annotated[
        str,
        typer.Option(
            help="Decode invisible generator watermarks (~0.15 s per 512x512 image): off, all, or "
            "sample:N for a content-chosen sample of about N images.",
        ),
    ] = "off",
    model: ModelOption = None,
    detector: DetectorOption = None,
    device: DeviceOption = "auto",
    precision: Annotated[
        str,
        typer.Option(help="Model precision: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."),
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option(help="Images per model forward pass (default: 256 on GPU, 64 on CPU).")
    ] = 0,
    cache_dir: CacheDirOption = None,
    cache_rows: Annotated[
        bool,
        typer.Option(
            help="Also cache rows by content in the cache store, so that a later scan of the "
            "same images elsewhere (renamed, re-sharded) decodes none of them again.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Scan images into a Parquet table of signals, and their embeddings.

    Writes OUT/images.parquet (integrity, hashes, quality, provenance), OUT/embeddings.parquet
    (one vector per decodable image) and OUT/meta.json. Re-running the same command resumes an
    interrupted scan and skips finished work. Vectors (and, with --cache-rows, rows) are kept
    in the cache store by content; `datagate cache info` shows it.
    """
    import os

    import datagate
    from datagate.cli import console
    from datagate.scanner.options import parse_signals

    bar = console.ScanProgress(enabled=progress and not quiet and console.err.is_terminal)
    result = datagate.scan(
        paths,
        out,
        signals=parse_signals(signals),
        watermark=watermark,
        model=model,
        detector=detector_path(detector),
        device=device,
        precision=precision,
        batch_size=batch_size,
        workers=workers or (os.cpu_count() or 1),
        cache_dir=cache_dir,
        cache_rows=cache_rows,
        image_column=image_column,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        chunk_size=chunk_size,
        progress=bar,
        warn=console.warn,
    )
    if json_output:
        console.print_json(console.scan_json(result.meta, str(out)))
    elif not quiet:
        for path, reason in result.skipped[:20]:
            console.warn(f"skipped {path}: {reason}")
        if len(result.skipped) > 20:
            console.warn(f"... and {len(result.skipped) - 20} more skipped files (see meta.json)")
        console.scan_summary(result.meta, str(out))
    return ExitCode.OK


@app.command()
def signals() -> int:
    """List the signal families a scan can compute, with their columns and versions."""
    from datagate.cli import console
    from datagate.scanner.signals import SIGNALS

    for name, signal in SIGNALS.items():
        default = " (default)" if name in DEFAULT_SIGNALS else ""
        columns = ", ".join(f.name for f in signal.fields)
        console.out.print(
            f"{name} v{signal.version}{default}: {columns}", soft_wrap=True, highlight=False
        )
    return ExitCode.OK
