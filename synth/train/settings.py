"""What ``synth train`` and ``synth mix`` take: every setting with its default, stated here once, and the help and
form of its option (``synth.config.option``); the commands' options are made from these classes
(``synth.cli.settings``), and ``synth.train.sft``/``synth.train.mix`` default to the same values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.config import ConfigError, option, parse_count, split_list

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
METHODS = ("lora", "full")


def parse_lang_paths(values: list[str] | dict | None) -> list[str] | dict[str, list[str]] | None:
    """``PATH`` (rows grouped by their ``lang`` column) or ``LANG=PATH`` entries; one form per flag. A table from
    a config (``{lang = path}``) stays as it is."""
    if not values or isinstance(values, dict):
        return values or None
    values = [str(v) for v in ([values] if isinstance(values, str | Path) else values)]
    pairs = [v.partition("=") for v in values]
    keyed = [bool(sep) and not Path(v).exists() for v, (_, sep, _) in zip(values, pairs, strict=True)]
    if not any(keyed):
        return list(values)
    if not all(keyed):
        raise ConfigError("give every entry as PATH or every entry as LANG=PATH, not both")
    out: dict[str, list[str]] = {}
    for lang, _, path in pairs:
        out.setdefault(lang.strip(), []).append(path)
    return out


def parse_bf16(text: str | bool | None) -> bool | str | None:
    """``auto``, ``true`` or ``false`` (and their spellings)."""
    if text is None or isinstance(text, bool):
        return text
    value = {"auto": "auto", "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        text.strip().lower())
    if value is None:
        raise ConfigError(f"--bf16 must be auto, true or false, not {text!r}")
    return value


def parse_lr_grid(value: str | list | None) -> list[float] | None:
    """``1e-4,3e-4,1e-3`` → the learning rates of a sweep."""
    if value is None:
        return None
    try:
        grid = [float(x) for x in (split_list(value) if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise ConfigError(f"--lr-sweep needs learning rates like 1e-4,3e-4,1e-3, not {value!r}") from None
    if not grid or any(x <= 0 for x in grid):
        raise ConfigError(f"--lr-sweep needs positive learning rates, not {value!r}")
    return grid


def parse_count0(text: str | int | None) -> int | None:
    """Like ``parse_count`` but 0 is allowed (an English-only mixture)."""
    return 0 if text is not None and str(text).strip() == "0" else parse_count(text)


@dataclass
class TrainSettings:
    data: list[str] | None = option(None, "Exported datasets: a run directory (reads RUNDIR/final/data), "
                                    "RUNDIR/final, or export-schema Parquet files or folders.", argument=True,
                                    many=True, whole=True)
    model: str = option("smollm2", "Base model: directory, hub name, or 'smollm2'.")
    method: str = option("lora", "lora or full.")
    lr: float = option(2e-4, "Learning rate.")
    epochs: float = option(1.0, "Epochs; --max-steps wins.")
    max_steps: int | None = option(None, "Stop after this many optimizer steps.")
    batch_size: int = option(8, "Rows per device batch.")
    grad_accum: int = option(1, "Gradient accumulation steps.")
    max_len: int = option(1024, "Max tokens per row.")
    lora_r: int = option(16, "LoRA rank.", flag="--lora-rank", alias="--lora-r")
    lora_alpha: int = option(32, "LoRA alpha.")
    lora_dropout: float = 0.05
    lora_targets: list[str] | str = option(list(DEFAULT_TARGETS), "LoRA target modules, comma-separated, or "
                                           "all-linear.", parse=split_list, whole=True)
    val_data: list[str] | dict[str, Any] | None = option(
        None, "Validation set, split by its lang column, or LANG=PATH; repeatable. Picks the checkpoint (and LR) on "
        "the mean per-language loss.", parse=parse_lang_paths, many=True, whole=True)
    lr_sweep: list[float] | None = option(None, "Learning-rate grid, e.g. 1e-4,3e-4,1e-3: one run each under "
                                          "OUT/lr_<lr>/, the LR chosen on multilingual validation (needs --val-data).",
                                          parse=parse_lr_grid)
    langs: list[str] | None = option(None, "Train only on these languages (comma-separated).", parse=split_list,
                                     whole=True)
    eval_steps: int | None = option(None, "Validate every N steps (default: 5 times per run).")
    save_steps: int | None = option(None, "Checkpoint every N steps (a multiple of --eval-steps).")
    save_total_limit: int | None = 2
    logging_steps: int = option(10, "Log the training loss every N steps (the first step is always logged).")
    warmup: float = 0.0
    seed: int = option(0, "Seed.")
    bf16: bool | str = option("auto", "auto (where the GPU supports it), true or false.", parse=parse_bf16)
    gradient_checkpointing: bool | None = None
    merge: bool | None = option(None, "LoRA: also write the merged model to OUT/model (default: yes, and no in a "
                                "sweep).")
    resume: bool = option(False, "Continue from OUT's last checkpoint.")

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("give the training data (DATA arguments, or data = [...] in the config's [train])")
        if self.method not in METHODS:
            raise ConfigError(f"--method must be lora or full, not {self.method!r}")
        self.lr_sweep, self.bf16 = parse_lr_grid(self.lr_sweep), parse_bf16(self.bf16)
        if self.lr_sweep and not self.val_data:
            raise ConfigError("--lr-sweep chooses the learning rate on validation loss: give --val-data")
        targets = split_list(self.lora_targets) if isinstance(self.lora_targets, str) else self.lora_targets
        self.lora_targets = targets[0] if isinstance(targets, list) and len(targets) == 1 else targets

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``synth.train.sft.train`` (and of each run of a sweep, without ``lr``): every
        setting that is set, except the data, the model and the sweep's grid."""
        skip = {"data", "model", "lr_sweep", *(("lr",) if self.lr_sweep else ())}
        return {k: v for k, v in vars(self).items() if v is not None and k not in skip}


