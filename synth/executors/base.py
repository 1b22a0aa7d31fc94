"""What runs a stage's shards: the executor protocol (which executor a run uses: ``synth.executors``).

The runner decides which shards are missing, and writes the manifest and stats; an executor only runs the
missing ones (``synth.kernel.run_task`` each: read, process, commit one shard atomically) and hands back each
shard's metadata as it is committed. So the stage code, the fingerprints, the atomic shard writes and the stats
in the Parquet footer are the same whichever executor runs them: ``local`` (this machine's processes) or ``ray``
(tasks and engine actors on a Ray cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synth.errors import SynthError

if TYPE_CHECKING:
    from synth.kernel import Done, ShardJob, Stage, Task



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
