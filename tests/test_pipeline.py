"""The main job end to end: ``synth.run`` / ``synth run`` on the example corpus with the offline defaults
(SmolLM2-135M-Instruct on the hf engine), resume after SIGKILL in two different stages, and the report in a
real browser.

English is the language whose rows go all the way to ``final/`` with the 135M model (stages 2 and 5 copy
English instead of translating it; stages 3 and 4 call the model). Swahili runs every stage too, but the small
model cannot translate Swahili, so the test checks that every row is accounted for and the run says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tomli_w
from offline_judge import NO_QUALITY_BAR
from required import chromium
from typer.testing import CliRunner

import synth
from synth.cli import app
from synth.kernel import StageOutput
from synth.stages.score import judge_warning

CORPUS = "examples/corpus"
LLM_STAGES = ("translate", "instruct", "score", "backtranslate")
pytestmark = pytest.mark.slow


def _english_corpus(folder: Path) -> Path:
    """The corpus's English UDHR paragraphs in three files: three shards in every stage, so a kill can land
    between two shards of one stage."""
    paras = [p for p in Path(CORPUS, "noise", "udhr_english.txt").read_text().split("\n\n") if len(p) > 150][:12]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        (folder / f"part{k}.txt").write_text("\n\n".join(paras[k::3]))
    return folder


def _config(tmp: Path, lang: str, fragments: int, corpus: str | Path = CORPUS) -> Path:
    """A run.toml with a request cache of the test's own, so every run really calls the model."""
    cache = str(tmp / "requests.sqlite")
    cfg = {"lang": lang, "input": [str(corpus)], "fragments": fragments,
           "extract": {"txt_mode": "paragraphs"}, **{s: {"cache": cache} for s in LLM_STAGES},
           "select": NO_QUALITY_BAR}
    path = tmp / "run.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def _final(rundir: Path):
    from datasets import load_dataset

    return load_dataset("parquet", data_dir=str(rundir / "final" / "data"), split="train")


def _check_accounting(rundir: Path) -> dict:
    """Every stage's rows: in = out + dropped (selection marks rows instead of dropping them)."""
    stats = json.loads((rundir / "stats.json").read_text())
    for key, s in stats["stages"].items():
        if key in ("01_fragments", "04_select"):  # documents → fragments; selection keeps every row, marked
            continue
        assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values()), (key, s)
    return stats


@pytest.fixture(scope="module")
def english_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("en")
    cache = str(tmp / "requests.sqlite")
    corpus = _english_corpus(tmp / "corpus")
    result = synth.run(tmp / "run", lang="en", inputs=[str(corpus)], fragments=9, progress=False,
                       extract={"txt_mode": "paragraphs"}, select=NO_QUALITY_BAR,
                       **{s: {"cache": cache} for s in LLM_STAGES})
    return result


def test_run_exports_messages_a_report_and_a_funnel(english_run):
    rundir = english_run.rundir
    ds = _final(rundir)
    assert english_run.rows == len(ds) > 0
    for row in ds:
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["content"] == row["instruction"] and assistant["content"] == row["response"]
        assert row["lang"] == "eng" and row["instruction"].strip() and row["response"].strip()
    assert len(set(ds["id"])) == len(ds)
    extracted = StageOutput.current(rundir, "01_extract").read(columns=["id", "fragment"])
    native = dict(zip(extracted.column("id").to_pylist(), extracted.column("fragment").to_pylist(), strict=True))
    assert all(native[i] == r for i, r in zip(ds["id"], ds["response"], strict=True))  # the response is untouched
    stats = _check_accounting(rundir)
    assert list(stats["stages"]) == ["01_fragments", "01_extract", "01_decontaminate", "02_translate", "03_instruct",
                                     "04_score", "04_embed", "04_select", "05_backtranslate", "05_fidelity",
                                     "05_decontaminate"]
    assert stats["stages"]["03_instruct"]["counters"]["llm_requests"] > 0
    assert stats["stages"]["02_translate"]["counters"]["copied_same_language"] == stats["stages"]["01_extract"][
        "rows_out"] > 0
    assert stats["stages"]["03_instruct"]["shards"] == 3
    html = (rundir / "report.html").read_text()
    assert html.count("<svg") >= 3 and "05_fidelity" in html
    card = (rundir / "final" / "README.md").read_text()
    assert "reverse_instruction" in card and f"{len(ds)}" in card
    # the offline judge scores nearly every pair 1 (the bar is off here, as in the demo); which pairs reach it and
    # what it says varies with vLLM's CPU batches, so the report is held to the rule (test_score.py: the warning)
    counters = stats["stages"]["04_score"]["counters"]
    assert sum(v for k, v in counters.items() if k.startswith("score_")) == counters["judged"] > 0
    warned = judge_warning(counters) is not None
    assert ("the judge cannot tell pairs apart" in html) == warned == ("**Warning (score):** the judge cannot" in card)