@dataclass
class MixSettings:
    english: list[str] | None = option(None, "English rows (lang 'eng'): run directories or Parquet; repeatable.",
                                       many=True, whole=True)
    lang_data: list[str] | dict[str, Any] | None = option(None, "Multilingual rows: PATH (grouped by its lang "
                                                          "column) or LANG=PATH; repeatable.", parse=parse_lang_paths,
                                                          many=True, whole=True)
    budget: int | None = option(None, "Training rows in all (suffixes k, M).", parse=parse_count)
    share: float | None = option(None, "The multilingual share of the budget, 0-1.")
    n_multilingual: int | None = option(None, "Or: the multilingual row count, spread evenly over the seen "
                                        "languages.", parse=parse_count0)
    langs: list[str] | None = option(None, "Languages to mix (comma-separated; default all found).",
                                     parse=split_list, whole=True)
    unseen: list[str] | int | None = option(None, "Languages held out of training (comma-separated), or a number "
                                            "of them drawn with --seed.", whole=True)
    n_val: int = option(0, "Validation rows per language (seen, unseen and English), disjoint from training.")
    seed: int = option(0, "Seed: same inputs and seed, same files.")

    def __post_init__(self) -> None:
        self.budget, self.n_multilingual = parse_count(self.budget), parse_count0(self.n_multilingual)
        self.lang_data = parse_lang_paths(self.lang_data)
        if isinstance(self.unseen, str):
            self.unseen = int(self.unseen) if self.unseen.strip().isdigit() else split_list(self.unseen)
        missing = [f"--{k.replace('_', '-')}" for k in ("english", "lang_data", "budget") if getattr(self, k) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (as flags or in the config's [mix])")
        if self.share is None and self.n_multilingual is None:
            raise ConfigError("give --share (a fraction of the budget) or --n-multilingual (a row count)")
