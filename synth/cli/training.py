"""The model commands: ``train`` (SFT or LoRA on an export), ``mix`` (datasets mixed by language) and ``eval``."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer
from rich.table import Table

from synth.cli.common import (
    _fail,
    _split,
    app,
    console,
)
from synth.cli.settings import settings_command
from synth.config import parse_count, record
from synth.config import section as config_section
from synth.eval.settings import EvalSettings

# ---------------------------------------------------------------------------------------------------- train, mix, eval


def _lang_paths(values: list[str] | None, flag: str) -> list[str] | dict[str, list[str]] | None:
    """``PATH`` (rows grouped by their ``lang`` column) or ``LANG=PATH`` entries; one form per flag."""
    if not values:
        return None
    pairs = [v.partition("=") for v in values]
    keyed = [bool(sep) and not Path(v).exists() for v, (_, sep, _) in zip(values, pairs, strict=True)]
    if not any(keyed):
        return list(values)
    if not all(keyed):
        raise typer.BadParameter(f"{flag}: give every entry as PATH or every entry as LANG=PATH, not both")
    out: dict[str, list[str]] = {}
    for lang, _, path in pairs:
        out.setdefault(lang.strip(), []).append(path)
    return out


def _count0(text: str | None) -> int | None:
    """Like ``parse_count`` but 0 is allowed (an English-only mixture)."""
    return 0 if text is not None and text.strip() == "0" else parse_count(text)


def _bf16(text: str | bool | None) -> bool | str | None:
    if text is None or isinstance(text, bool):
        return text
    value = {"auto": "auto", "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        text.strip().lower())
    if value is None:
        raise typer.BadParameter(f"--bf16 must be auto, true or false, not {text!r}")
    return value


def _lr_grid(value: str | list | None) -> list[float] | None:
    if value is None:
        return None
    try:
        grid = [float(x) for x in (_split(value) if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise typer.BadParameter(f"--lr-sweep needs learning rates like 1e-4,3e-4,1e-3, not {value!r}") from None
    if not grid or any(x <= 0 for x in grid):
        raise typer.BadParameter(f"--lr-sweep needs positive learning rates, not {value!r}")
    return grid


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)



@app.command("train")
def train_cmd(
    data: list[Path] = typer.Argument(None, help="Exported datasets: a run directory (reads RUNDIR/final/data), "
                                      "RUNDIR/final, or export-schema Parquet files or folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: checkpoints/, model/ (merged), adapter/, "
                             "train_report.json, run.toml."),
    model: str = typer.Option(None, help="Base model: directory, hub name, or 'smollm2' (default)."),
    method: str = typer.Option(None, help="lora (default) or full."),
    lr: float = typer.Option(None, help="Learning rate (default 2e-4)."),
    epochs: float = typer.Option(None, help="Epochs (default 1); --max-steps wins."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    batch_size: int = typer.Option(None, help="Rows per device batch (default 8)."),
    grad_accum: int = typer.Option(None, help="Gradient accumulation steps (default 1)."),
    max_len: int = typer.Option(None, help="Max tokens per row (default 1024)."),
    lora_r: int = typer.Option(None, "--lora-rank", "--lora-r", help="LoRA rank (default 16)."),
    lora_alpha: int = typer.Option(None, help="LoRA alpha (default 32)."),
    lora_targets: str = typer.Option(None, help="LoRA target modules, comma-separated (default "
                                     "q_proj,k_proj,v_proj,o_proj), or all-linear."),
    val_data: list[str] = typer.Option(None, "--val-data", help="Validation set, split by its lang column, or "
                                       "LANG=PATH; repeatable. Picks the checkpoint (and LR) on the mean "
                                       "per-language loss."),
    lr_sweep: str = typer.Option(None, help="Learning-rate grid, e.g. 1e-4,3e-4,1e-3: one run each under "
                                 "OUT/lr_<lr>/, the LR chosen on multilingual validation (needs --val-data)."),
    langs: str = typer.Option(None, help="Train only on these languages (comma-separated)."),
    eval_steps: int = typer.Option(None, help="Validate every N steps (default: 5 times per run)."),
    save_steps: int = typer.Option(None, help="Checkpoint every N steps (a multiple of --eval-steps)."),
    seed: int = typer.Option(None, help="Seed (default 0)."),
    bf16: str = typer.Option(None, help="auto (default: where the GPU supports it), true or false."),
    merge: bool = typer.Option(None, "--merge/--no-merge", help="LoRA: also write the merged model to OUT/model "
                               "(default: yes, and no in a sweep)."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue from OUT's last checkpoint."),
    logging_steps: int = typer.Option(None, help="Log the training loss every N steps (default 10; the first "
                                      "step is always logged)."),
    config: Path = typer.Option(None, help="A run.toml; flags override its \\[train] section."),
) -> None:
    """Fine-tune a model (LoRA or full) on exported datasets, with multilingual validation."""

    from synth.config import ConfigError
    from synth.models import ModelNotFound
    from synth.train.sft import lr_sweep as run_sweep
    from synth.train.sft import make_trainer, train

    defaults = {k: p.default for fn in (make_trainer, train) for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    defaults.update(data=None, model="smollm2", lr_sweep=None, langs=None, merge=None)
    flags = {"data": [str(d) for d in data] if data else None, "model": model, "method": method, "lr": lr,
             "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum,
             "max_len": max_len, "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_targets": _split(lora_targets),
             "val_data": _lang_paths(val_data, "--val-data"), "lr_sweep": _lr_grid(lr_sweep), "langs": _split(langs),
             "eval_steps": eval_steps, "save_steps": save_steps, "seed": seed, "bf16": bf16, "merge": merge,
             "resume": resume, "logging_steps": logging_steps}
    try:
        cfg = config_section(config, "train", defaults, flags, whole=("data", "val_data", "lora_targets"))
        if not cfg["data"]:
            raise ConfigError("give the training data (DATA arguments, or data = [...] in the config's [train])")
        if cfg["method"] not in ("lora", "full"):
            raise ConfigError(f"--method must be lora or full, not {cfg['method']!r}")
        grid = _lr_grid(cfg.pop("lr_sweep"))
        if grid and not cfg["val_data"]:
            raise ConfigError("--lr-sweep chooses the learning rate on validation loss: give --val-data")
        cfg["bf16"] = _bf16(cfg["bf16"])
        targets = cfg["lora_targets"]
        cfg["lora_targets"] = targets[0] if isinstance(targets, list) and len(targets) == 1 else targets
        record(out, {"train": {**cfg, "lr_sweep": grid}})
        kwargs = {k: v for k, v in cfg.items() if v is not None and k not in ("data", "model")}
        if grid:
            kwargs.pop("lr", None)
            sweep = run_sweep(grid, cfg["data"], cfg["model"], out, **kwargs)
        else:
            report = train(cfg["data"], cfg["model"], out, **kwargs)
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


@app.command("mix")
def mix_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output: train/part-00000.parquet, val/<lang>.parquet, "
                             "manifest.json, run.toml."),
    english: list[str] = typer.Option(None, help="English rows (lang 'eng'): run directories or Parquet; "
                                      "repeatable."),
    lang_data: list[str] = typer.Option(None, "--lang-data", help="Multilingual rows: PATH (grouped by its lang "
                                        "column) or LANG=PATH; repeatable."),
    budget: str = typer.Option(None, help="Training rows in all (suffixes k, M)."),
    share: float = typer.Option(None, help="The multilingual share of the budget, 0-1."),
    n_multilingual: str = typer.Option(None, help="Or: the multilingual row count, spread evenly over the seen "
                                       "languages."),
    langs: str = typer.Option(None, help="Languages to mix (comma-separated; default all found)."),
    unseen: str = typer.Option(None, help="Languages held out of training (comma-separated), or a number of "
                               "them drawn with --seed."),
    n_val: int = typer.Option(None, help="Validation rows per language (seen, unseen and English), disjoint "
                              "from training."),
    seed: int = typer.Option(None, help="Seed (default 0): same inputs and seed, same files."),
    config: Path = typer.Option(None, help="A run.toml; flags override its \\[mix] section."),
) -> None:
    """An English + multilingual training mixture with exact, evenly spread per-language counts."""
    from synth.config import ConfigError
    from synth.train.mix import MixError, mix

    unseen_value: list[str] | int | None = None
    if unseen is not None:
        unseen_value = int(unseen) if unseen.strip().isdigit() else _split(unseen)
    defaults = {"english": None, "lang_data": None, "budget": None, "share": None, "n_multilingual": None,
                "langs": None, "unseen": None, "n_val": 0, "seed": 0}
    try:
        flags = {"english": english or None, "lang_data": _lang_paths(lang_data, "--lang-data"),
                 "budget": parse_count(budget), "share": share, "n_multilingual": _count0(n_multilingual),
                 "langs": _split(langs), "unseen": unseen_value, "n_val": n_val, "seed": seed}
        cfg = config_section(config, "mix", defaults, flags, whole=("english", "lang_data", "unseen", "langs"))
        cfg["budget"] = parse_count(cfg["budget"])
        missing = [f"--{k.replace('_', '-')}" for k in ("english", "lang_data", "budget") if cfg[k] is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (as flags or in the config's [mix])")
        if cfg["share"] is None and cfg["n_multilingual"] is None:
            raise ConfigError("give --share (a fraction of the budget) or --n-multilingual (a row count)")
        record(out, {"mix": cfg})
        report = mix(cfg["english"], cfg["lang_data"], budget=cfg["budget"], out=out, share=cfg["share"],
                     n_multilingual=cfg["n_multilingual"], langs=cfg["langs"], unseen=cfg["unseen"],
                     n_val=cfg["n_val"], seed=cfg["seed"])
    except (ConfigError, MixError, ValueError, FileNotFoundError) as e:
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


settings_command("eval", EvalSettings, _eval, help="Evaluate a model per language: response language, ROUGE, "
                 "chrF++/BLEU, multiple choice, LLM judges, and lm-evaluation-harness tasks.",
                 out_help="Output: results.json, table.json, items.jsonl, report.html, run.toml.")
