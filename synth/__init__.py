"""synth: multilingual instruction-finetuning datasets from native text."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("synth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

from synth.runner import Stage, StageOutput, run_stage  # noqa: E402
from synth.stats import ShardStats  # noqa: E402


def run(rundir, progress: bool = True, **settings):
    """The main job from Python, as ``synth run``: ``synth.run("runs/sw", lang="sw", inputs=["corpus/"],
    fragments=1000, score={"model": "judge/dir"})``. ``settings`` are what ``run.toml`` holds: the top-level
    fields of ``synth.pipeline.RunSettings`` and a table per stage section; the resolved config is written to
    ``RUNDIR/run.toml``. Resumable."""
    from synth.pipeline import RunSettings
    from synth.pipeline import run as run_pipeline

    return run_pipeline(RunSettings.from_dict(settings), rundir, progress=progress)


__all__ = ["Stage", "StageOutput", "ShardStats", "run", "run_stage", "__version__"]
