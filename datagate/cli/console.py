"""Terminal output (rich): progress and messages on stderr, results on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from datagate.contract import Report, ScanMeta

out = Console()
err = Console(stderr=True)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} img/s", style="cyan")


class ScanProgress:
    """A rich progress bar that satisfies :class:`datagate.scanner.engine.Progress`."""

    def __init__(self, description: str = "scanning", *, enabled: bool = True) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self._description = description
        self._task: Any = None

    def start(self, total: int | None) -> None:
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def finish(self) -> None:
        self._progress.stop()


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, never styled or wrapped."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def scan_json(meta: ScanMeta, out_dir: str) -> dict[str, Any]:
    return {
        "scan": out_dir,
        "images_parquet": f"{out_dir}/images.parquet",
        "counts": meta["counts"],
        "timing": meta["timing"],
        "signals": meta["signals"],
        "embedder": meta.get("embedder"),
        "embeddings_parquet": f"{out_dir}/embeddings.parquet" if meta.get("embedder") else None,
        "skipped": meta["skipped"],
    }


def enforce_json(report: Report) -> dict[str, Any]:
    keys = (
        "verdict",
        "counts",
        "rules",
        "composition",
        "reference",
        "outputs",
        "policy",
        "datagate_version",
    )
    return {k: v for k, v in report.items() if k in keys}


def hook_summary(report: Report, images: int, cached: int, computed: int, seconds: float) -> None:
    """Plain lines fit for a commit hook's output."""
    verdict = report["verdict"].upper()
    out.print(
        f"datagate: {verdict} · {images:,} images ({cached:,} unchanged from cache, "
        f"{computed:,} scanned) in {seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    for r in report["rules"]:
        if r["scope"] == "dataset" and r["passed"] is False:
            out.print(f"  ✗ {r['id']}: {r['message']}", highlight=False, soft_wrap=True)
        elif r["scope"] == "image" and r["rejected"]:
            out.print(f"  · {r['id']}: {r['message']}", highlight=False, soft_wrap=True)
    out.print(f"  report: {report['outputs']['report_md']}", highlight=False, soft_wrap=True)


def error(message: str) -> None:
    # soft_wrap: the terminal wraps long lines itself, and logs and pipes keep each
    # message on one line so it can be searched for.
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def warn(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


def scan_summary(meta: ScanMeta, out_dir: str) -> None:
    c, t = meta["counts"], meta["timing"]
    out.print(
        f"[bold green]scanned[/] {c['images']:,} images in {c['shards']:,} shards "
        f"({t['seconds']:.1f} s, {t['images_per_second'] or 0:,.0f} img/s, "
        f"{t['chunks_resumed']} chunks resumed) · {c['errors']:,} unreadable · "
        f"{c['skipped_files']:,} files skipped",
        soft_wrap=True,
    )
    out.print(f"scan table: [bold]{out_dir}/images.parquet[/]", soft_wrap=True)
    embedder = meta.get("embedder")
    if embedder:
        out.print(
            f"embeddings: [bold]{out_dir}/embeddings.parquet[/] ({embedder['id']}, "
            f"{embedder['dim']} dims, {embedder['computed']:,} computed on {embedder['device']}, "
            f"{embedder['cache_hits']:,} from cache)",
            soft_wrap=True,
            highlight=False,
        )


def enforce_summary(report: Report) -> None:
    top_up = report.get("top_up")
    if top_up:
        out.print(f"top-up: {top_up['message']}", highlight=False, soft_wrap=True)
    table = Table(title=None, show_edge=False, header_style="bold")
    table.add_column("rule")
    table.add_column("scope")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in report["rules"]:
        if r["scope"] == "image":
            result = f"{r['rejected']:,} rejected"
            style = "yellow" if r["rejected"] else "dim"
        else:
            result = "pass" if r["passed"] else "FAIL"
            style = "green" if r["passed"] else "bold red"
        table.add_row(r["id"], r["scope"], Text(result, style=style), r["message"])
    out.print(table)
    c = report["counts"]
    verdict = report["verdict"]
    colour = "green" if verdict == "pass" else "red"
    out.print(
        f"[bold {colour}]{verdict.upper()}[/] · {c['images']:,} images · {c['kept']:,} kept · "
        f"{c['rejected']:,} rejected"
    )
    o = report["outputs"]
    out.print(f"manifests: {o['kept']}, {o['rejected']}")
    out.print(f"report: {o['report_md']} · {o.get('report_html')} (json: {o['report_json']})")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def detector_metrics(title: str, m: dict[str, Any], head: Any) -> None:
    """A detector head's figures on labelled images."""
    auc = "n/a (one class only)" if m["auc"] is None else f"{m['auc']:.3f}"
    at = m["tpr_at_fpr"]
    out.print(
        f"[bold]{title}[/] on {m['n_real']:,} real + {m['n_synthetic']:,} synthetic images "
        f"({head.embedder})",
        soft_wrap=True,
        highlight=False,
    )
    out.print(
        f"  AUC {auc} · accuracy {_pct(m['accuracy'])} at threshold "
        f"{head.calibration.threshold:.3f} (TPR {_pct(m['tpr'])}, FPR {_pct(m['fpr'])}) · "
        f"TPR at 1% FPR {_pct(at['0.01'])} · at 5% FPR {_pct(at['0.05'])}",
        soft_wrap=True,
        highlight=False,
    )


def share_line(estimate: Any, truth: float | None = None) -> str:
    """One line: estimated human share with its interval (and the truth when known)."""
    if estimate.share is None:
        text = "human share: cannot be estimated"
    else:
        text = (
            f"human share {estimate.share:.1%} "
            f"({estimate.confidence:.0%} interval {estimate.low:.1%} to {estimate.high:.1%})"
        )
    if truth is not None:
        text += f"; true share {truth:.1%}"
    if estimate.note:
        text += f"; {estimate.note}"
    return text
