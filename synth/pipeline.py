"""The pipeline, declared once: ``PIPELINE`` lists every stage in order, with the folder it writes (its key), its
class, the stage whose output it reads, its settings (a section of ``run.toml``), whether it calls a model and
its label. ``synth run`` (``run``), the single-stage commands and their options, the sections ``RunSettings``
accepts, the lineage checks, ``synth plan``, the report and the dataset card all read it, so a new stage is one
file with its ``Stage`` class and one ``StageSpec`` line below (or, from outside, ``register``).

``run_stage_by_key`` runs one stage on the current output of the stage it reads; ``run`` runs them all, then
export and the report. Each stage's output is fingerprinted and written shard by shard, and LLM requests are
cached, so killing a run and starting the same command again finishes with the same rows and pays for nothing
twice.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.config import ConfigError, load_config, parse_count, record, resolve, write_run_config
from synth.lang import canonical
from synth.lock import run_lock
from synth.progress import console
from synth.runner import CURRENT, StageError, StageOutput, check_lineage, run_on

EXPORT = "export"  # the section of the export settings (synth.export.ExportSettings), after the last stage
ALIASES = {"inputs": "input"}  # the name a top-level setting has in run.toml and on the command line


def _load(ref: Any) -> Any:
    """A class given as ``"module:Name"``, imported on first use, so that ``synth --help`` does not load the
    libraries of every stage (datasketch, faiss, torch…)."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Flag:
    """A command-line option of the command that runs a stage: ``--min-len`` sets ``min_len`` in the stage's
    section, or the top-level setting when its field is one of the stage's ``top``."""

    field: str
    type: type  # str, int, float, bool (an --x/--no-x pair) or list (a repeatable option)
    help: str
    name: str = ""  # the option when it is not --<field>: --embed-model
    short: str = ""  # -i
    parse: Callable[[Any], Any] | None = None  # the option's text → the setting (counts like 1M, quotas)

    @property
    def option(self) -> str:
        return self.name or ALIASES.get(self.field, self.field).replace("_", "-")


@dataclass(frozen=True)
class StageSpec:
    """One stage: where it writes, what it is, what it reads, how it is configured and shown."""

    key: str  # its folder in the run directory and its entry in stats.json
    stage: type | str  # its Stage class (or "module:Class"); the class's step and name make the key
    reads: str | None  # the key of the stage whose current output it reads; None: the raw corpora
    label: str = ""  # in the report, the plan and the card (default: the section)
    section: str = ""  # its table in run.toml (default: the key without its number)
    command: str = ""  # the `synth` command that runs it, with its neighbours of the same command (default: section)
    help: str = ""  # what that command does, for `synth --help`
    settings: type | str | None = None  # what the section is checked against (default: the stage class)
    # How the stage is made from its settings (its section over the top-level ones it takes): by default the stage
    # class is called with them; ``build(settings, input)`` makes it otherwise (select needs the scored rows); a
    # ``driver(settings, rundir, progress)`` runs a stage that reads no stage output itself (extract).
    build: Callable[[dict[str, Any], StageOutput], Any] | None = None
    driver: Callable[[dict[str, Any], Path, bool], StageOutput] | None = None
    uses_model: bool = False  # calls an LLM: takes the run's engine, model and request cache; the card names the model
    top: tuple[str, ...] = ()  # top-level settings it takes (extract: lang, fragments…; select: target)
    requires: tuple[str, ...] = ()  # top-level settings it cannot run without
    made_by: str | None = None  # written by that stage's driver, never run on its own
    fallback: str | None = None  # what it reads when the stage in ``reads`` has not run in the run directory
    card: Callable[[dict[str, Any]], str] | None = None  # its line in the dataset card, from its manifest's params
    # what its counters in stats.json say a user must know (a judge that cannot discriminate), or None; the console,
    # report.html and the card show it
    warn: Callable[[dict[str, Any]], str | None] | None = None
    flags: tuple[Flag, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "section", self.section or self.key.split("_", 1)[-1])
        object.__setattr__(self, "label", self.label or self.section)
        object.__setattr__(self, "command", self.command or self.section)

    @property
    def stage_class(self) -> type:
        return _load(self.stage)

    @property
    def settings_class(self) -> type:
        return _load(self.settings or self.stage)


