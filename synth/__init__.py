"""synth: multilingual instruction-finetuning datasets from native text."""

from synth.kernel import Stage, StageOutput
from synth.runner import run_stage
from synth.stats import ShardStats
from synth.version import __version__


def run(rundir, progress: bool = True, **settings):
    """The main job from Python, as ``synth run``: ``synth.run("runs/sw", lang="sw", inputs=["corpus/"],
    fragments=1000, score={"model": "judge/dir"})``. ``settings`` are what ``run.toml`` holds: the top-level
    fields of ``synth.orchestrate.RunSettings`` and a table per stage section; the resolved config is written to
    ``RUNDIR/run.toml``. Resumable."""
    from synth.orchestrate import RunSettings
    from synth.orchestrate import run as run_pipeline

    return run_pipeline(RunSettings.from_dict(settings), rundir, progress=progress)


def pick(out, lang: str, inputs: list[str], progress: bool = True, **settings):
    """``synth pick`` from Python: ``synth.pick("picks/es", "es", ["corpus_es/"], translators=["apertium", "llm"])``
    measures each candidate on a sample and writes ``OUT/pick.toml``; ``settings`` are the fields of
    ``synth.pick.PickSettings``. Returns the ``PickResult`` (every candidate's numbers, and the choice)."""
    from synth.pick import PickSettings
    from synth.pick import pick as run_pick

    return run_pick(out, PickSettings(lang=lang, inputs=list(inputs), **settings), progress=progress)


__all__ = ["Stage", "StageOutput", "ShardStats", "pick", "run", "run_stage", "__version__"]
