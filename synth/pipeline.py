"""``synth.run``: the whole pipeline, extract → translate → instruct → score → embed → select →
backtranslate → fidelity gate → export → report, resumable at any point.

Each stage's output is fingerprinted and written shard by shard, and LLM requests are cached, so killing a run
and starting the same command again finishes with the same rows and pays for nothing twice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synth.export import ExportSettings, export
from synth.progress import console
from synth.report import write_report
from synth.runner import StageOutput

STAGE_SECTIONS = ("extract", "translate", "instruct", "score", "embed", "select", "backtranslate", "fidelity",
                  "export")


@dataclass
class RunSettings:
    """The main job. ``engine``/``model`` are the defaults of every LLM stage; a stage's own section wins."""

    lang: str
    inputs: list[str]
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


@dataclass
class RunResult:
    rundir: Path
    final: Path
    report: Path
    rows: int
    seconds: float
    outputs: dict[str, StageOutput]


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
    sel = SelectSettings(**{"target": settings.target, **settings.select})
    selected = step("select", select, embedded, rundir, sel, progress=progress)
    gated = step("backtranslate", backtranslate, rundir, progress=progress,
                 thresholds=FidelityThresholds(**settings.fidelity),
                 **_llm(settings, settings.backtranslate))
    final = export(gated, rundir, ExportSettings(**settings.export), card=_card(settings, ext, outputs))
    table = gated.read()
    from synth.export import to_final

    report = write_report(rundir, final=to_final(table) if table.num_rows else None,
                          clusters=selected.read(columns=["cluster", "selected"]),
                          title=f"synth run: {ext.lang}, {rundir.name}")
    return RunResult(rundir, final, report, gated.num_rows, time.perf_counter() - t0, outputs)


def _card(settings: RunSettings, ext: Any, outputs: dict[str, StageOutput]) -> dict[str, Any]:
    """What the dataset card says about how the data was made: models, prompts, funnel."""
    import json

    from synth.report import funnel

    stats = json.loads((next(iter(outputs.values())).dir.parents[1] / "stats.json").read_text())
    models = {}
    for name in ("translate", "instruct", "score", "backtranslate"):
        if name in outputs:
            params = outputs[name].manifest.get("params", {})
            prompt = {k: v for k, v in params.items() if "prompt" in k}
            models[name] = f"{params.get('engine', '')} {params.get('model', '')} {prompt or ''}".strip()
    models["extract"] = f"LID {ext.lid_model} (threshold {ext.lid_threshold}), lang {ext.lang}"
    return {"models": models, "funnel": funnel(stats), "settings": asdict(settings)}
