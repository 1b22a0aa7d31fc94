"""What every command shares: the ``synth`` app, its console, the help texts of common options, and errors."""

from __future__ import annotations

import typer
from rich.console import Console

from synth import __version__
from synth.config import ConfigError, key_values

app = typer.Typer(help="Build multilingual instruction-finetuning datasets from native text.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Offline models that ship inside packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()

ENGINE_HELP = "hf, vllm or openai (default: vllm with a GPU, else hf)."
MODEL_HELP = "Model directory, hub name, or 'smollm2' (offline default)."
CACHE_HELP = "Request cache (sqlite path), 'none', or default: synth's shared cache."
CONFIG_HELP = "A run.toml with the sections of `synth run`; flags win."


def _version(value: bool) -> None:
    if value:
        console.print(f"synth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """synth: native text in, instruction-tuning pairs out."""


BUDGET_EXIT = 3  # the run stopped at its --max-budget: not an error, not a finished dataset either


def _fail(e: Exception) -> None:
    from rich.markup import escape

    from synth.budget import BudgetExceeded

    if isinstance(e, BudgetExceeded):
        console.print(f"[yellow]stopped:[/yellow] {escape(str(e))}")
        raise typer.Exit(BUDGET_EXIT)
    console.print(f"[red]error:[/red] {escape(str(e))}")  # messages name config sections: [translate]…
    raise typer.Exit(2)


def export_formats(given: list[str] | None) -> list[str] | None:
    """``--format jsonl,alpaca`` or ``--format jsonl --format alpaca``: the export's formats, Parquet always first."""
    extra = [f.strip() for item in given or [] for f in item.split(",") if f.strip() and f.strip() != "parquet"]
    return ["parquet", *dict.fromkeys(extra)] if given else None


def _engine_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs to engine keyword arguments (``synth.config.key_values``)."""
    try:
        return key_values(pairs)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


