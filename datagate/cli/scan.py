"""``datagate scan``: measure images into a scan folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from datagate.words import plural

if TYPE_CHECKING:
    from datagate.contract import ScanMeta


@app.command()
def scan(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Image folders, WebDataset .tar/.tar.gz shards, Parquet files, or folders; "
            "local paths or fsspec URLs (s3://bucket/prefix, gs://..., hf://datasets/...).",
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
    engine: Annotated[
        str,
        typer.Option(
            help="Where the chunks run: local (processes on this machine) or ray (a Ray "
            "cluster: decode and signals as tasks, the embedder as an actor pool on its GPUs).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the cluster to join (auto, or HOST:PORT); default: start "
            "a local Ray with --workers CPUs.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Scan images into a Parquet table of signals, and their embeddings.

    Writes OUT/images.parquet (integrity, hashes, quality, provenance), OUT/embeddings.parquet
    (one vector per decodable image) and OUT/meta.json. Re-running the same command resumes an
    interrupted scan and skips finished work. Vectors (and, with --cache-rows, rows) are kept
    in the cache store by content; `datagate cache info` shows it. Finding no image at all
    is a warning on stderr, not a failure (exit 0).
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
        workers=(workers or None) if engine == "ray" else (workers or (os.cpu_count() or 1)),
        cache_dir=cache_dir,
        cache_rows=cache_rows,
        image_column=image_column,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        chunk_size=chunk_size,
        progress=bar,
        warn=console.warn,
        engine=engine,
        ray_address=ray_address,
    )
    if json_output:
        console.print_json(console.scan_json(result.meta, str(out)))
    elif not quiet:
        for path, reason in result.skipped[:20]:
            console.warn(f"skipped {path}: {reason}")
        if len(result.skipped) > 20:
            more = len(result.skipped) - 20
            console.warn(f"... and {plural(more, 'more skipped path')} (see meta.json)")
        _summary(result.meta, str(out))
    if result.meta["counts"]["images"] == 0:
        from datagate.scanner.readers.base import IMAGE_SUFFIXES

        inputs_text = ", ".join(paths)
        console.warn(
            f"no images found in {inputs_text} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
            "files, .tar/.tar.gz/.tgz shards and .parquet files); the scan table is empty"
        )
    return ExitCode.OK


def _summary(meta: ScanMeta, out_dir: str) -> None:
    """The scan's summary on stdout, counts in the singular when they are one."""
    from datagate.cli import console

    c, t = meta["counts"], meta["timing"]
    console.out.print(
        console.markup(
            "[bold green]scanned[/] {} in {} ({:.1f} s, {:,.0f} img/s, {} resumed) · "
            "{:,} unreadable · {} skipped",
            plural(c["images"], "image"),
            plural(c["shards"], "shard"),
            t["seconds"],
            t["images_per_second"] or 0,
            plural(t.get("chunks_resumed", 0), "chunk"),
            c["errors"],
            plural(c["skipped_files"], "path"),
        ),
        soft_wrap=True,
    )
    console.out.print(
        console.markup("scan table: [bold]{}/images.parquet[/]", out_dir), soft_wrap=True
    )
    embedder = meta.get("embedder")
    if embedder:
        console.out.print(
            console.markup(
                "embeddings: [bold]{}/embeddings.parquet[/] ({}, {} dims, {:,} computed on {}, "
                "{:,} from cache)",
                out_dir,
                embedder["id"],
                embedder["dim"],
                embedder["computed"],
                embedder["device"],
                embedder["cache_hits"],
            ),
            soft_wrap=True,
            highlight=False,
        )
