"""The stage runner: maps a stage over input shards, runs only the missing ones, and records the output.

It works out the output's name (the fingerprint, with the facts of where the copies run), keeps finished shards
whose sha256 checks out, has an executor run the rest (``synth.executors``; each shard through the kernel's
``run_task``, ``synth.kernel``), then writes the manifest, ``CURRENT`` and the run's stats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth.budget import current_budget
from synth.executors import Executor, make_executor
from synth.executors import current as current_executor
from synth.identity import file_digest
from synth.io import atomic_write_text, read_sidecar
from synth.kernel import CURRENT, MANIFEST, ShardJob, Source, Stage, StageOutput, Task, shard_path, verified_shard
from synth.lock import run_lock
from synth.progress import StageProgress, console
from synth.redact import redact
from synth.stats import merge_shards, update_run_stats


def run_stage(
    stage: Stage,
    source: Source,
    rundir: str | Path,
    workers: int = 1,
    batch_size: int = 1024,
    progress: bool = True,
    executor: Executor | str | None = None,
) -> StageOutput:
    """Run ``stage`` over every task of ``source`` into ``RUNDIR/<key>/<fingerprint>/`` and return it.

    ``executor`` runs the missing shards: ``"local"``, ``"ray"`` or an ``Executor`` (``synth.executors``); by
    default the one of the run in progress (``synth.executors.using``), else local. Rows, fingerprints and stats
    do not depend on it.

    Finished shards with the same fingerprint are kept once their sha256 checks out; missing, damaged or foreign
    ones are redone (a damaged one is named on the console). A crash at any point loses nothing: rerunning gives
    the same rows as an uninterrupted run. The run directory is locked meanwhile (``synth.lock``): a second
    process on it stops at once.
    """
    owned = isinstance(executor, str)
    ex = make_executor(executor) if isinstance(executor, str) else executor or current_executor()
    try:
        with run_lock(rundir):
            return _run_stage(stage, source, Path(rundir), workers, batch_size, progress, ex)
    finally:
        if owned:
            ex.close()


def _run_stage(stage: Stage, source: Source, rundir: Path, workers: int, batch_size: int,
               progress: bool, executor: Executor) -> StageOutput:
    # Named by what the copies really run with, worked out where they will run (not on this process's devices).
    stage.pinned_facts = executor.facts(stage)
    fp = stage.fingerprint(source.fingerprint())
    out = rundir / stage.key / fp
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)  # left by a killed worker (the lock says no live one is writing)

    digests: dict[str, str] = {}
    if (out / MANIFEST).exists():
        try:
            digests = {s["file"]: s["sha256"] for s in json.loads((out / MANIFEST).read_text())["shards"]}
        except (json.JSONDecodeError, KeyError):
            digests = {}
    tasks = source.tasks()
    metas: dict[int, dict[str, Any]] = {}
    todo: list[Task] = []
    for task in tasks:
        path = shard_path(out, task.index)
        meta, why = verified_shard(path, task, fp, digests)
        if meta is None:
            todo.append(task)
            if why is not None:
                console.print(f"{stage.key}: redoing {path}: {why}", style="yellow", markup=False,
                              highlight=False, soft_wrap=True)
        else:
            metas[task.index] = meta

    budget = current_budget()
    meter = budget.meter(rundir, stage.key, list(metas.values()), len(tasks)) if budget and todo else None
    with StageProgress(stage.key, total=len(tasks), done=len(metas), enabled=progress, rundir=rundir) as bar:
        if todo:
            if meter is not None:
                meter.check()  # a cap already reached starts nothing
            executor.prepare(rundir)
            job = ShardJob(source, out, fp, batch_size, stage.output_schema())

            def done(task: Task, meta: dict[str, Any]) -> None:  # on this process, as each shard is committed
                metas[task.index] = meta
                bar.advance(meta)
                if meter is not None:
                    meter.add(meta)
                    meter.check()

            executor.run(stage, job, todo, workers, done)

    return _finish(stage, source, rundir, out, fp, tasks, metas)


def _finish(stage, source, rundir, out, fp, tasks, metas) -> StageOutput:
    shards = []
    for task in tasks:
        path = shard_path(out, task.index)
        record = read_sidecar(path)  # written at commit; verified above for a shard that was already there
        shards.append({"file": path.name, "task": task.key, "rows": metas[task.index]["rows"],
                       "bytes": path.stat().st_size,
                       "sha256": record["sha256"] if record is not None else file_digest(path)})
    summary = merge_shards([metas[t.index]["stats"] for t in tasks])
    summary.update(fingerprint=fp, shards=len(tasks),
                   seconds=round(sum(metas[t.index].get("seconds", 0.0) for t in tasks), 3))
    manifest = {
        "stage": stage.key,
        "fingerprint": fp,
        "input_fingerprint": source.fingerprint(),
        "version": stage.version,
        "params": redact(json.loads(json.dumps(stage.params(), default=str))),  # no credential on disk
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out.parent / CURRENT, fp + "\n")
    update_run_stats(Path(rundir), stage.key, summary)
    return StageOutput(out, manifest)


def run_on(stage: Stage, output: StageOutput, rundir: str | Path, progress: bool = True) -> StageOutput:
    """Run ``stage`` over a finished stage output, shard for shard, in one process (an LLM engine batches across
    the shard itself). The stage learns its input's schema, so a shard where every row left still has columns."""
    stage._input_schema = output.schema()
    return run_stage(stage, output.as_source(), rundir, workers=1, progress=progress)

