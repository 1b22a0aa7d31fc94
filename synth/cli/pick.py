"""``synth pick``: the translator and teacher for a language, chosen by measurement on a sample."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from synth.cli.common import _fail, console
from synth.cli.settings import settings_command
from synth.pick import PickSettings


def _pick(settings: PickSettings, out: Path, quiet: bool = False) -> None:
    """``synth pick``'s work, on its settings (the command is made from ``PickSettings``)."""
    from synth.pick import pick

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


settings_command("pick", PickSettings, _pick, quiet=True, help="Pick the translator (and teacher) for a language: "
                 "each candidate through stages 2 and 5 (and 3, the judge and relevance) on a sample, measured by the "
                 "gates; writes the choice as run.toml sections.", out_help="Folder: pick.toml (for `synth run "
                 "--config`), pick.json, and each candidate's stage outputs (a rerun redoes nothing finished).")
