"""Rich progress bars for long work: shards done, rows processed, rows/s and ETA."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class StageProgress:
    """One bar per stage run; advanced once per finished shard with that shard's row counts."""

    def __init__(self, label: str, total: int, done: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled and total > 0
        self.rows = 0
        self.seconds = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
            transient=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task(label, total=total, completed=done, rows=0, rate="")
        if done and self.enabled:
            console.print(f"[dim]{label}: {done}/{total} shards already done, resuming[/dim]")

    def __enter__(self) -> StageProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def advance(self, meta: dict[str, Any]) -> None:
        self.rows += sum(meta["stats"]["rows_in"].values())
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = f"{self.rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        self._progress.update(self._task, advance=1, rows=self.rows, rate=rate)
