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
    fragments=1000, score={"model": "judge/dir"})``. ``settings`` are the fields of
    ``synth.pipeline.RunSettings``; the resolved config is written to ``RUNDIR/run.toml``. Resumable."""
    from dataclasses import asdict

    from synth.config import write_run_config
    from synth.pipeline import RunSettings
    from synth.pipeline import run as run_pipeline

    resolved = RunSettings(**settings)
    write_run_config(rundir, asdict(resolved))
    return run_pipeline(resolved, rundir, progress=progress)


__all__ = ["Stage", "StageOutput", "ShardStats", "run", "run_stage", "__version__"]
