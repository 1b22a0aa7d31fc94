"""The stage kernel: what a stage is, what it reads and writes, and how one task becomes one committed shard.

A stage is a small object with one method, ``process(batch, stats) -> batch``. ``run_tasks`` (and ``run_task``,
the one job of every executor) reads its tasks, processes them batch by batch and writes each output shard
atomically with its stats and sha256; stages never open files themselves. Which shards are missing, and who
runs them, is the runner's (``synth.runner``) and the executors' (``synth.executors``) business, both above this.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from synth.budget import BudgetExceeded
from synth.devices import DeviceError, Gpu, Placement, describe, local_gpus, local_groups
from synth.errors import SynthError
from synth.fingerprint import fingerprint
from synth.identity import file_digest
from synth.io import (
    ShardError,
    ShardWriter,
    iter_shard,
    read_shard_meta,
    read_sidecar,
    read_table,
)
from synth.stats import ShardStats, count_langs, merge_shards

MANIFEST = "_manifest.json"
CURRENT = "CURRENT"
Done = Callable[["Task", dict[str, Any]], None]  # called on the driver with each committed shard's metadata


class StageError(SynthError, RuntimeError):
    """A stage failed on one input; the message names the stage and the input."""


class Stage:
    """One processing step. Subclasses are usually dataclasses whose fields are their settings.

    Fields marked ``field(metadata={"fingerprint": False})`` (worker counts, paths to caches) do not change
    the data and stay out of the fingerprint. Attributes whose name starts with ``_`` are runtime state
    (loaded models, clients): they are not pickled to workers and are rebuilt by ``setup``.
    """

    # Its folder in a run directory and its entry in stats.json, "NN_name": NN the step of the method it belongs to
    # (several stages share one), name what it does (its fingerprint's name). Written here once: the pipeline's
    # StageSpec reads it from the class.
    key: ClassVar[str] = "00_stage"
    version: ClassVar[str] = "1"  # bump when the code changes what rows come out
    CHECKS: ClassVar[tuple[Any, ...]] = ()  # the stage's check list (synth.gate.Check), run in order
    # What its run.toml section holds and is checked against, where not the class's own fields (selection's
    # SelectSettings, the fidelity gate's thresholds); ``from_settings`` makes the stage from it.
    SETTINGS: ClassVar[type | None] = None

    @classmethod
    def from_settings(cls, values: dict[str, Any], source: StageOutput) -> Stage:
        """The stage a run makes from its section (over the top-level settings it takes) and the output it will
        read; a stage that decides over its whole input (selection) reads it here."""
        return cls(**values)

    def setup(self) -> None:
        """Load models or open clients; called once per worker process before the first batch."""

    def teardown(self) -> None:
        """Free what ``setup`` took (a GPU engine, a server client) once the stage's shards are done, so the
        next stage of a run can have the memory."""

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        """Turn one batch into the next; count every row left out with ``stats.drop``."""
        raise NotImplementedError

    def process_stream(self, batches: Iterator[tuple[pa.Table, ShardStats]]) -> Iterator[pa.Table]:
        """``process`` over a stream of batches, each with its shard's stats: one output per batch, in order.

        A stage that waits on an engine overrides it to keep work in flight across batch and shard ends
        (``synth.llm.stage.LLMStage``); the runner commits a shard as soon as its last batch is out."""
        for batch, stats in batches:
            yield self.process(batch, stats)

    def params(self) -> dict[str, Any]:
        """The settings that change the output rows (default: the dataclass fields not marked otherwise)."""
        if is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("fingerprint", True)}
        return {}

    # -- where the work runs: copies of a model, and what the machine decides about its output --------------

    def placement(self) -> Placement | None:
        """What each copy of the stage's model needs (GPUs per copy, copies): executors run such a stage as
        copies set up once each (processes pinned to their GPUs, Ray actors); None: no model, plain workers."""
        return None

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        """What the output's name needs from the machine a copy runs on, worked out from ``gpus`` (the copy's,
        as NVML describes them; none on a CPU): the dtype an engine runs, an embedder's precision… Executors ask
        where the copies will run (``Executor.facts``) before the output is named, and each copy checks at
        setup that it runs with the same (``check_facts``), so a CPU driver never names GPU work."""
        return {}

    def named_facts(self) -> dict[str, Any]:
        """The facts the output is named after: those the executor pinned (``pinned_facts``), else this
        machine's (``local_facts``; those of a CPU copy where this machine cannot place one, as a CPU head of
        a GPU cluster cannot: only an executor's facts name an output)."""
        pinned = self.__dict__.get("pinned_facts")
        if pinned is not None:
            return pinned
        try:
            return self.local_facts()
        except DeviceError:
            return self.facts([])

    def local_facts(self) -> dict[str, Any]:
        """The facts of the first copy this machine would run (NVML's description of its GPUs: no CUDA);
        ``DeviceError`` where the stage's copies do not fit here."""
        placement = self.placement()
        return self.facts(describe(local_groups(placement)[0]) if placement else [])

    def check_facts(self) -> None:
        """In a copy, before set-up: stop if this process would run with other facts than the output is named
        after (a node with other GPUs than the one asked): its rows would carry a false name."""
        pinned = self.__dict__.get("pinned_facts")
        if pinned is None:
            return
        here = self.facts(local_gpus())
        if here != pinned:
            raise StageError(f"stage {self.key}: this copy ({socket.gethostname()}, CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}) would run with {here}, but the "
                             f"output is named after {pinned}, as found where the first copy was placed: the "
                             f"copies' machines differ; pin the setting (e.g. --engine-opt dtype=…) or use alike "
                             f"nodes")

    def output_schema(self) -> pa.Schema | None:
        """Schema for an output shard when nothing came out (None: an empty shard with no columns)."""
        return None

    @property
    def name(self) -> str:
        return self.key.split("_", 1)[1]

    @property
    def step(self) -> int:
        return int(self.key.split("_", 1)[0])

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not re.fullmatch(r"[0-9]{2}_[a-z0-9_]+", cls.key):
            raise TypeError(f"{cls.__name__}.key = {cls.key!r}: give 'NN_name' (two digits, then lower-case letters, "
                            "digits or _), e.g. '06_polish'")
        for old in ("name", "step"):
            if isinstance(cls.__dict__.get(old), str | int):
                raise TypeError(f"{cls.__name__} sets {old}: a stage declares its key once, key = 'NN_name'")

    def fingerprint(self, input_fingerprint: str) -> str:
        # The check list names the output too: a check added or removed changes which rows pass.
        checks = {"checks": [c.reason for c in self.CHECKS]} if self.CHECKS else {}
        return fingerprint({"stage": self.name, "version": self.version, "params": self.params(),
                            "input": input_fingerprint, **checks})

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Task:
    """One unit of input that becomes one output shard ``part-<index>.parquet``."""

    index: int
    key: str  # what a person recognises in an error message: a file name, an upstream shard
    ref: Any = None


