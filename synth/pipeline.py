"""The pipeline, declared once: ``PIPELINE`` lists every stage in order, with its class (whose ``key`` is the
folder it writes), the stage whose output it reads, its settings (a section of ``run.toml``), whether it calls a
model and its label. ``synth run`` (``synth.orchestrate.run``), the single-stage commands and their options, the
sections ``RunSettings`` accepts, the lineage checks, ``synth plan``, the report and the dataset card all read
it, so a new stage is one file with its ``Stage`` class and one ``StageSpec`` line below (or, from outside,
``register``). The types are in ``synth.registry``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.kernel import StageOutput
from synth.registry import Pipeline, StageSpec

# ------------------------------------------------------------------------------------------- how stages are made


def _extract(values: dict[str, Any], rundir: Path, progress: bool) -> StageOutput:
    """Stage 1 reads raw corpora, not a stage output, and decides globally: it runs its two steps itself."""
    from synth.stages.extract import ExtractSettings, extract

    inputs, workers = values.pop("inputs"), values.pop("workers")
    return extract(inputs, rundir, ExtractSettings(**values), workers=workers, progress=progress)


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


PIPELINE = Pipeline((
    StageSpec("synth.stages.extract:Fragments", reads=None, made_by="01_extract", card=_lid_line),
    StageSpec("synth.stages.extract:Decide", reads="01_fragments", driver=_extract,
              top=("lang", "fragments", "inputs", "workers"),
              requires=("lang", "inputs"),
              help="Stage 1: native fragments in one language from raw corpora."),
    StageSpec("synth.stages.decontaminate:Decontaminate", reads="01_extract", command="extract",
              card=_decontaminate_line),
    StageSpec("synth.stages.translate:Translate", reads="01_decontaminate", fallback="01_extract",
              uses_model=True, top=("lang",),
              help="Stage 2: translate each native fragment to English (response_en)."),
    StageSpec("synth.stages.instruct:Instruct", reads="02_translate", uses_model=True,
              help="Stage 3: write the English instruction each response answers (instruction_en)."),
    StageSpec("synth.stages.score:Score", reads="03_instruct", uses_model=True, warn=_judge_warning,
              help="Stage 4a: an LLM judge rates each English pair 1-5 (quality, quality_reason)."),
    StageSpec("synth.select.embed:Embed", reads="04_score", command="select"),
    StageSpec("synth.select.select:Mark", reads="04_embed", top=("target",),
              help="Stage 4b: cheap, re-runnable selection by quality and diversity; never calls the judge."),
    StageSpec("synth.stages.backtranslate:Backtranslate", reads="04_select",
              fallback="03_instruct", uses_model=True, top=("lang",),
              help="Stage 5: translate the instruction into the target language, scored and gated for fidelity."),
    StageSpec("synth.stages.backtranslate:Fidelity", reads="05_backtranslate", label="fidelity gate",
              command="backtranslate"),
    StageSpec("synth.stages.decontaminate:DecontaminateFinal", reads="05_fidelity", command="backtranslate",
              settings_of="01_decontaminate", label="final decontamination"),
))


def register(spec: StageSpec, after: str | None = None) -> Pipeline:
    """Add a stage to the pipeline every command runs (a plugin's stage), after the stage ``after``."""
    global PIPELINE
    PIPELINE = PIPELINE.register(spec, after)
    return PIPELINE


__all__ = ["PIPELINE", "register"]
