"""The run report: one self-contained HTML file (inline SVG plots), a short console summary, and what the dataset
card says about how the run was made (``run_card``: models, prompts, funnel, warnings).

Everything comes from ``stats.json``, the stages' manifests and the final rows (read batch by batch:
``FinalSummary``), so the report can be rebuilt at any time.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth import pipeline  # its PIPELINE read at each use: register() replaces it
from synth.budget import tokens
from synth.errors import SynthError
from synth.io import atomic_write_text
from synth.kernel import StageOutput
from synth.stats import kept_label


def stage_label(key: str) -> str:
    """A stage's label in the plots, from the pipeline's registry (the key itself for a stage it lacks)."""
    return next((s.label for s in pipeline.PIPELINE if s.key == key), key)


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none"})
    return plt


def funnel(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows in and out of every stage in run order, with the top drop reasons."""
    out = []
    for key, s in stats.get("stages", {}).items():
        top = ", ".join(f"{r} ({n:,})" for r, n in list(s.get("dropped", {}).items())[:3])
        out.append({"stage": key, "rows_in": s["rows_in"], "rows_out": s["rows_out"], "top_drop": top,
                    "dropped": s.get("dropped", {}),
                    "by_lang": s.get("by_lang", {}), "counters": s.get("counters", {}),
                    "seconds": s.get("seconds", 0.0)})
    return out


def _funnel_plot(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    langs = sorted({lang for r in rows for lang, v in r["by_lang"].items() if v["out"]})
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = [stage_label(r["stage"]) for r in rows]
    bottom = [0] * len(rows)
    for lang in langs:
        vals = [r["by_lang"].get(lang, {}).get("out", 0) for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=lang)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("rows out")
    ax.set_title("Funnel: rows kept after each stage")
    ax.set_yscale("symlog")
    if langs:
        ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=30)
    return _svg(fig)


def _hist(values: Any, title: str, xlabel: str, bins: int | list[float] = 30) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _svg(fig)


