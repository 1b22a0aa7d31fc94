"""Running the pipeline: ``RunSettings`` (run.toml), ``run`` (every stage, then export and the report),
``run_stage_by_key`` (one stage on the current output of the stage it reads) and ``export_run``.

Each stage's output is fingerprinted and written shard by shard, and LLM requests are cached, so killing a run
and starting the same command again finishes with the same rows and pays for nothing twice. Every stage comes
from the declaration (``synth.pipeline.PIPELINE``); nothing here names one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth import pipeline  # its PIPELINE read at each use: register() replaces it
from synth.budget import TOKENS, Budget, spending
from synth.config import (
    ConfigError,
    budget_flag,
    defaults,
    load_config,
    option,
    parse_budget,
    parse_count,
    record,
    resolve,
    write_run_config,
)
from synth.export import ExportSettings, export
from synth.kernel import StageError, StageOutput
from synth.lang import canonical
from synth.llm.factory import ENGINE_HELP, MODEL_HELP
from synth.lock import run_lock
from synth.progress import console
from synth.registry import ALIASES, EXPORT, StageSpec
from synth.report import run_card, write_report
from synth.runner import run_on


@dataclass
class RunSettings:
    """The main job's settings as ``run.toml`` holds them: top-level keys, and one table per stage section (and
    ``[export]``). ``engine``/``model`` are the defaults of every stage that calls a model; a section's own wins."""

    lang: str | None = option(None, "Target language: ISO 639-1/3 or xxx_Latn (sw, swa, swh_Latn).",
                              also=("run", "audit"))  # required by extract, here or in [extract]
    inputs: list[str] = option([], "Raw corpus files, folders or globs (txt, jsonl, json, parquet, .gz/.zst, datasets "
                               "save_to_disk folders). Repeatable.", flag="--input", alias="-i", many=True,
                               also=("run",))  # likewise ("input" in run.toml)
    fragments: int | None = option(None, "Fragments to extract (suffixes k, M); default all that pass.",
                                   parse=parse_count, also=("run",))
    target: int | None = option(None, "Rows to select (suffixes k, M) for back-translation, whose fidelity gate may "
                                "drop some; default all that pass.", parse=parse_count, also=("run",))
    # the defaults of every stage that calls a model (a section's own wins); engine None: default_engine decides
    engine: str | None = option(None, ENGINE_HELP, also=("run", "audit"))
    model: str = option("smollm2", MODEL_HELP, also=("run", "audit"))
    workers: int = option(1, "Worker processes for extraction.", also=("run",))
    executor: str = option("local", "What runs the shards: local (this machine's processes) or ray (a Ray cluster).",
                           also=("run",))
    ray_address: str | None = option(None, "With --executor ray: the cluster (host:port), 'auto' (this machine's), or "
                                     "none to start a local Ray instance.", also=("run",))
    # Work at most (synth.budget): tokens (a number), or "3gpu-h", "40USD" as [plan] reckons them; stops cleanly,
    # resumes with a larger one.
    max_budget: int | str | None = option(None, "Work at most: tokens (LLM and MT, suffixes k, M), GPU-hours (3gpu-h) "
                                          "or money (40USD, $40) as synth plan reckons them from run.toml's [plan]: "
                                          "the run stops cleanly before it would pass it; the same command with a "
                                          "larger one resumes.", parse=budget_flag, also=("run",))
    plan: dict[str, Any] = field(default_factory=dict)  # [plan]: gpu, model_size, gpus, prices (synth.plan)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    EXECUTION = ("executor", "ray_address", "max_budget")  # what every command that runs stages takes

    def __post_init__(self) -> None:
        """Check every section against the settings of what it configures, so that a misspelt key is an error
        naming the section and the key, not a TypeError deep in a stage."""
        if isinstance(self.inputs, str | Path):
            self.inputs = [str(self.inputs)]
        known = pipeline.PIPELINE.sections()
        unknown = sorted(set(self.sections) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) in config: {', '.join(unknown)}")
        for name, table in self.sections.items():
            if not isinstance(table, dict):
                raise ConfigError(f"[{name}] must be a table of settings, not {table!r}")
        self.sections = {name: dict(table) for name, table in self.sections.items()}
        lifted = self._lift()
        for name, cls in known.items():
            allowed = {f.name for f in fields(cls)} - lifted.get(name, set())
            bad = sorted(set(self.sections.get(name, {})) - allowed)
            if bad:
                raise ConfigError(f"[{name}]: unknown setting(s) {', '.join(bad)} (known: "
                                  f"{', '.join(sorted(allowed))})")
        if self.lang:
            self.lang = canonical(self.lang)
        self.budget()  # a budget that cannot be reckoned (money without prices) fails now, not at the first shard

    def budget(self) -> Budget | None:
        """``max_budget`` as the cap the stages run under: tokens as counted; GPU-hours and money as ``synth plan``
        reckons them from ``[plan]`` (``synth.plan.budget_cost``)."""
        from synth.plan import budget_cost

        parsed = parse_budget(self.max_budget)
        if parsed is None:
            return None
        amount, unit = parsed
        if unit == TOKENS:
            return Budget(amount)
        cost, basis = budget_cost(unit, self.plan)
        return Budget(amount, unit, cost, basis)

    def _lift(self) -> dict[str, set[str]]:
        """Top-level settings written in a stage's section (``[extract] lang = "sw"``, the shape `synth extract`
        took) move to the top level; a section that says otherwise than the top level is an error."""
        initial = defaults(type(self))
        out: dict[str, set[str]] = {}
        for spec in pipeline.PIPELINE.runnable:
            table = self.sections.get(spec.section, {})
            out[spec.section] = set(spec.top)
            for key in spec.top:
                for name in {key, ALIASES.get(key, key)} & set(table):
                    value = table.pop(name)
                    value = [value] if key == "inputs" and isinstance(value, str) else value
                    current = getattr(self, key)
                    same = canonical(value) == canonical(current) if key == "lang" and current else value == current
                    if current != initial[key] and not same:
                        raise ConfigError(f"[{spec.section}] {name} = {value!r} contradicts {ALIASES.get(key, key)} = "
                                          f"{current!r}")
                    setattr(self, key, value)
        return out

    @classmethod
    def top_level(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "sections"]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RunSettings:
        """From ``run.toml``'s shape (or ``synth.run``'s keywords): top-level keys and a table per section."""
        top = {**{k: k for k in cls.top_level()}, **{alias: k for k, alias in ALIASES.items()}}
        both = [k for k, alias in ALIASES.items() if k in cfg and alias in cfg]
        if both:
            raise ConfigError(f"give {both[0]} or {ALIASES[both[0]]}, not both")
        values = {top[k]: v for k, v in cfg.items() if k in top and v is not None}
        sections = {k: v for k, v in cfg.items() if k not in top}
        return cls(**values, sections=sections)

    @classmethod
    def load(cls, config: str | Path | None = None, flags: dict[str, Any] | None = None,
             sections: dict[str, dict[str, Any]] | None = None) -> RunSettings:
        """A ``run.toml`` under command-line ``flags`` (top level) and ``sections`` (per section): flags win,
        one left at None does not count; a file that says one thing twice is an error."""
        file = cls.from_dict(load_config(config)).to_dict()  # checked and lifted before the flags go over it
        merged = resolve({}, file, {**{ALIASES.get(k, k): v for k, v in (flags or {}).items()}, **(sections or {})})
        return cls.from_dict({k: {kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v
                              for k, v in merged.items()})

    def to_dict(self, specs: Iterable[StageSpec] | None = None) -> dict[str, Any]:
        """As ``run.toml`` holds it; with ``specs``, only what those stages read (what their command records)."""
        if specs is None:
            return {**{ALIASES.get(k, k): getattr(self, k) for k in self.top_level()}, **self.sections}
        specs = list(specs)
        keys = {k for s in specs for k in (*s.top, *(("engine", "model") if s.uses_model else ()))}
        return {**{ALIASES.get(k, k): getattr(self, k) for k in self.top_level() if k in keys},
                **{s.section: self.sections.get(s.section, {}) for s in specs}}

    def values(self, spec: StageSpec) -> dict[str, Any]:
        """What the stage is built from: its section over the top-level settings it takes; a stage that calls a
        model also takes the run's engine and model, and synth's shared request cache unless it names its own
        (a path, or "none")."""
        missing = [ALIASES.get(k, k) for k in spec.requires if not getattr(self, k)]
        if missing:
            names = " and ".join(missing)
            raise ConfigError(f"{spec.label} needs {names}: give {' and '.join(f'--{k}' for k in missing)}, or "
                              f"{names} in the config")
        out = {k: getattr(self, k) for k in spec.top}
        if spec.uses_model:
            out.update(model=self.model, cache="auto", **({"engine": self.engine} if self.engine else {}))
        out.update(self.sections.get(spec.section, {}))
        if spec.uses_model:
            from synth.llm.stage import with_cache

            out = with_cache({**out, "cache": None if out["cache"] == "none" else out["cache"]})
        return out


@dataclass
class RunResult:
    rundir: Path
    final: Path
    report: Path
    rows: int
    seconds: float
    outputs: dict[str, StageOutput]  # by stage key


@contextmanager
def executing(settings: RunSettings, executor: Any = None, ray_address: str | None = None) -> Iterator[Any]:
    """The executor ``settings`` name (or ``executor``, a name or an ``Executor``, and ``ray_address``), used by
    every stage run inside, under the settings' budget (``max_budget``); one made here is closed after (a Ray
    instance it started stops)."""
    from synth.executors import make_executor, using

    if executor is not None and not isinstance(executor, str):
        with using(executor), spending(settings.budget()):
            yield executor
        return
    ex = make_executor(executor or settings.executor, ray_address or settings.ray_address)
    try:
        with using(ex), spending(settings.budget()):
            yield ex
    finally:
        ex.close()


def run_stage_by_key(rundir: str | Path, key: str, settings: RunSettings | None = None,
                     progress: bool = True, executor: Any = None, ray_address: str | None = None) -> StageOutput:
    """Run the stage ``key`` on the current output of the stage it reads (refused when that does not follow from
    the outputs before it) and return its output; a finished output with the same fingerprint is reused.
    ``executor`` (``"local"``, ``"ray"`` or an ``Executor``) and ``ray_address`` override the settings'."""
    settings = settings or RunSettings()
    with executing(settings, executor, ray_address):
        return _run_key(rundir, key, settings, progress)


def _run_key(rundir: str | Path, key: str, settings: RunSettings, progress: bool) -> StageOutput:
    spec = pipeline.PIPELINE[key]
    if spec.made_by is not None:
        raise StageError(f"{key} is written by {spec.made_by}'s step: run that")
    values = settings.values(spec)
    if spec.driver is not None:
        out = spec.driver(values, Path(rundir), progress)
        if out.dir.parent.name != key:
            raise StageError(f"the driver of {key} wrote {out.dir.parent.name}")
        return out
    source = pipeline.PIPELINE.current_input(rundir, spec)
    stage = spec.stage_class.from_settings(values, source)
    if stage.key != key:
        raise StageError(f"{type(stage).__name__} writes {stage.key}, but is registered as {key}: its step and "
                         "name make its key")
    return run_on(stage, source, rundir, progress)


def run_command(rundir: str | Path, command: str, settings: RunSettings | None = None,
                progress: bool = True) -> dict[str, StageOutput]:
    """The stages ``synth <command>`` runs (select: embed, then select), in order, by key, on the settings'
    executor; records what they read of ``settings`` in ``RUNDIR/run.toml``."""
    specs = pipeline.PIPELINE.commands()[command]
    settings = settings or RunSettings()
    record(rundir, settings.to_dict(specs))
    with executing(settings):
        return {s.key: _run_key(rundir, s.key, settings, progress) for s in specs}


def export_run(rundir: str | Path, settings: RunSettings | None = None,
               rows: StageOutput | pa.Table | None = None) -> tuple[Path, int]:
    """Write ``RUNDIR/final`` (data, dataset card, trainer snippets) from the last stage's current output (read
    here unless given); returns the folder and its row count."""
    settings = settings or RunSettings()
    section = settings.sections.get(EXPORT, {})
    record(rundir, {EXPORT: section})
    if rows is None:
        rows = StageOutput.current(rundir, pipeline.PIPELINE.specs[-1].key)  # exported shard by shard, not read whole
    final = export(rows, rundir, ExportSettings(**section), card=run_card(rundir))
    return final, sum(pq.ParquetFile(p).metadata.num_rows for p in (final / "data").glob("*.parquet"))


def _clusters(outputs: Iterable[StageOutput]) -> pa.Table | None:
    """The selection's clusters, for the report: the first output that marks rows with them."""
    for out in outputs:
        schema = out.schema()
        if schema is not None and {"cluster", "selected"} <= set(schema.names):
            return out.read(columns=["cluster", "selected"])
    return None


def run(settings: RunSettings, rundir: str | Path, progress: bool = True) -> RunResult:
    """Run every stage (reusing finished work) on the settings' executor and export; returns where the dataset and
    report are."""
    rundir = Path(rundir)
    for spec in pipeline.PIPELINE.runnable:
        settings.values(spec)  # a missing required setting fails now, not after an hour of stages
    with run_lock(rundir):  # held from run.toml to the report: no second run slips in between two stages
        return _run(settings, rundir, progress)


def _run(settings: RunSettings, rundir: Path, progress: bool) -> RunResult:
    t0 = time.perf_counter()
    write_run_config(rundir, settings.to_dict())
    outputs: dict[str, StageOutput] = {}
    with executing(settings):
        for spec in pipeline.PIPELINE.runnable:
            if progress:
                console.print(f"[bold cyan]▶ {spec.label}[/bold cyan]")
            out = outputs[spec.key] = _run_key(rundir, spec.key, settings, progress=progress)
            if progress:
                console.print(f"  {out.num_rows:,} rows → {out.dir}")
    final, rows = export_run(rundir, settings, out)  # shard by shard: never the whole output (nor its embeddings)
    report = write_report(rundir, final=final if rows else None,  # read batch by batch
                          clusters=_clusters(outputs.values()),
                          title=f"synth run: {settings.lang}, {rundir.name}")
    return RunResult(rundir, final, report, rows, time.perf_counter() - t0, outputs)


