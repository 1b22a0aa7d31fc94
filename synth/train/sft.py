"""Supervised fine-tuning (LoRA or full) on exported synth datasets, with TRL's ``SFTTrainer``.

Input: Parquet files or folders (``RUNDIR/final/``) in the export schema: ``id``, ``lang`` (ISO 639-3),
``messages`` (``[{"role": "user", ...}, {"role": "assistant", ...}]``), ``instruction``, ``response``, plus
optional columns that are ignored. Rows without ``messages`` but with ``instruction``/``response`` are turned
into a two-turn chat.

Loss is on the assistant turn only: every row becomes TRL's conversational *prompt-completion* form (prompt = all
turns before the last, completion = the last, assistant, turn), so the chat template renders both, TRL marks the
prompt tokens ``-100`` in ``labels`` and only the answer (with its end-of-turn token) is learnt. Unlike TRL's
``assistant_only_loss`` this needs no ``{% generation %}`` markers, so it works with any chat template
(SmolLM2's has none).

Validation (``val_data``) is split by ``lang``; each language is evaluated on its own and the *multilingual
validation loss* is the unweighted mean of the per-language losses, so a large language does not drown a small
one. The best checkpoint is chosen on it, and ``lr_sweep`` chooses the learning rate on it (Chirkova & Nikoulina
2024: learning rate chosen on multilingual validation).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synth.io import atomic_write_text
from synth.lang import UNDETERMINED, canonical
from synth.models import resolve_model
from synth.train.settings import DEFAULT_TARGETS, METHODS, TrainSettings

BEST_METRIC = "multilingual_loss"  # logged as eval_multilingual_loss


# ---------------------------------------------------------------------------------------------------- data


def parquet_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Parquet files under the given files or folders (recursively, hidden temp files skipped), in path order.

    A run directory (one holding ``final/data/``) stands for its exported dataset, so ``synth train runs/sw``
    reads ``runs/sw/final/data`` and not the stage outputs next to it.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "final" / "data").is_dir():
            p = p / "final" / "data"
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.parquet")
                           if not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no .parquet files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such Parquet file or folder")
    return files


def _to_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    msgs = row.get("messages")
    if not msgs:
        if not row.get("instruction") or not row.get("response"):
            raise ValueError(f"row {row.get('id')!r}: neither messages nor instruction/response")
        msgs = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["response"]}]
    msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise ValueError(f"row {row.get('id')!r}: the last message must be the assistant's answer to a prompt")
    return {"prompt": msgs[:-1], "completion": msgs[-1:], "lang": canonical(row.get("lang") or UNDETERMINED)}


def load_sft_dataset(paths: str | Path | Iterable[str | Path], langs: Sequence[str] | None = None,
                     cache_dir: str | Path | None = None) -> Any:
    """A ``datasets.Dataset`` with ``prompt``/``completion`` chats and ``lang``, read from export-schema Parquet.

    ``langs`` keeps only those languages (any spelling ``synth.lang.canonical`` knows); the rows' own
    ``lang`` is made canonical too.
    """
    import datasets
    import pyarrow.parquet as pq

    files = parquet_files(paths)
    names = set(pq.read_schema(files[0]).names)
    wanted = [c for c in ("id", "lang", "messages", "instruction", "response") if c in names]
    if "messages" not in names and not {"instruction", "response"} <= names:
        raise ValueError(f"{files[0]}: needs a 'messages' column (or 'instruction' and 'response'); "
                         f"has {sorted(names)}")
    ds = datasets.Dataset.from_parquet([str(f) for f in files], columns=wanted,
                                       cache_dir=str(cache_dir) if cache_dir else None)
    ds = ds.map(_to_prompt_completion, remove_columns=ds.column_names)
    if langs:
        keep = {canonical(x) for x in langs}
        ds = ds.filter(lambda r: r["lang"] in keep)
    if len(ds) == 0:
        raise ValueError(f"no training rows in {', '.join(map(str, files))}" + (f" for {langs}" if langs else ""))
    return ds


def split_by_lang(ds: Any) -> dict[str, Any]:
    """One dataset per language (sorted by code)."""
    langs = sorted(set(ds["lang"]))
    return {lang: ds.filter(lambda r, lang=lang: r["lang"] == lang) for lang in langs}


def _load_val(val_data: Any, cache_dir: Path) -> dict[str, Any]:
    """``val_data``: paths (split by their ``lang`` column) or ``{lang: path}``."""
    if isinstance(val_data, dict):
        out = {}
        for lang, path in sorted(val_data.items()):
            code = canonical(lang)
            out[code] = load_sft_dataset(path, langs=[code], cache_dir=cache_dir)
        return out
    return split_by_lang(load_sft_dataset(val_data, cache_dir=cache_dir))


# ---------------------------------------------------------------------------------------------------- report


@dataclass
class TrainReport:
    """What a training run did; ``model_dir`` is what ``synth eval`` (or vLLM) loads."""

    model: str
    method: str
    out: str
    model_dir: str | None
    adapter_dir: str | None
    lr: float
    bf16: bool
    train_rows: int  # rows trained on
    train_langs: dict[str, int]  # rows loaded, per language (before TRL drops fully truncated answers)
    val_rows: dict[str, int]
    steps: int
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, logged training loss)
    val_history: list[dict[str, Any]] = field(default_factory=list)  # {"step", "multilingual", "per_lang"}
    best_step: int | None = None
    best_checkpoint: str | None = None
    best_val_loss: float | None = None  # multilingual: mean of the per-language losses
    best_val_per_lang: dict[str, float] = field(default_factory=dict)
    runtime_s: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    loaded_rows: int | None = None

    @property
    def first_loss(self) -> float | None:
        return self.train_loss[0][1] if self.train_loss else None

    @property
    def last_loss(self) -> float | None:
        return self.train_loss[-1][1] if self.train_loss else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "first_loss": self.first_loss, "last_loss": self.last_loss}


@dataclass
class SweepReport:
    """Learning-rate sweep: one run per LR, the LR chosen on multilingual validation loss."""

    best_lr: float
    runs: list[dict[str, Any]]  # {"lr", "out", "best_val_loss", "best_val_per_lang", "best_step"}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "trl", "peft", "datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _history(log_history: list[dict[str, Any]], langs: Iterable[str]) -> tuple[list, list]:
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    by_step: dict[int, dict[str, Any]] = {}
    for e in log_history:
        step = e.get("step")
        if step is None:
            continue
        for lang in langs:
            if f"eval_{lang}_loss" in e:
                entry = by_step.setdefault(step, {"step": step, "per_lang": {}})
                entry["per_lang"][lang] = float(e[f"eval_{lang}_loss"])
        if f"eval_{BEST_METRIC}" in e:
            entry = by_step.setdefault(step, {"step": step, "per_lang": {}})
            entry["multilingual"] = float(e[f"eval_{BEST_METRIC}"])
    return train, [by_step[s] for s in sorted(by_step)]


# ---------------------------------------------------------------------------------------------------- trainer


def _use_bf16(bf16: bool | str) -> bool:
    import torch

    available = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if bf16 == "auto":
        return available
    if bf16 and not available:
        raise ValueError("bf16=True but this device has no bf16 support (CPU training runs in fp32): use bf16='auto'")
    return bool(bf16)


def _trainer_class() -> type:
    from trl import SFTTrainer

    class MultilingualSFTTrainer(SFTTrainer):
        """Adds ``eval_multilingual_loss`` (mean of the per-language eval losses) when evaluating a dict."""

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if eval_dataset is None and isinstance(self.eval_dataset, dict):
                losses = [metrics[k] for name in self.eval_dataset
                          if (k := f"{metric_key_prefix}_{name}_loss") in metrics]
                if losses:
                    key = f"{metric_key_prefix}_{BEST_METRIC}"
                    metrics[key] = sum(losses) / len(losses)
                    self.log({key: metrics[key]})
            return metrics

    return MultilingualSFTTrainer


def make_trainer(
    data: str | Path | Sequence[str | Path],
    model: str,
    out: str | Path,
    *,
    method: str = TrainSettings.method,
    lr: float = TrainSettings.lr,
    epochs: float = TrainSettings.epochs,
    max_steps: int | None = None,
    batch_size: int = TrainSettings.batch_size,
    grad_accum: int = TrainSettings.grad_accum,
    max_len: int = TrainSettings.max_len,
    lora_r: int = TrainSettings.lora_r,
    lora_alpha: int = TrainSettings.lora_alpha,
    lora_dropout: float = TrainSettings.lora_dropout,
    lora_targets: Sequence[str] | str = DEFAULT_TARGETS,
    val_data: Sequence[str | Path] | dict[str, str | Path] | None = None,
    eval_steps: int | None = None,
    save_steps: int | None = None,
    save_total_limit: int | None = TrainSettings.save_total_limit,
    logging_steps: int = TrainSettings.logging_steps,
    warmup: float = TrainSettings.warmup,
    seed: int = TrainSettings.seed,
    bf16: bool | str = TrainSettings.bf16,
    gradient_checkpointing: bool | None = None,
    langs: Sequence[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build the ``SFTTrainer`` ``train`` runs (without training), and what was decided for it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    out = Path(out)
    cache = out / ".datasets_cache"
    train_ds = load_sft_dataset([data] if isinstance(data, (str, Path)) else data, langs=langs, cache_dir=cache)
    val = _load_val([val_data] if isinstance(val_data, (str, Path)) else val_data, cache) if val_data else {}

    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / batch_size) / grad_accum)
    total = max_steps if max_steps else max(1, math.ceil(steps_per_epoch * epochs))
    if val:
        eval_steps = eval_steps or max(1, total // 5)
        save_steps = save_steps or eval_steps
        if save_steps % eval_steps:
            raise ValueError(f"save_steps ({save_steps}) must be a multiple of eval_steps ({eval_steps}) so the "
                             "best checkpoint on multilingual validation is one that was saved")
    else:
        save_steps = save_steps or max(1, total // 5)

    use_bf16 = _use_bf16(bf16)
    on_gpu = torch.cuda.is_available()
    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"{model}: the tokenizer has no chat template; train an instruct model or add one")
    # LoRA: frozen base weights in bf16 where available (adapters stay fp32); full fine-tuning keeps fp32 master
    # weights and trains under bf16 autocast, since AdamW updates on bf16 weights lose small steps.
    dtype = torch.bfloat16 if use_bf16 and method == "lora" else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)

    peft_config = None
    if method == "lora":
        from peft import LoraConfig

        targets = lora_targets if isinstance(lora_targets, str) else list(lora_targets)
        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                 target_modules=targets, bias="none", task_type="CAUSAL_LM")

    config = SFTConfig(
        output_dir=str(out / "checkpoints"),
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=max_steps or -1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_length=max_len,
        completion_only_loss=True,
        warmup_steps=warmup,
        logging_steps=logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if val else "no",
        eval_steps=eval_steps if val else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        load_best_model_at_end=bool(val),
        metric_for_best_model=BEST_METRIC if val else None,
        greater_is_better=False if val else None,
        seed=seed,
        data_seed=seed,
        bf16=use_bf16,
        fp16=False,
        gradient_checkpointing=on_gpu if gradient_checkpointing is None else gradient_checkpointing,
        dataloader_pin_memory=on_gpu,
        report_to="none",
        dataset_num_proc=None,
    )
    trainer = _trainer_class()(
        model=lm,
        args=config,
        train_dataset=train_ds.remove_columns("lang"),
        eval_dataset={lang: ds.remove_columns("lang") for lang, ds in val.items()} or None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    info = {
        "method": method,
        "lr": lr,
        "path": path,
        "bf16": use_bf16,
        "steps": total,
        "train_rows": len(trainer.train_dataset),  # TRL drops rows whose answer was truncated away entirely
        "loaded_rows": len(train_ds),
        "train_langs": {k: int(v) for k, v in sorted(_counts(train_ds["lang"]).items())},
        "val_rows": {lang: len(ds) for lang, ds in val.items()},
        "tokenizer": tokenizer,
    }
    return trainer, info


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def train(
    data: str | Path | Sequence[str | Path],
    model: str,
    out: str | Path,
    *,
    merge: bool = True,
    resume: bool = TrainSettings.resume,
    **settings: Any,
) -> TrainReport:
    """Fine-tune ``model`` on ``data`` and write ``out/``.

    ``out/checkpoints/`` holds the Trainer checkpoints; ``out/model/`` the final model (for LoRA the adapter merged
    into the base weights when ``merge``, so any engine loads it) and ``out/adapter/`` the LoRA adapter;
    ``out/train_report.json`` the report. With ``val_data``, the model kept is the checkpoint with the lowest
    multilingual validation loss. ``bf16="auto"``: bf16 where the GPU supports it, else fp32 (CPU). ``resume``:
    continue from the last checkpoint in ``out/checkpoints/`` when there is one (same data and settings).
    ``settings`` are ``make_trainer``'s keyword arguments (``method``, ``lr``, ``epochs``, ``max_steps``,
    ``batch_size``, ``lora_r``, ``val_data``, ``eval_steps``, ``seed``, ``bf16``, ``lora_dropout``…).
    """
    t0 = time.perf_counter()
    out = Path(out)
    trainer, info = make_trainer(data, model, out, **settings)
    method = info["method"]
    has_checkpoint = any((out / "checkpoints").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume and has_checkpoint else None)
    tokenizer = info["tokenizer"]
    state = trainer.state
    langs = list(info["val_rows"])
    train_loss, val_history = _history(state.log_history, langs)

    model_dir = adapter_dir = None
    if method == "lora":
        adapter_dir = out / "adapter"
        trainer.save_model(str(adapter_dir))
        if merge:
            merged = trainer.model.merge_and_unload()
            model_dir = out / "model"
            merged.save_pretrained(str(model_dir))
            tokenizer.save_pretrained(str(model_dir))
    else:
        model_dir = out / "model"
        trainer.save_model(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))

    best_step = state.best_global_step if langs else None
    best = next((h for h in val_history if h["step"] == best_step), None)
    report = TrainReport(
        model=model,
        method=method,
        out=str(out),
        model_dir=str(model_dir) if model_dir else None,
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        lr=info["lr"],
        bf16=info["bf16"],
        train_rows=info["train_rows"],
        train_langs=info["train_langs"],
        val_rows=info["val_rows"],
        steps=state.global_step,
        train_loss=train_loss,
        val_history=val_history,
        best_step=best_step,
        best_checkpoint=state.best_model_checkpoint,
        best_val_loss=state.best_metric if langs else None,
        best_val_per_lang=best["per_lang"] if best else {},
        runtime_s=round(time.perf_counter() - t0, 2),
        versions=_versions(),
        loaded_rows=info["loaded_rows"],
    )
    atomic_write_text(out / "train_report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return report


def lr_sweep(
    grid: Sequence[float],
    data: str | Path | Sequence[str | Path],
    model: str,
    out: str | Path,
    val_data: Sequence[str | Path] | dict[str, str | Path],
    merge: bool = False,
    **train_kwargs: Any,
) -> SweepReport:
    """Train once per learning rate in ``grid`` (``out/lr_<lr>/``) and choose the LR on multilingual validation.

    Every run uses the same data, seed and settings; the chosen LR is the one whose best checkpoint has the lowest
    mean per-language validation loss. ``out/sweep.json`` holds the per-language table.
    """
    if not val_data:
        raise ValueError("lr_sweep needs val_data: the learning rate is chosen on multilingual validation loss")
    if not grid:
        raise ValueError("lr_sweep needs at least one learning rate")
    out = Path(out)
    runs = []
    for lr in grid:
        rep = train(data, model, out / f"lr_{lr:g}", lr=lr, val_data=val_data, merge=merge, **train_kwargs)
        runs.append({"lr": lr, "out": rep.out, "best_val_loss": rep.best_val_loss,
                     "best_val_per_lang": rep.best_val_per_lang, "best_step": rep.best_step,
                     "model_dir": rep.model_dir, "adapter_dir": rep.adapter_dir})
    scored = [r for r in runs if r["best_val_loss"] is not None and math.isfinite(r["best_val_loss"])]
    if not scored:
        raise RuntimeError("no run in the sweep produced a finite validation loss")
    best = min(scored, key=lambda r: r["best_val_loss"])
    report = SweepReport(best_lr=best["lr"], runs=runs)
    atomic_write_text(out / "sweep.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return report
