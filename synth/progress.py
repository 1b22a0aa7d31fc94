"""Progress of long work: rich bars on the console (shards done, rows, rows/s, tokens/s, ETA), and the same in
``RUNDIR/progress.json``, rewritten atomically every few seconds while a stage runs, so ``synth status RUNDIR``
follows a run (a cluster's head node, a job under nohup) from another terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
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

from synth.budget import BudgetExceeded, tokens
from synth.io import atomic_write_text

console = Console(stderr=True)
PROGRESS_FILE = "progress.json"
HEARTBEAT_S = 3.0  # how often progress.json is rewritten while a stage runs (elapsed time, ETA)


class LiveFile:
    """One stage's entry in ``RUNDIR/progress.json`` (the run's other stages are kept as they are): shards done of
    all, rows and tokens so far and per second, and the ETA from the pace of the shards done in this process."""

    def __init__(self, rundir: Path, key: str, total: int, done: int) -> None:
        self.path, self.key = Path(rundir) / PROGRESS_FILE, key
        self.total, self.resumed, self.done = total, done, done
        self.rows = self.tokens = 0
        self.started = time.time()
        try:  # the run's earlier stages, read once: the run lock keeps any other writer out meanwhile
            earlier = json.loads(self.path.read_text()).get("stages", {})
        except (OSError, ValueError, AttributeError):
            earlier = {}
        self._earlier = {k: v for k, v in earlier.items() if k != key} if isinstance(earlier, dict) else {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="synth-progress", daemon=True)

    def start(self) -> None:
        self.write("running")
        self._beat.start()

    def shard(self, rows: int, tokens: int) -> None:
        """One more shard committed; ``rows`` and ``tokens``: the stage's totals so far in this process."""
        with self._lock:
            self.done += 1
            self.rows, self.tokens = rows, tokens
        self.write("running")

    def end(self, state: str) -> None:
        self._stop.set()
        if self._beat.is_alive():
            self._beat.join()
        self.write(state)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.write("running")

    def entry(self, state: str) -> dict[str, Any]:
        now = time.time()
        elapsed = max(now - self.started, 1e-9)
        new = self.done - self.resumed
        eta = (self.total - self.done) * elapsed / new if new and state == "running" else None
        return {"state": state, "shards_done": self.done, "shards_total": self.total, "shards_resumed": self.resumed,
                "rows": self.rows, "rows_per_s": round(self.rows / elapsed, 2), "tokens": self.tokens,
                "tokens_per_s": round(self.tokens / elapsed, 1), "elapsed_s": round(elapsed, 1),
                "eta_s": round(eta, 1) if eta is not None else None, "started": self.started}

    def write(self, state: str) -> None:
        with self._lock:
            stages = {**self._earlier, self.key: self.entry(state)}
            doc = {"updated": time.time(), "pid": os.getpid(), "host": socket.gethostname(), "stage": self.key,
                   "state": state, "heartbeat_s": HEARTBEAT_S, "stages": stages}
            with contextlib.suppress(OSError):  # progress is for the user: a full disk must not stop the stage
                atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")


class StageProgress:
    """One bar per stage run; advanced once per finished shard with that shard's row counts."""

    def __init__(self, label: str, total: int, done: int = 0, enabled: bool = True,
                 rundir: Path | None = None) -> None:
        self.enabled = enabled and total > 0
        self.rows = self.tokens = 0
        self.seconds = 0.0
        self.live = LiveFile(rundir, label, total, done) if rundir is not None else None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]}"),
            TextColumn("{task.fields[token_rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
            transient=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task(label, total=total, completed=done, rows=0, rate="", token_rate="")
        if done and self.enabled:
            console.print(f"[dim]{label}: {done}/{total} shards already done, resuming[/dim]")

    def __enter__(self) -> StageProgress:
        self._progress.__enter__()
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.live is not None:
            stopped = exc_type is not None and issubclass(exc_type, KeyboardInterrupt | BudgetExceeded)
            self.live.end("done" if exc_type is None else "stopped" if stopped else "failed")
        self._progress.__exit__(exc_type, *exc)

    def advance(self, meta: dict[str, Any]) -> None:
        self.rows += sum(meta["stats"]["rows_in"].values())
        self.tokens += tokens(meta["stats"])
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = f"{self.rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        token_rate = f"{self.tokens / elapsed:,.0f} tok/s" if elapsed > 0 and self.tokens else ""
        self._progress.update(self._task, advance=1, rows=self.rows, rate=rate, token_rate=token_rate)
        if self.live is not None:
            self.live.shard(self.rows, self.tokens)


def read_status(rundir: str | Path) -> dict[str, Any]:
    """``RUNDIR/progress.json`` with what a reader must know besides: ``age_s`` since the last write, and a
    running state told apart from a run that is gone (its process ended on this host, or no heartbeat for three
    periods: killed, or a machine that went away)."""
    path = Path(rundir) / PROGRESS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: no stage has started in {rundir} "
                                "(runs of this version write it)") from None
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    doc["age_s"] = round(time.time() - float(doc.get("updated", 0)), 1)
    if doc.get("state") == "running":
        gone = doc.get("host") == socket.gethostname() and not _alive(int(doc.get("pid", 0)))
        if gone or doc["age_s"] > 3 * float(doc.get("heartbeat_s", HEARTBEAT_S)):
            doc["state"] = "gone"
            doc["why"] = ("its process has ended" if gone else f"no update for {doc['age_s']:.0f} s") + \
                ": killed or crashed; run the same command again to resume"
    return doc


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