class Source:
    """Where a stage's input comes from: a list of tasks and a way to read each as batches."""

    def tasks(self) -> list[Task]:
        raise NotImplementedError

    def read(self, task: Task, batch_size: int) -> Iterator[pa.Table]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


@dataclass
class StageOutput:
    """A finished stage output folder: its manifest, shards and fingerprint."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def shards(self) -> list[Path]:
        return [self.dir / s["file"] for s in self.manifest["shards"]]

    @property
    def num_rows(self) -> int:
        return self.manifest["rows"]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return read_table(self.shards, columns=columns)

    def stats(self) -> dict[str, Any]:
        """Counts and drop reasons merged from the shards' own metadata (what stats.json holds for it)."""
        return merge_shards([read_shard_meta(p)["stats"] for p in self.shards])

    def as_source(self) -> ShardSource:
        return ShardSource(self)

    def schema(self) -> pa.Schema | None:
        """The column schema of its shards (the first shard that has columns; None when all are empty)."""
        for path in self.shards:
            schema = pq.read_schema(path)
            if len(schema):
                return schema.remove_metadata()
        return None

    @classmethod
    def open(cls, path: str | Path) -> StageOutput:
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError as e:
            raise StageError(f"{path}: no {MANIFEST}; the stage that writes it has not finished") from e
        except json.JSONDecodeError as e:
            raise StageError(f"{path / MANIFEST}: damaged manifest ({e})") from e
        return cls(path, manifest)

    @classmethod
    def current(cls, rundir: str | Path, key: str) -> StageOutput:
        """The latest finished output of stage ``key`` (its folder, ``Stage.key``) in a run directory."""
        stage_dir = Path(rundir) / key
        try:
            fp = (stage_dir / CURRENT).read_text().strip()
        except FileNotFoundError as e:
            raise StageError(f"{stage_dir}: stage {key} has not finished in this run directory") from e
        return cls.open(stage_dir / fp)


