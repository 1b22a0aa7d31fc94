"""The pipeline is declared once (synth.pipeline.PIPELINE): a stage added by one registry line runs in
`synth run` and shows up in stats.json, `synth plan`, report.html and the dataset card; config sections, CLI
commands, lineage and the stage keys all come from the registry."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tomli_w
from offline_judge import NO_QUALITY_BAR
from toy_stages import Words
from typer.testing import CliRunner

from synth import pipeline
from synth.cli import app
from synth.config import ConfigError, cli_fields
from synth.kernel import StageOutput
from synth.orchestrate import RunSettings
from synth.pipeline import PIPELINE
from synth.plan import plan
from synth.registry import StageSpec

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus" / "noise" / "udhr_english.txt"
WORDS = StageSpec(Words, reads="05_decontaminate", label="word count")  # the one registry line


@pytest.fixture
def with_words(monkeypatch):
    """The pipeline with the toy stage after the fidelity gate (a copy: other tests see the real one)."""
    monkeypatch.setattr(pipeline, "PIPELINE", PIPELINE.register(WORDS))
    return pipeline.PIPELINE


def test_each_stage_key_is_written_once_in_its_class_and_only_referred_to_by_the_declaration():
    """``key = "NN_name"`` in the class is the one place a key is written; ``StageSpec`` reads it from there, and
    only the pipeline's declaration refers to it (``reads``, ``made_by``), no other module."""
    sources = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in (ROOT / "synth").rglob("*.py")}
    for spec in PIPELINE:
        home = inspect.getsourcefile(spec.stage_class)
        declared = [path for path, text in sources.items() if f'key = "{spec.key}"' in text]
        assert declared == [Path(home).relative_to(ROOT).as_posix()], spec.key
        spelled = {path for path, text in sources.items() if f'"{spec.key}"' in text} - set(declared)
        assert spelled <= {"synth/pipeline.py"}, (spec.key, spelled)


def test_a_stage_that_writes_its_key_twice_or_badly_is_refused():
    from synth.kernel import Stage

    with pytest.raises(TypeError, match="declares its key once"):
        type("Old", (Stage,), {"name": "old", "step": 6})
    with pytest.raises(TypeError, match="give 'NN_name'"):
        type("Bad", (Stage,), {"key": "polish"})
    assert type("Good", (Stage,), {"key": "06_polish"})().name == "polish"


def test_registry_refuses_a_stage_that_reads_what_is_not_before_it():
    with pytest.raises(ValueError, match="reads 05_decontaminate"):
        PIPELINE.register(WORDS, after="04_score")
    with pytest.raises(ValueError, match=r"section \[select\] is taken"):
        PIPELINE.register(StageSpec(Words, reads="05_decontaminate", section="select"))


def test_a_registered_stage_has_a_config_section_checked_like_the_others(with_words):
    s = RunSettings.from_dict({"lang": "sw", "input": ["x"], "words": {"min_words": 3}})
    assert s.values(with_words["05_words"]) == {"min_words": 3} and s.lang == "swh"
    with pytest.raises(ConfigError, match=r"\[words\]: unknown setting\(s\) min_word"):
        RunSettings.from_dict({"lang": "sw", "input": ["x"], "words": {"min_word": 3}})
    with pytest.raises(ConfigError, match="unknown setting"):
        RunSettings.from_dict({"lang": "sw", "input": ["x"], "words": {"min_words": 3}, "wrds": {}})


def _help(command: str) -> str:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def _flag(f, opt) -> str:
    return opt.flag or f"--{f.name.replace('_', '-')}"


def test_the_options_of_every_command_over_run_toml_are_the_fields_of_the_settings():
    """Stage commands, run, audit and export are made from the settings classes (``option(...)`` fields): a
    stage command takes its stages' fields and the top-level settings they take (RunSettings'); run and audit
    take the fields that name them in ``also``, and the help says which sections a flag sets."""
    for command, specs in PIPELINE.commands().items():
        out = _help(command)
        top = {k for s in specs for k in s.top} | set(RunSettings.EXECUTION)
        for s in (s for s in specs if s.settings_of is None):
            for f, opt in cli_fields(s.settings_class):
                assert _flag(f, opt) in out, (command, f.name)
        for f, opt in cli_fields(RunSettings):
            assert f.name not in top or _flag(f, opt) in out, (command, f.name)
        assert ("--engine-opt" in out) == any(s.uses_model for s in specs)
        assert "--config" in out
    for command in ("run", "audit"):
        out = _help(command)
        for cls in (RunSettings, *PIPELINE.sections().values()):
            for f, opt in cli_fields(cls):
                assert command not in opt.also or (opt.wide or _flag(f, opt)) in out, (command, cls, f.name)
    run = _help("run")
    assert "--translator" in run and "Sets [translate] and [backtranslate]." in run
    assert "--judge-model" in run and "--engine-opt" not in run and "--format" in _help("export")
    assert "--input" not in _help("translate") and "--fragments" not in _help("select")


