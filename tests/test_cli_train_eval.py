"""`synth train`, `synth mix` and `synth eval` through the command line: the issue's bars, config and errors."""

import json
import tomllib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_train import ROWS
from typer.testing import CliRunner

from synth.cli import app
from synth.export import export

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "eval"

PAIRS = ROWS  # short real sentences in three languages, shared with test_train


def exported_run(rundir: Path, langs: list[str]) -> Path:
    """A run directory whose final/ was written by synth.export, as `synth export` leaves it."""
    rows = [{"id": f"{lang}-{i}", "lang": lang, "instruction": q, "fragment": a, "source": "udhr"}
            for lang in langs for i, (q, a) in enumerate(PAIRS[lang])]
    export(pa.Table.from_pylist(rows), rundir)
    # stage output next to final/ that training must not read (it has no messages)
    (rundir / "01_extract").mkdir()
    pq.write_table(pa.table({"fragment": ["x"], "lang": ["swh"]}), rundir / "01_extract" / "part-00000.parquet")
    return rundir


class Result:
    """The exit code, and the output with rich's line wrapping undone (messages are matched as one line)."""

    def __init__(self, res) -> None:
        self.exit_code = res.exit_code
        self.output = " ".join(res.output.split())


def invoke(*args: object) -> Result:
    res = runner.invoke(app, [str(a) for a in args])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res)


