"""The ``synth`` command line: a thin layer that parses options, calls the Python API and prints.

The stage commands (extract … backtranslate) are made from the pipeline's registry (``synth.pipeline``): one
per command name, with the options its stages declare, and ``--out``, ``--config`` and ``--quiet``; a stage that
calls a model adds ``--engine``, ``--model``, ``--engine-opt`` and ``--cache``.
"""

from synth.cli import dataset, models, pick, training  # noqa: F401 (each registers its commands on app, in this order)
from synth.cli.common import app

__all__ = ["app"]
