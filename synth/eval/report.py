"""A self-contained HTML page for evaluation results: a language x metric heatmap (inline SVG) and the numbers.

Colours are per metric, on the metric's own scale (0-1 rates, 0-100 ROUGE/chrF/BLEU, 0-2 judge facets), green
for good, so a column with "lower is better" (code-switching, parse failures, pairwise losses) is inverted.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from synth.io import atomic_write_text

# name -> (label, low, high, higher is better)
METRICS: dict[str, tuple[str, float, float, bool]] = {
    "lang_correct": ("answer in prompt language", 0, 1, True),
    "code_switch": ("code-switching", 0, 1, False),
    "rouge1": ("ROUGE-1", 0, 100, True),
    "rouge2": ("ROUGE-2", 0, 100, True),
    "rougeL": ("ROUGE-L", 0, 100, True),
    "chrf_into": ("chrF++ into", 0, 100, True),
    "bleu_into": ("BLEU into", 0, 100, True),
    "chrf_from": ("chrF++ from", 0, 100, True),
    "bleu_from": ("BLEU from", 0, 100, True),
    "mc_acc": ("MC accuracy", 0, 1, True),
    "mc_acc_norm": ("MC acc (norm)", 0, 1, True),
    "judge_language": ("judge: language", 0, 2, True),
    "judge_fluency": ("judge: fluency", 0, 2, True),
    "judge_helpfulness": ("judge: helpfulness", 0, 2, True),
    "judge_accuracy": ("judge: accuracy", 0, 2, True),
    "judge_coherence": ("judge: coherence", 0, 2, True),
    "judge_harmlessness": ("judge: harmlessness", 0, 2, True),
    "judge_mean": ("judge: mean", 0, 2, True),
    "judge_parse_fail_rate": ("judge parse failures", 0, 1, False),
    "pairwise_win_rate": ("pairwise win rate", 0, 1, True),
    "pairwise_win": ("pairwise wins", 0, 1, True),
    "pairwise_tie": ("pairwise ties", 0, 1, True),
    "pairwise_loss": ("pairwise losses", 0, 1, False),
}

_BAD, _MID, _GOOD = (215, 48, 39), (254, 224, 139), (26, 152, 80)


def colour(value: float | None, metric: str) -> str:
    """Fill colour of a cell: red (bad) - yellow - green (good) on the metric's scale; grey when missing."""
    if value is None or not math.isfinite(value):
        return "#eeeeee"
    _, lo, hi, up = METRICS.get(metric, (metric, 0.0, 1.0, True))
    t = min(1.0, max(0.0, (value - lo) / (hi - lo) if hi > lo else 0.0))
    if not up:
        t = 1.0 - t
    a, b, u = (_BAD, _MID, t * 2) if t < 0.5 else (_MID, _GOOD, (t - 0.5) * 2)
    r, g, bl = (round(x + (y - x) * u) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def fmt(value: float | None, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    hi = METRICS.get(metric, ("", 0, 1, True))[2]
    return f"{value:.1f}" if hi >= 100 else f"{value:.2f}"


def ordered_metrics(table: dict[str, dict[str, float]]) -> list[str]:
    present = {m for row in table.values() for m in row}
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def heatmap_svg(table: dict[str, dict[str, float]], langs: list[str] | None = None) -> str:
    """Inline SVG: one row per language, one column per metric, the value written in each cell."""
    langs = langs or sorted(table)
    metrics = ordered_metrics(table)
    cw, ch, left, top = 70, 24, 60, 150
    width, height = left + cw * len(metrics) + 110, top + ch * len(langs) + 10  # room for slanted labels
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11" role="img" aria-label="language by metric heatmap">']
    for j, m in enumerate(metrics):
        x = left + cw * j + cw / 2
        label = html.escape(METRICS.get(m, (m,))[0])
        parts.append(f'<text transform="translate({x:.0f},{top - 6}) rotate(-55)">{label}</text>')
    for i, lang in enumerate(langs):
        y = top + ch * i
        parts.append(f'<text x="{left - 6}" y="{y + ch / 2 + 4:.0f}" text-anchor="end">{html.escape(lang)}</text>')
        for j, m in enumerate(metrics):
            v = table.get(lang, {}).get(m)
            x = left + cw * j
            parts.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{colour(v, m)}">'
                         f'<title>{html.escape(lang)} {html.escape(m)}: {fmt(v, m)}</title></rect>')
            parts.append(f'<text x="{x + (cw - 2) / 2:.0f}" y="{y + ch / 2 + 3:.0f}" '
                         f'text-anchor="middle">{fmt(v, m)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(results: dict[str, Any]) -> str:
    table = results.get("table", {})
    langs = results.get("langs") or sorted(table)
    metrics = ordered_metrics(table)
    meta = results.get("meta", {})
    esc = html.escape
    head = "".join(f"<th>{esc(METRICS.get(m, (m,))[0])}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{esc(lang)}</th>"
        + "".join(f"<td>{fmt(table.get(lang, {}).get(m), m)}</td>" for m in metrics) + "</tr>"
        for lang in langs
    )
    counts = results.get("counts", {})
    count_keys = sorted({k for c in counts.values() for k in c})
    count_rows = "".join(
        f"<tr><th>{esc(lang)}</th>" + "".join(f"<td>{counts[lang].get(k, '')}</td>" for k in count_keys) + "</tr>"
        for lang in sorted(counts)
    )
    notes = []
    if "bleu" in meta:
        notes.append(f"BLEU: {esc(meta['bleu']['note'])}.")
    if "judge" in meta and meta["judge"].get("self_judged"):
        notes.append("The judge is the evaluated model itself: judge scores are a smoke test, not a measurement.")
    if "lid_models" in meta:
        notes.append("Response language by LID: " + ", ".join(f"{esc(k)}: {esc(v)}"
                                                               for k, v in meta["lid_models"].items()) + ".")
    if results.get("skipped"):
        notes.append("Skipped: " + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in results["skipped"].items()) + ".")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>synth eval: {esc(str(results.get("model")))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f5f5f5; }}
</style></head><body>
<h1>Evaluation: {esc(str(results.get("model")))}</h1>
<p>engine <code>{esc(str(results.get("engine")))}</code>, data <code>{esc(str(results.get("data_dir")))}</code>,
tasks {esc(", ".join(results.get("tasks", [])))}, {meta.get("runtime_s", "?")} s.</p>
<h2>Language &times; metric</h2>
{heatmap_svg(table, langs)}
<table><tr><th>lang</th>{head}</tr>{body}</table>
<h2>Counts</h2>
<table><tr><th>lang</th>{"".join(f"<th>{esc(k)}</th>" for k in count_keys)}</tr>{count_rows}</table>
<h2>Notes</h2>
<ul>{"".join(f"<li>{n}</li>" for n in notes)}
<li>Scales: rates 0&ndash;1, ROUGE / chrF++ / BLEU 0&ndash;100, judge facets 0&ndash;2; colours per metric, green is
good (inverted for code-switching, parse failures and losses).</li>
<li>Translation "into X" averages the directions whose target is X; "from X" those whose source is X.</li></ul>
</body></html>
"""


def write_report(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, render_html(results))
    return path
