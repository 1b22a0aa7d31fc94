"""Export: the final dataset as files external trainers read as they are.

``RUNDIR/final/`` gets sharded Parquet in ``messages`` format (user = target-language instruction, assistant =
the untouched native fragment) with flat ``instruction``/``response``/``lang``/``id`` columns, scores and
lineage; optionally JSONL, Alpaca and ShareGPT files; a dataset card; and config snippets for TRL, axolotl
and LLaMA-Factory.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.budget import tokens
from synth.config import option
from synth.errors import SynthError
from synth.fingerprint import fingerprint
from synth.io import atomic_write_text
from synth.kernel import StageOutput
from synth.version import __version__

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
KEEP_COLUMNS = ["instruction_en", "response_en", "quality", "quality_expected", "quality_reason", "relevance",
                "cluster", "lid_score", "source", "source_id", "task_type"]
FORMATS = ("parquet", "jsonl", "alpaca", "sharegpt")


class ExportError(SynthError, RuntimeError):
    """The rows to export lack what a dataset needs; the message says which column."""


def parse_formats(given: list[str] | None) -> list[str] | None:
    """``--format jsonl,alpaca`` or ``--format jsonl --format alpaca``: the export's formats, Parquet always first."""
    extra = [f.strip() for item in given or [] for f in item.split(",") if f.strip() and f.strip() != "parquet"]
    return ["parquet", *dict.fromkeys(extra)] if given else None


def parse_licenses(given: list[str] | None) -> dict[str, str] | None:
    """``--license SOURCE=LICENCE`` (repeatable; SOURCE ``*`` for every source)."""
    pairs = [pair.split("=", 1) for pair in given or []]
    bad = [given[i] for i, pair in enumerate(pairs) if len(pair) != 2]
    if bad:
        raise ExportError(f"--license needs SOURCE=LICENCE, got {bad[0]!r}")
    return dict(pairs) if pairs else None


@dataclass
class ExportSettings:
    formats: tuple[str, ...] = option(("parquet",), "Copies beside the Parquet (always written), comma-separated or "
                                      "repeated: jsonl, alpaca, sharegpt.", flag="--format", alias="-f",
                                      parse=parse_formats, many=True, also=("run",))
    rows_per_shard: int = 50_000
    licenses: dict[str, str] = option({}, "SOURCE=LICENCE for the dataset card (SOURCE * for all). Repeatable.",
                                      flag="--license", parse=parse_licenses, many=True)
    name: str = "synth-dataset"


EXPORT_BATCH = 10_000  # rows in memory at once: the export's peak memory does not grow with the dataset


def to_final(table: pa.Table) -> pa.Table:
    """Rows with ``instruction`` and ``fragment`` → the final schema (messages first, flat columns after).

    ``messages`` is built with Arrow kernels (the two texts interleaved, two per row), never row by row. No rows
    at all (every row dropped upstream, so the shards may not even have columns) gives an empty table of that
    schema: the dataset is empty, the card and report say why."""
    if table.num_rows == 0 and "instruction" not in table.column_names:
        return pa.table({"id": pa.array([], pa.string()), "lang": pa.array([], pa.string()),
                         "messages": pa.array([], pa.list_(MESSAGE)), "instruction": pa.array([], pa.string()),
                         "response": pa.array([], pa.string())})
    for col in ("id", "lang", "instruction", "fragment"):
        if col not in table.column_names:
            raise ExportError(f"cannot export: column {col!r} is missing (have {table.column_names})")
    n = table.num_rows
    both = pa.concat_arrays([table.column(c).combine_chunks().cast(pa.string()) for c in ("instruction", "fragment")])
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)  # user, assistant; user, assistant…
    turns = pa.StructArray.from_arrays([pa.array(np.tile(np.array(["user", "assistant"], dtype=object), n),
                                                 pa.string()), both.take(pa.array(order))], fields=list(MESSAGE))
    messages = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), turns,
                                        type=pa.list_(MESSAGE))
    cols: dict[str, Any] = {"id": table.column("id"), "lang": table.column("lang"), "messages": messages,
                            "instruction": table.column("instruction"), "response": table.column("fragment")}
    for name in KEEP_COLUMNS + sorted(c for c in table.column_names if c.startswith("bt_")):
        if name in table.column_names:
            cols[name] = table.column(name)
    return pa.table(cols)


