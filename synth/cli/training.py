"""The model commands: ``train`` (SFT or LoRA on an export), ``mix`` (datasets mixed by language) and ``eval``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from synth.cli.common import (
    _fail,
    console,
)
from synth.cli.settings import settings_command
from synth.eval.settings import EvalSettings
from synth.train.settings import MixSettings, TrainSettings

# ---------------------------------------------------------------------------------------------------- train, mix, eval


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)



def _train(s: TrainSettings, out: Path) -> None:
    """``synth train``'s work, on its settings (the command is made from ``TrainSettings``)."""
    from synth.config import ConfigError
    from synth.models import ModelNotFound
    from synth.train.sft import lr_sweep as run_sweep
    from synth.train.sft import train

    grid = s.lr_sweep
    try:
        if grid:
            sweep = run_sweep(grid, s.data, s.model, out, **s.trainer_kwargs())
        else:
            report = train(s.data, s.model, out, **s.trainer_kwargs())
    except (ConfigError, ModelNotFound, ValueError, OSError, RuntimeError) as e:
        _fail(e)
    if grid:
        table = Table(title=f"learning-rate sweep → best {sweep.best_lr:g}")
        langs_seen = sorted({lang for r in sweep.runs for lang in r["best_val_per_lang"]})
        for col in ("lr", "best step", "multilingual val loss", *langs_seen, "out"):
            table.add_column(col, justify="left" if col == "out" else "right")
        for r in sweep.runs:
            table.add_row(f"{r['lr']:g}", _fmt(r["best_step"]), _fmt(r["best_val_loss"]),
                          *[_fmt(r["best_val_per_lang"].get(lang)) for lang in langs_seen], r["out"],
                          style="bold green" if r["lr"] == sweep.best_lr else "")
        console.print(table)
        console.print(f"  per-language table: {out / 'sweep.json'}")
        return
    rows = ", ".join(f"{lang} {n:,}" for lang, n in report.train_langs.items())
    steps = f"{report.steps} step{'s' * (report.steps != 1)}"
    console.print(f"[green]{report.method} fine-tuned {report.model}[/green]: {steps} on "
                  f"{report.train_rows:,} rows ({rows}) in {report.runtime_s:.0f} s")
    console.print(f"  training loss {_fmt(report.first_loss)} → {_fmt(report.last_loss)}")
    if report.best_val_loss is not None:
        per = ", ".join(f"{lang} {v:.3f}" for lang, v in report.best_val_per_lang.items())
        console.print(f"  best multilingual validation loss {report.best_val_loss:.3f} at step {report.best_step} "
                      f"({per})")
    for label, path in (("model", report.model_dir), ("adapter", report.adapter_dir)):
        if path:
            console.print(f"  {label}: {path}")
    console.print(f"  report: {Path(report.out) / 'train_report.json'}")


def _mix(s: MixSettings, out: Path) -> None:
    """``synth mix``'s work, on its settings (the command is made from ``MixSettings``)."""
    from synth.train.mix import MixError, mix

    try:
        report = mix(s.english, s.lang_data, budget=s.budget, out=out, share=s.share, n_multilingual=s.n_multilingual,
                     langs=s.langs, unseen=s.unseen, n_val=s.n_val, seed=s.seed)
    except (MixError, ValueError, FileNotFoundError) as e:
        _fail(e)
    table = Table(title=f"{report.budget:,} training rows: {report.n_english:,} English + "
                        f"{report.n_multilingual:,} multilingual")
    for col in ("lang", "train", "val", "available", "split"):
        table.add_column(col, justify="left" if col in ("lang", "split") else "right")
    for lang, n in report.per_lang.items():
        split = "english" if lang == "eng" else "unseen" if lang in report.unseen else "seen"
        table.add_row(lang, f"{n:,}", f"{report.val_per_lang.get(lang, 0):,}", f"{report.available[lang]:,}", split)
    console.print(table)
    console.print(f"[green]mixture[/green] → {report.train_path}  (manifest: {Path(report.out) / 'manifest.json'})")


