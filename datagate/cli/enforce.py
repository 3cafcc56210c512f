"""``datagate enforce`` and ``datagate report``: judge a scan, and re-render its reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagate.cli.app import app
from datagate.cli.options import JsonOption, QuietOption, RulesOption, ScanDirArg
from datagate.errors import ExitCode
from datagate.scanner.defaults import DEFAULT_SCAN_DIR


@app.command()
def enforce(
    scan_dir: ScanDirArg = Path(DEFAULT_SCAN_DIR),
    rules: RulesOption = None,
    min_human: Annotated[
        float | None,
        typer.Option(help="Override min_human.min: floor on the share of human-made images."),
    ] = None,
    max_rejected_fraction: Annotated[
        float | None,
        typer.Option(help="Override max_rejected_fraction.max."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (default: beside the scan: datagate-out/ for datagate-out/scan).",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Scan folder of a preserved human baseline (same --model): the report compares "
            "the kept set with it (precision, recall, density, coverage, Fréchet distance) and "
            "the min_coverage / min_recall / max_frechet rules judge it. Overrides the policy's "
            "reference:.",
            show_default=False,
        ),
    ] = None,
    overrides_file: Annotated[
        Path | None,
        typer.Option(
            "--overrides",
            help="Reviewed decisions (JSON Lines by sha256: human, synthetic, keep, reject; "
            "`datagate review` writes them), applied before the rules.",
            show_default=False,
        ),
    ] = None,
    reserve: Annotated[
        list[Path] | None,
        typer.Option(
            help="Reserve scan (repeatable): when min_human or min_diversity fails, add the "
            "fewest reserve images, judged by the same per-image rules, that make every floor "
            "hold (nothing when they cannot).",
            show_default=False,
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger",
            help="Record this run in a provenance ledger (default: .datagate/ledger when it "
            "exists; `datagate keygen` creates it); its recorded models set their outputs' "
            "generation.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Signing key for the ledger entry and attestation.intoto.json (default "
            "$DATAGATE_LEDGER_KEY, else ~/.config/datagate/ledger.key when it exists).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Where the dataset-wide work runs (duplicate groups and pairs, clusters, "
            "diversity sums, counts): local (this process) or ray (Ray Data on a Ray cluster).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the cluster to join (auto, or HOST:PORT); default: start "
            "a local Ray.",
        ),
    ] = None,
    keep_intermediates: Annotated[
        Path | None,
        typer.Option(
            "--keep-intermediates",
            help="Keep the dataset-wide work (near-duplicate pairs, k-means fit, cluster "
            "matches, diversity sums) in this folder, by content, and on the next run update "
            "it with what changed instead of computing it again (as the pre-commit hook does). "
            "A reused k-means fit can move a near-threshold semantic match; without this "
            "option every run fits afresh.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Apply rules to a scan: write kept/rejected manifests and reports; exit 1 on failure."""
    import datagate
    from datagate.cli import console
    from datagate.gate import default_out
    from datagate.io import output_lock

    out = out if out is not None else default_out(scan_dir)
    with output_lock(out.resolve()):  # one writer per folder; exit 2 if it cannot be written
        result = datagate.enforce(
            scan_dir,
            rules,
            out=out,
            min_human=min_human,
            max_rejected_fraction=max_rejected_fraction,
            reference=reference,
            overrides=overrides_file,
            reserves=reserve or (),
            ledger=ledger,
            key=key,
            engine=engine,
            ray_address=ray_address,
            intermediates=keep_intermediates,
        )
    if json_output:
        console.print_json(console.enforce_json(result.report))
    elif not quiet:
        console.enforce_summary(result.report)
        for note in result.notes:
            console.out.print(console.markup("[dim]note: {}[/]", note), soft_wrap=True)
        if result.entry is not None:
            console.out.print(
                console.markup("ledger: entry #{} ({})", result.entry.seq, result.entry.hash[:16]),
                soft_wrap=True,
            )
    return ExitCode.OK if result.passed else ExitCode.GATE_FAILED


@app.command()
def report(
    scan_dir: ScanDirArg = Path(DEFAULT_SCAN_DIR),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where `datagate enforce` wrote (default: beside the scan)."
        ),
    ] = None,
) -> int:
    """Re-render report.md and report.html from a scan and its decisions (nothing recomputed)."""
    from datagate.cli import console
    from datagate.gate import default_out, rerender
    from datagate.io import output_lock

    out = out if out is not None else default_out(scan_dir)
    with output_lock(out.resolve()):
        result = rerender(scan_dir, out)
    outputs = result["outputs"]
    console.out.print(
        console.markup("report: {}, {}", outputs["report_md"], str(outputs.get("report_html"))),
        soft_wrap=True,
    )
    return ExitCode.OK
