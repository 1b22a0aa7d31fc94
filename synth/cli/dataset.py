"""The dataset commands: ``run``, the stage commands made from the registry (extract … backtranslate), ``export``,
``plan``, ``audit``, ``generate``, ``stats`` and the baselines."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from synth.baselines import TemplatedSettings, TranslatedSettings
from synth.cli.common import _fail, app, console
from synth.cli.settings import parameter, run_toml_command, settings_command
from synth.config import parse_count
from synth.errors import SynthError
from synth.llm.batch import GenerateSettings
from synth.pipeline import PIPELINE
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


def _stage_command(name: str, specs: list[StageSpec]) -> None:
    """Add ``synth <name>``: it runs ``specs`` through ``synth.orchestrate.run_command``; its options are their
    settings' fields (``run_toml_command``), each over the same field of ``--config``."""
    first = specs[0]
    reads = (f" (reads its {first.reads}{', else ' + first.fallback if first.fallback else ''})"
             if first.driver is None else "")

    def work(settings: Any, given: dict[str, Any]) -> None:
        from synth.orchestrate import run_command

        try:
            outputs = run_command(given["out"], name, settings, progress=not given["quiet"])
        except (SynthError, ValueError, OSError) as e:
            _fail(e)
        _print_outputs(given["out"], outputs)

    main_spec = next((s for s in specs if s.section == name), first)
    run_toml_command(name, work, help=main_spec.help or f"Run the {main_spec.label} stage ({main_spec.key}).",
                     out_help=f"Run directory{reads}.")


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


def _audit(run: Any, given: dict[str, Any]) -> None:
    """``synth audit``'s work: stage 5's translator (into English), the embedding and relevance settings of
    [embed] and [select], and with ``--judge`` stage 4's judge and its bar, as ``run`` resolved them."""
    from synth.audit import Audit, audit
    from synth.config import defaults
    from synth.report import console_summary

    try:
        if not run.lang:
            raise SynthError("synth audit needs --lang, the data's language (for rows that do not name theirs)")
        translating: dict = {}
        if run.sections.get("backtranslate", {}).get("translator"):  # as stage 5 would translate, into English
            known = {f.name for f in fields(Audit)} - {"prompt", "lang"}
            translating = {k: v for k, v in run.values(PIPELINE.section("backtranslate")).items() if k in known}
        embed, chosen = run.sections.get("embed", {}), run.sections.get("select", {})
        settings = {**translating, **({"embedder": embed["model"]} if "model" in embed else {}),
                    **{k: v for k, v in {**embed, **chosen}.items() if k in ("relevance_model", "min_relevance")}}
        select = {**defaults(PIPELINE.section("select").settings_class), **chosen}
        result = audit(given["input"], given["out"], run.lang, settings,
                       judge=run.values(PIPELINE.section("score")) if given["judge"] else None,
                       min_quality=select["min_quality"], progress=not given["quiet"])
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    for line in console_summary(given["out"]):
        console.print(line)
    dropped = ", ".join(f"{reason} ({n:,})" for reason, n in result.reasons.items()) or "none"
    console.print(f"[green bold]{result.kept:,} of {result.rows:,} rows kept[/green bold]; dropped: {dropped}")
    console.print(f"{result.table}  {result.final}  report: {result.report}")


run_toml_command(
    "audit", _audit, help="synth's row checks on any instruction dataset: which rows pass, and why the others do not.",
    out_help="Output folder: audit.parquet, final/ (the kept rows), report.html.",
    extra=(parameter("input", Path, typer.Argument(..., help="Instruction data: a JSONL, JSON or Parquet file or "
                                                     "folder (messages, ShareGPT, Alpaca or instruction/response "
                                                     "rows), or a synth final/.")),
           parameter("judge", bool, typer.Option(False, "--judge/--no-judge", show_default=False,
                                                  help="Also run the LLM judge (stage 4's) and drop rows below "
                                                  "--min-quality."))))


def _export(run: Any, given: dict[str, Any]) -> None:
    from synth.export import push_to_hub as push
    from synth.orchestrate import export_run

    try:
        final, rows = export_run(given["out"], run)
        console.print(f"[green]{rows:,} rows[/green] → {final}")
        if given["push_to_hub"]:
            console.print(f"pushed → {push(final, given['push_to_hub'], private=given['private'])}")
    except (SynthError, ValueError, OSError) as e:
        _fail(e)


run_toml_command(
    "export", _export, quiet=False, out_help="Run directory (reads its last stage's output).",
    help="Write RUNDIR/final: messages-format Parquet, optional JSONL/Alpaca/ShareGPT, card, trainer snippets.",
    extra=(parameter("push_to_hub", str, typer.Option(None, "--push-to-hub", help="Then upload final/ to the "
                                                       "Hugging Face hub as this dataset repo (user/name); needs the "
                                                       "network and a token (huggingface-cli login).")),
           parameter("private", bool, typer.Option(False, "--private/--no-private", show_default=False,
                                                    help="With --push-to-hub: create the repo private."))))


def _run(settings: Any, given: dict[str, Any]) -> None:
    from synth.orchestrate import run as run_all
    from synth.report import console_summary

    try:
        result = run_all(settings, given["out"], progress=not given["quiet"])
    except (SynthError, ValueError, OSError) as e:  # every stage's own error says what and where
        _fail(e)
    console.print()
    for line in console_summary(given["out"]):
        console.print(line)
    console.print(f"[green bold]{result.rows:,} rows[/green bold] → {result.final}  "
                  f"report: {result.report}  ({result.seconds / 60:.1f} min)")


run_toml_command("run", _run, out_help="Run directory.",
                 help="The main job: native text in, a clean instruction dataset, report and stats out. Resumable.")


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
