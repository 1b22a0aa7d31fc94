"""``synth pick``: the translator and teacher for a language, chosen by measurement on a sample."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from synth.cli.common import CACHE_HELP, ENGINE_HELP, _fail, _split, app, console


@app.command("pick")
def pick_cmd(
    lang: str = typer.Option(..., help="The language to pick for (es, sw, swh…)."),
    inputs: list[str] = typer.Option(..., "--input", "-i", help="Corpora to draw the sample from (as `synth "
                                     "extract`). Repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder: pick.toml (for `synth run --config`), pick.json, "
                             "and each candidate's stage outputs (a rerun redoes nothing finished)."),
    translators: list[str] = typer.Option(["llm"], help="Candidates, comma-separated or repeated: apertium, llm "
                                          "(--model), llm:MODEL, seq2seq:MODEL."),
    models: list[str] = typer.Option(None, help="Teacher candidates for stage 3 (comma-separated); none: the "
                                     "teacher is not picked."),
    judge: str = typer.Option(None, help="The model that judges every teacher (default: stage 4's)."),
    sample: int = typer.Option(200, help="Fragments in the sample, drawn uniformly over the input."),
    seed: int = typer.Option(0, help="Seed of the sample."),
    min_keep: float = typer.Option(0.5, help="A candidate passes where each gate keeps at least this share."),
    min_quality: float = typer.Option(3.0, help="A teacher passes where the judge's mean score reaches this."),
    min_len: int = typer.Option(None, help="Shortest fragment (characters; as `synth extract`)."),
    max_len: int = typer.Option(None, help="Longest fragment."),
    engine: str = typer.Option(None, help=ENGINE_HELP),
    model: str = typer.Option(None, help="The model of the plain 'llm' candidate (default: the run's)."),
    cache: str = typer.Option("auto", help=CACHE_HELP),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Pick the translator (and teacher) for a language: each candidate through stages 2 and 5 (and 3 and the
    judge) on a sample, measured by the gates; writes the choice as run.toml sections."""
    from synth.pick import PickSettings, pick

    names = [f"llm:{model}" if c == "llm" and model else c for c in _split(translators) or []]
    extra = {k: v for k, v in (("min_len", min_len), ("max_len", max_len)) if v is not None}
    settings = PickSettings(lang=lang, inputs=inputs, translators=names, models=_split(models) or [], judge=judge,
                            sample=sample, seed=seed, min_keep=min_keep, min_quality=min_quality, engine=engine,
                            cache=cache, extract=extra)
    try:
        result = pick(out, settings, progress=not quiet)
    except (ValueError, OSError) as e:  # SynthError is a ValueError
        _fail(e)
    for title, rows, chosen in (("translators", result.translators, result.translator),
                                ("teachers", result.teachers, result.teacher)):
        if not rows:
            continue
        table = Table(title=f"synth pick {result.lang}: {title}")
        gates = list(dict.fromkeys(g for m in rows for g in m.kept))  # a candidate that failed to run has none
        scores = list(dict.fromkeys(k for m in rows for k in m.scores))
        for col in ("candidate", *(f"{gate} kept" for gate in gates), *scores, "tokens/row", "rows/s", "verdict"):
            table.add_column(col)
        for m in rows:
            kept = [f"{m.kept[g]:.0%}" if g in m.kept else "–" for g in gates]
            numbers = [str(m.scores[k]) if m.scores.get(k) is not None else "–" for k in scores]
            verdict = "chosen" if m is chosen else "passes" if m.passed else "fails"
            table.add_row(m.name, *kept, *numbers, f"{m.tokens_per_row:g}", str(m.rows_per_s or "–"), verdict)
        console.print(table)
        for m in rows:
            console.print(f"  {m.name}: {m.why}", markup=False)
    choice = result.translator.name if result.translator else "none (see the reasons above)"
    console.print(f"translator for {result.lang}: {choice}; wrote {result.toml} (synth run --config {result.toml})")