def check_lineage(rundir: str | Path, chain: list[str]) -> None:
    """Refuse to go on from outputs that do not follow from each other: in ``chain`` (stage keys, downstream
    first, as ``synth.pipeline.Pipeline.upstream`` gives them) each stage's current output must have been made
    from the next one's current output. A single-stage command after an upstream stage was re-run with other
    settings would otherwise mix old and new rows without a word."""
    for down, up in zip(chain, chain[1:], strict=False):
        d, u = StageOutput.current(rundir, down), StageOutput.current(rundir, up)
        if d.manifest.get("input_fingerprint") != u.fingerprint:
            raise StageError(f"{Path(rundir) / down} was made from another {up} than the current one ({u.dir}): "
                             f"run the stages after {up} again (or `synth run`, which does)")


class ShardSource(Source):
    """The shards of a finished stage, one task each, so output shard i comes from input shard i."""

    def __init__(self, output: StageOutput) -> None:
        self.output = output

    def tasks(self) -> list[Task]:
        # The key names the input shard by the output it belongs to, not by where the run directory lives:
        # a moved run, or one reached by a relative path, reuses its finished shards.
        return [Task(i, f"{self.output.fingerprint}/{p.name}", p) for i, p in enumerate(self.output.shards)]

    def read(self, task: Task, batch_size: int) -> Iterator[pa.Table]:
        yield from iter_shard(task.ref, batch_size=batch_size)

    def fingerprint(self) -> str:
        return self.output.fingerprint


