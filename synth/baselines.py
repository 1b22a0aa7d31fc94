"""The baselines synth's data is compared against (the seed paper's): translation-based and template-based
instruction data, written in synth's final schema with a dataset card, so that ``synth mix``, ``synth train``
and ``synth eval`` treat the three datasets alike.

* ``translated``: an English instruction dataset (messages, Alpaca or ShareGPT form; JSONL, Parquet or a
  ``datasets`` folder) machine-translated into the target language, instruction and response, by stage 5 itself
  (``Backtranslate``: the same translators, ``llm``, ``seq2seq`` or ``apertium``) and its fidelity gate, once
  for the instructions and once for the responses. A pair stays when both halves pass.
* ``templated``: a labelled dataset (``{text, summary}``, ``{context, question, answer}``…) turned into pairs
  by a versioned template of ``prompts/templates/`` (``summarize.v1.toml``): the instruction in the target
  language where the template has it (English otherwise, or with ``english=True``), one of its phrasings per
  row chosen by the row's id, the label as the response.
"""

from __future__ import annotations

import hashlib
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from synth.config import option
from synth.errors import SynthError
from synth.export import ExportSettings, export
from synth.fingerprint import stable_id
from synth.kernel import StageOutput, TableSource
from synth.lang import canonical
from synth.llm.factory import ENGINE_HELP, MODEL_HELP
from synth.prompts import _ENV, prompts_dir
from synth.report import funnel, model_line
from synth.runner import run_stage
from synth.stats import ShardStats, count_langs, merge_shards, update_run_stats


class BaselineError(SynthError, ValueError):
    """An input or template a baseline cannot use; the message says which and why."""


