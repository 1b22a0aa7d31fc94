"""synth: multilingual instruction-finetuning datasets from native text."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("synth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

from synth.runner import Stage, StageOutput, run_stage  # noqa: E402
from synth.stats import ShardStats  # noqa: E402

__all__ = ["Stage", "StageOutput", "ShardStats", "run_stage", "__version__"]