def _finished(rundir: str | Path, key: str) -> bool:
    return (Path(rundir) / key / CURRENT).exists()


@dataclass(frozen=True)
class Pipeline:
    """Stages in run order; each reads a stage before it."""

    specs: tuple[StageSpec, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        sections: set[str] = set()
        for s in self.specs:
            for ref in (s.reads, s.fallback):
                if ref is not None and ref not in seen:
                    raise ValueError(f"stage {s.key} reads {ref}, which is not a stage before it")
            if s.key in seen or (s.made_by is None and s.section in sections | {EXPORT}):
                raise ValueError(f"stage {s.key}: its key or section [{s.section}] is taken")
            seen.add(s.key)
            sections |= {s.section} if s.made_by is None else set()

    def __getitem__(self, key: str) -> StageSpec:
        for s in self.specs:
            if s.key == key:
                return s
        raise StageError(f"no stage {key!r} in the pipeline (stages: {', '.join(s.key for s in self.specs)})")

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.specs)

    def section(self, name: str) -> StageSpec:
        """The stage whose settings are the table ``[name]`` of run.toml (what commands outside the run take)."""
        for s in self.specs:
            if s.section == name and s.made_by is None:
                return s
        raise StageError(f"no stage reads [{name}] (sections: {', '.join(self.section_names)})")

    def register(self, spec: StageSpec, after: str | None = None) -> Pipeline:
        """A copy with ``spec`` after the stage ``after`` (default: at the end)."""
        at = len(self.specs) if after is None else [s.key for s in self.specs].index(self[after].key) + 1
        return Pipeline((*self.specs[:at], spec, *self.specs[at:]))

    @property
    def runnable(self) -> list[StageSpec]:
        """The stages ``run`` runs, in order (not those another stage's driver writes)."""
        return [s for s in self.specs if s.made_by is None]

    @property
    def section_names(self) -> list[str]:
        return [*(s.section for s in self.runnable), EXPORT]

    def sections(self) -> dict[str, type]:
        """Every table ``run.toml`` may hold and the settings class it is checked against."""
        return {**{s.section: s.settings_class for s in self.runnable}, EXPORT: _load("synth.export:ExportSettings")}

    def commands(self) -> dict[str, list[StageSpec]]:
        """``synth <command>`` → the stages it runs, in order."""
        out: dict[str, list[StageSpec]] = {}
        for s in self.runnable:
            out.setdefault(s.command, []).append(s)
        return out

    def input_key(self, rundir: str | Path, spec: StageSpec) -> str | None:
        if spec.fallback is not None and not _finished(rundir, spec.reads):
            return spec.fallback
        return spec.reads

    def upstream(self, rundir: str | Path, key: str) -> list[str]:
        """``key`` and the stages its current output was made from, as far as they have run in ``rundir``."""
        chain = [key]
        while (up := self.input_key(rundir, self[chain[-1]])) is not None and _finished(rundir, up):
            chain.append(up)
        return chain

    def current_input(self, rundir: str | Path, spec: StageSpec) -> StageOutput:
        """The current output ``spec`` reads, refused when it does not follow from the outputs before it."""
        key = self.input_key(rundir, spec)
        check_lineage(rundir, self.upstream(rundir, key))
        return StageOutput.current(rundir, key)


