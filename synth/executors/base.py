"""What runs a stage's shards: the executor protocol, and which executor a run uses.

The runner decides which shards are missing, and writes the manifest and stats; an executor only runs the
missing ones (``synth.runner.run_task`` each: read, process, commit one shard atomically) and hands back each
shard's metadata as it is committed. So the stage code, the fingerprints, the atomic shard writes and the stats
in the Parquet footer are the same whichever executor runs them: ``local`` (this machine's processes) or ``ray``
(tasks and engine actors on a Ray cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synth.errors import SynthError

if TYPE_CHECKING:
    from synth.runner import ShardJob, Stage, Task

Done = Callable[["Task", dict[str, Any]], None]  # called on the driver with each committed shard's metadata
EXECUTORS = ("local", "ray")


class ExecutorError(SynthError, RuntimeError):
    """The executor cannot run here (Ray missing, a node that cannot see the run directory…)."""


class Executor(Protocol):
    name: str

    def prepare(self, rundir: Path) -> None:
        """Check, once per run directory, that whatever will write shards can reach it."""

    def facts(self, stage: Stage) -> dict[str, Any]:
        """``stage.facts`` as a copy of the stage will find them where this executor runs it (its GPUs, its
        environment): what the output is named after (``Stage.facts``)."""

    def run(self, stage: Stage, job: ShardJob, todo: list[Task], workers: int, done: Done) -> None:
        """Run every task of ``todo`` (a shard each), calling ``done`` as each is committed; raise on the first
        failure. ``workers`` is the stage's own request (1 for a stage whose engine batches)."""

    def close(self) -> None:
        """Free what the executor holds (its connection to a cluster it started)."""


def make_executor(name: str | None = "local", ray_address: str | None = None, **options: Any) -> Executor:
    """``local`` or ``ray`` (``ray_address``: None starts a local Ray instance, ``auto`` joins this machine's
    cluster, ``host:port`` a given one; ``options`` go to ``synth.executors.ray.RayExecutor``)."""
    name = (name or "local").lower()
    if name == "local":
        if ray_address:
            raise ExecutorError("--ray-address needs --executor ray")
        from synth.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from synth.executors.ray import RayExecutor

        return RayExecutor(address=ray_address, **options)
    raise ExecutorError(f"unknown executor {name!r}: one of {', '.join(EXECUTORS)}")


_CURRENT: ContextVar[Executor | None] = ContextVar("synth_executor", default=None)


def current() -> Executor:
    """The executor of the run in progress (``using``), else the local one."""
    ex = _CURRENT.get()
    if ex is None:
        from synth.executors.local import LocalExecutor

        return LocalExecutor()
    return ex


@contextmanager
def using(executor: Executor | None) -> Iterator[Executor]:
    """Run every stage started inside (by a stage's driver too, like extract's two steps) on ``executor``."""
    if executor is None:
        yield current()
        return
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)