class TableSource(Source):
    """An in-memory table split into shards of ``rows_per_shard`` rows (for the Python API and tests)."""

    def __init__(self, table: pa.Table, rows_per_shard: int = 10_000) -> None:
        self.table = table
        self.rows_per_shard = max(1, rows_per_shard)

    def tasks(self) -> list[Task]:
        n = max(1, -(-self.table.num_rows // self.rows_per_shard))
        return [Task(i, f"rows {i * self.rows_per_shard}..", i) for i in range(n)]

    def read(self, task: Task, batch_size: int) -> Iterator[pa.Table]:
        part = self.table.slice(task.ref * self.rows_per_shard, self.rows_per_shard)
        for off in range(0, part.num_rows, batch_size):
            yield part.slice(off, batch_size)

    def fingerprint(self) -> str:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, self.table.schema) as w:
            w.write_table(self.table)
        digest = hashlib.sha256(sink.getvalue()).hexdigest()
        return fingerprint({"table": digest, "rows_per_shard": self.rows_per_shard})


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one stage run shares, sent to whatever runs the shards (a pool worker, a Ray task or
    engine actor): the input, the output folder, the fingerprint, and the schema of an empty shard, worked out
    here once (a stage's runtime state, like the input schema ``run_on`` gives it, is not sent along)."""

    source: Source
    out: Path
    fp: str
    batch_size: int
    empty_schema: pa.Schema | None = None

    def path(self, task: Task) -> Path:
        return shard_path(self.out, task.index)


def run_task(stage: Stage, job: ShardJob, task: Task) -> dict[str, Any]:
    """Read one task, process it batch by batch, commit one shard (the one job of every executor)."""
    metas: list[dict[str, Any]] = []
    run_tasks(stage, job, [task], lambda _, meta: metas.append(meta))
    return metas[0]


@dataclass
class _OpenShard:
    """A shard being written by ``run_tasks``: its batches read so far and not yet out (``left``)."""

    task: Task
    writer: ShardWriter
    stats: ShardStats = field(default_factory=ShardStats)
    t0: float = field(default_factory=time.perf_counter)
    left: int = 0
    read_all: bool = False


def run_tasks(stage: Stage, job: ShardJob, tasks: list[Task], done: Done) -> None:
    """Run ``tasks`` in this process, one shard each, as one stream of batches through ``stage.process_stream``,
    so a stage that waits on an engine keeps it busy across batch and shard ends. Each shard is committed, and
    ``done`` called, as soon as its last batch is out: a crash loses only the shards still open. A failure
    aborts those and names the oldest of them. ``seconds`` of a shard: from its first read to its commit."""
    open_shards: deque[_OpenShard] = deque()  # in task order
    owners: deque[_OpenShard] = deque()  # the shard of each batch handed to the stage and not yet out

    def commit_finished() -> None:
        while open_shards and open_shards[0].read_all and open_shards[0].left == 0:
            shard = open_shards.popleft()
            meta = {"task": shard.task.key, "fingerprint": job.fp, "stats": shard.stats.to_dict(),
                    "seconds": round(time.perf_counter() - shard.t0, 3)}
            done(shard.task, shard.writer.commit(meta, empty_schema=job.empty_schema, checksum=True))

    def batches() -> Iterator[tuple[pa.Table, ShardStats]]:
        for task in tasks:
            shard = _OpenShard(task, ShardWriter(job.path(task)))
            open_shards.append(shard)
            for batch in job.source.read(task, job.batch_size):
                shard.stats.rows_in.update(count_langs(batch))
                shard.left += 1
                owners.append(shard)
                yield batch, shard.stats
            shard.read_all = True
            commit_finished()

    try:
        for out in stage.process_stream(batches()):
            shard = owners.popleft()
            shard.stats.rows_out.update(count_langs(out))
            shard.writer.write(out)
            shard.left -= 1
            commit_finished()
        if owners or open_shards:
            raise RuntimeError(f"the stage gave {len(owners)} batch outputs fewer than it was given")
    except (ShardError, BudgetExceeded):  # a damaged input names its file; a budget stop says how to go on
        for shard in open_shards:
            shard.writer.abort()
        raise
    except Exception as e:
        key = open_shards[0].task.key if open_shards else tasks[-1].key
        for shard in open_shards:
            shard.writer.abort()
        raise StageError(f"stage {stage.key} failed on {key}: {type(e).__name__}: {e}") from e


def shard_path(out: Path, index: int) -> Path:
    return out / f"part-{index:05d}.parquet"


def verified_shard(path: Path, task: Task, fp: str,
                   digests: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """(the shard's metadata, None) if it is complete, belongs to this task and has the sha256 and rows recorded
    when it was committed (its sidecar, else the manifest of a finished stage); else (None, why it is redone),
    where ``why`` is None for a shard that simply is not there yet."""
    if not path.exists():
        return None, None
    try:
        meta = read_shard_meta(path)
    except (ShardError, json.JSONDecodeError):
        return None, "not a readable shard"
    if meta.get("task") != task.key or meta.get("fingerprint") != fp:
        return None, "made for another input"
    record = read_sidecar(path)
    expected = record["sha256"] if record is not None else digests.get(path.name)
    if expected is None:
        return None, "no sha256 recorded for it"
    if record is not None and record["rows"] != meta["rows"]:
        return None, f"{meta['rows']} rows, {record['rows']} recorded"
    if file_digest(path) != expected:
        return None, "sha256 differs from the one recorded when it was written"
    return meta, None