@dataclass
class RunSettings:
    """The main job's settings as ``run.toml`` holds them: top-level keys, and one table per stage section (and
    ``[export]``). ``engine``/``model`` are the defaults of every stage that calls a model; a section's own wins."""

    lang: str | None = None  # required by extract, here or in [extract]
    inputs: list[str] = field(default_factory=list)  # likewise ("input" in run.toml)
    fragments: int | None = None  # fragments to extract
    target: int | None = None  # rows to select for back-translation (default: all that pass)
    engine: str | None = None  # None: synth.llm.factory.default_engine decides
    model: str = "smollm2"
    workers: int = 1  # processes for the CPU stages (extract)
    executor: str = "local"  # what runs the shards: "local" (this machine's processes) or "ray" (synth.executors)
    ray_address: str | None = None  # ray: None starts a local Ray instance, "auto" joins this machine's cluster
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every section against the settings of what it configures, so that a misspelt key is an error
        naming the section and the key, not a TypeError deep in a stage."""
        if isinstance(self.inputs, str | Path):
            self.inputs = [str(self.inputs)]
        known = PIPELINE.sections()
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

    def _lift(self) -> dict[str, set[str]]:
        """Top-level settings written in a stage's section (``[extract] lang = "sw"``, the shape `synth extract`
        took) move to the top level; a section that says otherwise than the top level is an error."""
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(self)}
        out: dict[str, set[str]] = {}
        for spec in PIPELINE.runnable:
            table = self.sections.get(spec.section, {})
            out[spec.section] = set(spec.top)
            for key in spec.top:
                for name in {key, ALIASES.get(key, key)} & set(table):
                    value = table.pop(name)
                    value = [value] if key == "inputs" and isinstance(value, str) else value
                    current = getattr(self, key)
                    same = canonical(value) == canonical(current) if key == "lang" and current else value == current
                    if current != defaults[key] and not same:
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
            from synth.stages.llm_stage import with_cache

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
    every stage run inside; one made here is closed after (a Ray instance it started stops)."""
    from synth.executors import make_executor, using

    if executor is not None and not isinstance(executor, str):
        with using(executor):
            yield executor
        return
    ex = make_executor(executor or settings.executor, ray_address or settings.ray_address)
    try:
        with using(ex):
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
    spec = PIPELINE[key]
    if spec.made_by is not None:
        raise StageError(f"{key} is written by {spec.made_by}'s step: run that")
    values = settings.values(spec)
    if spec.driver is not None:
        out = spec.driver(values, Path(rundir), progress)
        if out.dir.parent.name != key:
            raise StageError(f"the driver of {key} wrote {out.dir.parent.name}")
        return out
    source = PIPELINE.current_input(rundir, spec)
    stage = spec.build(values, source) if spec.build is not None else spec.stage_class(**values)
    if stage.key != key:
        raise StageError(f"{type(stage).__name__} writes {stage.key}, but is registered as {key}: its step and "
                         "name make its key")
    return run_on(stage, source, rundir, progress)


def run_command(rundir: str | Path, command: str, settings: RunSettings | None = None,
                progress: bool = True) -> dict[str, StageOutput]:
    """The stages ``synth <command>`` runs (select: embed, then select), in order, by key, on the settings'
    executor; records what they read of ``settings`` in ``RUNDIR/run.toml``."""
    specs = PIPELINE.commands()[command]
    settings = settings or RunSettings()
    record(rundir, settings.to_dict(specs))
    with executing(settings):
        return {s.key: _run_key(rundir, s.key, settings, progress) for s in specs}


def export_run(rundir: str | Path, settings: RunSettings | None = None,
               rows: StageOutput | pa.Table | None = None) -> tuple[Path, int]:
    """Write ``RUNDIR/final`` (data, dataset card, trainer snippets) from the last stage's current output (read
    here unless given); returns the folder and its row count."""
    from synth.export import ExportSettings, export, run_card

    settings = settings or RunSettings()
    section = settings.sections.get(EXPORT, {})
    record(rundir, {EXPORT: section})
    if rows is None:
        rows = StageOutput.current(rundir, PIPELINE.specs[-1].key)  # exported shard by shard, not read whole
    rows = _decontaminate_final(rundir, settings.sections.get("decontaminate", {}), rows)
    final = export(rows, rundir, ExportSettings(**section), card=run_card(rundir))
    return final, sum(pq.ParquetFile(p).metadata.num_rows for p in (final / "data").glob("*.parquet"))


