"""The dataset commands: ``run``, the stage commands made from the registry (extract … backtranslate), ``export``,
``plan``, ``audit``, ``generate``, ``stats`` and the baselines."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from synth.baselines import TemplatedSettings, TranslatedSettings
from synth.cli.common import (
    CACHE_HELP,
    CONFIG_HELP,
    ENGINE_HELP,
    MODEL_HELP,
    _engine_options,
    _fail,
    app,
    console,
    export_formats,
)
from synth.cli.settings import settings_command
from synth.config import budget_flag, parse_count
from synth.errors import SynthError
from synth.llm.batch import GenerateSettings
from synth.pipeline import PIPELINE, RUN_FLAGS
from synth.registry import StageSpec


def _status_table(doc: dict[str, Any]) -> Table:
    """The stages of a run's progress.json, as ``synth status`` shows them."""
    table = Table(title=f"{doc.get('state', '?')}: stage {doc.get('stage', '?')} (pid {doc.get('pid')} on "
                        f"{doc.get('host')}, updated {doc['age_s']:.0f} s ago)")
    for col in ("stage", "state", "shards", "rows", "rows/s", "tokens", "tokens/s", "elapsed", "ETA"):
        table.add_column(col, justify="left" if col in ("stage", "state") else "right")
    for key, s in doc.get("stages", {}).items():
        eta = s.get("eta_s")
        table.add_row(key, s["state"], f"{s['shards_done']}/{s['shards_total']}", f"{s['rows']:,}",
                      f"{s['rows_per_s']:,.1f}", f"{s['tokens']:,}", f"{s['tokens_per_s']:,.0f}",
                      f"{s['elapsed_s'] / 60:.1f} min", f"{eta / 60:.1f} min" if eta is not None else "-")
    return table


@app.command()
def status(
    rundir: Path = typer.Argument(..., help="A run directory (its progress.json)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every few seconds until the run ends."),
) -> None:
    """Follow a run from another terminal: per stage shards done, rows/s, tokens/s and ETA, from
    RUNDIR/progress.json (rewritten every few seconds while a stage runs)."""
    import time

    from rich.live import Live

    from synth.progress import HEARTBEAT_S, read_status

    try:
        doc = read_status(rundir)
        if not watch:
            console.print(_status_table(doc))
        else:
            with Live(_status_table(doc), console=console, auto_refresh=False) as live:
                while doc.get("state") == "running":
                    time.sleep(HEARTBEAT_S)
                    doc = read_status(rundir)
                    live.update(_status_table(doc), refresh=True)
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    except KeyboardInterrupt:
        return
    if doc.get("why"):
        console.print(f"[yellow]{doc['why']}[/yellow]")


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


def _generate(s: GenerateSettings, out: Path, quiet: bool = False) -> None:
    """``synth generate``'s work, on its settings (the command is made from ``GenerateSettings``)."""
    from synth.llm import Sampling, load_engine
    from synth.llm.batch import generate_file
    from synth.llm.factory import default_engine, engine_class
    from synth.llm.stage import default_cache

    options = dict(s.engine_options or {})
    try:
        engine = s.engine or default_engine()
        if engine_class(engine).remote:  # a server's address and key
            options.update(base_url=s.base_url, api_key_env=s.api_key_env)
        llm = load_engine(engine, s.model, cache=None if s.no_cache else (s.cache or default_cache()), **options)
        with llm:
            report = generate_file(llm, Path(s.input), out, Sampling(max_tokens=s.max_tokens,
                                                                     temperature=s.temperature), progress=not quiet)
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


