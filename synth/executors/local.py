"""The default executor: the stage in this process, or a pool of spawned worker processes on this machine."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from synth.executors.base import Done
from synth.runner import ShardJob, Stage, Task, run_task

_READY: dict[str, Stage] = {}  # in a worker process (which lives for one run_stage call): stages set up


def _worker_task(stage: Stage, job: ShardJob, task: Task) -> dict[str, Any]:
    """Pool entry point: set the stage up once per worker process, then run the task."""
    if job.fp not in _READY:
        stage.setup()
        _READY[job.fp] = stage
    return run_task(_READY[job.fp], job, task)


class LocalExecutor:
    """``workers`` ≤ 1 (or one shard): in this process, set up once and torn down after; else a process pool."""

    name = "local"

    def prepare(self, rundir: Path) -> None:
        """Nothing to check: this machine wrote the run directory."""

    def run(self, stage: Stage, job: ShardJob, todo: list[Task], workers: int, done: Done) -> None:
        if workers <= 1 or len(todo) <= 1:
            stage.setup()
            try:
                for task in todo:
                    done(task, run_task(stage, job, task))
            finally:
                stage.teardown()
            return
        ctx = mp.get_context("spawn")  # fork is unsafe once torch or tokenizers threads exist
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            pending = {pool.submit(_worker_task, stage, job, t): t for t in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    task = pending.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        for f in pending:
                            f.cancel()
                        raise exc
                    done(task, fut.result())

    def close(self) -> None:
        """Nothing held between stages."""