def _decontaminate_final(rundir: str | Path, section: dict[str, Any],
                         rows: StageOutput | pa.Table) -> StageOutput | pa.Table:
    """The final rows without those whose instruction overlaps the evaluation files of ``[decontaminate]``;
    when it names some, stats.json gets an ``export`` entry that counts them (the report's and card's funnel)."""
    if not section.get("paths"):
        return rows
    if isinstance(rows, StageOutput):  # read whole to decide, but only the columns the export keeps
        from synth.export import input_columns

        schema = rows.schema()
        rows = rows.read(columns=input_columns(schema.names)) if schema is not None else pa.table({})
    if not rows.num_rows or "instruction" not in rows.column_names:
        return rows
    from synth.stages.decontaminate import CONTAMINATED, final_rows_contaminated
    from synth.stats import ShardStats, count_langs, merge_shards, update_run_stats

    t0 = time.perf_counter()
    stats = ShardStats()
    stats.rows_in.update(count_langs(rows))
    rows = stats.drop_mask(rows, final_rows_contaminated(rows, section), CONTAMINATED)
    stats.rows_out.update(count_langs(rows))
    update_run_stats(Path(rundir), EXPORT, {**merge_shards([stats.to_dict()]),
                                            "seconds": round(time.perf_counter() - t0, 3)})
    return rows


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
    for spec in PIPELINE.runnable:
        settings.values(spec)  # a missing required setting fails now, not after an hour of stages
    with run_lock(rundir):  # held from run.toml to the report: no second run slips in between two stages
        return _run(settings, rundir, progress)


def _run(settings: RunSettings, rundir: Path, progress: bool) -> RunResult:
    from synth.report import write_report

    t0 = time.perf_counter()
    write_run_config(rundir, settings.to_dict())
    outputs: dict[str, StageOutput] = {}
    with executing(settings):
        for spec in PIPELINE.runnable:
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


# ------------------------------------------------------------------------------------------- how stages are made


def _extract(values: dict[str, Any], rundir: Path, progress: bool) -> StageOutput:
    """Stage 1 reads raw corpora, not a stage output, and decides globally: it runs its two steps itself."""
    from synth.stages.extract import ExtractSettings, extract

    inputs, workers = values.pop("inputs"), values.pop("workers")
    return extract(inputs, rundir, ExtractSettings(**values), workers=workers, progress=progress)


def _select(values: dict[str, Any], scored: StageOutput) -> Any:
    from synth.select.select import SelectSettings, mark

    return mark(scored, SelectSettings(**values))


def _gate(values: dict[str, Any], scored: StageOutput) -> Any:
    from synth.stages.backtranslate import Fidelity, FidelityThresholds

    return Fidelity(thresholds=FidelityThresholds(**values))


def _min_relevance(text: str) -> Any:
    from synth.select.relevance import parse_min_relevance

    return parse_min_relevance(text)


def _quota(text: str) -> Any:
    from synth.select.select import parse_lang_quota

    return parse_lang_quota(text)


def _lid_line(params: dict[str, Any]) -> str:
    """The card's (and report's) LID line, with the measured weakness of that model for that language."""
    from synth.extract.lid import weakness

    line = f"LID {params.get('lid_model', '?')}, language {params.get('lang', '?')}"
    warning = weakness(params["lang"], params["lid_model"]) if "lang" in params and "lid_model" in params else None
    return f"{line}. Warning: {warning}" if warning else line


def _judge_warning(counters: dict[str, Any]) -> str | None:
    from synth.stages.score import judge_warning

    return judge_warning(counters)


def _decontaminate_line(params: dict[str, Any]) -> str:
    from synth.stages.decontaminate import card_line

    return card_line(params)


