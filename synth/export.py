"""Export: the final dataset as files external trainers read as they are.

``RUNDIR/final/`` gets sharded Parquet in ``messages`` format (user = target-language instruction, assistant =
the untouched native fragment) with flat ``instruction``/``response``/``lang``/``id`` columns, scores and
lineage; optionally JSONL, Alpaca and ShareGPT files; a dataset card; and config snippets for TRL, axolotl
and LLaMA-Factory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth import __version__
from synth.errors import SynthError
from synth.io import atomic_write_text
from synth.runner import StageOutput

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
KEEP_COLUMNS = ["instruction_en", "response_en", "quality", "quality_expected", "quality_reason", "cluster",
                "lid_score", "source", "source_id", "task_type"]
FORMATS = ("parquet", "jsonl", "alpaca", "sharegpt")


class ExportError(SynthError, RuntimeError):
    """The rows to export lack what a dataset needs; the message says which column."""


@dataclass
class ExportSettings:
    formats: tuple[str, ...] = ("parquet",)
    rows_per_shard: int = 50_000
    licenses: dict[str, str] = field(default_factory=dict)  # source (file or corpus name) → licence
    name: str = "synth-dataset"


def to_final(table: pa.Table) -> pa.Table:
    """Rows with ``instruction`` and ``fragment`` → the final schema (messages first, flat columns after).

    No rows at all (every row dropped upstream, so the shards may not even have columns) gives an empty table
    of that schema: the dataset is empty, the card and report say why."""
    if table.num_rows == 0 and "instruction" not in table.column_names:
        return pa.table({"id": pa.array([], pa.string()), "lang": pa.array([], pa.string()),
                         "messages": pa.array([], pa.list_(MESSAGE)), "instruction": pa.array([], pa.string()),
                         "response": pa.array([], pa.string())})
    for col in ("id", "lang", "instruction", "fragment"):
        if col not in table.column_names:
            raise ExportError(f"cannot export: column {col!r} is missing (have {table.column_names})")
    instr = table.column("instruction").to_pylist()
    resp = table.column("fragment").to_pylist()
    messages = pa.array([[{"role": "user", "content": i}, {"role": "assistant", "content": r}]
                         for i, r in zip(instr, resp, strict=True)], pa.list_(MESSAGE))
    cols: dict[str, Any] = {"id": table.column("id"), "lang": table.column("lang"), "messages": messages,
                            "instruction": table.column("instruction"), "response": table.column("fragment")}
    for name in KEEP_COLUMNS + sorted(c for c in table.column_names if c.startswith("bt_")):
        if name in table.column_names:
            cols[name] = table.column(name)
    return pa.table(cols)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def export(rows: StageOutput | pa.Table, rundir: str | Path, settings: ExportSettings | None = None,
           card: dict[str, Any] | None = None) -> Path:
    """Write ``RUNDIR/final/`` from the final rows; returns the folder. Rewrites it whole (it is derived)."""
    settings = settings or ExportSettings()
    bad = set(settings.formats) - set(FORMATS)
    if bad:
        raise ExportError(f"unknown export format(s) {sorted(bad)}: choose from {', '.join(FORMATS)}")
    table = to_final(rows.read() if isinstance(rows, StageOutput) else rows)
    final = Path(rundir) / "final"
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    n = max(1, -(-table.num_rows // settings.rows_per_shard))
    for i in range(n):
        part = table.slice(i * settings.rows_per_shard, settings.rows_per_shard)
        pq.write_table(part, tmp / "data" / f"train-{i:05d}-of-{n:05d}.parquet", compression="zstd")
    records = table.to_pylist() if set(settings.formats) - {"parquet"} else []
    if "jsonl" in settings.formats:
        _write_jsonl(tmp / "train.jsonl", records)
    if "alpaca" in settings.formats:
        _write_jsonl(tmp / "alpaca.jsonl", [{"instruction": r["instruction"], "input": "", "output": r["response"],
                                             "lang": r["lang"], "id": r["id"]} for r in records])
    if "sharegpt" in settings.formats:
        _write_jsonl(tmp / "sharegpt.jsonl", [{"id": r["id"], "lang": r["lang"], "conversations": [
            {"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["response"]}]}
            for r in records])
    _write_snippets(tmp, settings)
    atomic_write_text(tmp / "README.md", dataset_card(table, settings, card or {}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _write_snippets(folder: Path, settings: ExportSettings) -> None:
    """Config snippets that point each trainer at this folder."""
    snip = folder / "trainers"
    snip.mkdir()
    atomic_write_text(snip / "trl_sft.py", f'''"""Fine-tune on this dataset with TRL (run next to final/)."""
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

dataset = load_dataset("parquet", data_dir="final/data", split="train")
# Prompt-completion form: the loss is on the answer only, with any chat template (no generation markers needed).
dataset = dataset.map(lambda row: {{"prompt": row["messages"][:1], "completion": row["messages"][1:]}},
                      remove_columns=dataset.column_names)
trainer = SFTTrainer(
    model="HuggingFaceTB/SmolLM2-135M-Instruct",  # or a local model directory
    train_dataset=dataset,
    args=SFTConfig(output_dir="sft-{settings.name}", num_train_epochs=1),
)
trainer.train()
''')
    atomic_write_text(snip / "axolotl.yaml", f"""# axolotl: chat_template dataset in OpenAI messages format
