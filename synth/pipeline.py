"""``synth.run``: the whole pipeline, extract → translate → instruct → score → embed → select →
backtranslate → fidelity gate → export → report, resumable at any point.

Each stage's output is fingerprinted and written shard by shard, and LLM requests are cached, so killing a run
and starting the same command again finishes with the same rows and pays for nothing twice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from synth.export import ExportSettings, export, run_card, to_final
from synth.progress import console
from synth.report import write_report
from synth.runner import StageOutput

STAGE_SECTIONS = ("extract", "translate", "instruct", "score", "embed", "select", "backtranslate", "fidelity",
                  "export")


@dataclass
class RunSettings:
    """The main job. ``engine``/``model`` are the defaults of every LLM stage; a stage's own section wins."""

    lang: str | None = None  # required, here or in [extract]
    inputs: list[str] = field(default_factory=list)  # required, here or in [extract]
    fragments: int | None = None  # fragments to extract
    target: int | None = None  # rows to select for back-translation (default: all that pass)
    engine: str | None = None  # None: vllm with a GPU, else hf
    model: str = "smollm2"
    workers: int = 1  # processes for the CPU stages (extract)
    extract: dict[str, Any] = field(default_factory=dict)
    translate: dict[str, Any] = field(default_factory=dict)
    instruct: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] = field(default_factory=dict)
    embed: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)
    backtranslate: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every section against the settings of what it configures, so that a misspelt key is an error
        naming the section and the key, not a TypeError deep in a stage."""
        from synth.config import ConfigError

        if isinstance(self.inputs, str | Path):
            self.inputs = [str(self.inputs)]
        for key, top in (("lang", "lang"), ("fragments", "fragments"), ("input", "inputs"), ("inputs", "inputs")):
            if key in self.extract:  # the shape `synth extract --config` takes: lift it to the top level
                value = self.extract.pop(key)
                value = [value] if top == "inputs" and isinstance(value, str) else value
                if getattr(self, top) in (None, [], value):
                    setattr(self, top, value)
                else:
                    raise ConfigError(f"[extract] {key} = {value!r} contradicts {top} = {getattr(self, top)!r}")
        if not self.lang or not self.inputs:
            raise ConfigError("a language and an input are required (--lang and --input, or lang and input in "
                              "the config)")
        for name, cls in _section_classes().items():
            section = getattr(self, name)
            if not isinstance(section, dict):
                raise ConfigError(f"[{name}] must be a table of settings, not {section!r}")
            allowed = {f.name for f in fields(cls)} - {"lang", "fragments"}
            unknown = sorted(set(section) - allowed)
            if unknown:
                raise ConfigError(f"[{name}]: unknown setting(s) {', '.join(unknown)} (known: "
                                  f"{', '.join(sorted(allowed))})")


@dataclass
class RunResult:
    rundir: Path
    final: Path
    report: Path
    rows: int
    seconds: float
    outputs: dict[str, StageOutput]


def _section_classes() -> dict[str, type]:
    from synth.export import ExportSettings
    from synth.select.embed import Embed
    from synth.select.select import SelectSettings
    from synth.stages.backtranslate import Backtranslate, FidelityThresholds
    from synth.stages.extract import ExtractSettings
    from synth.stages.instruct import Instruct
    from synth.stages.score import Score
    from synth.stages.translate import Translate

    return {"extract": ExtractSettings, "translate": Translate, "instruct": Instruct, "score": Score,
            "embed": Embed, "select": SelectSettings, "backtranslate": Backtranslate,
            "fidelity": FidelityThresholds, "export": ExportSettings}


def _llm(settings: RunSettings, section: dict[str, Any]) -> dict[str, Any]:
    from synth.llm.factory import default_engine

    return {"engine": settings.engine or default_engine(), "model": settings.model, **section}


def run(settings: RunSettings, rundir: str | Path, progress: bool = True) -> RunResult:
    """Run every stage (reusing finished work) and export; returns where the dataset and report are."""
    from synth.runner import run_stage
    from synth.select.embed import Embed
    from synth.select.select import SelectSettings, select
    from synth.stages.backtranslate import FidelityThresholds, backtranslate
    from synth.stages.extract import ExtractSettings, extract
    from synth.stages.instruct import instruct
    from synth.stages.score import score
    from synth.stages.translate import translate

    t0 = time.perf_counter()
    rundir = Path(rundir)
    ext = ExtractSettings(lang=settings.lang, fragments=settings.fragments, **settings.extract)
    outputs: dict[str, StageOutput] = {}

    def step(name: str, fn, *args, **kwargs) -> StageOutput:
        if progress:
            console.print(f"[bold cyan]▶ {name}[/bold cyan]")
        out = fn(*args, **kwargs)
        outputs[name] = out
        if progress:
            console.print(f"  {out.num_rows:,} rows → {out.dir}")
        return out

    step("extract", extract, settings.inputs, rundir, ext, workers=settings.workers, progress=progress)
    step("translate", translate, rundir, progress=progress, **_llm(settings, settings.translate))
    step("instruct", instruct, rundir, progress=progress, **_llm(settings, settings.instruct))
    step("score", score, rundir, progress=progress, **_llm(settings, settings.score))
    embedded = step("embed", run_stage, Embed(**settings.embed), outputs["score"].as_source(), rundir,
                    progress=progress)
    sel = SelectSettings(**{**settings.select, **({"target": settings.target} if settings.target is not None else {})})
    selected = step("select", select, embedded, rundir, sel, progress=progress)
    gated = step("backtranslate", backtranslate, rundir, progress=progress,
                 thresholds=FidelityThresholds(**settings.fidelity),
                 **_llm(settings, settings.backtranslate))
    table = gated.read()  # once, for the export and the report
    card = run_card(rundir, {"settings": asdict(settings)})
    final = export(table, rundir, ExportSettings(**settings.export), card=card)
    report = write_report(rundir, final=to_final(table) if table.num_rows else None,
                          clusters=selected.read(columns=["cluster", "selected"]),
                          title=f"synth run: {ext.lang}, {rundir.name}")
    return RunResult(rundir, final, report, gated.num_rows, time.perf_counter() - t0, outputs)
