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

    def row(key: str, lang: str, n_in: int, n_out: int, dropped: dict[str, int], style: str = "") -> None:
        pct = f"{100 * n_out / n_in:.1f}" if n_in else "-"
        reasons = ", ".join(f"{r} {n:,}" for r, n in list(dropped.items())[:3])
        table.add_row(key, lang, f"{n_in:,}", f"{n_out:,}", pct, reasons, style=style)

    for key, s in data["stages"].items():
        row(key, "all", s["rows_in"], s["rows_out"], s["dropped"], style="bold")
        for lang, v in s["by_lang"].items():
            row("", lang, v["in"], v["out"], v["dropped"])
    console.print(table)


def parse_count(text: str | None) -> int | None:
    """'1M' → 1_000_000, '500k' → 500_000, '1234' → 1234."""
    if text is None:
        return None
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a count like 1000, 500k or 1M") from None
    if value <= 0 or value != int(value):
        raise typer.BadParameter(f"{text!r} must be a positive whole number")
    return int(value)


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


@app.command()
def extract(
    lang: str = typer.Option(None, help="Target language: ISO 639-1/3 or xxx_Latn (sw, swa, swh_Latn)."),
    input: list[str] = typer.Option(None, "--input", "-i", help="Files, folders or globs (txt, jsonl, json, "
                                    "parquet, .gz/.zst, datasets save_to_disk folders). Repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    fragments: str = typer.Option(None, help="How many fragments to keep (suffixes k, M); default all."),
    sample: str = typer.Option(None, help="'first' (stop once N are kept) or 'uniform' (over all input)."),
    seed: int = typer.Option(None, help="Seed for uniform sampling."),
    min_len: int = typer.Option(None, help="Minimum fragment length (characters, or tokens with --tokenizer)."),
    max_len: int = typer.Option(None, help="Maximum fragment length."),
    tokenizer: str = typer.Option(None, help="Measure lengths in tokens of this tokenizer (path or hub name)."),
    lid_model: str = typer.Option(None, help="'auto' (default: the installed model measured best for --lang), "
                                  "'lid176' (bundled), 'heliport' (opt-in extra), or a fastText model path."),
    lid_threshold: float = typer.Option(None, help="Minimum language-ID score (default: the model's own)."),
    quality_config: str = typer.Option(None, help="A quality.toml with per-language thresholds."),
    pii: bool = typer.Option(None, "--pii/--no-pii", help="Mask emails, phone numbers and IP addresses."),
    dedup: bool = typer.Option(None, "--dedup/--no-dedup", help="Exact and MinHash near-duplicate removal."),
    text_field: str = typer.Option(None, help="Text field of JSONL/Parquet/datasets inputs."),
    id_field: str = typer.Option(None, help="Field holding each record's own id (kept as source_id)."),
    txt_mode: str = typer.Option(None, help="'file' (one document per .txt) or 'paragraphs'."),
    workers: int = typer.Option(1, help="Worker processes."),
    config: Path = typer.Option(None, help="A run.toml; flags override its [extract] section."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 1: native fragments in one language from raw corpora, into RUNDIR/01_extract."""
    from dataclasses import asdict, fields

    from synth.config import ConfigError, load_config, resolve, write_run_config
    from synth.stages.extract import ExtractError, ExtractSettings
    from synth.stages.extract import extract as run_extract

    flags = {"lang": lang, "fragments": parse_count(fragments), "sample": sample, "seed": seed,
             "min_len": min_len, "max_len": max_len, "tokenizer": tokenizer, "lid_model": lid_model,
             "lid_threshold": lid_threshold, "quality_config": quality_config, "pii": pii, "dedup": dedup,
             "text_field": text_field, "id_field": id_field, "txt_mode": txt_mode, "input": input or None}
    try:
        file_cfg = load_config(config).get("extract", {})
        defaults = {f.name: f.default for f in fields(ExtractSettings) if f.name != "lang"}
        cfg = resolve({**defaults, "lang": None, "input": None}, file_cfg, flags)
        if not cfg["lang"] or not cfg["input"]:
            raise ConfigError("--lang and --input are required (as flags or in the config's [extract])")
        inputs = cfg.pop("input")
        settings = ExtractSettings(**cfg)
        write_run_config(out, {"extract": {**asdict(settings), "input": inputs}})
        result = run_extract(inputs, out, settings, workers=workers, progress=not quiet)
    except (ConfigError, ExtractError) as e:
        _fail(e)
    summary = result.stats()
    console.print(f"[green]kept {result.num_rows:,} {settings.lang} fragments[/green] in {result.dir}")
    for reason, n in list(summary["dropped"].items())[:5]:
        console.print(f"  dropped {n:,} {reason}")
    console.print(f"  funnel: synth stats {out}")


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