settings_command("generate", GenerateSettings, _generate, quiet=True, record_in_out=False,
                 help="Batch generation with any engine, on its own: prompts.jsonl in, results.jsonl out, cached. A "
                 "fully cached file does not load the model.", out_help="JSONL results, one per request, same order.")


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
    """Add ``synth <name>``: it runs ``specs`` through ``synth.orchestrate.run_command``. Each flag sets its
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
        from synth.orchestrate import RunSettings, run_command

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


def _translated(s: TranslatedSettings, out: Path, quiet: bool = False) -> None:
    from synth.baselines import translated

    try:
        result = translated(s.input, out, s.lang, s.stage(), limit=s.limit, progress=not quiet)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{result.rows:,} rows[/green] → {result.final}")


def _templated(s: TemplatedSettings, out: Path) -> None:
    from synth.baselines import templated

    try:
        result = templated(s.input, out, s.lang, s.template, limit=s.limit, english=s.english)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{result.rows:,} rows[/green] → {result.final}")


settings_command("translated", TranslatedSettings, _translated, quiet=True, on=baseline_app,
                 section=TranslatedSettings.SECTION, out_help="Output folder (final/ holds the dataset and its card).",
                 help="Machine-translate an English instruction dataset (instructions and responses) into the target "
                 "language, with stage 5's translator and fidelity gate; synth's final schema and a card.")
settings_command("templated", TemplatedSettings, _templated, on=baseline_app, section=TemplatedSettings.SECTION,
                 out_help="Output folder (final/ holds the dataset and its card).",
                 help="Turn a labelled dataset ({text, summary}, {context, question, answer}…) into instruction pairs "
                 "through a versioned template; synth's final schema and a card.")


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
    from synth.orchestrate import RunSettings

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
    format: list[str] = typer.Option(None, "--format", "-f", help="Copies beside the Parquet (always written), "
                                     "comma-separated or repeated: jsonl, alpaca, sharegpt."),
    license: list[str] = typer.Option(None, help="SOURCE=LICENCE for the dataset card (SOURCE * for all)."),
    config: Path = typer.Option(None, help=CONFIG_HELP),
    push_to_hub: str = typer.Option(None, help="Then upload final/ to the Hugging Face hub as this dataset repo "
                                    "(user/name); needs the network and a token (huggingface-cli login)."),
    private: bool = typer.Option(False, help="With --push-to-hub: create the repo private."),
) -> None:
    """Write RUNDIR/final: messages-format Parquet, optional JSONL/Alpaca/ShareGPT, card, trainer snippets."""
    from synth.export import push_to_hub as push
    from synth.orchestrate import RunSettings, export_run
    from synth.registry import EXPORT

    flags = {"formats": export_formats(format),
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
    format: list[str] = typer.Option(None, "--format", "-f", help="Copies beside the Parquet (always written), "
                                     "comma-separated or repeated: jsonl, alpaca, sharegpt."),
    decontaminate: list[str] = typer.Option(None, help="Evaluation files (JSONL, Parquet, datasets folders) whose "
                                            "text fragments and final rows must not overlap. Repeatable."),
    workers: int = typer.Option(None, help="Worker processes for extraction (default 1)."),
    replicas: str = typer.Option(None, help=REPLICAS_HELP), gpus: str = typer.Option(None, help=GPUS_HELP),
    executor: str = typer.Option(None, help=RUN_FLAGS[0].help),
    ray_address: str = typer.Option(None, help=RUN_FLAGS[1].help),
    max_budget: str = typer.Option(None, help=RUN_FLAGS[2].help),
    config: Path = typer.Option(None, help="run.toml: top-level keys and a section per stage ("
                                + ", ".join(f"\\[{s}]" for s in PIPELINE.section_names) + ")."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The main job: native text in, a clean instruction dataset, report and stats out. Resumable."""
    from synth.orchestrate import RunSettings
    from synth.orchestrate import run as run_all
    from synth.registry import EXPORT
    from synth.report import console_summary

    translators = {"translator": translator, "mt_model": mt_model}
    try:
        flags = {"lang": lang, "inputs": input or None, "fragments": parse_count(fragments),
                 "target": parse_count(target), "engine": engine, "model": model, "workers": workers,
                 "executor": executor, "ray_address": ray_address, "max_budget": budget_flag(max_budget)}
        sections = {"score": {"model": judge_model}, "translate": translators, "backtranslate": translators,
                    "decontaminate": {"paths": decontaminate or None},
                    EXPORT: {"formats": export_formats(format)}}
        for spec in PIPELINE:  # engine copies: every stage that calls a model, as the registry says
            if spec.uses_model:
                sections[spec.section] = {**sections.get(spec.section, {}), "replicas": replicas, "gpus": gpus}
        result = run_all(RunSettings.load(config, flags, sections), out, progress=not quiet)
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
    config: Path = typer.Option(None, help="A TOML whose [plan.gpus.<GPU>] gives \"<size>\" = [prefill, decode] "
                                "and [plan.prices] the prices (gpu_hour, cpu_hour, input_per_million, "
                                "output_per_million, batch_discount, currency)."),
    prefill_tps: float = typer.Option(None, help="Prompt tokens/s of one GPU (instead of the profile's)."),
    decode_tps: float = typer.Option(None, help="Generated tokens/s of one GPU (instead of the profile's)."),
    gpu_price: float = typer.Option(None, help="Price of a GPU-hour (your cloud's rate for --gpu)."),
    cpu_price: float = typer.Option(None, help="Price of a CPU-hour (extraction, embedding, selection, gates)."),
    price_in: float = typer.Option(None, help="A hosted API: price per million input tokens (with --price-out; "
                                   "the model stages are then priced by tokens, not GPU-hours)."),
    price_out: float = typer.Option(None, help="A hosted API: price per million output tokens."),
    batch_discount: float = typer.Option(None, help="Share off the token prices for a batch API (0.5: half)."),
    currency: str = typer.Option(None, help="The prices' currency, for the table (default USD)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the plan as JSON."),
) -> None:
    """Project tokens, GPU-hours, CPU-hours and, with prices, money of a full run from a small sample run's
    yields, tokens and times."""
    import tomllib

    from synth.plan import Prices, priced
    from synth.plan import plan as make_plan

    flags = {"gpu_hour": gpu_price, "cpu_hour": cpu_price, "input_per_million": price_in,
             "output_per_million": price_out, "batch_discount": batch_discount, "currency": currency}
    try:
        section = tomllib.loads(config.read_text()).get("plan", {}) if config else {}
        p = make_plan(sample, fragments=parse_count(fragments), target=parse_count(target), gpu=gpu,
                      model_size=model_size, profiles=section.get("gpus"), prefill_tps=prefill_tps,
                      decode_tps=decode_tps)
        given = {**section.get("prices", {}), **{k: v for k, v in flags.items() if v is not None}}
        prices = Prices(**given) if given else None
        p = priced(p, prices) if prices else p
    except (SynthError, ValueError, TypeError, FileNotFoundError, tomllib.TOMLDecodeError) as e:
        _fail(e)
    table = Table(title=f"plan for {p['fragments']:,} fragments → about {p['final_rows']:,} final rows")
    money = f"cost ({prices.currency})" if prices else None
    for col in ("stage", "yield", "rows in", "prompt tok/row", "completion tok/row", "tokens", "GPU-hours",
                "CPU-hours", *([money] if money else [])):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in p["stages"]:
        table.add_row(s["stage"], f"{s['yield_']:.2f}", f"{s['rows_in']:,}", f"{s['prompt_tokens_per_row']:.0f}",
                      f"{s['completion_tokens_per_row']:.0f}", f"{s['prompt_tokens'] + s['completion_tokens']:,}",
                      f"{s['gpu_hours']:.2f}", f"{s['cpu_hours']:.2f}", *([f"{s['cost']:,.2f}"] if money else []))
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
    if prices:
        console.print(f"[bold]cost: {p['cost']:,.2f} {prices.currency}[/bold] ({prices.describe()}; extraction "
                      f"{p['extract_cost']:,.2f})")
    if json_out:
        json_out.write_text(json.dumps(p, indent=2))
