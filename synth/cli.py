"""The ``synth`` command line: a thin layer that parses options, calls the Python API and prints.

The stage commands (extract … backtranslate) are made from the pipeline's registry (``synth.pipeline``): one
per command name, with the options its stages declare, and ``--out``, ``--config`` and ``--quiet``; a stage that
calls a model adds ``--engine``, ``--model``, ``--engine-opt`` and ``--cache``.
"""

from __future__ import annotations

import inspect
import json
from functools import partial
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from synth import __version__
from synth.config import parse_count, record
from synth.config import section as config_section
from synth.errors import SynthError
from synth.pipeline import PIPELINE, RUN_FLAGS, StageSpec

app = typer.Typer(help="Build multilingual instruction-finetuning datasets from native text.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Offline models that ship inside packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()

ENGINE_HELP = "hf, vllm or openai (default: vllm with a GPU, else hf)."
MODEL_HELP = "Model directory, hub name, or 'smollm2' (offline default)."
CACHE_HELP = "Request cache (sqlite path), 'none', or default: synth's shared cache."
CONFIG_HELP = "A run.toml with the sections of `synth run`; flags win."


def _version(value: bool) -> None:
    if value:
        console.print(f"synth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """synth: native text in, instruction-tuning pairs out."""


@app.command()
def stats(rundir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Show a run's per-stage funnel and top drop reasons from RUNDIR/stats.json."""
    path = rundir / "stats.json"
    if not path.exists():
        console.print(f"[red]{path} does not exist: no stage has finished in {rundir}[/red]")
        raise typer.Exit(1)
    from synth.stats import kept_label

    data = json.loads(path.read_text())
    table = Table(title=f"{rundir}")
    for col in ("stage", "lang", "in", "out", "kept %", "top drop reasons"):
        table.add_column(col, justify="right" if col in ("in", "out", "kept %") else "left")

    def row(key: str, lang: str, n_in: int, n_out: int, dropped: dict[str, int], style: str = "") -> None:
        pct = kept_label(n_in, n_out)
        reasons = ", ".join(f"{r} {n:,}" for r, n in list(dropped.items())[:3])
        table.add_row(key, lang, f"{n_in:,}", f"{n_out:,}", pct, reasons, style=style)

    for key, s in data["stages"].items():
        row(key, "all", s["rows_in"], s["rows_out"], s["dropped"], style="bold")
        for lang, v in s["by_lang"].items():
            row("", lang, v["in"], v["out"], v["dropped"])
    console.print(table)


def _fail(e: Exception) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(e))}")  # messages name config sections: [translate]…
    raise typer.Exit(2)


def _engine_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs to engine keyword arguments (numbers and booleans parsed)."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--engine-opt needs KEY=VALUE, got {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