def _read(inputs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(source file name, record) for every record of the inputs (JSONL, JSON, Parquet, datasets folders)."""
    from synth.stages.decontaminate import DecontaminateError, eval_files, records

    try:
        return [(path.name, r) for path in eval_files(inputs) for r in records(path) if isinstance(r, dict)]
    except DecontaminateError as e:
        raise BaselineError(str(e).replace("decontaminate: ", "")) from e


# ---------------------------------------------------------------------------------------------- translated


USER, ASSISTANT = {"user", "human"}, {"assistant", "gpt", "bot", "model"}


def ift_pair(record: dict[str, Any]) -> tuple[str, str] | None:
    """(instruction, response) of one record in messages, ShareGPT, Alpaca or flat form; None when it has none.
    A conversation gives its first user turn and the assistant turn after it."""
    turns = record.get("messages") or record.get("conversations")
    if isinstance(turns, list):
        said = [(str(t.get("role") or t.get("from") or ""), t.get("content") or t.get("value")) for t in turns
                if isinstance(t, dict)]
        for i, (role, text) in enumerate(said[:-1]):
            if role in USER and said[i + 1][0] in ASSISTANT and text and said[i + 1][1]:
                return str(text), str(said[i + 1][1])
        return None
    instruction = record.get("instruction") or record.get("prompt")
    response = record.get("output") or record.get("response") or record.get("completion")
    if not instruction or not response:
        return None
    extra = record.get("input")
    return (f"{instruction}\n\n{extra}" if extra else str(instruction)), str(response)


def read_ift(inputs: list[str], limit: int | None = None) -> tuple[pa.Table, int]:
    """The English pairs of the inputs as ``id, instruction_en, response_en, source`` (at most ``limit``), and
    how many records had none."""
    rows, skipped = [], 0
    for source, record in _read(inputs):
        pair = ift_pair(record)
        if pair is None:
            skipped += 1
            continue
        rows.append({"id": stable_id("translated", source, record.get("id", len(rows)), len(rows)),
                     "instruction_en": pair[0], "response_en": pair[1], "source": source})
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise BaselineError(f"{', '.join(inputs)}: no instruction pairs (expected messages, conversations, or "
                            "instruction/output fields)")
    return pa.Table.from_pylist(rows), skipped



INPUTS = {"flag": "--input", "alias": "-i", "many": True, "whole": True}


class _Needs:
    """A baseline's settings need ``input`` and ``lang``, from the flags or the config's ``[SECTION]``."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        missing = [f"--{k}" for k in ("input", "lang") if not getattr(self, k)]
        if missing:
            raise BaselineError(f"give {' and '.join(missing)} (or in the config's [{self.SECTION}])")


@dataclass
class TranslatedSettings(_Needs):
    """What ``synth baseline translated`` takes (its options are made from these fields)."""

    SECTION = "baseline_translated"

    input: list[str] | None = option(None, "English instruction data: JSONL, Parquet or a datasets folder, in "
                                     "messages, ShareGPT or Alpaca form. Repeatable.", **INPUTS)
    lang: str | None = option(None, "Target language (es, sw, swh…).")
    translator: str = option("llm", "'llm', 'seq2seq' (with --mt-model) or 'apertium', as stage 5.")
    mt_model: str | None = option(None, "Seq2seq MT model.")
    engine: str | None = option(None, ENGINE_HELP)
    model: str | None = option(None, MODEL_HELP)
    limit: int | None = option(None, "Translate at most this many pairs.")

    def stage(self) -> dict[str, Any]:
        """Stage 5's settings among these."""
        return {k: getattr(self, k) for k in ("translator", "mt_model", "engine", "model") if getattr(self, k)}


@dataclass
class TemplatedSettings(_Needs):
    """What ``synth baseline templated`` takes (its options are made from these fields)."""

    SECTION = "baseline_templated"

    input: list[str] | None = option(None, "Labelled data: JSONL, Parquet or a datasets folder with the template's "
                                     "fields. Repeatable.", **INPUTS)
    lang: str | None = option(None, "Target language (es, sw, swh…).")
    template: str = option("summarize", "A template of prompts/templates/ (summarize, qa, name.vN) or a .toml file.")
    english: bool = option(False, "English instructions even where the template has the target's.")
    limit: int | None = option(None, "At most this many pairs.")


@dataclass
class BaselineResult:
    final: Path
    rows: int
    stats: dict[str, Any]


def _half(table: pa.Table, out: Path, settings: dict[str, Any], thresholds: dict[str, Any],
          progress: bool) -> tuple[StageOutput, StageOutput]:
    """One half (instructions or responses, in ``instruction_en``) through stage 5 and its fidelity gate."""
    from synth.stages.backtranslate import Backtranslate, FidelityThresholds, apply_fidelity

    stage = Backtranslate(**settings)
    translated = run_stage(stage, TableSource(table), out, progress=progress)
    return translated, apply_fidelity(translated, FidelityThresholds(**thresholds), out, progress=progress)


def translated(inputs: list[str], out: str | Path, lang: str, settings: dict[str, Any] | None = None,
               response_settings: dict[str, Any] | None = None, thresholds: dict[str, Any] | None = None,
               limit: int | None = None, progress: bool = True) -> BaselineResult:
    """Translate an English instruction dataset into ``lang`` (both halves) and export it to ``OUT/final``.

    ``settings`` are stage 5's (translator, mt_model, engine, model…); ``response_settings`` go over them for the
    responses (default: the ``translate_from_en`` prompt and 1,024 tokens, as answers are longer)."""
    from synth.llm.stage import with_cache

    out, lang = Path(out), canonical(lang)
    english, skipped = read_ift(inputs, limit)
    settings = with_cache({"cache": "auto", **(settings or {})})
    answers = {**settings, "prompt": "translate_from_en", "max_tokens": 1024, **(response_settings or {})}
    n = english.num_rows
    halves = {}
    for half, text, how in (("instruction", "instruction_en", settings), ("response", "response_en", answers)):
        rows = pa.table({"id": english.column("id"), "lang": pa.array([lang] * n, pa.string()),
                         "instruction_en": english.column(text)})
        halves[half] = _half(rows, out / half, how, thresholds or {}, progress)
    for half, (bt, gate) in halves.items():
        update_run_stats(out, f"{half}_translate", bt.stats())
        update_run_stats(out, f"{half}_fidelity", gate.stats())
    ins = halves["instruction"][1].read()
    resp = {r["id"]: r["instruction"] for r in halves["response"][1].read(columns=["id", "instruction"]).to_pylist()}
    keep = [i for i, x in enumerate(ins.column("id").to_pylist()) if x in resp]
    ins = ins.take(pa.array(keep, pa.int64()))
    by_id = {r["id"]: r for r in english.to_pylist()}
    ids = ins.column("id").to_pylist()
    table = (ins.append_column("fragment", pa.array([resp[i] for i in ids], pa.string()))
             .append_column("response_en", pa.array([by_id[i]["response_en"] for i in ids], pa.string()))
             .append_column("source", pa.array([by_id[i]["source"] for i in ids], pa.string())))
    _paired(out, halves["instruction"][1].num_rows, table, skipped)
    bt_params = halves["instruction"][0].manifest.get("params", {})
    card = {"models": {"translator": model_line(bt_params)},
            "description": f"A translation-based baseline: the pairs of {', '.join(inputs)} machine-translated from "
                           f"English into {lang}, instruction and response, by synth's stage-5 translator and "
                           "checked by its fidelity gate (both halves must pass)."}
    return _export(table, out, f"translated-baseline-{lang}", card)


def _paired(out: Path, rows_in: int, table: pa.Table, skipped: int) -> None:
    stats = ShardStats()
    stats.rows_in.update({table.column("lang")[0].as_py() if table.num_rows else "und": rows_in})
    stats.rows_out.update(count_langs(table))
    stats.drop("response_failed", table.column("lang")[0].as_py() if table.num_rows else None,
               rows_in - table.num_rows)
    if skipped:
        stats.count("records_without_a_pair", skipped)
    update_run_stats(out, "paired", merge_shards([stats.to_dict()]))


def _export(table: pa.Table, out: Path, name: str, card: dict[str, Any]) -> BaselineResult:
    import json

    stats = json.loads((out / "stats.json").read_text())
    final = export(table, out, ExportSettings(name=name), card={**card, "funnel": funnel(stats)})
    return BaselineResult(final, table.num_rows, stats)


# ---------------------------------------------------------------------------------------------- templated


@dataclass(frozen=True)
class Template:
    """A versioned template: ``fields`` a record needs, instruction phrasings per language, the response."""

    name: str
    version: int
    sha: str
    path: str
    fields: tuple[str, ...]
    response: str
    instructions: dict[str, tuple[str, ...]]

    def phrasings(self, lang: str, english: bool = False) -> tuple[str, tuple[str, ...]]:
        """(the language of the instructions, its phrasings): the target's where the template has it."""
        if not english and lang in self.instructions:
            return lang, self.instructions[lang]
        if "eng" not in self.instructions:
            raise BaselineError(f"{self.path}: no instructions in {lang} or English")
        return "eng", self.instructions["eng"]


def load_template(spec: str) -> Template:
    """A template by name (its highest version in ``prompts/templates/``), ``name.vN``, or a ``.toml`` file."""
    if spec.endswith(".toml"):
        path = Path(spec)
    else:
        name, _, version = spec.partition(".v")
        found = sorted(prompts_dir().joinpath("templates").glob(f"{name}.v*.toml"),
                       key=lambda p: int(p.name.rsplit(".v", 1)[1].split(".")[0]))
        found = [p for p in found if not version or p.name == f"{name}.v{version}.toml"]
        if not found:
            raise BaselineError(f"no template {spec!r} in {prompts_dir() / 'templates'}")
        path = found[-1]
    if not path.is_file():
        raise BaselineError(f"{path}: no such template")
    raw = path.read_bytes()
    data = tomllib.loads(raw.decode("utf-8"))
    stem = path.name.removesuffix(".toml")
    name, _, version = stem.rpartition(".v")
    missing = {"fields", "response", "instructions"} - set(data)
    if missing or not version.isdigit():
        raise BaselineError(f"{path}: a template is <name>.v<N>.toml with fields, response and [instructions] "
                            f"(missing: {sorted(missing)})")
    return Template(name, int(version), hashlib.sha256(raw).hexdigest()[:16], str(path), tuple(data["fields"]),
                    data["response"], {canonical(k): tuple(v) for k, v in data["instructions"].items()})


def templated(inputs: list[str], out: str | Path, lang: str, template: str, limit: int | None = None,
              english: bool = False) -> BaselineResult:
    """Labelled records → instruction pairs by ``template``, exported to ``OUT/final``."""
    out, lang = Path(out), canonical(lang)
    tpl = load_template(template)
    written_in, phrasings = tpl.phrasings(lang, english)
    stats = ShardStats()
    rows = []
    for n, (source, record) in enumerate(_read(inputs)):
        stats.rows_in[lang] += 1
        values = {f: record.get(f) for f in tpl.fields}
        if any(not isinstance(v, str) or not v.strip() for v in values.values()):
            stats.drop("missing_field", lang)
            continue
        rid = stable_id("templated", tpl.name, source, record.get("id", n), n)
        pick = random.Random(rid).randrange(len(phrasings))
        rows.append({"id": rid, "lang": lang, "instruction": _ENV.from_string(phrasings[pick]).render(**values),
                     "fragment": _ENV.from_string(tpl.response).render(**values), "source": source,
                     "task_type": f"{tpl.name}.v{tpl.version}"})
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise BaselineError(f"{', '.join(inputs)}: no record has every field of {tpl.path} ({', '.join(tpl.fields)})")
    stats.rows_out[lang] = len(rows)
    out.mkdir(parents=True, exist_ok=True)
    update_run_stats(out, "templated", merge_shards([stats.to_dict()]))
    card = {"models": {"template": f"{tpl.name}.v{tpl.version} (sha {tpl.sha}), instructions in {written_in}, "
                                   f"{len(phrasings)} phrasings"},
            "description": f"A template-based baseline: the labelled records of {', '.join(inputs)} turned into "
                           f"instruction pairs by the template {tpl.name}.v{tpl.version}; no model was used."}
    return _export(pa.Table.from_pylist(rows), out, f"templated-baseline-{lang}", card)