def test_rerun_is_served_from_finished_stages(english_run, tmp_path):
    again = synth.run(english_run.rundir, lang="en", inputs=[str(english_run.rundir.parent / "corpus")],
                      fragments=9, progress=False, extract={"txt_mode": "paragraphs"}, select=NO_QUALITY_BAR,
                      **{s: {"cache": str(english_run.rundir.parent / "requests.sqlite")} for s in LLM_STAGES})
    assert again.rows == english_run.rows
    for name, out in english_run.outputs.items():
        assert again.outputs[name].dir == out.dir, name  # same fingerprints: nothing recomputed


def test_synth_export_takes_the_export_settings_as_options(english_run, tmp_path):
    """`synth export` is made from ExportSettings: --format (comma list or repeated) adds copies beside the
    Parquet, --license names a source's licence in the card, --config's [export] is read under the flags; a
    licence without SOURCE= is refused with what was wrong."""
    rundir = tmp_path / "run"
    shutil.copytree(english_run.rundir, rundir)
    config = tmp_path / "run.toml"
    config.write_text('[export]\nformats = ["parquet", "sharegpt"]\nname = "from-config"\n')
    res = CliRunner().invoke(app, ["export", "--out", str(rundir), "--format", "jsonl,alpaca", "--license",
                                   "*=CC-BY-4.0", "--config", str(config)])
    assert res.exit_code == 0, res.output
    final = rundir / "final"
    assert (final / "train.jsonl").exists() and (final / "alpaca.jsonl").exists()
    assert not (final / "sharegpt.jsonl").exists()  # the flag's list wins over the file's
    card = (final / "README.md").read_text()
    assert "CC-BY-4.0" in card and "from-config" in card
    res = CliRunner().invoke(app, ["export", "--out", str(rundir), "--license", "CC-BY-4.0"])
    assert res.exit_code == 2 and "--license needs SOURCE=LICENCE, got 'CC-BY-4.0'" in res.output


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"synth run ended before {path} appeared:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout}s"
        time.sleep(0.02)


def test_sigkill_during_two_stages_then_resume_gives_the_same_rows(english_run, tmp_path):
    """Killed once while instruct has finished one of its three shards, once likewise in score; then the same
    command finishes. Finished shards are kept (not redone), and the final rows equal an uninterrupted run's."""
    config = _config(tmp_path, "en", 9, corpus=english_run.rundir.parent / "corpus")  # the same files: same ids
    rundir = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "synth"), "run", "--config", str(config), "--out", str(rundir), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kept = {}
    for stage in ("03_instruct", "04_score"):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        _wait_for(rundir / stage, proc)
        first = next((rundir / stage).iterdir()) / "part-00000.parquet"
        _wait_for(first, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not list((rundir / stage).glob("*/_manifest.json")), f"{stage} had finished: the kill came too late"
        kept[first] = first.stat().st_mtime_ns
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for shard, mtime in kept.items():
        assert shard.stat().st_mtime_ns == mtime, f"{shard} was redone"
    killed, clean = _final(rundir).to_pandas(), _final(english_run.rundir).to_pandas()
    assert len(killed) == len(clean) > 0 and sorted(killed["id"]) == sorted(clean["id"])
    cols = ["id", "instruction", "response", "quality"]
    assert (killed[cols].sort_values("id").reset_index(drop=True)
            .equals(clean[cols].sort_values("id").reset_index(drop=True)))
    _check_accounting(rundir)


def test_swahili_run_accounts_for_every_row_and_says_why(tmp_path):
    config = _config(tmp_path, "sw", 4)
    rundir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(rundir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (rundir / "run.toml").exists() and (rundir / "report.html").exists()
    stats = _check_accounting(rundir)
    translate = stats["stages"]["02_translate"]
    assert translate["rows_in"] == 4 and translate["counters"]["llm_requests"] >= 4
    final = StageOutput.current(rundir, "05_fidelity").read()
    if final.num_rows:  # a row that got through must really be Swahili by LID
        assert pc.all(pc.equal(final.column("bt_lid_label"), "swh")).as_py()
        assert len(_final(rundir)) == final.num_rows
    else:  # an empty dataset of the final schema (datasets refuses to load a split with no rows)
        assert "every row was dropped at" in res.output
        exported = pq.read_table(rundir / "final" / "data")
        assert exported.num_rows == 0 and "messages" in exported.column_names


@pytest.mark.requires("chromium")
def test_report_renders_in_headless_chromium(english_run, tmp_path):
    browser = chromium()
    from PIL import Image

    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    url = (english_run.rundir / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 3  # the plots are inline SVG, present once the page is parsed
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1800", url],
                   capture_output=True, timeout=120, check=True)
    img = Image.open(shot).convert("L")
    hist = img.histogram()
    assert img.size == (1200, 1800) and sum(hist[:200]) > 0.02 * sum(hist)  # not a blank page: plots and text
    docs = Path(__file__).resolve().parents[1] / "docs" / "report.png"
    if os.environ.get("SYNTH_UPDATE_DOCS"):  # refresh the screenshot kept in docs/
        shutil.copy(shot, docs)