def _bars(labels: list[str], values: list[float], title: str, ylabel: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.bar(labels, values, color="#55a868")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30)
    return _svg(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:4px 7px;
vertical-align:top;text-align:left}th{background:#f4f4f4}.plots{display:flex;flex-wrap:wrap;gap:1em}
.plots figure{margin:0}svg{max-width:100%;height:auto}.small{color:#666;font-size:.85em}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em}"""


REPORT_COLUMNS = ("id", "lang", "instruction", "response", "instruction_en", "quality")
SAMPLE_ROWS = 25


@dataclass
class FinalSummary:
    """What the report shows of the exported rows, gathered batch by batch (``add``), so a million rows cost
    three numeric arrays and a sample, never the texts: row count, languages, judge scores, the instruction
    and response lengths in characters, and the first ``SAMPLE_ROWS`` rows of the columns shown."""

    rows: int = 0
    langs: set[str] = field(default_factory=set)
    columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    _parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, batch: pa.Table | pa.RecordBatch) -> None:
        if not self.columns:
            self.columns = [c for c in REPORT_COLUMNS if c in batch.schema.names]
        self.rows += batch.num_rows
        if "lang" in batch.schema.names:
            self.langs.update(v for v in pc.unique(batch.column("lang")).to_pylist() if v is not None)
        for name in ("instruction", "response"):
            if name in batch.schema.names:
                lengths = pc.fill_null(pc.utf8_length(batch.column(name)), 0)
                self._parts.setdefault(name, []).append(lengths.to_numpy(zero_copy_only=False))
        if "quality" in batch.schema.names:
            q = pc.drop_null(batch.column("quality")).to_numpy(zero_copy_only=False).astype(np.float32)
            self._parts.setdefault("quality", []).append(q)
        if len(self.sample) < SAMPLE_ROWS:
            self.sample += batch.slice(0, SAMPLE_ROWS - len(self.sample)).select(self.columns).to_pylist()

    def values(self, name: str) -> np.ndarray:
        """``instruction`` / ``response`` lengths or ``quality`` scores over every row added."""
        parts = self._parts.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    @classmethod
    def of(cls, final: pa.Table | str | Path) -> FinalSummary:
        """From a table, or from an exported dataset's folder (``final``, its ``data/*.parquet``) batch by batch."""
        summary = cls()
        if isinstance(final, pa.Table):
            summary.add(final)
            return summary
        import pyarrow.parquet as pq

        for path in sorted(Path(final, "data").glob("*.parquet")):
            f = pq.ParquetFile(path)
            columns = [c for c in REPORT_COLUMNS if c in f.schema_arrow.names]
            for batch in f.iter_batches(batch_size=8192, columns=columns):
                summary.add(batch)
        return summary


def write_report(rundir: str | Path, final: FinalSummary | pa.Table | str | Path | None = None,
                 clusters: pa.Table | None = None, title: str | None = None) -> Path:
    """Write ``RUNDIR/report.html`` from stats.json, the final rows (a ``FinalSummary``, a table, or an exported
    dataset's folder, read batch by batch) and (optionally) the selection's clusters."""
    rundir = Path(rundir)
    if final is not None and not isinstance(final, FinalSummary):
        final = FinalSummary.of(final)
    stats = json.loads((rundir / "stats.json").read_text()) if (rundir / "stats.json").exists() else {}
    rows = funnel(stats)
    parts = [f"<h1>{html.escape(title or f'synth run: {rundir.name}')}</h1>"]
    if final is not None:
        parts.append(f"<p><b>{final.rows:,}</b> rows exported ({', '.join(sorted(final.langs)) or 'none'}).</p>")

    made = run_card(rundir)["models"]
    if made:
        parts.append("<h2>How it was made</h2><ul>" + "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in made.items()) + "</ul>")
    parts.append("<h2>Funnel</h2>")
    why = diagnosis(rows)
    if why is not None:
        parts.append(f"<p class='warn'><b>Why no rows:</b> {html.escape(why)}</p>")
    for stage, text in warnings(rows):
        parts.append(f"<p class='warn'><b>Warning ({html.escape(stage_label(stage))}):</b> {html.escape(text)}</p>")
    if rows:
        parts.append(f'<div class="plots"><figure>{_funnel_plot(rows)}</figure></div>')
        parts.append(_table(["stage", "rows in", "rows out", "kept %", "tokens", "top drop reasons"], [
            [r["stage"], f"{r['rows_in']:,}", f"{r['rows_out']:,}", kept_label(r["rows_in"], r["rows_out"]),
             f"{tokens(r):,}", r["top_drop"]] for r in rows]))
        lang_rows = [[r["stage"], lang, v["in"], v["out"], ", ".join(f"{k} ({n})" for k, n in
                                                                     list(v["dropped"].items())[:3])]
                     for r in rows for lang, v in r["by_lang"].items()]
        parts.append("<details><summary>per language</summary>"
                     + _table(["stage", "lang", "in", "out", "top drop reasons"], lang_rows) + "</details>")
        reasons = [[r["stage"], reason, f"{n:,}"] for r in rows for reason, n in r["dropped"].items()]
        if reasons:
            parts.append("<details><summary>every drop reason</summary>"
                         + _table(["stage", "reason", "rows"], reasons) + "</details>")
    plots = []
    if final is not None and final.rows:
        q = final.values("quality")
        if len(q):
            plots.append(_hist(q, "Judge quality score", "score (1-5)", bins=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5]))
        plots.append(_hist(final.values("instruction"), "Instruction length", "characters"))
        plots.append(_hist(final.values("response"), "Response length", "characters"))
    if clusters is not None and clusters.num_rows and "cluster" in clusters.column_names:
        chosen = (clusters.column("selected").to_pylist() if "selected" in clusters.column_names
                  else [True] * clusters.num_rows)
        sizes = sorted(c for c, keep in zip(clusters.column("cluster").to_pylist(), chosen, strict=True)
                       if keep and c is not None and c >= 0)
        if sizes:
            from collections import Counter

            counts = sorted(Counter(sizes).values(), reverse=True)
            plots.append(_bars([str(i) for i in range(len(counts))], counts, "Cluster sizes (selected)", "rows"))
    tok_rows = [(stage_label(r["stage"]), r["counters"].get("prompt_tokens", 0)
                 + r["counters"].get("completion_tokens", 0), r["seconds"]) for r in rows]
    if any(t for _, t, _ in tok_rows):
        plots.append(_bars([s for s, t, _ in tok_rows if t], [t for _, t, _ in tok_rows if t],
                           "Tokens per stage", "tokens"))
    if rows:
        plots.append(_bars([s for s, _, _ in tok_rows], [sec for _, _, sec in tok_rows], "Time per stage",
                           "seconds (sum over shards)"))
    if plots:
        parts.append("<h2>Distributions and cost</h2><div class='plots'>"
                     + "".join(f"<figure>{p}</figure>" for p in plots) + "</div>")
    if rows:
        parts.append(_table(["stage", "prompt tokens", "completion tokens", "LLM cache hits", "seconds"], [
            [r["stage"], f"{r['counters'].get('prompt_tokens', 0):,}",
             f"{r['counters'].get('completion_tokens', 0):,}", f"{r['counters'].get('llm_cache_hits', 0):,}",
             f"{r['seconds']:.1f}"] for r in rows]))
    if final is not None and final.rows:
        cols, sample = final.columns, final.sample
        short = [[(str(r[c])[:300] + ("…" if len(str(r[c])) > 300 else "")) if r[c] is not None else ""
                  for c in cols] for r in sample]
        parts.append("<h2>Sample rows</h2>" + _table(cols, short))
    parts.append(f"<p class='small'>From {html.escape(str(rundir))}/stats.json and final/.</p>")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title or rundir.name)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = rundir / "report.html"
    atomic_write_text(path, doc)
    return path