@app.command()
def generate(
    engine: str = typer.Option(None, help=ENGINE_HELP),
    model: str = typer.Option("smollm2", help="Model directory, hub name, or 'smollm2' (the offline default)."),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL: one request per line (prompt or messages)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL results, one per request, same order."),
    max_tokens: int = typer.Option(256, help="Default max new tokens (a line's own value wins)."),
    temperature: float = typer.Option(0.0, help="Default temperature."),
    base_url: str = typer.Option(None, help="openai engine: the server, e.g. http://127.0.0.1:8000/v1."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai engine: environment variable with the key."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable), e.g. batch_size=16."),
    cache: Path = typer.Option(None, help="Request cache (sqlite); default in synth's cache folder."),
    no_cache: bool = typer.Option(False, help="Do not read or write the request cache."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Batch generation with any engine, on its own: prompts.jsonl in, results.jsonl out, cached. A fully cached
    file does not load the model."""
    from synth.llm import Sampling, load_engine
    from synth.llm.batch import generate_file
    from synth.llm.factory import default_engine, engine_class
    from synth.stages.llm_stage import default_cache

    options = _engine_options(engine_opt)
    try:
        engine = engine or default_engine()
        if engine_class(engine).remote:  # a server's address and key
            options.update(base_url=base_url, api_key_env=api_key_env)
        llm = load_engine(engine, model, cache=None if no_cache else (cache or default_cache()), **options)
        with llm:
            report = generate_file(llm, input, out, Sampling(max_tokens=max_tokens, temperature=temperature),
                                   progress=not quiet)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{report.ok:,}/{report.requests:,} ok[/green] → {out}; "
                  f"served from cache: {report.cache_hits:,}; new tokens: {report.prompt_tokens:,} prompt + "
                  f"{report.completion_tokens:,} completion")
    for reason, n in report.errors.most_common():
        console.print(f"  error {reason}: {n:,}")
    for line in report.bad_lines[:10]:
        console.print(f"  [yellow]skipped {line}[/yellow]")
    if report.bad_lines:
        console.print(f"  skipped {len(report.bad_lines):,} bad input line(s)")


# ------------------------------------------------------------------------------------ the pipeline's commands


def _print_outputs(rundir: Path, outputs: dict) -> None:
    """Rows in and out of each stage a command ran, its top drop reasons and what its model cost."""
    for key, out in outputs.items():
        s = out.stats()
        langs = ", ".join(f"{lang} {v['out']:,}" for lang, v in s["by_lang"].items() if v["out"])
        console.print(f"[green]{key}[/green]: kept {s['rows_out']:,} of {s['rows_in']:,} rows ({langs or 'none'}) in "
                      f"{out.dir}", soft_wrap=True)
        for kind in ("dropped", "marked"):  # marked: kept, with a reason (rows stage 4 did not select)
            for reason, n in list(s.get(kind, {}).items())[:5]:
                console.print(f"  {kind} {n:,} {reason}")
        c = s["counters"]
        if "selected" in c:
            console.print(f"  selected {c['selected']:,}")
        if "prompt_tokens" in c:
            console.print(f"  LLM: {c.get('llm_requests', 0):,} requests, {c.get('llm_cache_hits', 0):,} from "
                          f"cache, {c['prompt_tokens']:,} prompt + {c.get('completion_tokens', 0):,} completion tokens")
    console.print(f"  funnel: synth stats {rundir}", soft_wrap=True)


REPLICAS_HELP = ("Engine copies on this machine, a process each with its own GPUs: 'auto' (default: one per "
                 "visible GPU, or per tensor-parallel group) or a number.")
GPUS_HELP = "The GPUs the engine copies may use, e.g. 0,1,2,3 (default: the visible ones)."
MODEL_OPTIONS = {  # what every command of a stage that calls a model takes: the settings of LLMStage
    "engine": (str, typer.Option(None, "--engine", help=ENGINE_HELP)),
    "model": (str, typer.Option(None, "--model", help=MODEL_HELP)),
    "engine_options": (list[str], typer.Option(None, "--engine-opt", help="Engine setting KEY=VALUE (repeatable).")),
    "cache": (str, typer.Option(None, "--cache", help=CACHE_HELP)),
    "replicas": (str, typer.Option(None, "--replicas", help=REPLICAS_HELP)),
    "gpus": (str, typer.Option(None, "--gpus", help=GPUS_HELP)),
}


def _stage_command(name: str, specs: list[StageSpec]) -> None:
    """Add ``synth <name>``: it runs ``specs`` through ``synth.pipeline.run_command``. Each flag sets its
    stage's section (or a top-level setting) over ``--config``; a flag not given leaves the file's value."""
    first = specs[0]
    reads = (f" (reads its {first.reads}{', else ' + first.fallback if first.fallback else ''})"
             if first.driver is None else "")
    params = [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                default=typer.Option(..., "--out", "-o", help=f"Run directory{reads}."))]
    owner: dict[str, tuple[StageSpec | None, Any]] = {}  # parameter → the stage and flag (None, None: a model
    # option; None, flag: a top-level setting of every command, RUN_FLAGS)
    for spec in [*specs, None]:
        for flag in spec.flags if spec is not None else RUN_FLAGS:
            decl = f"--{flag.option}/--no-{flag.option}" if flag.type is bool else f"--{flag.option}"
            kind = list[str] if flag.type is list else str if flag.parse else flag.type
            param = flag.option.replace("-", "_")
            option = typer.Option(None, decl, *([flag.short] if flag.short else []), help=flag.help)
            params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=option))
            owner[param] = (spec, flag)
    if any(s.uses_model for s in specs):
        for param, (kind, option) in MODEL_OPTIONS.items():
            params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=option))
            owner[param] = (None, None)
    params += [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                 default=typer.Option(None, "--config", help=CONFIG_HELP)),
               inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                 default=typer.Option(False, "--quiet", help="No progress bars."))]

    def command(**given: Any) -> None:
        from synth.pipeline import RunSettings, run_command

        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        try:
            for param, (spec, flag) in owner.items():
                value = given[param]
                if value is None or value == []:
                    continue
                if flag is None:  # a model option: every stage of the command that calls a model takes it
                    value = _engine_options(value) if param == "engine_options" else value
                    for s in specs:
                        if s.uses_model:
                            sections.setdefault(s.section, {})[param] = value
                    continue
                value = flag.parse(value) if flag.parse else value
                if spec is None or flag.field in spec.top:
                    top[flag.field] = value
                else:
                    sections.setdefault(spec.section, {})[flag.field] = value
            settings = RunSettings.load(given["config"], top, sections)
            outputs = run_command(given["out"], name, settings, progress=not given["quiet"])
        except (SynthError, ValueError, OSError) as e:
            _fail(e)
        _print_outputs(given["out"], outputs)

    command.__signature__ = inspect.Signature(params)  # what typer reads the options from
    main_spec = next((s for s in specs if s.section == name), first)
    app.command(name, help=main_spec.help or f"Run the {main_spec.label} stage ({main_spec.key}).")(command)


for _name, _specs in PIPELINE.commands().items():
    _stage_command(_name, _specs)


baseline_app = typer.Typer(help="The baselines synth is compared against: translation- and template-based data.",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("translated")
def baseline_translated(
    input: list[str] = typer.Option(..., "--input", "-i", help="English instruction data: JSONL, Parquet or a "
                                    "datasets folder, in messages, ShareGPT or Alpaca form. Repeatable."),
    lang: str = typer.Option(..., help="Target language (es, sw, swh…)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (final/ holds the dataset and its card)."),
    translator: str = typer.Option("llm", help="'llm', 'seq2seq' (with --mt-model) or 'apertium', as stage 5."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    limit: int = typer.Option(None, help="Translate at most this many pairs."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Machine-translate an English instruction dataset (instructions and responses) into the target language,
    with stage 5's translator and fidelity gate; synth's final schema and a card."""
    from synth.baselines import translated

    settings = {k: v for k, v in {"translator": translator, "mt_model": mt_model, "engine": engine,
                                  "model": model}.items() if v is not None}
    try:
        result = translated(input, out, lang, settings, limit=limit, progress=not quiet)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{result.rows:,} rows[/green] → {result.final}")


@baseline_app.command("templated")
def baseline_templated(
    input: list[str] = typer.Option(..., "--input", "-i", help="Labelled data: JSONL, Parquet or a datasets "
                                    "folder with the template's fields. Repeatable."),
    lang: str = typer.Option(..., help="Target language (es, sw, swh…)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (final/ holds the dataset and its card)."),
    template: str = typer.Option("summarize", help="A template of prompts/templates/ (summarize, qa, name.vN) or "
                                 "a .toml file."),
    english: bool = typer.Option(False, help="English instructions even where the template has the target's."),
    limit: int = typer.Option(None, help="At most this many pairs."),
) -> None:
    """Turn a labelled dataset ({text, summary}, {context, question, answer}…) into instruction pairs through a
    versioned template; synth's final schema and a card."""
    from synth.baselines import templated

    try:
        result = templated(input, out, lang, template, limit=limit, english=english)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{result.rows:,} rows[/green] → {result.final}")


@app.command("audit")
def audit_cmd(
    input: Path = typer.Argument(..., help="Instruction data: a JSONL, JSON or Parquet file or folder (messages, "
                                 "ShareGPT, Alpaca or instruction/response rows), or a synth final/."),
    lang: str = typer.Option(..., help="The data's language (es, sw, swh…), for rows that do not name theirs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: audit.parquet, final/ (the kept rows), "
                             "report.html."),
    translator: str = typer.Option(None, help="'llm', 'seq2seq' (with --mt-model) or 'apertium': English for rows "
                                   "that have none (relevance, the judge) and the instruction's round trip."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model (into English)."),
    judge: bool = typer.Option(False, help="Also run the LLM judge (stage 4's) and drop rows below --min-quality."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    judge_model: str = typer.Option(None, help="A different model for the judge."),
    min_quality: float = typer.Option(None, help="With --judge: the lowest judge score kept (default 3, as "
                                      "selection)."),
    min_relevance: str = typer.Option(None, help="'auto' (default: measured for the embedding model), 'off' or "
                                      "a number."),
    embed_model: str = typer.Option(None, help="sentence-transformers model for relevance and the round trip."),
    relevance_model: str = typer.Option(None, help="A cross-encoder or reranker for relevance instead."),
    config: Path = typer.Option(None, help=CONFIG_HELP + " Reads [score] (the judge), [backtranslate] (the "
                                "translator) and [select] (min_quality, min_relevance)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """synth's row checks on any instruction dataset: which rows pass, and why the others do not."""
    from dataclasses import fields

    from synth.audit import Audit, audit
    from synth.pipeline import RunSettings

    try:
        run = RunSettings.load(config, {"engine": engine, "model": model}, {
            "score": {"model": judge_model},
            "backtranslate": {"translator": translator, "mt_model": mt_model},
            "select": {"min_quality": min_quality, "min_relevance": min_relevance}})
        translating: dict = {}
        if run.sections.get("backtranslate", {}).get("translator"):  # as stage 5 would translate, into English
            known = {f.name for f in fields(Audit)} - {"prompt", "lang"}
            translating = {k: v for k, v in run.values(PIPELINE.section("backtranslate")).items() if k in known}
        chosen = run.sections.get("select", {})
        settings = {**translating, **({"embedder": embed_model} if embed_model else {}),
                    **({"relevance_model": relevance_model} if relevance_model else {}),
                    **({"min_relevance": chosen["min_relevance"]} if "min_relevance" in chosen else {})}
        result = audit(input, out, lang, settings, judge=run.values(PIPELINE.section("score")) if judge else None,
                       min_quality=chosen.get("min_quality", 3.0), progress=not quiet)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    from synth.report import console_summary

    for line in console_summary(out):
        console.print(line)
    dropped = ", ".join(f"{reason} ({n:,})" for reason, n in result.reasons.items()) or "none"
    console.print(f"[green bold]{result.kept:,} of {result.rows:,} rows kept[/green bold]; dropped: {dropped}")
    console.print(f"{result.table}  {result.final}  report: {result.report}")


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its last stage's output)."),
    format: list[str] = typer.Option(None, "--format", "-f", help="parquet (always), jsonl, alpaca, sharegpt."),
    license: list[str] = typer.Option(None, help="SOURCE=LICENCE for the dataset card (SOURCE * for all)."),
    config: Path = typer.Option(None, help=CONFIG_HELP),
    push_to_hub: str = typer.Option(None, help="Then upload final/ to the Hugging Face hub as this dataset repo "
                                    "(user/name); needs the network and a token (huggingface-cli login)."),
    private: bool = typer.Option(False, help="With --push-to-hub: create the repo private."),
) -> None:
    """Write RUNDIR/final: messages-format Parquet, optional JSONL/Alpaca/ShareGPT, card, trainer snippets."""
    from synth.export import push_to_hub as push
    from synth.pipeline import EXPORT, RunSettings, export_run

    flags = {"formats": ["parquet", *format] if format else None,
             "licenses": dict(pair.split("=", 1) for pair in license if "=" in pair) if license else None}
    try:
        final, rows = export_run(out, RunSettings.load(config, sections={EXPORT: flags}))
        console.print(f"[green]{rows:,} rows[/green] → {final}")
        if push_to_hub:
            console.print(f"pushed → {push(final, push_to_hub, private=private)}")
    except (SynthError, ValueError, OSError) as e:
        _fail(e)


@app.command("run")
def run_cmd(
    lang: str = typer.Option(None, help="Target language (sw, swa, swh_Latn…)."),
    input: list[str] = typer.Option(None, "--input", "-i", help="Raw corpus files, folders or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    fragments: str = typer.Option(None, help="Fragments to extract (suffixes k, M); default all."),
    target: str = typer.Option(None, help="Rows to select for back-translation (the fidelity gate after it may "
                               "drop some); default all that pass."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    judge_model: str = typer.Option(None, help="A different model for the quality judge."),
    translator: str = typer.Option(None, help="'llm', 'seq2seq' (with --mt-model) or 'apertium' for stages 2 "
                                   "and 5."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model for stages 2 and 5."),
    format: list[str] = typer.Option(None, "--format", "-f", help="Extra export formats: jsonl, alpaca, sharegpt."),
    decontaminate: list[str] = typer.Option(None, help="Evaluation files (JSONL, Parquet, datasets folders) whose "
                                            "text fragments and final rows must not overlap. Repeatable."),
    workers: int = typer.Option(None, help="Worker processes for extraction (default 1)."),
    replicas: str = typer.Option(None, help=REPLICAS_HELP), gpus: str = typer.Option(None, help=GPUS_HELP),
    executor: str = typer.Option(None, help=RUN_FLAGS[0].help),
    ray_address: str = typer.Option(None, help=RUN_FLAGS[1].help),
    config: Path = typer.Option(None, help="run.toml: top-level keys and a section per stage ("
                                + ", ".join(f"\\[{s}]" for s in PIPELINE.section_names) + ")."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The main job: native text in, a clean instruction dataset, report and stats out. Resumable."""
    from synth import pipeline
    from synth.report import console_summary

    translators = {"translator": translator, "mt_model": mt_model}
    try:
        flags = {"lang": lang, "inputs": input or None, "fragments": parse_count(fragments),
                 "target": parse_count(target), "engine": engine, "model": model, "workers": workers,
                 "executor": executor, "ray_address": ray_address}
        sections = {"score": {"model": judge_model}, "translate": translators, "backtranslate": translators,
                    "decontaminate": {"paths": decontaminate or None},
                    pipeline.EXPORT: {"formats": ["parquet", *format] if format else None}}
        for spec in PIPELINE:  # engine copies: every stage that calls a model, as the registry says
            if spec.uses_model:
                sections[spec.section] = {**sections.get(spec.section, {}), "replicas": replicas, "gpus": gpus}
        result = pipeline.run(pipeline.RunSettings.load(config, flags, sections), out, progress=not quiet)
    except (SynthError, ValueError, OSError) as e:  # every stage's own error says what and where
        _fail(e)
    console.print()
    for line in console_summary(out):
        console.print(line)
    console.print(f"[green bold]{result.rows:,} rows[/green bold] → {result.final}  "
                  f"report: {result.report}  ({result.seconds / 60:.1f} min)")


@app.command()
def plan(
    sample: Path = typer.Argument(..., help="A finished sample run directory."),
    fragments: str = typer.Option(None, help="Project a run over this many fragments (suffixes k, M)."),
    target: str = typer.Option(None, help="Or: the final rows wanted (a count); projects the fragments needed."),
    gpu: str = typer.Option("H100", help="GPU profile: H100, H200, A100, L40S, or one in the config."),
    model_size: str = typer.Option("8b", help="Model size of the profile: 1b, 8b, 70b."),
    config: Path = typer.Option(None, help="A TOML whose [plan.gpus.<GPU>] gives \"<size>\" = [prefill, decode]."),
    prefill_tps: float = typer.Option(None, help="Prompt tokens/s of one GPU (instead of the profile's)."),
    decode_tps: float = typer.Option(None, help="Generated tokens/s of one GPU (instead of the profile's)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the plan as JSON."),
) -> None:
    """Project tokens, GPU-hours and CPU-hours of a full run from a small sample run's yields, tokens and times."""
    import tomllib

    from synth.plan import plan as make_plan

    try:
        profiles = tomllib.loads(config.read_text()).get("plan", {}).get("gpus") if config else None
        p = make_plan(sample, fragments=parse_count(fragments), target=parse_count(target), gpu=gpu,
                      model_size=model_size, profiles=profiles, prefill_tps=prefill_tps, decode_tps=decode_tps)
    except (SynthError, ValueError, FileNotFoundError, tomllib.TOMLDecodeError) as e:
        _fail(e)
    table = Table(title=f"plan for {p['fragments']:,} fragments → about {p['final_rows']:,} final rows")
    for col in ("stage", "yield", "rows in", "prompt tok/row", "completion tok/row", "tokens", "GPU-hours",
                "CPU-hours"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in p["stages"]:
        table.add_row(s["stage"], f"{s['yield_']:.2f}", f"{s['rows_in']:,}", f"{s['prompt_tokens_per_row']:.0f}",
                      f"{s['completion_tokens_per_row']:.0f}", f"{s['prompt_tokens'] + s['completion_tokens']:,}",
                      f"{s['gpu_hours']:.2f}", f"{s['cpu_hours']:.2f}")
    console.print(table)
    if p.get("documents_needed"):
        console.print(f"raw documents needed: about {p['documents_needed']:,} "
                      f"(extraction: {p['extract_cpu_hours']:.2f} CPU-hours)")
    t = p["throughput"]
    where = f"{t['gpu']} profile, {t['model_size']} model: " if t["gpu"] else ""
    console.print(f"total: {p['tokens']:,} tokens, {p['gpu_hours']:.1f} GPU-hours at {where}"
                  f"{t['prefill_tokens_per_s']:,.0f} prefill / {t['decode_tokens_per_s']:,.0f} decode tokens/s"
                  f"{' (assumed: measure with bench/llm.py)' if t['gpu'] else ''}; {p['cpu_hours']:.1f} CPU-hours "
                  "at the sample machine's pace")
    if json_out:
        json_out.write_text(json.dumps(p, indent=2))


# ---------------------------------------------------------------------------------------------------- train, mix, eval


def _split(values: list[str] | str | None) -> list[str] | None:
    """Repeatable and comma-separated at once: ``--langs swh,yor --langs zul`` → [swh, yor, zul]."""
    if values is None:
        return None
    items = [v.strip() for raw in ([values] if isinstance(values, str) else values) for v in str(raw).split(",")]
    return [v for v in items if v] or None


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
    import inspect

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


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(None, help="Model: directory, a `synth train` output, hub name, or 'smollm2'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: results.json, table.json, items.jsonl, "
                             "report.html, run.toml."),
    data: Path = typer.Option(None, "--data", help="Folder of prompts/summarization/translation/mc .jsonl "
                              "(default: examples/eval; schemas in synth/eval/README.md)."),
    tasks: list[str] = typer.Option(None, help="response_lang, summarization, translation, mc, judge, pairwise "
                                    "(comma-separated or repeated; default: every task with a file)."),
    langs: str = typer.Option(None, help="Only these languages (comma-separated)."),
    engine: str = typer.Option(None, help="hf (default), vllm or openai."),
    judge_model: str = typer.Option(None, help="Judge model (default: the evaluated model judges itself, "
                                    "which the results flag)."),
    judge_engine: str = typer.Option(None, help="Engine of the judge (default: --engine)."),
    baseline_model: str = typer.Option(None, help="pairwise: generate baseline answers with this model."),
    limit: int = typer.Option(None, help="At most N items per language (per direction for translation)."),
    max_tokens: int = typer.Option(None, help="Max new tokens per answer (default 128)."),
    judge_max_tokens: int = typer.Option(None, help="Max new tokens per judge verdict (default 128)."),
    mc_format: str = typer.Option(None, help="Multiple choice: cloze (default) or letters."),
    lid: str = typer.Option(None, help="Language ID for lang_correct: auto (default), lid176, heliport or a "
                            "fastText path."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable)."),
    cache: str = typer.Option(None, help="Request cache (sqlite path); default none."),
    config: Path = typer.Option(None, help="A run.toml; flags override its \\[eval] section."),
) -> None:
    """Evaluate a model per language: response language, ROUGE, chrF++/BLEU, multiple choice, LLM judges."""
    from synth.config import ConfigError
    from synth.eval import evaluate
    from synth.models import ModelNotFound

    flags = {"model": model, "data": str(data) if data else None, "tasks": _split(tasks), "langs": _split(langs),
             "engine": engine, "judge_model": judge_model, "judge_engine": judge_engine,
             "baseline_model": baseline_model, "limit": limit, "max_tokens": max_tokens,
             "judge_max_tokens": judge_max_tokens, "mc_format": mc_format, "lid": lid,
             "engine_options": _engine_options(engine_opt) or None, "cache": cache}
    defaults = {"model": None, "data": None, "tasks": None, "langs": None, "engine": "hf", "judge_model": None,
                "judge_engine": None, "baseline_model": None, "limit": None, "max_tokens": 128,
                "judge_max_tokens": 128, "mc_format": "cloze", "lid": "auto", "engine_options": None, "cache": None}
    try:
        cfg = config_section(config, "eval", defaults, flags, whole=("tasks", "langs", "engine_options"))
        if not cfg["model"]:
            raise ConfigError("give the MODEL to evaluate (argument, or model = ... in the config's [eval])")
        record(out, {"eval": cfg})
        res = evaluate(_eval_model(cfg["model"]), tasks=cfg["tasks"], langs=cfg["langs"], data_dir=cfg["data"],
                       engine=cfg["engine"], out_dir=out, judge_model=cfg["judge_model"],
                       judge_engine=cfg["judge_engine"], baseline_model=cfg["baseline_model"], limit=cfg["limit"],
                       max_new_tokens=cfg["max_tokens"], judge_max_tokens=cfg["judge_max_tokens"],
                       mc_format=cfg["mc_format"], lid=cfg["lid"], engine_options=cfg["engine_options"],
                       cache=cfg["cache"])
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


@models_app.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if prepared.")) -> None:
    """Prepare the offline models (SmolLM2 from its GGUF package; check fastText LID)."""
    from synth import models

    console.print(f"fastText LID: {models.lid176_path()}")
    console.print(f"{models.SMOLLM2}: {models.prepare_smollm2(force=force)}")


@models_app.command("get")
def models_get(name: str = typer.Argument(..., help="glotlid (Apache-2.0, 2,000+ languages) or openlid "
                                           "(GPL-3.0, 201 languages).")) -> None:
    """Download a fastText LID model from the Hugging Face Hub; then use it with --lid-model NAME."""
    from synth import models

    try:
        path = models.download_lid_model(name.lower())
    except models.ModelNotFound as e:
        _fail(e)
    licence = models.LID_DOWNLOADS[name.lower()][2]
    console.print(f"{name} ({licence}): {path} (use it with --lid-model {name.lower()}, or "
                  f"lid_model = \"{name.lower()}\" in the extract section of run.toml)", markup=False)


@models_app.command("list")
def models_list() -> None:
    """Show where each offline model is and whether it is ready."""
    from synth import models

    lid = [(f"LID {name} (synth models get)", partial(models.lid_model_path, name)) for name in models.LID_DOWNLOADS]
    for name, fn in (("fastText lid.176", models.lid176_path), (models.SMOLLM2, models.smollm2_dir), *lid):
        try:
            path = fn()
            state = "ready" if Path(path).exists() else "not prepared (synth models prepare)"
        except models.ModelNotFound as e:
            path, state = "-", str(e)
        console.print(f"{name:28} {state:12} {path}")