TRANSLATOR = Flag("translator", str, "'llm' (the engine and model), 'seq2seq' (--mt-model) or 'apertium' "
                  "(Debian's rule-based MT: apt-get install apertium apertium-eng-spa).")
MT_MODEL = Flag("mt_model", str, "Seq2seq MT model: directory or hub name (NLLB, M2M100, MADLAD…).")
MAX_TOKENS = Flag("max_tokens", int, "Max new tokens per request.")

EXTRACT_FLAGS = (
    Flag("lang", str, "Target language: ISO 639-1/3 or xxx_Latn (sw, swa, swh_Latn)."),
    Flag("inputs", list, "Files, folders or globs (txt, jsonl, json, parquet, .gz/.zst, datasets save_to_disk "
         "folders). Repeatable.", short="-i"),
    Flag("fragments", str, "How many fragments to keep (suffixes k, M); default all.", parse=parse_count),
    Flag("sample", str, "'first' (stop once N are kept) or 'uniform' (over all input)."),
    Flag("seed", int, "Seed for uniform sampling."),
    Flag("min_len", int, "Minimum fragment length (characters, or tokens with --tokenizer)."),
    Flag("max_len", int, "Maximum fragment length."),
    Flag("tokenizer", str, "Measure lengths in tokens of this tokenizer (path or hub name)."),
    Flag("lid_model", str, "'auto' (default: the installed model measured most precise for --lang), 'lid176' "
         "(bundled), 'heliport' (opt-in extra), 'heliport+lid176' (both must agree), 'glotlid'/'openlid' (after "
         "synth models get), or a fastText model path."),
    Flag("lid_threshold", float, "Minimum language-ID score (default: the model's own)."),
    Flag("quality_config", str, "A quality.toml with per-language thresholds."),
    Flag("pii", bool, "Mask emails, phone numbers and IP addresses."),
    Flag("dedup", bool, "Exact and MinHash near-duplicate removal."),
    Flag("text_field", str, "Text field of JSONL/Parquet/datasets inputs."),
    Flag("id_field", str, "Field holding each record's own id (kept as source_id)."),
    Flag("txt_mode", str, "'file' (one document per .txt) or 'paragraphs'."),
    Flag("workers", int, "Worker processes (default 1)."),
)
# Top-level settings every command that runs stages takes (the CLI adds them to each).
RUN_FLAGS = (
    Flag("executor", str, "What runs the shards: local (default, this machine's processes) or ray (a Ray cluster)."),
    Flag("ray_address", str, "With --executor ray: the cluster (host:port), 'auto' (this machine's), or none to "
         "start a local Ray instance."),
)
SELECT_FLAGS = (
    Flag("target", str, "Rows to keep (suffixes k, M), or all that pass.", parse=parse_count),
    Flag("keep", float, "Or: the fraction of rows to keep."),
    Flag("min_quality", float, "Minimum judge score (default 3: rows the judge rates poor leave; 0 keeps all)."),
    Flag("min_relevance", str, "Minimum instruction-response relevance: 'auto' (default: the threshold measured for "
         "the embedding model), 'off', or a number.", parse=_min_relevance),
    Flag("method", str, "greedy (DEITA-style, default), dedup, kmeans or none."),
    Flag("tau", float, "Cosine similarity at which two instructions are too alike (default 0.9)."),
    Flag("clusters", int, "k-means clusters (kmeans method)."),
    Flag("per_lang_quota", str, "N for every language, or sw=1000,yor=200.", parse=_quota),
    Flag("seed", int, "Seed for k-means and ties (default 0)."),
    Flag("rank_by", str, "'expected' (default: the judge's expected score where it gave logprobs, else the "
         "integer) or 'quality' (the integer score)."),
)