def console_summary(rundir: str | Path) -> list[Any]:
    """What a run prints at its end: a table of rows per stage with the biggest losses and, when nothing
    survived, which stage lost everything and what to try."""
    from rich.table import Table

    rows = funnel(json.loads((Path(rundir) / "stats.json").read_text()))
    table = Table(title="funnel", title_justify="left")
    for col in ("stage", "in", "out", "top drop reasons"):
        table.add_column(col, justify="right" if col in ("in", "out") else "left")
    for r in rows:
        table.add_row(r["stage"], f"{r['rows_in']:,}", f"{r['rows_out']:,}", r["top_drop"])
    out: list[Any] = [table]
    from rich.markup import escape

    why = diagnosis(rows)
    if why is not None:
        out.append(f"[yellow]{escape(why)}[/yellow]")
    for stage, text in warnings(rows):
        out.append(f"[yellow]Warning ({escape(stage_label(stage))}): {escape(text)}[/yellow]")
    return out


def warnings(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(stage, text) for every stage whose ``warn`` finds something in its counters (a judge that cannot tell
    pairs apart). The console, report.html and the dataset card all say the same."""
    checks = {s.key: s.warn for s in pipeline.PIPELINE if s.warn is not None}
    found = [(r["stage"], checks[r["stage"]](r["counters"])) for r in rows if r["stage"] in checks]
    return [(stage, text) for stage, text in found if text]


TRANSLATORS_ADVICE = ("a seq2seq MT model (--translator seq2seq --mt-model facebook/nllb-200-distilled-600M), or, "
                      "for Spanish, Catalan and Galician, Apertium on the CPU (--translator apertium, after apt-get "
                      "install apertium apertium-eng-spa)")


def _translation_stages() -> set[str]:
    """The stages that translate (they take --translator) and those that gate their output."""
    keys = {s.key for s in pipeline.PIPELINE if "translator" in {f.name for f in fields(s.settings_class)}}
    return keys | {s.key for s in pipeline.PIPELINE if s.reads in keys and not s.uses_model}


def _corpus_stages() -> set[str]:
    """The stages that turn corpora into fragments: every stage before the first that calls a model."""
    keys: set[str] = set()
    for s in pipeline.PIPELINE:
        if s.uses_model:
            break
        keys.add(s.key)
    return keys


def diagnosis(rows: list[dict[str, Any]]) -> str | None:
    """When a run kept nothing: the stage that lost every row, its reasons and what to do next; None otherwise.
    The console, report.html and the dataset card all say this same text."""
    lost = next((r for r in rows if r["rows_in"] and not r["rows_out"]), None)
    if lost is None:
        if rows and not rows[0]["rows_out"]:
            return "the corpus gave no fragment: check --input and --text-field."
        return None
    where = f"every row was dropped at {lost['stage']} ({lost['top_drop'] or 'no reason recorded'})."
    if lost["stage"] in _corpus_stages():
        return (f"{where} Check that --lang is the corpus's language, and the length, quality and LID thresholds "
                f"of [extract] (--min-len, --lid-threshold, --quality-config).")
    if lost["stage"] in _translation_stages():
        return (f"{where} With the small offline model this is expected for most languages: it cannot translate "
                f"them. Translate with {TRANSLATORS_ADVICE}, or give the LLM stages a stronger model (--model, or "
                f"per stage in --config).")
    return (f"{where} Give the LLM stages a stronger model (--model, or per stage in --config), or relax this "
            f"stage's thresholds in --config.")


def model_line(params: dict[str, Any]) -> str:
    """How the card names the model of a stage that calls one: engine and model (or the MT model), prompts."""
    if "apertium" in params:
        return "apertium " + ", ".join(f"{k} {v}" for k, v in params["apertium"].items())
    model = params.get("mt_model") or f"{params.get('engine', '')} {params.get('model', '')}".strip()
    prompts = [f"{v['prompt']}.v{v['version']}" for v in params.values()
               if isinstance(v, dict) and "prompt" in v and "version" in v]
    return model + (f" (prompts: {', '.join(prompts)})" if prompts else "")


def run_card(rundir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the dataset card says about how a run was made, read from the run itself: for every stage of the
    pipeline that has a line in the card (each that calls a model, the LID of stage 1), the models and prompt
    versions in its manifest; and the funnel of stats.json."""
    rundir = Path(rundir)
    models: dict[str, str] = {}
    for spec in pipeline.PIPELINE:
        line = spec.card or (model_line if spec.uses_model else None)
        if line is None:
            continue
        try:
            models[spec.label] = line(StageOutput.current(rundir, spec.key).manifest.get("params", {}))
        except SynthError:
            continue
    stats_path = rundir / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    rows = funnel(stats)
    return {"models": models, "funnel": rows, "diagnosis": diagnosis(rows),
            "warnings": [(stage_label(stage), text) for stage, text in warnings(rows)], **(extra or {})}