EVAL_COLUMNS = ("lang_correct", "code_switch", "rouge1", "rougeL", "chrf_into", "chrf_from", "bleu_into", "mc_acc",
                "judge_mean", "pairwise_win_rate")


def _eval_model(model: str) -> str:
    """A ``synth train`` output directory stands for its merged model (``OUT/model``)."""
    path = Path(model)
    if (path / "train_report.json").exists() and not (path / "config.json").exists():
        if (path / "model" / "config.json").exists():
            return str(path / "model")
        raise typer.BadParameter(f"{path} holds a LoRA adapter but no merged model: train with --merge")
    return model


def _harness(s: EvalSettings, out: Path) -> None:
    """Run the harness tasks of ``s`` and print their table (what ``OUT/harness.json`` holds)."""
    from synth.eval.harness import run_harness
    from synth.lang import canonical
    from synth.models import resolve_model

    langs = {canonical(lang) for lang in s.langs} if s.langs else None
    res = run_harness(resolve_model(_eval_model(s.model)), s.harness, out, s.data, langs=langs, limit=s.limit)
    table = Table(title=f"lm-evaluation-harness {res['lm_eval']} on {res['device']}: {res['model']}")
    for col in ("task", "metric", "value", "± stderr", "n"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, scores in res["tasks"].items():
        n = res["n_samples"].get(task, {}).get("effective")
        for metric, value in scores.items():
            table.add_row(task, metric, _fmt(value, 3), _fmt(res["stderr"][task].get(metric), 3), _fmt(n))
    console.print(table)
    console.print(f"[green]harness[/green] → {out / 'harness.json'} (task configs: {out / 'harness_tasks'})")


def _eval(s: EvalSettings, out: Path) -> None:
    """``synth eval``'s work, on its settings (the command is made from ``EvalSettings``)."""
    from synth.config import ConfigError
    from synth.eval import evaluate
    from synth.models import ModelNotFound

    try:
        if s.harness:
            _harness(s, out)
            if not s.tasks:
                return
        res = evaluate(_eval_model(s.model), tasks=s.tasks, langs=s.langs, data_dir=s.data, engine=s.engine,
                       out_dir=out, judge_model=s.judge_model, judge_engine=s.judge_engine,
                       baseline_model=s.baseline_model, limit=s.limit, max_new_tokens=s.max_tokens,
                       judge_max_tokens=s.judge_max_tokens, mc_format=s.mc_format, lid=s.lid,
                       engine_options=s.engine_options, cache=s.cache)
    except (ConfigError, ModelNotFound, ValueError, FileNotFoundError, OSError) as e:
        _fail(e)
    metrics = [m for m in EVAL_COLUMNS if any(m in row for row in res["table"].values())]
    table = Table(title=f"{res['model']}: {', '.join(res['tasks'])}")
    for col in ("lang", *metrics):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang, row in res["table"].items():
        table.add_row(lang, *[_fmt(row.get(m), 2) for m in metrics])
    console.print(table)
    for task, why in res["skipped"].items():
        console.print(f"  skipped {task}: {why}")
    if res["meta"].get("judge", {}).get("self_judged"):
        console.print("  [yellow]the model judged itself[/yellow] (--judge-model for another judge)")
    console.print(f"[green]{len(res['langs'])} languages[/green] → {out / 'table.json'}, {out / 'report.html'} "
                  f"({res['meta']['runtime_s']:.0f} s)")


settings_command("train", TrainSettings, _train, help="Fine-tune a model (LoRA or full) on exported datasets, with "
                 "multilingual validation.", out_help="Output: checkpoints/, model/ (merged), adapter/, "
                 "train_report.json, run.toml.")
settings_command("mix", MixSettings, _mix, help="An English + multilingual training mixture with exact, evenly "
                 "spread per-language counts.", out_help="Output: train/part-00000.parquet, val/<lang>.parquet, "
                 "manifest.json, run.toml.")
settings_command("eval", EvalSettings, _eval, help="Evaluate a model per language: response language, ROUGE, "
                 "chrF++/BLEU, multiple choice, LLM judges, and lm-evaluation-harness tasks.",
                 out_help="Output: results.json, table.json, items.jsonl, report.html, run.toml.")
