"""What ``synth eval`` (and ``synth.eval.evaluate``) takes: every setting with its default, stated here once, and
the help and form of its option (``synth.config.option``); the command's options are made from this class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synth.config import LISTS, ConfigError, key_values, option, split_list


@dataclass
class EvalSettings:
    model: str | None = option(None, "Model: directory, a `synth train` output, hub name, or 'smollm2'.",
                               argument=True)
    data: str | None = option(None, "Folder of prompts/summarization/translation/mc .jsonl (default: examples/eval; "
                              "schemas in synth/eval/README.md).")
    tasks: list[str] | None = option(None, "response_lang, summarization, translation, mc, judge, pairwise "
                                     "(comma-separated or repeated; default: every task with a file).", **LISTS)
    langs: list[str] | None = option(None, "Only these languages (comma-separated).", **LISTS)
    engine: str = option("hf", "hf, vllm or openai.")
    judge_model: str | None = option(None, "Judge model (default: the evaluated model judges itself, which the "
                                     "results flag).")
    judge_engine: str | None = option(None, "Engine of the judge (default: --engine).")
    baseline_model: str | None = option(None, "pairwise: generate baseline answers with this model.")
    limit: int | None = option(None, "At most N items per language (per direction for translation).")
    max_tokens: int = option(128, "Max new tokens per answer.")
    judge_max_tokens: int = option(128, "Max new tokens per judge verdict.")
    mc_format: str = option("cloze", "Multiple choice: cloze or letters.")
    lid: str = option("auto", "Language ID for lang_correct: auto, lid176, heliport or a fastText path.")
    engine_options: dict[str, Any] | None = option(None, "Engine setting KEY=VALUE (repeatable).", flag="--engine-opt",
                                                   parse=key_values, many=True, whole=True)
    cache: str | None = option(None, "Request cache (sqlite path); default none.")
    harness: list[str] | None = option(None, "lm-evaluation-harness tasks (comma-separated or repeated): 'local' for "
                                       "--data's mc.jsonl and translation.jsonl as harness tasks, or any harness "
                                       "task name (belebele_swh_Latn, global_mmlu_sw…; data from the hub or its "
                                       "cache). Without --tasks, only these run.", **LISTS)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("give the MODEL to evaluate (argument, or model = ... in the config's [eval])")
        for name in ("tasks", "langs", "harness"):  # a config may give a list or one comma-separated string
            setattr(self, name, split_list(getattr(self, name)))
