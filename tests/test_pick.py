"""``synth pick``: candidates measured through the real stages on a sample, the choice written as run.toml sections
that ``synth run --config`` reads, no choice where nothing passes, and a rerun that redoes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.orchestrate import RunSettings
from synth.pick import Measured, PickError, PickSettings, best, judge, translator_settings
from synth.pipeline import PIPELINE

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--sample", "6", "--max-len", "400", "--quiet"]  # short fragments: SmolLM2 answers in seconds


def test_candidates_are_read_or_refused():
    assert translator_settings("apertium") == {"translator": "apertium"}
    assert translator_settings("llm") == {"translator": "llm"}
    assert translator_settings("llm:/models/x") == {"translator": "llm", "model": "/models/x"}
    assert translator_settings("seq2seq:facebook/nllb") == {"translator": "seq2seq", "mt_model": "facebook/nllb"}
    for bad in ("seq2seq", "google", "apertium:x"):
        with pytest.raises(PickError, match="give apertium, llm"):
            translator_settings(bad)


def test_a_candidate_passes_only_where_every_gate_keeps_enough_and_the_best_keeps_most():
    settings = PickSettings(lang="es", inputs=["x"])
    good = judge(Measured("a", "translator", 10, kept={"translate": 1.0, "fidelity": 0.8},
                          scores={"roundtrip_sim": 0.9}), settings)
    better = judge(Measured("b", "translator", 10, kept={"translate": 1.0, "fidelity": 0.9},
                            scores={"roundtrip_sim": 0.7}), settings)
    low = judge(Measured("c", "translator", 10, kept={"translate": 0.9, "fidelity": 0.4},
                         dropped={"fidelity": {"roundtrip_low": 5}}), settings)
    assert good.passed and better.passed and not low.passed
    assert low.why == "fidelity kept 40% < 50% (roundtrip_low ×5)"
    assert best([good, better, low]) is better and best([low]) is None
    teacher = judge(Measured("t", "teacher", 10, kept={"instruct": 1.0}, scores={"judge_mean": 2.0}), settings)
    assert not teacher.passed and "judge mean 2.0 < 3" in teacher.why


@pytest.mark.slow
@pytest.mark.requires("apertium", "smollm2")
def test_pick_chooses_apertium_for_spanish_and_says_why(tmp_path):
    out = tmp_path / "pick"
    args = ["pick", "--lang", "es", "-i", str(ROOT / "examples" / "corpus_es"), "--out", str(out),
            "--translators", "apertium,llm", "--models", "smollm2", "--cache", str(tmp_path / "c.sqlite"), *SMALL]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "translator for spa: apertium" in res.output
    toml = (out / "pick.toml").read_text()
    assert "apertium: kept 100% of the sample through every gate" in toml and "<- chosen" in toml
    settings = RunSettings.load(out / "pick.toml")
    assert settings.values(PIPELINE["02_translate"])["translator"] == "apertium"
    assert settings.values(PIPELINE["05_backtranslate"])["translator"] == "apertium"
    measured = json.loads((out / "pick.json").read_text())
    apertium, llm = measured["translators"]
    assert apertium["passed"] and apertium["scores"]["chrf"] > 50 and apertium["scores"]["roundtrip_sim"] > 0.7
    assert not llm["passed"] and llm["kept"]["translate"] < 0.5 and llm["dropped"]["translate"]
    assert llm["tokens_per_row"] > 0 and llm["rows_per_s"] > 0
    [teacher] = measured["teachers"]  # SmolLM2's judge scores everything 1: no teacher is written
    assert not teacher["passed"] and "judge mean" in teacher["why"] and "[instruct]" not in toml
    assert -1 <= teacher["scores"]["relevance"] <= 1 and 0 <= teacher["scores"]["relevant"] <= 1

    # A rerun finds every stage output finished: nothing is recomputed, the same choice and timings come back.
    shards = sorted(p.relative_to(out) for p in out.rglob("part-*.parquet"))
    seconds = (out / "candidates" / "llm" / "seconds.json").read_text()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sorted(p.relative_to(out) for p in out.rglob("part-*.parquet")) == shards
    assert (out / "candidates" / "llm" / "seconds.json").read_text() == seconds
    assert json.loads((out / "pick.json").read_text()) == measured


@pytest.mark.slow
@pytest.mark.requires("apertium", "smollm2")
def test_pick_chooses_nothing_for_swahili_offline_and_names_the_failing_gates(tmp_path):
    out = tmp_path / "pick"
    res = CliRunner().invoke(app, ["pick", "--lang", "sw", "-i", str(ROOT / "examples" / "corpus"), "--out",
                                   str(out), "--translators", "apertium,llm", "--cache", str(tmp_path / "c.sqlite"),
                                   *SMALL])
    assert res.exit_code == 0, res.output
    assert "translator for swh: none" in res.output
    toml = (out / "pick.toml").read_text()
    assert "No translator passed for swh" in toml and "[translate]" not in toml
    assert RunSettings.load(out / "pick.toml").values(PIPELINE["02_translate"]).get("translator", "llm") == "llm"
    apertium, llm = json.loads((out / "pick.json").read_text())["translators"]
    assert "apertium-eng-swh" in apertium["error"]  # the package to install, named
    assert not llm["passed"] and "translate kept 0%" in llm["why"] and llm["dropped"]["translate"]


def test_pick_settings_read_flags_and_config_alike(tmp_path):
    """The command is made from PickSettings: a config's [pick] and the flags give the same settings."""
    settings = PickSettings(lang="es", inputs=["c"], translators="apertium, llm", model="m", max_len=400)
    assert settings.lang == "spa" and settings.translators == ["apertium", "llm:m"]
    assert settings.extract == {"max_len": 400}
    with pytest.raises(PickError, match="give --lang and --input"):
        PickSettings(lang="es")
    with pytest.raises(PickError, match="give apertium, llm"):
        PickSettings(lang="es", inputs=["c"], translators=["google"])


@pytest.mark.requires("apertium")
def test_teachers_say_why_when_no_translator_ran(tmp_path):
    """Offline Swahili through Apertium alone: the pair is missing, so there is no English for a teacher to write
    instructions for; the teacher is reported as not run, with the reason, and nothing is chosen."""
    from synth.pick import pick

    settings = PickSettings(lang="sw", inputs=[str(ROOT / "examples" / "corpus")], translators=["apertium"],
                            models=["smollm2"], sample=6, max_len=400)
    result = pick(tmp_path / "pick", settings, progress=False)
    assert result.translator is None and "apertium-eng-swh" in result.translators[0].error
    [teacher] = result.teachers
    assert teacher.error and "no translator candidate produced English" in teacher.why and result.teacher is None
    assert "No teacher passed" in result.toml.read_text()
