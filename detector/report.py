"""Human output of the CLI: a progress bar for long inputs, a summary table at the end.

Both go to stderr so stdout stays a clean alert stream for pipes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from detector.policy import CATALOGUE, SEVERITIES
from detector.replay import Summary

#: Inputs smaller than this finish before a bar would be worth drawing.
_PROGRESS_MIN_BYTES = 32 * 1024 * 1024


@contextmanager
def progress_reporter(
    paths: Sequence[str], *, enabled: bool = True
) -> Iterator[Callable[[int], None] | None]:
    """A byte-progress callback when stderr is a terminal and the input is large, else None."""
    sizes = [os.path.getsize(p) for p in paths if p != "-" and os.path.exists(p)]
    gz = any(p.endswith(".gz") for p in paths)
    if not enabled or not sys.stderr.isatty() or gz or sum(sizes) < _PROGRESS_MIN_BYTES:
        yield None
        return
    total = sum(sizes)
    columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=total)
        base = 0
        last = 0

        def advance(done: int) -> None:
            nonlocal base, last
            if done < last:  # a new file started
                base += last
            last = done
            bar.update(task, completed=base + done)

        yield advance


def print_summary(summary: Summary, dead_letters: str | None = None) -> None:
    console = Console(stderr=True)
    table = Table(title="sessionwatch replay", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("events", f"{summary.events:,}")
    for kind, n in sorted(summary.by_type.items()):
        table.add_row(f"  {kind}", f"{n:,}")
    table.add_row("invalid (dead-lettered)", f"{summary.invalid_total:,}")
    for reason, n in sorted(summary.invalid.items()):
        table.add_row(f"  {reason}", f"{n:,}")
    if summary.unmapped:
        table.add_row("skipped (type not mapped)", f"{sum(summary.unmapped.values()):,}")
        for kind, n in summary.unmapped.most_common(10):
            table.add_row(escape(f"  {kind}"), f"{n:,}")
    table.add_row("alerts", f"{summary.alerts_total:,}")
    order = {name: i for i, name in enumerate(CATALOGUE)}
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    for (kind, severity), n in sorted(
        summary.alerts.items(), key=lambda kv: (order.get(kv[0][0], 99), -rank[kv[0][1]])
    ):
        table.add_row(escape(f"  {kind} [{severity}]"), f"{n:,}")
    table.add_row("events/s", f"{summary.rate:,.0f}")
    console.print(table)
    if dead_letters:
        console.print(f"refused records written to {dead_letters}")
