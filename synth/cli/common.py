"""What every command shares: the ``synth`` app, its console, the help texts of common options, and errors."""

from __future__ import annotations

import typer
from rich.console import Console

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


BUDGET_EXIT = 3  # the run stopped at its --max-budget: not an error, not a finished dataset either


def _fail(e: Exception) -> None:
    from rich.markup import escape

    from synth.budget import BudgetExceeded

    if isinstance(e, BudgetExceeded):
        console.print(f"[yellow]stopped:[/yellow] {escape(str(e))}")
        raise typer.Exit(BUDGET_EXIT)
    console.print(f"[red]error:[/red] {escape(str(e))}")  # messages name config sections: [translate]…
    raise typer.Exit(2)