# ------------------------------------------------------------------------------------------------ train + eval


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The bar: `synth train --method lora --max-steps 2` on an exported run, validated in two languages."""
    tmp = tmp_path_factory.mktemp("cli_train")
    run = exported_run(tmp / "run", ["swh", "fra", "eng"])
    val = exported_run(tmp / "val", ["swh", "fra"])
    out = tmp / "sft"
    res = invoke("train", run, "--out", out, "--method", "lora", "--max-steps", "2", "--lr", "5e-3",
                 "--batch-size", "6", "--max-len", "128", "--logging-steps", "1", "--eval-steps", "1",
                 "--lora-rank", "8", "--lora-alpha", "16", "--lora-targets", "q_proj,v_proj",
                 "--val-data", val / "final")
    return res, out


@pytest.mark.slow
def test_train_lora_two_steps_writes_an_adapter_and_a_model(trained):
    res, out = trained
    assert res.exit_code == 0, res.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["method"] == "lora" and report["steps"] == 2
    assert report["train_langs"] == {"eng": 2, "fra": 2, "swh": 2}  # final/data only, not 01_extract
    assert report["last_loss"] < report["first_loss"]  # one update on the same six rows lowers their loss
    assert set(report["best_val_per_lang"]) == {"fra", "swh"} and report["best_step"] in (1, 2)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "model" / "config.json").exists() and list((out / "model").glob("*.safetensors"))
    assert list((out / "checkpoints").glob("checkpoint-*"))
    cfg = tomllib.loads((out / "run.toml").read_text())["train"]
    assert cfg["method"] == "lora" and cfg["max_steps"] == 2 and cfg["lora_targets"] == ["q_proj", "v_proj"]
    assert "2 steps on 6 rows" in res.output and "best multilingual validation loss" in res.output


@pytest.mark.slow
def test_eval_of_the_trained_model_writes_the_language_table(trained, tmp_path):
    _, model_out = trained
    out = tmp_path / "eval"
    res = invoke("eval", model_out, "--out", out, "--data", EXAMPLES, "--tasks", "response_lang",
                 "--langs", "swh,fra,eng", "--limit", "1", "--max-tokens", "8")
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == str(model_out / "model")  # a train output stands for its merged model
    table = json.loads((out / "table.json").read_text())
    assert table["langs"] == ["eng", "fra", "swh"]
    assert {"lang_correct", "code_switch"} <= set(table["metrics"])
    for row in table["rows"].values():
        assert 0.0 <= row["lang_correct"] <= 1.0
    assert results["counts"]["swh"]["response_lang"] == 1
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert sorted(i["lang"] for i in items) == ["eng", "fra", "swh"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "lang_correct" in page
    assert "lang_correct" in res.output and "swh" in res.output


def test_eval_reads_its_config_section_and_checks_tasks(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[eval]\nmodel = "smollm2"\ntasks = ["nope"]\n')
    res = invoke("eval", "--out", tmp_path / "e", "--config", cfg)
    assert res.exit_code == 2 and "unknown task(s) ['nope']" in res.output
    cfg.write_text('[eval]\nmodel = "smollm2"\ntemperature = 1\n')
    res = invoke("eval", "--out", tmp_path / "e", "--config", cfg)
    assert res.exit_code == 2 and "unknown setting(s) in config: temperature" in res.output
    res = invoke("eval", "--out", tmp_path / "e")
    assert res.exit_code == 2 and "give the MODEL" in res.output


# ------------------------------------------------------------------------------------------------ train options


def test_train_errors_are_clear_before_any_model_loads(tmp_path):
    run = exported_run(tmp_path / "run", ["swh"])
    res = invoke("train", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "give the training data" in res.output
    res = invoke("train", run, "--out", tmp_path / "o", "--method", "qlora")
    assert res.exit_code == 2 and "lora or full" in res.output
    res = invoke("train", run, "--out", tmp_path / "o", "--lr-sweep", "1e-4,3e-4")
    assert res.exit_code == 2 and "give --val-data" in res.output
    res = invoke("train", run, "--out", tmp_path / "o", "--lr-sweep", "fast", "--val-data", run)
    assert res.exit_code == 2 and "learning rates like" in res.output
    res = invoke("train", tmp_path / "missing", "--out", tmp_path / "o", "--max-steps", "1")
    assert res.exit_code == 2 and "no such Parquet file or folder" in res.output


def test_train_lr_sweep_and_config_reach_the_api(tmp_path, monkeypatch):
    import synth.train.sft as sft

    calls = {}

    def fake_sweep(grid, data, model, out, val_data, **kw):
        calls.update(grid=grid, data=data, model=model, out=out, val_data=val_data, kw=kw)
        runs = [{"lr": lr, "out": str(out / f"lr_{lr:g}"), "best_val_loss": 2.0 - lr * 1000, "best_step": 1,
                 "best_val_per_lang": {"swh": 1.0, "yor": 3.0 - lr * 2000}} for lr in grid]
        return sft.SweepReport(best_lr=grid[-1], runs=runs)

    monkeypatch.setattr(sft, "lr_sweep", fake_sweep)
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\ndata = ["from-config"]\nmax_steps = 7\nlora_r = 4\nwarmup = 0.1\n'
                   '[train.val_data]\nswh = "val-swh"\n')
    res = invoke("train", "--out", tmp_path / "sweep", "--config", cfg, "--lr-sweep", "1e-4,3e-4",
                 "--max-steps", "3", "--val-data", "sw=v1", "--val-data", "yo=v2")
    assert res.exit_code == 0, res.output
    assert calls["grid"] == [1e-4, 3e-4] and calls["data"] == ["from-config"] and calls["model"] == "smollm2"
    assert calls["val_data"] == {"sw": ["v1"], "yo": ["v2"]}  # the flag replaces the config's table whole
    kw = calls["kw"]
    assert kw["max_steps"] == 3 and kw["lora_r"] == 4 and kw["warmup"] == 0.1  # flag > config > default
    assert "lr" not in kw and "merge" not in kw  # the sweep sets the LR; its own merge default stands
    assert "best 0.0003" in res.output and "yor" in res.output
    saved = tomllib.loads((tmp_path / "sweep" / "run.toml").read_text())["train"]
    assert saved["lr_sweep"] == [1e-4, 3e-4] and saved["max_steps"] == 3


# ------------------------------------------------------------------------------------------------ mix


def write_rows(path: Path, lang: str, n: int) -> Path:
    rows = [{"id": f"{lang}-{i}", "lang": lang, "instruction": f"q {lang} {i}", "response": f"a {i}",
             "messages": [{"role": "user", "content": f"q {lang} {i}"}, {"role": "assistant", "content": f"a {i}"}]}
            for i in range(n)]
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-00000.parquet")
    return path


def test_mix_counts_are_exact(tmp_path):
    eng = write_rows(tmp_path / "eng", "eng", 50)
    langs = {lang: write_rows(tmp_path / lang, lang, n) for lang, n in (("swh", 12), ("yor", 9), ("zul", 10))}
    out = tmp_path / "mix"
    res = invoke("mix", "--english", eng, *[x for lang, p in langs.items() for x in ("--lang-data", f"{lang}={p}")],
                 "--budget", "37", "--n-multilingual", "8", "--unseen", "zul", "--n-val", "1", "--seed", "5",
                 "--out", out)
    assert res.exit_code == 0, res.output
    counts = Counter(pq.read_table(out / "train" / "part-00000.parquet").column("lang").to_pylist())
    assert counts == {"eng": 29, "swh": 4, "yor": 4}  # 37 = 29 + 8, 8 over the two seen languages, none for zul
    assert sorted(p.name for p in (out / "val").iterdir()) == ["eng.parquet", "swh.parquet", "yor.parquet",
                                                               "zul.parquet"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["per_lang"] == {"eng": 29, "swh": 4, "yor": 4, "zul": 0} and manifest["unseen"] == ["zul"]
    assert tomllib.loads((out / "run.toml").read_text())["mix"]["budget"] == 37
    assert "29 English + 8 multilingual" in res.output

    # the same through a config, with --share and one folder grouped by its lang column; a flag overrides the file
    both = tmp_path / "multi"
    for lang, p in langs.items():
        both.mkdir(exist_ok=True)
        (p / "part-00000.parquet").rename(both / f"{lang}.parquet")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[mix]\nenglish = "{eng}"\nlang_data = ["{both}"]\nbudget = "40"\nshare = 0.5\n')
    res = invoke("mix", "--config", cfg, "--share", "0.25", "--out", tmp_path / "mix2")
    assert res.exit_code == 0, res.output
    counts = Counter(pq.read_table(tmp_path / "mix2" / "train" / "part-00000.parquet").column("lang").to_pylist())
    assert counts == {"eng": 30, "swh": 4, "yor": 3, "zul": 3}


def test_mix_errors_are_clear(tmp_path):
    eng = write_rows(tmp_path / "eng", "eng", 10)
    swh = write_rows(tmp_path / "swh", "swh", 3)
    res = invoke("mix", "--english", eng, "--lang-data", swh, "--budget", "8", "--n-multilingual", "4",
                 "--out", tmp_path / "m")
    assert res.exit_code == 2 and "swh has 3 rows but needs 4" in res.output
    res = invoke("mix", "--english", eng, "--lang-data", swh, "--budget", "8", "--out", tmp_path / "m")
    assert res.exit_code == 2 and "--share" in res.output and "--n-multilingual" in res.output
    res = invoke("mix", "--english", eng, "--lang-data", swh, "--lang-data", f"yor={swh}", "--budget", "8",
                 "--share", "0.1", "--out", tmp_path / "m")
    assert res.exit_code == 2 and "not both" in res.output
    res = invoke("mix", "--lang-data", swh, "--budget", "8", "--share", "0.1", "--out", tmp_path / "m")
    assert res.exit_code == 2 and "--english" in res.output
    assert not (tmp_path / "m" / "manifest.json").exists()