def input_columns(names: list[str]) -> list[str]:
    """The columns of the final rows that the export reads (never the embeddings)."""
    wanted = {"id", "lang", "instruction", "fragment", *KEEP_COLUMNS}
    return [c for c in names if c in wanted or c.startswith("bt_")]


def final_batches(rows: StageOutput | pa.Table, batch_size: int = EXPORT_BATCH) -> Iterator[pa.Table]:
    """The final rows in the final schema, ``batch_size`` rows at a time, reading only the columns it needs."""
    if isinstance(rows, pa.Table):
        batches = (pa.Table.from_batches([b]) for b in rows.to_batches(batch_size))
        empty = rows.slice(0, 0)
    else:
        schema = rows.schema()
        columns = input_columns(schema.names) if schema is not None else None
        files = (pq.ParquetFile(path) for path in rows.shards)
        batches = (pa.Table.from_batches([b]) for f in files if f.metadata.num_rows
                   for b in f.iter_batches(batch_size, columns=columns))
        empty = schema.empty_table().select(columns) if schema is not None else pa.table({})
    seen = False
    for batch in batches:
        if batch.num_rows:
            seen = True
            yield to_final(batch)
    if not seen:
        yield to_final(empty)


@dataclass
class Summary:
    """What the card says about the rows, counted batch by batch."""

    rows: int = 0
    langs: Counter[str] = field(default_factory=Counter)
    sources: set[str] = field(default_factory=set)
    columns: list[str] = field(default_factory=list)

    def add(self, table: pa.Table) -> None:
        self.columns = self.columns or table.column_names
        self.rows += table.num_rows
        if table.num_rows:
            self.langs.update({v["values"]: v["counts"] for v in pc.value_counts(table.column("lang")).to_pylist()})
        if "source" in table.column_names:
            self.sources.update(s for s in pc.unique(table.column("source")).to_pylist() if s is not None)