def test_a_field_of_a_new_stage_is_an_option_of_its_command_and_of_run_where_it_says_so(with_words):
    """The toy stage's one ``option(...)`` field: ``synth words --min-words`` and, by its ``also``,
    ``synth run --min-words``, each setting [words]; a flag that would set two different settings is refused."""
    from dataclasses import dataclass

    from synth.cli.settings import wires
    from synth.config import option
    from synth.kernel import Stage

    assert wires("run")["--min-words"].targets == [("words", "min_words")]
    assert {"--min-words", "--executor", "--max-budget"} <= set(wires("words"))

    @dataclass
    class Clash(Stage):
        key = "06_clash"
        model_dir: str = option(None, "A second setting under a taken flag.", flag="--translator", also=("run",))

    pipeline.PIPELINE = pipeline.PIPELINE.register(StageSpec(Clash, reads="05_words"))
    with pytest.raises(ValueError, match="--translator would set both translator and model_dir"):
        wires("run")


def test_flags_win_over_the_config_of_a_stage_command(tmp_path):
    """`synth translate --config` reads the same sections as `synth run`; a flag wins; a bad key is named."""
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps({"model": "top-model", "translate": {"max_tokens": 7, "model": "cfg-model"}}))
    s = RunSettings.load(config, sections={"translate": {"model": "flag-model", "translator": None}})
    assert s.values(PIPELINE["02_translate"])["model"] == "flag-model"
    assert s.values(PIPELINE["02_translate"])["max_tokens"] == 7
    assert s.values(PIPELINE["03_instruct"])["model"] == "top-model"  # the top level is every stage's default
    config.write_text('[translate]\nmax_tokenz = 7\n')
    res = CliRunner().invoke(app, ["translate", "--out", str(tmp_path / "rd"), "--config", str(config)])
    assert res.exit_code == 2 and "[translate]: unknown setting(s) max_tokenz" in " ".join(res.output.split())


@pytest.mark.slow
def test_a_stage_added_by_one_line_runs_and_is_reported_everywhere(with_words, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(p for p in CORPUS.read_text().split("\n\n") if len(p) > 150))
    cache = str(tmp_path / "requests.sqlite")
    llm = {"cache": cache, "engine_options": {"dtype": "bfloat16"}}
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps({
        "lang": "en", "input": [str(corpus)], "fragments": 4, "engine": "hf", "extract": {"txt_mode": "paragraphs"},
        **{s.section: llm for s in with_words if s.uses_model}, "words": {"min_words": 60},
        "select": NO_QUALITY_BAR}))
    rundir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(rundir), "--quiet"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert re.search(r"05_words\s", res.output)  # the run's funnel

    words = StageOutput.current(rundir, "05_words")  # its folder and rows
    gated = StageOutput.current(rundir, "05_decontaminate").read()
    rows = words.read()
    assert words.manifest["params"] == {"min_words": 60} and words.manifest["input_fingerprint"] == \
        StageOutput.current(rundir, "05_decontaminate").fingerprint
    assert rows.column("words").to_pylist() == [len(t.split()) for t in rows.column("fragment").to_pylist()]
    assert all(n >= 60 for n in rows.column("words").to_pylist())
    stats = json.loads((rundir / "stats.json").read_text())["stages"]
    assert list(stats)[-1] == "05_words"
    s = stats["05_words"]
    assert s["rows_in"] == gated.num_rows > 0 and s["rows_out"] == rows.num_rows
    assert s["rows_in"] == s["rows_out"] + s["dropped"].get("too_few_words", 0)

    final = pq.read_table(rundir / "final" / "data")  # the export reads the last stage: the toy's rows
    assert sorted(final.column("id").to_pylist()) == sorted(rows.column("id").to_pylist())
    card = (rundir / "final" / "README.md").read_text()
    assert f"| 05_words | {s['rows_in']:,} | {s['rows_out']:,} |" in card
    assert f"Total: {rows.num_rows:,} rows." in card
    html = (rundir / "report.html").read_text()
    assert "05_words" in html and "word count" in html  # funnel table, and its label in the plots

    projected = {p["stage"]: p for p in plan(rundir, fragments=1000)["stages"]}
    assert list(projected)[-1] == "05_words"
    assert projected["05_words"]["rows_in"] == projected["05_decontaminate"]["rows_out"]
    res = CliRunner().invoke(app, ["plan", str(rundir), "--fragments", "1000"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "05_words" in res.output, res.output