datasets:
  - path: final/data
    ds_type: parquet
    type: chat_template
    field_messages: messages
    message_property_mappings:
      role: role
      content: content
    roles_to_train: ["assistant"]
dataset_prepared_path: last_run_prepared
output_dir: ./outputs/{settings.name}
""")
    atomic_write_text(snip / "llamafactory_dataset_info.json", json.dumps({settings.name: {
        "file_name": "final/data", "formatting": "sharegpt", "load_from": "file",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }}, indent=2) + "\n")


MODEL_STAGES = {"translate": "02_translate", "instruct": "03_instruct", "score": "04_score",
                "backtranslate": "05_backtranslate"}


def run_card(rundir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the dataset card says about how a run was made, read from the run itself: the model and prompt
    versions in each LLM stage's manifest, the LID model of stage 1, and the funnel of stats.json."""
    from synth.report import funnel

    rundir = Path(rundir)
    models: dict[str, str] = {}
    for name, key in MODEL_STAGES.items():
        try:
            params = StageOutput.current(rundir, key).manifest.get("params", {})
        except SynthError:
            continue
        model = params.get("mt_model") or f"{params.get('engine', '')} {params.get('model', '')}".strip()
        prompts = [f"{v['prompt']}.v{v['version']}" for v in params.values()
                   if isinstance(v, dict) and "prompt" in v and "version" in v]
        models[name] = model + (f" (prompts: {', '.join(prompts)})" if prompts else "")
    try:
        params = StageOutput.current(rundir, "01_fragments").manifest.get("params", {})
        models["extract"] = f"LID {params.get('lid_model', '?')}, language {params.get('lang', '?')}"
    except SynthError:
        pass
    stats_path = rundir / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return {"models": models, "funnel": funnel(stats), **(extra or {})}


def dataset_card(table: pa.Table, settings: ExportSettings, info: dict[str, Any]) -> str:
    """README.md with a YAML header that ``datasets`` understands, sizes, funnel, models and licences."""
    langs = pc.value_counts(table.column("lang")).to_pylist() if table.num_rows else []
    lang_rows = "\n".join(f"| {v['values']} | {v['counts']:,} |" for v in langs)
    sources = sorted(set(table.column("source").to_pylist())) if "source" in table.column_names else []
    licence_rows = "\n".join(f"| {s} | {settings.licenses.get(s, settings.licenses.get('*', 'unknown: check'))} |"
                             for s in sources[:50])
    funnel = info.get("funnel", [])
    funnel_rows = "\n".join(f"| {f['stage']} | {f['rows_in']:,} | {f['rows_out']:,} | {f.get('top_drop', '')} |"
                            for f in funnel)
    models = "\n".join(f"- **{k}**: {v}" for k, v in info.get("models", {}).items())
    return f"""---
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/*.parquet
language:
{chr(10).join(f"  - {v['values']}" for v in langs)}
task_categories:
  - text-generation
tags:
  - synth
  - instruction-tuning
  - reverse-instructions
---

# {settings.name}

Instruction-tuning pairs built by synth {__version__} from native text: every **response** is a human-written
fragment in its language, left untouched; every **instruction** was written in English by an LLM for that
fragment and translated into the same language.

## Size

| language | rows |
|---|---|
{lang_rows}

Total: {table.num_rows:,} rows.

## Format

`data/*.parquet`, one row per pair: `messages` (user: instruction, assistant: native fragment), and flat columns
`id`, `lang`, `instruction`, `response`, with the English intermediates, judge scores and lineage
(`source`, `source_id`). Load with `datasets.load_dataset("parquet", data_dir="data")`; `trainers/` has
snippets for TRL, axolotl and LLaMA-Factory.

## How it was made

{models or "- see run.toml"}

| stage | rows in | rows out | top drop reason |
|---|---|---|---|
{funnel_rows}

## Sources and licences

| source | licence |
|---|---|
{licence_rows or "| - | - |"}

The responses keep the licence of their source text. Check it before you publish.
"""
