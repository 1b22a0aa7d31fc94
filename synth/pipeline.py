"""The pipeline, declared once: ``PIPELINE`` lists every stage in order, with its class (whose ``key`` is the
folder it writes), the stage whose output it reads, its settings (a section of ``run.toml``), whether it calls a
model and its label. ``synth run`` (``synth.orchestrate.run``), the single-stage commands and their options, the
sections ``RunSettings`` accepts, the lineage checks, ``synth plan``, the report and the dataset card all read
it, so a new stage is one file with its ``Stage`` class and one ``StageSpec`` line below (or, from outside,
``register``). The types are in ``synth.registry``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.config import budget_flag, parse_count
from synth.kernel import StageOutput
from synth.registry import Flag, Pipeline, StageSpec

# ------------------------------------------------------------------------------------------- how stages are made


def _extract(values: dict[str, Any], rundir: Path, progress: bool) -> StageOutput:
    """Stage 1 reads raw corpora, not a stage output, and decides globally: it runs its two steps itself."""
    from synth.stages.extract import ExtractSettings, extract

    inputs, workers = values.pop("inputs"), values.pop("workers")
    return extract(inputs, rundir, ExtractSettings(**values), workers=workers, progress=progress)


def _select(values: dict[str, Any], scored: StageOutput) -> Any:
    from synth.select.select import mark
    from synth.select.settings import SelectSettings

    return mark(scored, SelectSettings(**values))


def _gate(values: dict[str, Any], scored: StageOutput) -> Any:
    from synth.stages.backtranslate import Fidelity, FidelityThresholds

    return Fidelity(thresholds=FidelityThresholds(**values))


def _min_relevance(text: str) -> Any:
    from synth.select.relevance import parse_min_relevance

    return parse_min_relevance(text)


def _quota(text: str) -> Any:
    from synth.select.settings import parse_lang_quota

    return parse_lang_quota(text)


def _lid_line(params: dict[str, Any]) -> str:
    """The card's (and report's) LID line, with the measured weakness of that model for that language."""
    from synth.extract.lid import weakness

    line = f"LID {params.get('lid_model', '?')}, language {params.get('lang', '?')}"
    warning = weakness(params["lang"], params["lid_model"]) if "lang" in params and "lid_model" in params else None
    return f"{line}. Warning: {warning}" if warning else line


def _judge_warning(counters: dict[str, Any]) -> str | None:
    from synth.stages.score import judge_warning

    return judge_warning(counters)


def _decontaminate_line(params: dict[str, Any]) -> str:
    from synth.stages.decontaminate import card_line

    return card_line(params)


TRANSLATOR = Flag("translator", str, "'llm' (the engine and model), 'seq2seq' (--mt-model) or 'apertium' "
                  "(Debian's rule-based MT: apt-get install apertium apertium-eng-spa).")
MT_MODEL = Flag("mt_model", str, "Seq2seq MT model: directory or hub name (NLLB, M2M100, MADLAD…).")
MAX_TOKENS = Flag("max_tokens", int, "Max new tokens per request.")

EXTRACT_FLAGS = (
    Flag("lang", str, "Target language: ISO 639-1/3 or xxx_Latn (sw, swa, swh_Latn)."),
    Flag("inputs", list, "Files, folders or globs (txt, jsonl, json, parquet, .gz/.zst, datasets save_to_disk "
         "folders). Repeatable.", short="-i"),
    Flag("fragments", str, "How many fragments to keep (suffixes k, M); default all.", parse=parse_count),
    Flag("sample", str, "'first' (stop once N are kept) or 'uniform' (over all input)."),
    Flag("seed", int, "Seed for uniform sampling."),
    Flag("min_len", int, "Minimum fragment length (characters, or tokens with --tokenizer)."),
    Flag("max_len", int, "Maximum fragment length."),
    Flag("tokenizer", str, "Measure lengths in tokens of this tokenizer (path or hub name)."),
    Flag("lid_model", str, "'auto' (default: the installed model measured most precise for --lang), 'lid176' "
         "(bundled), 'heliport' (opt-in extra), 'heliport+lid176' (both must agree), 'glotlid'/'openlid' (after "
         "synth models get), or a fastText model path."),
    Flag("lid_threshold", float, "Minimum language-ID score (default: the model's own)."),
    Flag("quality_config", str, "A quality.toml with per-language thresholds."),
    Flag("pii", bool, "Mask emails, phone numbers and IP addresses."),
    Flag("dedup", bool, "Exact and MinHash near-duplicate removal."),
    Flag("text_field", str, "Text field of JSONL/Parquet/datasets inputs."),
    Flag("id_field", str, "Field holding each record's own id (kept as source_id)."),
    Flag("txt_mode", str, "'file' (one document per .txt) or 'paragraphs'."),
    Flag("workers", int, "Worker processes (default 1)."),
)
# Top-level settings every command that runs stages takes (the CLI adds them to each).
RUN_FLAGS = (
    Flag("executor", str, "What runs the shards: local (default, this machine's processes) or ray (a Ray cluster)."),
    Flag("ray_address", str, "With --executor ray: the cluster (host:port), 'auto' (this machine's), or none to "
         "start a local Ray instance."),
    Flag("max_budget", str, "Work at most: tokens (LLM and MT, suffixes k, M), GPU-hours (3gpu-h) or money (40USD, "
         "$40) as synth plan reckons them from run.toml's [plan]: the run stops cleanly before it would pass it; "
         "the same command with a larger one resumes.", parse=budget_flag),
)
SELECT_FLAGS = (
    Flag("target", str, "Rows to keep (suffixes k, M), or all that pass.", parse=parse_count),
    Flag("keep", float, "Or: the fraction of rows to keep."),
    Flag("min_quality", float, "Minimum judge score (default 3: rows the judge rates poor leave; 0 keeps all)."),
    Flag("min_relevance", str, "Minimum instruction-response relevance: 'auto' (default: the threshold measured for "
         "the embedding model), 'off', or a number.", parse=_min_relevance),
    Flag("method", str, "greedy (DEITA-style, default), dedup, kmeans or none."),
    Flag("tau", float, "Cosine similarity at which two instructions are too alike (default 0.9)."),
    Flag("clusters", int, "k-means clusters (kmeans method)."),
    Flag("per_lang_quota", str, "N for every language, or sw=1000,yor=200.", parse=_quota),
    Flag("seed", int, "Seed for k-means and ties (default 0)."),
    Flag("rank_by", str, "'expected' (default: the judge's expected score where it gave logprobs, else the "
         "integer) or 'quality' (the integer score)."),
)

PIPELINE = Pipeline((
    StageSpec("synth.stages.extract:Fragments", reads=None, made_by="01_extract", card=_lid_line),
    StageSpec("synth.stages.extract:Decide", reads="01_fragments", driver=_extract,
              settings="synth.stages.extract:ExtractSettings", top=("lang", "fragments", "inputs", "workers"),
              requires=("lang", "inputs"), flags=EXTRACT_FLAGS,
              help="Stage 1: native fragments in one language from raw corpora."),
    StageSpec("synth.stages.decontaminate:Decontaminate", reads="01_extract", command="extract",
              card=_decontaminate_line,
              flags=(Flag("paths", list, "Evaluation files to keep out (JSONL, Parquet, datasets folders): fragments "
                          "that overlap them leave as 'contaminated'. Repeatable.", name="decontaminate"),)),
    StageSpec("synth.stages.translate:Translate", reads="01_decontaminate", fallback="01_extract",
              uses_model=True, top=("lang",),
              flags=(TRANSLATOR, MT_MODEL, MAX_TOKENS),
              help="Stage 2: translate each native fragment to English (response_en)."),
    StageSpec("synth.stages.instruct:Instruct", reads="02_translate", uses_model=True,
              flags=(Flag("task_types", str, "'row' (varied, picked per row) or 'model' (the model picks)."),
                     MAX_TOKENS),
              help="Stage 3: write the English instruction each response answers (instruction_en)."),
    StageSpec("synth.stages.score:Score", reads="03_instruct", uses_model=True, warn=_judge_warning,
              flags=(Flag("logprobs", int, "Top-k logprobs for the expected score (0: off)."),),
              help="Stage 4a: an LLM judge rates each English pair 1-5 (quality, quality_reason)."),
    StageSpec("synth.select.embed:Embed", reads="04_score", command="select",
              flags=(Flag("model", str, "sentence-transformers model (default: all-MiniLM-L6-v2).",
                          name="embed-model"),
                     Flag("backend", str, "Embedding backend: auto (default: torch on a GPU, on a CPU openvino "
                          "or onnx where their extras are installed, else torch), torch, onnx or openvino.",
                          name="embed-backend"),
                     Flag("relevance_model", str, "A cross-encoder or reranker (directory or hub name) for the "
                          "instruction-response relevance, instead of the embedding model's cosine."))),
    StageSpec("synth.select.select:Mark", reads="04_embed", build=_select,
              settings="synth.select.settings:SelectSettings", top=("target",), flags=SELECT_FLAGS,
              help="Stage 4b: cheap, re-runnable selection by quality and diversity; never calls the judge."),
    StageSpec("synth.stages.backtranslate:Backtranslate", reads="04_select",
              fallback="03_instruct", uses_model=True, top=("lang",),
              flags=(TRANSLATOR, MT_MODEL, Flag("roundtrip", bool, "Round-trip similarity score."),
                     Flag("qe_model", str, "Learned QE score bt_qe: a MetricX-24 model (directory or hub name; "
                          "qe_tokenizer in run.toml) or, with unbabel-comet, CometKiwi.")),
              help="Stage 5: translate the instruction into the target language, scored and gated for fidelity."),
    StageSpec("synth.stages.backtranslate:Fidelity", reads="05_backtranslate", build=_gate,
              settings="synth.stages.backtranslate:FidelityThresholds", label="fidelity gate",
              command="backtranslate"),
    StageSpec("synth.stages.decontaminate:DecontaminateFinal", reads="05_fidelity", command="backtranslate",
              settings="synth.stages.decontaminate:Decontaminate", settings_of="01_decontaminate",
              label="final decontamination"),
))


def register(spec: StageSpec, after: str | None = None) -> Pipeline:
    """Add a stage to the pipeline every command runs (a plugin's stage), after the stage ``after``."""
    global PIPELINE
    PIPELINE = PIPELINE.register(spec, after)
    return PIPELINE


__all__ = ["PIPELINE", "RUN_FLAGS", "register"]
