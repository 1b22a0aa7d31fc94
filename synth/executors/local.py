"""The default executor: the stage in this process, a pool of spawned worker processes on this machine, or, for a
stage that holds a model on GPUs, one process per copy pinned to its GPUs.

This process (the driver) never initialises CUDA: a stage whose copies use GPUs always runs them in spawned
processes whose ``CUDA_VISIBLE_DEVICES`` is set before they import anything, one copy included (``--gpus 2,3``
with one copy runs on 2 and 3, and the driver holds no context on GPU 0). Every process of a pool dies the moment
the driver dies, however it dies: each asks the kernel first thing (``synth.watchdog.die_with_parent``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from synth.devices import local_groups
from synth.kernel import Done, ShardJob, Stage, Task, run_task, run_tasks
from synth.watchdog import die_with_parent

_READY: dict[str, Stage] = {}  # in a worker process (which lives for one run_stage call): stages set up
CHUNKS_PER_REPLICA = 4  # shards go to engine copies in this many runs each: balance, and few engine drains


def _worker_task(stage: Stage, job: ShardJob, task: Task) -> dict[str, Any]:
    """Pool entry point: set the stage up once per worker process, then run the task."""
    return run_task(_ready(stage, job), job, task)


def _ready(stage: Stage, job: ShardJob) -> Stage:
    if job.fp not in _READY:
        stage.check_facts()
        stage.setup()
        _READY[job.fp] = stage
    return _READY[job.fp]


def _pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (fork is unsafe once torch or tokenizers threads exist), each killed
    by the kernel when this process dies. Its processes start in the thread that submits: use it from one thread
    that outlives the pool (the kernel acts when that thread ends)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_child_start,
                               initargs=(os.getpid(), initializer, initargs))


def _child_start(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """Pool initializer: die with the driver (before anything else: a copy that outlived it would hold its GPUs),
    then the pool's own initializer."""
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def _pin(groups: Any, threads: int | None) -> None:
    """Pool initializer of a copy: take one group of GPUs before anything touches CUDA (none: the CPU, with
    ``threads`` BLAS threads so that CPU copies share the cores instead of each taking them all)."""
    gpus = groups.get()
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # "" for a CPU copy: it must not take a GPU either
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # indices as NVML numbers them (CUDA's default: fastest first)
    if not gpus and threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _replica_tasks(stage: Stage, job: ShardJob, tasks: list[Task]) -> list[tuple[Task, dict[str, Any]]]:
    """Engine-copy entry point: a run of shards as one stream through this process's engine."""
    metas: list[tuple[Task, dict[str, Any]]] = []
    run_tasks(_ready(stage, job), job, tasks, lambda task, meta: metas.append((task, meta)))
    return metas


class LocalExecutor:
    """``workers`` ≤ 1 (or one shard): in this process, set up once and torn down after; else a process pool.
    A stage that holds a model (``Stage.placement``) runs as its copies: one process per copy, each seeing only
    its own GPUs (``CUDA_VISIBLE_DEVICES``), taking runs of shards as it finishes others; a single copy without
    a GPU runs in this process."""

    name = "local"

    def prepare(self, rundir: Path) -> None:
        """Nothing to check: this machine wrote the run directory."""

    def facts(self, stage: Stage) -> dict[str, Any]:
        """The stage's facts for its first copy here (NVML's view of that copy's GPUs)."""
        return stage.local_facts()

    def run(self, stage: Stage, job: ShardJob, todo: list[Task], workers: int, done: Done) -> None:
        placement = stage.placement()
        groups = local_groups(placement) if placement is not None else [[]]
        if any(groups) or (len(groups) > 1 and len(todo) > 1):
            self._run_replicas(stage, job, todo, groups, done)
        elif workers <= 1 or len(todo) <= 1:
            stage.setup()
            try:
                run_tasks(stage, job, todo, done)  # one stream over every shard: an engine never drains between
            finally:
                stage.teardown()
        else:
            with _pool(min(workers, len(todo))) as pool:
                _collect({pool.submit(_worker_task, stage, job, t): [t] for t in todo}, done)

    def _run_replicas(self, stage: Stage, job: ShardJob, todo: list[Task], groups: list[list[str]],
                      done: Done) -> None:
        n = min(len(groups), len(todo))
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()  # handed to each copy as it starts (process arguments: allowed for a queue)
        for gpus in groups[:n]:
            queue.put(gpus)
        threads = max(1, (os.cpu_count() or 1) // n) if n > 1 else None
        size = max(1, -(-len(todo) // (n * CHUNKS_PER_REPLICA)))
        runs = [todo[i:i + size] for i in range(0, len(todo), size)]
        with _pool(n, _pin, (queue, threads)) as pool:
            _collect({pool.submit(_replica_tasks, stage, job, run): run for run in runs}, done, many=True)

    def close(self) -> None:
        """Nothing held between stages."""


def _collect(pending: dict[Future, list[Task]], done: Done, many: bool = False) -> None:
    """Report each finished future's shards; on the first failure cancel what has not started and raise it."""
    while pending:
        finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
        for fut in finished:
            tasks = pending.pop(fut)
            exc = fut.exception()
            if exc is not None:
                for f in pending:
                    f.cancel()
                raise exc
            for task, meta in (fut.result() if many else [(tasks[0], fut.result())]):
                done(task, meta)