PIPELINE = Pipeline((
    StageSpec("01_fragments", "synth.stages.extract:Fragments", reads=None, made_by="01_extract", card=_lid_line),
    StageSpec("01_extract", "synth.stages.extract:Decide", reads="01_fragments", driver=_extract,
              settings="synth.stages.extract:ExtractSettings", top=("lang", "fragments", "inputs", "workers"),
              requires=("lang", "inputs"), flags=EXTRACT_FLAGS,
              help="Stage 1: native fragments in one language from raw corpora."),
    StageSpec("01_decontaminate", "synth.stages.decontaminate:Decontaminate", reads="01_extract", command="extract",
              card=_decontaminate_line,
              flags=(Flag("paths", list, "Evaluation files to keep out (JSONL, Parquet, datasets folders): fragments "
                          "that overlap them leave as 'contaminated'. Repeatable.", name="decontaminate"),)),
    StageSpec("02_translate", "synth.stages.translate:Translate", reads="01_decontaminate", fallback="01_extract",
              uses_model=True, top=("lang",),
              flags=(TRANSLATOR, MT_MODEL, MAX_TOKENS),
              help="Stage 2: translate each native fragment to English (response_en)."),
    StageSpec("03_instruct", "synth.stages.instruct:Instruct", reads="02_translate", uses_model=True,
              flags=(Flag("task_types", str, "'row' (varied, picked per row) or 'model' (the model picks)."),
                     MAX_TOKENS),
              help="Stage 3: write the English instruction each response answers (instruction_en)."),
    StageSpec("04_score", "synth.stages.score:Score", reads="03_instruct", uses_model=True, warn=_judge_warning,
              flags=(Flag("logprobs", int, "Top-k logprobs for the expected score (0: off)."),),
              help="Stage 4a: an LLM judge rates each English pair 1-5 (quality, quality_reason)."),
    StageSpec("04_embed", "synth.select.embed:Embed", reads="04_score", command="select",
              flags=(Flag("model", str, "sentence-transformers model (default: all-MiniLM-L6-v2).",
                          name="embed-model"),
                     Flag("backend", str, "Embedding backend: auto (default: torch on a GPU, on a CPU openvino "
                          "or onnx where their extras are installed, else torch), torch, onnx or openvino.",
                          name="embed-backend"),
                     Flag("relevance_model", str, "A cross-encoder or reranker (directory or hub name) for the "
                          "instruction-response relevance, instead of the embedding model's cosine."))),
    StageSpec("04_select", "synth.select.select:Mark", reads="04_embed", build=_select,
              settings="synth.select.select:SelectSettings", top=("target",), flags=SELECT_FLAGS,
              help="Stage 4b: cheap, re-runnable selection by quality and diversity; never calls the judge."),
    StageSpec("05_backtranslate", "synth.stages.backtranslate:Backtranslate", reads="04_select",
              fallback="03_instruct", uses_model=True, top=("lang",),
              flags=(TRANSLATOR, MT_MODEL, Flag("roundtrip", bool, "Round-trip similarity score."),
                     Flag("qe_model", str, "Learned QE score bt_qe: a MetricX-24 model (directory or hub name; "
                          "qe_tokenizer in run.toml) or, with unbabel-comet, CometKiwi.")),
              help="Stage 5: translate the instruction into the target language, scored and gated for fidelity."),
    StageSpec("05_fidelity", "synth.stages.backtranslate:Fidelity", reads="05_backtranslate", build=_gate,
              settings="synth.stages.backtranslate:FidelityThresholds", label="fidelity gate",
              command="backtranslate"),
))


def register(spec: StageSpec, after: str | None = None) -> Pipeline:
    """Add a stage to the pipeline every command runs (a plugin's stage), after the stage ``after``."""
    global PIPELINE
    PIPELINE = PIPELINE.register(spec, after)
    return PIPELINE


__all__ = ["EXPORT", "Flag", "PIPELINE", "RUN_FLAGS", "Pipeline", "RunResult", "RunSettings", "StageSpec", "export_run",
           "register", "run", "run_command", "run_stage_by_key"]
