"""``synth models``: the offline models that ship inside packages (prepare, get, list)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from synth.cli.common import (
    _fail,
    console,
    models_app,
)


@models_app.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if prepared.")) -> None:
    """Prepare the offline models (SmolLM2 from its GGUF package; check fastText LID)."""
    from synth import models

    console.print(f"fastText LID: {models.lid176_path()}")
    console.print(f"{models.SMOLLM2}: {models.prepare_smollm2(force=force)}")


@models_app.command("get")
def models_get(name: str = typer.Argument(..., help="glotlid (Apache-2.0, 2,000+ languages) or openlid "
                                           "(GPL-3.0, 201 languages).")) -> None:
    """Download a fastText LID model from the Hugging Face Hub; then use it with --lid-model NAME."""
    from synth import models

    try:
        path = models.download_lid_model(name.lower())
    except models.ModelNotFound as e:
        _fail(e)
    licence = models.LID_DOWNLOADS[name.lower()][2]
    console.print(f"{name} ({licence}): {path} (use it with --lid-model {name.lower()}, or "
                  f"lid_model = \"{name.lower()}\" in the extract section of run.toml)", markup=False)


@models_app.command("list")
def models_list() -> None:
    """Show where each offline model is and whether it is ready."""
    from synth import models

    lid = [(f"LID {name} (synth models get)", partial(models.lid_model_path, name)) for name in models.LID_DOWNLOADS]
    for name, fn in (("fastText lid.176", models.lid176_path), (models.SMOLLM2, models.smollm2_dir), *lid):
        try:
            path = fn()
            state = "ready" if Path(path).exists() else "not prepared (synth models prepare)"
        except models.ModelNotFound as e:
            path, state = "-", str(e)
        console.print(f"{name:28} {state:12} {path}")
