r"""Terminal output (rich): progress and messages on stderr, results on stdout.

Everything printed may carry values from the data (file names, captions, paths in error
messages), so nothing from the data reaches the terminal as is: control characters (ANSI
escape sequences, carriage returns, bidirectional overrides) are shown escaped, as ``\x1b``,
by the consoles themselves (:class:`SafeConsole`), whatever a caller prints; and values are
inserted as plain text, never as rich markup (:func:`markup` for templates that style).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
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
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from datagate.contract import Report, ScanMeta

#: C0 and C1 controls, DEL, and the invisible characters that reorder or hide text
#: (bidirectional overrides and isolates, zero-width and line/paragraph separators)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_UNSAFE_KEEP_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object, *, newlines: bool = False) -> str:
    r"""``value`` as text safe to print: control and invisible characters escaped (``\x1b``,
    ``\n``, ``\u202e``); with ``newlines``, line breaks are kept."""
    text = str(value)
    return (_UNSAFE_KEEP_NEWLINE if newlines else _UNSAFE).sub(_escaped, text)


def markup(template: str, *values: object) -> Text:
    """Rich ``template`` (``"scan table: [bold]{}[/]"``) with ``values`` inserted as plain
    text: markup in a value (``[red]`` in a file name) is shown, not interpreted. Non-string
    values keep their format spec (``{:,}``)."""
    safe = [escape(clean(v)) if isinstance(v, str) else v for v in values]
    return Text.from_markup(template.format(*safe))


class SafeConsole(Console):
    """A rich console that never writes a control character it did not generate itself.

    Every renderable (strings, Text, tables, the progress bar) ends as segments; rich's own
    cursor and style codes are control segments or styles, so escaping the text of the others
    leaves formatting intact while data cannot move the cursor, recolour or rewrite the line.
    """

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            text = segment.text
            if segment.control is None and _UNSAFE_KEEP_NEWLINE.search(text):
                yield Segment(clean(text, newlines=True), segment.style, None)
            else:
                yield segment


out = SafeConsole()
err = SafeConsole(stderr=True)


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


def hook_summary(
    report: Report, images: int, cached: int, computed: int, seconds: float, reused: bool = False
) -> None:
    """Plain lines fit for a commit hook's output."""
    verdict = report["verdict"].upper()
    judged = "; nothing changed: last verdict" if reused else ""
    out.print(
        f"datagate: {verdict} · {images:,} images ({cached:,} unchanged from cache, "
        f"{computed:,} scanned{judged}) in {seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    for r in report["rules"]:
        if r["scope"] == "dataset" and r["passed"] is False:
            out.print(Text(f"  ✗ {r['id']}: {clean(r['message'])}"), soft_wrap=True)
        elif r["scope"] == "image" and r["rejected"]:
            out.print(Text(f"  · {r['id']}: {clean(r['message'])}"), soft_wrap=True)
    out.print(Text(f"  report: {clean(report['outputs']['report_md'])}"), soft_wrap=True)


def error(message: str, hint: str | None = None) -> None:
    """``error: message`` on stderr. A message of several lines (a rules file's problems)
    keeps them, each further line indented, so no value can start a line of its own."""
    # soft_wrap: the terminal wraps long lines itself, and logs and pipes keep each
    # message on one line so it can be searched for.
    first, *rest = message.split("\n")
    err.print(Text("error: ", style="bold red") + Text(clean(first)), soft_wrap=True)
    for line in rest:
        err.print(Text(clean(line if line.startswith(" ") else f"  {line}")), soft_wrap=True)
    if hint:
        err.print(Text(f"  hint: {clean(hint)}"), soft_wrap=True)


def warn(message: str) -> None:
    r"""``warning: message`` on stderr, always one line (a line break in a value is shown as
    ``\n``)."""
    err.print(Text("warning: ", style="bold yellow") + Text(clean(message)), soft_wrap=True)


def enforce_summary(report: Report) -> None:
    top_up = report.get("top_up")
    if top_up:
        out.print(Text(f"top-up: {clean(top_up['message'])}"), soft_wrap=True)
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
        table.add_row(
            Text(clean(r["id"])), r["scope"], Text(result, style=style), Text(clean(r["message"]))
        )
    out.print(table)
    c = report["counts"]
    verdict = report["verdict"]
    colour = "green" if verdict == "pass" else "red"
    out.print(
        markup(
            f"[bold {colour}]{{}}[/] · {{:,}} images · {{:,}} kept · {{:,}} rejected",
            verdict.upper(),
            c["images"],
            c["kept"],
            c["rejected"],
        )
    )
    o = report["outputs"]
    reports = f"{o['report_md']} · {o.get('report_html')} (json: {o['report_json']})"
    out.print(Text(clean(f"manifests: {o['kept']}, {o['rejected']}")), soft_wrap=True)
    out.print(Text(clean(f"report: {reports}")), soft_wrap=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def detector_metrics(title: str, m: dict[str, Any], head: Any) -> None:
    """A detector head's figures on labelled images."""
    auc = "n/a (one class only)" if m["auc"] is None else f"{m['auc']:.3f}"
    at = m["tpr_at_fpr"]
    out.print(
        markup(
            "[bold]{}[/] on {:,} real + {:,} synthetic images ({})",
            title,
            m["n_real"],
            m["n_synthetic"],
            head.embedder,
        ),
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