def _records(fmt: str, table: pa.Table) -> list[dict[str, Any]]:
    """One batch of rows as the JSON lines of a format."""
    if fmt == "alpaca":
        return [{"instruction": r["instruction"], "input": "", "output": r["response"], "lang": r["lang"],
                 "id": r["id"]} for r in table.select(["instruction", "response", "lang", "id"]).to_pylist()]
    if fmt == "sharegpt":
        return [{"id": r["id"], "lang": r["lang"], "conversations": [
            {"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["response"]}]}
            for r in table.select(["id", "lang", "instruction", "response"]).to_pylist()]
    return table.to_pylist()


JSONL_FILES = {"jsonl": "train.jsonl", "alpaca": "alpaca.jsonl", "sharegpt": "sharegpt.jsonl"}


def export_fingerprint(rows: StageOutput | pa.Table, settings: ExportSettings) -> str:
    """What names this export's data files: the rows' fingerprint (a table's content) and what shapes the files.
    Every export is a folder named ``final`` with the same card, so a cache keyed on names (``datasets``' builder
    cache, axolotl's prepared data) would serve one export's rows for another's; these names differ."""
    if isinstance(rows, pa.Table):
        h = hashlib.blake2b(digest_size=16)
        for batch in rows.to_batches():
            h.update(batch.serialize())
        source = h.hexdigest()
    else:
        source = rows.fingerprint
    return fingerprint({"rows": source, "rows_per_shard": settings.rows_per_shard, "version": __version__}, 12)


def export(rows: StageOutput | pa.Table, rundir: str | Path, settings: ExportSettings | None = None,
           card: dict[str, Any] | None = None, batch_size: int = EXPORT_BATCH) -> Path:
    """Write ``RUNDIR/final/`` from the final rows; returns the folder. Rewrites it whole (it is derived).

    The rows are read, converted and written ``batch_size`` at a time (Parquet shards of ``rows_per_shard``
    rows, JSON lines per batch), so memory stays flat however many rows there are."""
    settings = settings or ExportSettings()
    bad = set(settings.formats) - set(FORMATS)
    if bad:
        raise ExportError(f"unknown export format(s) {sorted(bad)}: choose from {', '.join(FORMATS)}")
    total = rows.num_rows if isinstance(rows, pa.Table) else sum(pq.ParquetFile(p).metadata.num_rows
                                                                  for p in rows.shards)
    fp = export_fingerprint(rows, settings)
    final = Path(rundir) / "final"
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    n = max(1, -(-total // settings.rows_per_shard))
    summary = Summary()
    writer: pq.ParquetWriter | None = None
    shard = in_shard = 0
    with ExitStack() as stack:
        lines = {fmt: stack.enter_context(open(tmp / name, "w", encoding="utf-8"))
                 for fmt, name in JSONL_FILES.items() if fmt in settings.formats}
        for table in final_batches(rows, batch_size):
            summary.add(table)
            for fmt, f in lines.items():
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _records(fmt, table)))
            start = 0
            while True:  # the batch across as many shards as it fills
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(
                        tmp / "data" / f"train-{fp}-{shard:05d}-of-{n:05d}.parquet", table.schema, compression="zstd"))
                room = settings.rows_per_shard - in_shard if shard + 1 < n else table.num_rows
                part = table.slice(start, room)
                if part.num_rows:
                    writer.write_table(part if part.schema == writer.schema else part.cast(writer.schema))
                start, in_shard = start + part.num_rows, in_shard + part.num_rows
                if in_shard >= settings.rows_per_shard and shard + 1 < n:
                    writer.close()
                    writer, shard, in_shard = None, shard + 1, 0
                if start >= table.num_rows:
                    break
    _write_snippets(tmp, settings, fp)
    atomic_write_text(tmp / "README.md", dataset_card(summary, settings, card or {}, fp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


TRAINERS = Path(__file__).parent / "data" / "trainers"  # config templates, one per trainer file written


def _write_snippets(folder: Path, settings: ExportSettings, fp: str) -> None:
    """Configs that run as given with one thing supplied, the base model (``trainers/README.md`` says how). Each
    finds the data from its own folder (``../data``), so they work in the export and in a copy of its Hub repo."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", settings.name).strip("-") or "synth"
    name = " ".join(settings.name.split()).replace('"', "'").replace("\\", "/")  # safe in a comment or docstring
    values = {"name": name, "slug": slug, "fingerprint": fp, "version": __version__}
    for template in sorted(p for p in TRAINERS.iterdir() if p.is_file()):  # not the __pycache__ pip may add
        atomic_write_text(folder / "trainers" / template.name, Template(template.read_text()).substitute(values))


DESCRIPTION = ("Instruction-tuning pairs built from native text: every **response** is a human-written fragment in "
               "its language, left untouched; every **instruction** was written in English by an LLM for that "
               "fragment and translated into the same language.")


def _jsonl_line(formats: tuple[str, ...]) -> str:
    written = [JSONL_FILES[f] for f in formats if f in JSONL_FILES]
    if written:
        return f" The same rows as JSON lines: {', '.join(f'`{w}`' for w in written)}."
    return " JSONL, Alpaca or ShareGPT copies: `synth export --out RUNDIR --format jsonl,alpaca,sharegpt`."


COLUMNS = {  # what the card says of each column the export may write (``bt_*`` together)
    "id": "a stable row id (from the fragment's source and position)",
    "lang": "the language code of the pair",
    "messages": "the pair as a chat: user = instruction, assistant = the native fragment",
    "instruction": "the instruction in the target language (backtranslated)",
    "response": "the native fragment, untouched",
    "instruction_en": "the instruction as the LLM wrote it, in English",
    "response_en": "the fragment translated into English (what the LLM read)",
    "quality": "the judge's score, 1-5",
    "quality_expected": "the judge's score expected from its token probabilities",
    "quality_reason": "the judge's reason",
    "relevance": "how well the English instruction fits the English response (cosine or reranker score)",
    "cluster": "the k-means cluster the row was selected from",
    "lid_score": "the language ID confidence of the fragment",
    "source": "the file or corpus the fragment came from",
    "source_id": "the document in that source",
    "task_type": "the kind of instruction asked for",
    "bt_": "stage 5's checks of the backtranslated instruction (round trip, language, script, numbers, names)",
}


def _column_rows(columns: list[str]) -> str:
    described = [c for c in columns if not c.startswith("bt_")]
    checks = [c for c in columns if c.startswith("bt_")]
    rows = [f"| `{c}` | {COLUMNS.get(c, '')} |" for c in described]
    if checks:
        rows.append(f"| {', '.join(f'`{c}`' for c in checks)} | {COLUMNS['bt_']} |")
    return "\n".join(rows)


def dataset_card(summary: Summary, settings: ExportSettings, info: dict[str, Any], fp: str = "") -> str:
    """README.md with a YAML header that ``datasets`` understands, sizes, funnel, models and licences."""
    langs = [{"values": k, "counts": v} for k, v in sorted(summary.langs.items(), key=lambda kv: -kv[1])]
    lang_rows = "\n".join(f"| {v['values']} | {v['counts']:,} |" for v in langs)
    sources = sorted(summary.sources)
    licence_rows = "\n".join(f"| {s} | {settings.licenses.get(s, settings.licenses.get('*', 'unknown: check'))} |"
                             for s in sources[:50])
    funnel = info.get("funnel", [])
    funnel_rows = "\n".join(f"| {f['stage']} | {f['rows_in']:,} | {f['rows_out']:,} | "
                            f"{tokens({'counters': f.get('counters', {})}):,} | {f.get('top_drop', '')} |"
                            for f in funnel)
    models = "\n".join(f"- **{k}**: {v}" for k, v in info.get("models", {}).items())
    why = f"\n\n**Why no rows:** {info['diagnosis']}" if info.get("diagnosis") and not summary.rows else ""
    why += "".join(f"\n\n**Warning ({stage}):** {text}" for stage, text in info.get("warnings", []))
    return f"""---
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/train-{fp}-*.parquet
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

{info.get("description") or DESCRIPTION} (synth {__version__})

## Size

| language | rows |
|---|---|
{lang_rows}

Total: {summary.rows:,} rows.{why}

## Format

`data/train-{fp}-*.parquet` (`{fp}`: this export's fingerprint, so no cache mistakes another export for it), one
row per pair:

| column | what it holds |
|---|---|
{_column_rows(summary.columns)}

Load with `datasets.load_dataset("path/to/this/folder", split="train")`.{_jsonl_line(settings.formats)}
`trainers/` has configs for TRL, axolotl and LLaMA-Factory that run as given with a base model
(`trainers/README.md`).

## How it was made

{models or "- see run.toml"}

| stage | rows in | rows out | tokens | top drop reason |
|---|---|---|---|---|
{funnel_rows}

## Sources and licences

| source | licence |
|---|---|
{licence_rows or "| - | - |"}

The responses keep the licence of their source text. Check it before you publish.
"""


# ---------------------------------------------------------------------------------------------- the hub


def check_for_hub(final: str | Path) -> dict[str, Any]:
    """What ``push_to_hub`` checks before it uploads anything: the folder has data, its card's YAML header is one
    the hub reads (``configs`` pointing at ``data/*.parquet``), and ``datasets`` loads the data as the card says.
    Returns the card's metadata."""
    from huggingface_hub import DatasetCard

    final = Path(final)
    shards = sorted((final / "data").glob("*.parquet"))
    if not shards or not (final / "README.md").is_file():
        raise ExportError(f"{final}: not an exported dataset (no data/*.parquet or README.md): run synth export")
    meta = DatasetCard.load(final / "README.md").data.to_dict()
    files = [f for c in meta.get("configs", []) for d in c.get("data_files", []) for f in [d.get("path")]]
    if not files or not all(list(final.glob(f)) for f in files):
        raise ExportError(f"{final}/README.md: its configs name no data files that exist ({files})")
    from datasets import load_dataset

    rows = load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    if rows.num_rows != sum(pq.ParquetFile(p).metadata.num_rows for p in shards):
        raise ExportError(f"{final}: datasets reads {rows.num_rows} rows, the shards hold another count")
    return meta


def push_to_hub(final: str | Path, repo: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported dataset (data, card, trainer snippets) to the Hugging Face hub as the dataset ``repo``
    (created if missing); returns its URL. Offline, or without a token, it fails with what to do."""
    from huggingface_hub import HfApi

    final = Path(final)
    check_for_hub(final)
    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(final), repo_id=repo, repo_type="dataset",
                          commit_message=f"synth {__version__}: {final.parent.name}")
    except Exception as e:  # the hub client raises its own, OSError and its HTTP library's errors
        raise ExportError(f"could not push {final} to the hub as {repo}: {type(e).__name__}: {e}. Check the "
                          "network (HF_HUB_OFFLINE unset) and a token with write access (huggingface-cli login, "
                          "or HF_TOKEN)") from e
    return f"https://huggingface.co/datasets/{repo}"
