"""The ``ray`` executor: a stage's shards on a Ray cluster, with the rows, resume and stats of the local one.

- A CPU stage's shards are Ray tasks (one CPU each, ``max_retries``): a task whose worker process or node dies is
  run again. Every attempt writes its own temp file and renames it into place (``synth.io.ShardWriter``), so a
  retried or duplicated task leaves one whole shard, never two, never half of one. (Two attempts committing at
  the same instant may leave the shard's recorded sha256 naming the other attempt's bytes, same rows; the next
  run then finds the mismatch and redoes that shard.)
- A stage that holds a model (``Stage.placement``: LLM stages, embeddings) runs on a pool of engine actors,
  planned node by node (``plan_actors``): one per group of GPUs a copy takes (a tensor-parallel group never
  spans nodes), as many as the stage's ``replicas`` asks and the cluster can hold, CPU actors for an engine that
  needs no GPU (a server client) or where the cluster has no GPU at all. What no node can hold stops the run at
  once with one line naming the nodes, their GPUs and what was asked. Each actor sets the stage up once and
  takes shards from a queue as it finishes the previous one; a lost actor's shard goes back to the queue for
  another actor (and a new actor replaces the lost one). Answers already paid for are in the request cache.
- The output is named after what the actors really run with (``Stage.facts``: dtype, embedding precision):
  a probe placed like an actor reports them before anything is named, and every actor checks them again.
- Every wait is bounded: results are polled, and an engine pool where no actor has finished a shard after
  ``start_timeout`` seconds (placement or model loading stuck) stops with a message, never hangs.
- At the start, every node must see the run directory: a token written by the driver is read back by a small task
  pinned to each node; a node that cannot (or does not answer in time) stops the run with a message naming it.

The driver (this process) only decides which shards are missing, collects each shard's metadata as it comes
back (the progress bar advances) and writes the manifest and stats, as with the local executor.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synth.devices import Placement, local_gpus
from synth.errors import SynthError
from synth.executors.base import ExecutorError
from synth.io import atomic_write_text
from synth.kernel import Done, ShardJob, Stage, StageError, Task, run_task
from synth.progress import console

CHECK_FILE = ".synth-storage-check"
POLL = 5.0  # seconds of one wait for results: every wait in this module has a bound


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ExecutorError("the ray executor needs Ray: pip install 'synth[ray]'") from e
    return ray


# ------------------------------------------------------------------------------------------ on the Ray workers

_READY: dict[str, Stage] = {}  # in a Ray worker process (reused across tasks): the stage set up last


def _enter(cwd: str) -> None:
    """Work in the driver's working directory, so that relative paths (``--out runs/sw``, inputs) mean there what
    they mean on the driver; it has to be on shared storage as well."""
    try:
        os.chdir(cwd)
    except OSError as e:
        raise ExecutorError(f"the driver's working directory {cwd} is not on this node ({socket.gethostname()}): "
                            f"run from shared storage, or give absolute paths there ({e.strerror})") from None


def _shard(stage: Stage, job: ShardJob, task: Task, cwd: str) -> dict[str, Any]:
    """A Ray task: one shard. The stage is set up once per worker process and kept for its next shards."""
    _enter(cwd)
    if job.fp not in _READY:
        for old in _READY.values():
            old.teardown()
        _READY.clear()
        stage.check_facts()
        stage.setup()
        _READY[job.fp] = stage
    return run_task(_READY[job.fp], job, task)


class EngineActor:
    """Holds one set-up copy of a stage (its engine on this actor's GPU, or on CPUs) and runs shards on it."""

    def __init__(self, stage: Stage, cwd: str) -> None:
        _enter(cwd)
        self.stage = stage
        stage.check_facts()  # this node runs what the output is named after, or nothing
        stage.setup()

    def run(self, job: ShardJob, task: Task) -> dict[str, Any]:
        return run_task(self.stage, job, task)

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.stage.teardown()


def _probe_facts(stage: Stage, cwd: str) -> dict[str, Any]:
    """Placed like an engine actor: the stage's facts as a copy finds them there (its GPUs, its environment)."""
    _enter(cwd)
    return stage.facts(local_gpus())


def _read_token(path: str, token: str) -> str | None:
    """On one node: None when ``path`` holds ``token``, else what went wrong."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None if text == token else "the file there holds another token (another storage with the same path)"


# ------------------------------------------------------------------------------------------------ on the driver


def check_shared_storage(rundir: str | Path, timeout: float = 60.0,
                         after_token: Callable[[Path], None] | None = None) -> None:
    """Stop with ``ExecutorError`` unless every live Ray node reads back a token the driver writes into ``rundir``.

    Each check is a task pinned to its node (``NodeAffinitySchedulingStrategy``, not soft) that takes no CPU, so
    a busy node still answers; a node that does not answer within ``timeout`` seconds is named too, instead of a
    hang. ``after_token(path)`` runs between writing and checking (tests use it to take the file away)."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    rundir = Path(rundir).resolve()
    rundir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    path = rundir / f"{CHECK_FILE}-{token[:12]}"
    atomic_write_text(path, token)
    try:
        if after_token is not None:
            after_token(path)
        read = ray.remote(num_cpus=0, max_retries=0)(_read_token)
        nodes = {}
        for node in ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                nodes[read.options(scheduling_strategy=strategy).remote(str(path), token)] = node
        ready, late = ray.wait(list(nodes), num_returns=len(nodes), timeout=timeout)
        problems = []
        for ref in ready:
            try:
                why = ray.get(ref)
            except Exception as e:  # the check itself could not run there
                why = f"the check task failed ({type(e).__name__}: {e})"
            if why is not None:
                problems.append(f"{_node_name(nodes[ref])}: {why}")
        for ref in late:
            ray.cancel(ref, force=True)
            problems.append(f"{_node_name(nodes[ref])}: no answer in {timeout:g}s")
    finally:
        path.unlink(missing_ok=True)
    if problems:
        raise ExecutorError(f"the run directory {rundir} must be on storage every Ray node sees (NFS, Lustre… at "
                            f"the same path); a file written there by the driver on {socket.gethostname()} could "
                            f"not be read on: " + "; ".join(problems))


def plan_actors(nodes: list[dict[str, Any]], placement: Placement, stage_key: str, actors: int | None = None,
                shards: int | None = None) -> tuple[int, dict[str, Any], list[str]]:
    """Engine actors for ``placement`` on the live ``nodes`` (``ray.nodes()``): how many, what each asks of Ray,
    and warnings (copies asked for that do not fit). ``actors`` (the executor's option) overrides the stage's
    ``replicas``; neither is granted beyond what the nodes hold, so no actor waits forever for resources.

    A copy of ``per_copy`` GPUs must fit on one node (vLLM's tensor-parallel group shares memory over NVLink,
    not the network). A copy that needs no GPU is a CPU actor. A cluster without any GPU runs one-device copies
    on CPU actors (the engine runs on the CPU, as on a machine without GPUs); a copy of several GPUs there, or
    one that no node has room for, is an ``ExecutorError`` naming every node and what it has."""
    if placement.gpus is not None:
        raise ExecutorError(f"stage {stage_key}: gpus={','.join(placement.gpus)} names GPUs of this machine; on "
                            f"a Ray cluster Ray places the engine copies: give replicas (or nothing: one copy per "
                            f"group of GPUs), and limit a node's GPUs with `ray start --num-gpus`")
    live = [n for n in nodes if n.get("Alive")]
    have = [(int(r.get("GPU", 0)), int(r.get("CPU", 0))) for r in (n.get("Resources", {}) for n in live)]
    gpus = sum(g for g, _ in have)
    asked = actors or (None if placement.replicas == "auto" else int(placement.replicas))
    warnings: list[str] = []
    per = placement.per_copy
    if per == 0 or (gpus == 0 and per == 1):  # a CPU actor: one CPU of a node
        fit, options = sum(c for _, c in have), {"num_cpus": 1}
        n = asked or 1
        what = "a CPU"
    else:  # every actor: its GPUs and a CPU, all on one node
        fit = sum(min(g // per, c) for g, c in have)
        options = {"num_gpus": per, "num_cpus": 1}
        n = asked or fit
        what = f"{per} GPU{'s' * (per > 1)} and a CPU on one node"
    if fit == 0:
        nodes_text = "; ".join(f"{_node_name(node)}: {g} GPU, {c} CPU" for node, (g, c) in zip(live, have,
                                                                                               strict=True))
        hint = ("the cluster has no GPU" if gpus == 0 else
                f"lower tensor_parallel_size (× pipeline_parallel_size) to at most {max(g for g, _ in have)}, or "
                f"add a node with {per} GPUs")
        raise ExecutorError(f"stage {stage_key} asks for engine copies that each take {what}, and no node of the "
                            f"Ray cluster has that: {nodes_text or 'no live node'}. {hint[0].upper()}{hint[1:]}")
    if n > fit:
        if not placement.upto or actors:
            warnings.append(f"stage {stage_key}: {n} engine copies asked for, the Ray cluster holds {fit}: "
                            f"running {fit}")
        n = fit
    return max(1, min(n, shards or n)), options, warnings


def _node_name(node: dict[str, Any]) -> str:
    return f"node {node.get('NodeManagerHostname') or '?'} {node.get('NodeManagerAddress')} ({node['NodeID'][:12]})"


def _failure(ray: Any, e: Exception, stage: Stage, task: Task) -> Exception:
    """The error to raise for a failed shard: the stage's own (a SynthError says what and where), else one that
    names the stage and the shard."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, SynthError):
            return cause
        return StageError(f"stage {stage.key} failed on {task.key}: {cause or e}")
    return StageError(f"stage {stage.key} failed on {task.key}: {type(e).__name__}: {e}")


class RayExecutor:
    """Shards as Ray tasks, model stages on engine actors (see the module's docstring).

    ``address``: None starts a local Ray instance (``num_cpus`` of this machine's CPUs, default all), ``auto``
    joins this machine's cluster, ``host:port`` a given one. ``actors``: engine actors for a model stage, over the
    stage's own ``replicas`` (default: one per GPU, or per ``tensor_parallel_size`` GPUs; 1 on a cluster without
    GPUs), never more than fit (``plan_actors``). A stage runs on engine actors when it holds a model
    (``Stage.placement``). ``max_retries``: how often a shard is run again after its worker, node or actor dies.
    ``storage_check(rundir, timeout=)``: the check at the start. ``start_timeout``: seconds an engine pool may take
    before its first shard is done (placement and model loading) before the stage stops with a message. A stage's
    ``workers`` does not apply here: the cluster's CPUs (or GPUs) decide how many shards run at once."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
                 max_retries: int = 3, check_timeout: float = 60.0,
                 storage_check: Callable[..., None] = check_shared_storage, start_timeout: float = 1800.0) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        self.max_retries = max_retries
        self.check_timeout = check_timeout
        self.storage_check = storage_check
        self.start_timeout = float(start_timeout)
        self._started = False
        self._checked: set[Path] = set()

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            if self.address is None:  # never a cluster found by accident: "auto" says so
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False)
            else:
                try:
                    ray.init(address=self.address)
                except ConnectionError as e:
                    raise ExecutorError(f"cannot join the Ray cluster at {self.address}: {e}") from e
            self._started = True
        return ray

    def prepare(self, rundir: Path) -> None:
        rundir = Path(rundir).resolve()
        if rundir not in self._checked:
            self._connect()
            self.storage_check(rundir, timeout=self.check_timeout)
            self._checked.add(rundir)

    def facts(self, stage: Stage) -> dict[str, Any]:
        """A stage without a model runs on CPU tasks: its facts of no GPU. A model stage's, from a probe task
        placed as its engine actors will be (same resources, so on such a node and with such GPUs)."""
        placement = stage.placement()
        if placement is None:
            return stage.facts([])
        ray = self._connect()
        _, options, _ = self._plan(ray, stage, placement, None)
        probe = ray.remote(max_retries=0)(_probe_facts).options(**options).remote(stage, os.getcwd())
        ready, _ = ray.wait([probe], timeout=self.start_timeout)
        if not ready:
            ray.cancel(probe, force=True)
            raise ExecutorError(f"stage {stage.key}: a probe asking for {options} was not placed on the Ray cluster "
                                f"in {self.start_timeout:g}s (resources held by other work?); see `ray status`")
        try:
            return ray.get(probe)
        except Exception as e:
            raise _failure(ray, e, stage, Task(-1, "the facts probe")) from None

    def _plan(self, ray: Any, stage: Stage, placement: Placement,
              shards: int | None) -> tuple[int, dict[str, Any], list[str]]:
        return plan_actors(ray.nodes(), placement, stage.key, self.actors, shards)

    def run(self, stage: Stage, job: ShardJob, todo: list[Task], workers: int, done: Done) -> None:
        ray = self._connect()
        placement = stage.placement()
        if placement is not None:
            self._run_actors(ray, stage, placement, job, todo, done)
        else:
            self._run_tasks(ray, stage, job, todo, done)

    def _run_tasks(self, ray: Any, stage: Stage, job: ShardJob, todo: list[Task], done: Done) -> None:
        """Every shard a task, at most two per cluster CPU in flight (the rest wait here, not in Ray's queue)."""
        shard = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_shard)
        stage_ref, job_ref = ray.put(stage), ray.put(job)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue, pending = deque(todo), {}
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    task = queue.popleft()
                    pending[shard.remote(stage_ref, job_ref, task, os.getcwd())] = task
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        meta = ray.get(ref)
                    except Exception as e:  # retries are spent (worker lost N times) or the stage raised
                        raise _failure(ray, e, stage, task) from None
                    done(task, meta)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _run_actors(self, ray: Any, stage: Stage, placement: Placement, job: ShardJob, todo: list[Task],
                    done: Done) -> None:
        """Shards stream through a pool of engine actors: each takes the next shard as it finishes one."""
        n, options, warnings = self._plan(ray, stage, placement, len(todo))
        for line in warnings:
            console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
        actor_class = ray.remote(EngineActor).options(**options)
        stage_ref, job_ref = ray.put(stage), ray.put(job)
        idle = [actor_class.remote(stage_ref, os.getcwd()) for _ in range(n)]
        live = list(idle)
        queue, pending, lost = deque(todo), {}, Counter()
        finished, started, any_done = False, time.monotonic(), False
        try:
            while queue or pending:
                while queue and idle:
                    actor, task = idle.pop(), queue.popleft()
                    pending[actor.run.remote(job_ref, task)] = (actor, task)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL)
                if not ready and not any_done and time.monotonic() - started > self.start_timeout:
                    raise ExecutorError(f"stage {stage.key}: no engine actor ({n} × {options}) finished a shard in "
                                        f"{self.start_timeout:g}s: placement or model loading is stuck (see `ray "
                                        f"status` and the actors' logs); raise start_timeout for a slow model load")
                for ref in ready:
                    actor, task = pending.pop(ref)
                    try:
                        meta = ray.get(ref)
                    except ray.exceptions.RayActorError as e:  # the actor (its process or node) is gone
                        if e.actor_init_failed:  # its set-up raised (a model that does not load, other facts):
                            raise StageError(f"stage {stage.key}: an engine actor could not start: "  # a new
                                             f"{e.error_msg}") from None  # actor would fail the same way
                        lost[task.index] += 1
                        if lost[task.index] > self.max_retries:
                            raise StageError(f"stage {stage.key}: {task.key} lost its engine actor "
                                             f"{lost[task.index]} times; last: {e}") from None
                        live.remove(actor)
                        queue.appendleft(task)  # another actor takes it; a new one replaces the lost one
                        idle.append(actor_class.remote(stage_ref, os.getcwd()))
                        live.append(idle[-1])
                        continue
                    except Exception as e:
                        raise _failure(ray, e, stage, task) from None
                    idle.append(actor)
                    any_done = True
                    done(task, meta)
            finished = True
        finally:
            if finished:  # let each engine free its memory first (a failed run does not wait for busy actors)
                closing = [a.close.remote() for a in live]
                ray.wait(closing, num_returns=len(closing), timeout=60)
            for actor in live:
                ray.kill(actor)

    def close(self) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False
