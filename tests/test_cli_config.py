import subprocess
import tomllib

import pytest
import typer
from toy_stages import Upper, toy_source
from typer.testing import CliRunner

from synth import __version__, run_stage
from synth.cli import app
from synth.config import ConfigError, load_config, parse_count, resolve, write_run_config
from synth.fingerprint import fingerprint

runner = CliRunner()


def test_help_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "extract" in res.output and "stats" in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_console_script_is_installed():
    out = subprocess.run([".venv/bin/synth", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Build multilingual instruction-finetuning datasets" in out


def test_stats_command_shows_the_funnel(tmp_path):
    run_stage(Upper(), toy_source(), tmp_path, progress=False)
    res = runner.invoke(app, ["stats", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "01_toy" in res.output and "contains_drop_word" in res.output


def test_stats_on_an_empty_directory_says_so(tmp_path):
    res = runner.invoke(app, ["stats", str(tmp_path)])
    assert res.exit_code == 1 and "no stage has finished" in " ".join(res.output.split())  # however it wraps


@pytest.mark.parametrize("text,value", [("1M", 1_000_000), ("500k", 500_000), ("1234", 1234), ("2.5k", 2500)])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["abc", "-5", "0", "1.5"])
def test_parse_count_rejects(text):
    with pytest.raises(ConfigError):
        parse_count(text)


def test_config_precedence_and_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[extract]\nlang = "sw"\nmin_len = 300\n')
    file_cfg = load_config(path)["extract"]
    cfg = resolve({"lang": None, "min_len": 200, "max_len": 2000}, file_cfg, {"max_len": 900, "lang": None})
    assert cfg == {"lang": "sw", "max_len": 900, "min_len": 300}
    write_run_config(tmp_path / "rd", {"extract": cfg})
    assert tomllib.loads((tmp_path / "rd" / "run.toml").read_text())["extract"] == cfg


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[extract\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="min_lenn"):
        resolve({"min_len": 1}, {"min_lenn": 2}, {})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_fingerprint_is_order_independent_and_rejects_paths(tmp_path):
    assert fingerprint({"a": 1, "b": [1, 2.0]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    with pytest.raises(TypeError, match="paths do not belong"):
        fingerprint({"model": tmp_path})


def _run_settings(monkeypatch, tmp_path, config: str, *flags: str):
    """What `synth run` would run with: the CLI's parsing and merging, the pipeline replaced by a recorder."""
    import synth.orchestrate

    seen = {}

    def record(settings, rundir, progress=True):
        seen["settings"] = settings
        raise typer.Exit(0)

    monkeypatch.setattr(synth.orchestrate, "run", record)
    path = tmp_path / "run.toml"
    path.write_text(config)
    res = runner.invoke(app, ["run", "--config", str(path), "--out", str(tmp_path / "rd"), *flags])
    return res, seen.get("settings")


def test_run_flags_win_over_the_config(monkeypatch, tmp_path):
    config = ('lang = "sw"\ninput = ["from/config"]\nworkers = 3\ntarget = 10\n'
              '[score]\nmodel = "config-judge"\n[translate]\ntranslator = "llm"\n')
    res, s = _run_settings(monkeypatch, tmp_path, config, "--input", "from/flag", "--judge-model", "flag-judge",
                           "--translator", "seq2seq", "--mt-model", "mt/dir", "--target", "5")
    assert res.exit_code == 0, res.output
    assert s.inputs == ["from/flag"] and s.workers == 3 and s.target == 5
    assert s.sections["score"]["model"] == "flag-judge"
    assert s.sections["translate"] == {"translator": "seq2seq", "mt_model": "mt/dir"} == s.sections["backtranslate"]
    res, s = _run_settings(monkeypatch, tmp_path, config)
    assert s.inputs == ["from/config"] and s.sections["score"]["model"] == "config-judge"
    assert s.sections["translate"]["translator"] == "llm"


@pytest.mark.parametrize("config,message", [
    ('lang = "sw"\ninput = ["x"]\n[translate]\nmodle = "m"\n', r"\[translate\]: unknown setting\(s\) modle"),
    ('lang = "sw"\ninput = ["x"]\n[fidelity]\nmin_lid = 0.3\n', r"\[fidelity\]: unknown setting\(s\) min_lid"),
    ('lang = "sw"\ninput = ["x"]\nlanguage = "sw"\n', r"unknown setting\(s\) in config: language"),
    ('[extract]\nlang = "sw"\ninput = ["x"]\n', None),  # the shape `synth extract --config` takes is fine
    ('lang = "yo"\ninput = ["x"]\n[extract]\nlang = "sw"\n', r"contradicts"),
])
def test_run_config_mistakes_are_named(monkeypatch, tmp_path, config, message):
    res, s = _run_settings(monkeypatch, tmp_path, config)
    if message is None:
        assert res.exit_code == 0 and s.lang == "swh" and s.inputs == ["x"], res.output  # canonical
    else:
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        import re

        assert re.search(message, " ".join(res.output.split())), res.output


def test_run_on_a_missing_input_is_a_one_line_error(tmp_path):
    res = runner.invoke(app, ["run", "--lang", "sw", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                              "--quiet"])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output, res.output


@pytest.mark.slow
def test_a_fully_cached_generate_does_not_load_the_model(tmp_path, monkeypatch):
    """The request cache answers a repeated file whole, so the second `synth generate` never builds the engine;
    a new prompt is a miss, and only then is the model loaded."""
    import json

    from synth.llm.hf import HFEngine

    cache = tmp_path / "c.sqlite"
    prompts = [{"id": "a", "prompt": "The capital of France is", "max_tokens": 4},
               {"id": "b", "prompt": "One, two, three,", "max_tokens": 4}]

    def generate(name: str, lines: list[dict], engine: list[str] = ["--engine", "hf"]) -> list[dict]:  # noqa: B006
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
        res = runner.invoke(app, ["generate", *engine, "--model", "smollm2", "--cache", str(cache), "--quiet",
                                  "-i", str(tmp_path / f"{name}.jsonl"), "-o", str(tmp_path / f"{name}.out")])
        assert res.exit_code == 0, res.output
        return [json.loads(line) for line in (tmp_path / f"{name}.out").read_text().splitlines()]

    first = generate("first", prompts)  # the real engine
    built = []
    real_init = HFEngine.__init__

    def counted(self, *args, **kwargs):
        built.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "__init__", counted)
    again = generate("again", prompts)
    assert built == [] and all(r["cached"] for r in again)
    assert [r["text"] for r in again] == [r["text"] for r in first]
    default = generate("default", prompts, engine=[])  # no --engine: the default one (hf on a machine without GPU)
    assert built == [] and [r["text"] for r in default] == [r["text"] for r in first]
    more = generate("more", [*prompts, {"id": "c", "prompt": "Water is", "max_tokens": 4}])
    assert len(built) == 1 and [r["cached"] for r in more] == [True, True, False]


def test_a_command_made_from_a_settings_class_has_one_option_per_field_and_its_defaults_once(tmp_path):
    """``synth.cli.settings.settings_command``: a field added to the class is an option, flags win over the
    config's section, which wins over the field's default; the resolved section is recorded."""
    import tomllib
    from dataclasses import dataclass

    from synth.cli.settings import settings_command
    from synth.config import option, split_list

    @dataclass
    class Toy:
        n: int = option(3, "How many.")
        names: list[str] | None = option(None, "Names.", parse=split_list, many=True, whole=True)
        ratio: float = option(0.5, "A share.", flag="--share")

    seen = []
    settings_command("toy-settings", Toy, lambda s, out: seen.append(s), help="A toy.", out_help="Out.")
    res = CliRunner().invoke(app, ["toy-settings", "--help"], env={"COLUMNS": "200"})
    assert all(f in res.output for f in ("--n", "--names", "--share", "(default 3)", "(default 0.5)")), res.output
    res = CliRunner().invoke(app, ["toy-settings", "--out", str(tmp_path), "--n", "5", "--names", "a,b",
                                   "--names", "c"])
    assert res.exit_code == 0, res.output
    assert seen[-1] == Toy(5, ["a", "b", "c"], 0.5)
    assert tomllib.loads((tmp_path / "run.toml").read_text())["toy-settings"]["n"] == 5
    cfg = tmp_path / "c.toml"
    cfg.write_text('[toy-settings]\nn = 7\nratio = 0.25\n')
    CliRunner().invoke(app, ["toy-settings", "--out", str(tmp_path), "--config", str(cfg), "--share", "0.1"])
    assert seen[-1] == Toy(7, None, 0.1)
    cfg.write_text('[toy-settings]\nm = 7\n')
    res = CliRunner().invoke(app, ["toy-settings", "--out", str(tmp_path), "--config", str(cfg)])
    assert res.exit_code == 2 and "unknown setting(s) in config: m" in res.output


def test_synth_eval_is_made_from_eval_settings():
    """Every field of EvalSettings is an option of `synth eval` (the model its argument), and evaluate's defaults
    are the fields' defaults: each stated once."""
    import inspect
    from dataclasses import fields

    from synth.eval import evaluate
    from synth.eval.settings import EvalSettings

    res = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    for f in fields(EvalSettings):
        flag = f.metadata["cli"].flag or f"--{f.name.replace('_', '-')}"
        assert (flag in res.output) != f.metadata["cli"].argument, f.name
    params = inspect.signature(evaluate).parameters
    assert params["max_new_tokens"].default == EvalSettings.max_tokens
    assert params["judge_max_tokens"].default == EvalSettings.judge_max_tokens
    assert params["mc_format"].default == EvalSettings.mc_format and params["lid"].default == EvalSettings.lid


def test_the_command_line_loads_no_model_library():
    """The pipeline's stage classes are imported to declare it (their keys), but what they run on is not: `synth
    --help` stays fast on a machine with torch, vLLM and Ray installed."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "vllm", "sentence_transformers", "faiss", "ray", "datasketch", "lm_eval")
    code = ("import sys; from typer.testing import CliRunner; from synth.cli import app; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("command", ["select", "audit"])
def test_min_relevance_off_is_a_given_flag(monkeypatch, tmp_path, command):
    """`--min-relevance off` turns the relevance check off: the flag keeps the word, which the settings read as
    no check, where a flag that gave None would read as not given and leave the default ('auto')."""
    import typer

    import synth.audit
    import synth.orchestrate
    from synth.pipeline import PIPELINE
    from synth.select.relevance import parse_min_relevance
    from synth.select.settings import SelectSettings

    seen = {}

    def record_select(rundir, name, settings, progress=True):
        seen["min_relevance"] = SelectSettings(**settings.values(PIPELINE.section("select"))).min_relevance
        raise typer.Exit(0)

    def record_audit(input, out, lang, settings=None, **kw):
        seen["min_relevance"] = settings.get("min_relevance", "auto")  # Audit's default where not given
        raise typer.Exit(0)

    monkeypatch.setattr(synth.orchestrate, "run_command", record_select)
    monkeypatch.setattr(synth.audit, "audit", record_audit)
    args = ["select"] if command == "select" else ["audit", str(tmp_path / "data.jsonl"), "--lang", "en"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), "--min-relevance", "off"])
    assert res.exit_code == 0, res.output
    assert parse_min_relevance(seen["min_relevance"]) is None  # off, not the default 'auto'
