"""Stages 2, 3 and 5 (translate, instruct, backtranslate + fidelity gate) and their output checks.

The checks are tested directly on crafted strings, then through the stages on real Swahili fragments with the
offline SmolLM2-135M-Instruct (transformers engine, bf16, few new tokens so two CPU cores finish in minutes).
That model is far too small to translate Swahili or to write a request from an answer: with the real prompts
nearly everything it writes is garbage, which is what the checks must catch (and do, below). So the chain test
uses prompts of its own that SmolLM2 can follow (a sentence, a question, a copy), so that rows reach stages 3
and 5 and their accounting, alignment, round trip and gate can be checked.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from required import require

from synth import checks as ck
from synth import fidelity
from synth.extract import lid
from synth.gate import first_failure
from synth.io import read_shard_meta
from synth.kernel import StageOutput, TableSource
from synth.llm import Engine, Request, Result, load_engine
from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.stage import LANGUAGE_CHECK, Output
from synth.orchestrate import RunSettings, run_command
from synth.prompts import get_prompt
from synth.runner import run_on, run_stage
from synth.stages.backtranslate import (
    DEFAULT_EMBEDDER,
    FIDELITY_REASONS,
    NOT_SELECTED,
    Backtranslate,
    Fidelity,
    FidelityThresholds,
    apply_fidelity,
    cosine,
    fidelity_reason,
    fidelity_scores,
    load_embedder,
)
from synth.stages.extract import ExtractSettings, extract
from synth.stages.instruct import TASK_TYPES, Instruct, eligible_types, pick_task_type
from synth.stages.translate import Translate
from synth.translate import TranslateError

EXAMPLES = Path(__file__).parents[1] / "examples"
FAST = {"engine": "hf", "model": "smollm2", "engine_options": {"dtype": "bfloat16"}, "cache": None}
CHECK_REASONS = {ck.EMPTY, ck.TRUNCATED, ck.CHATTY, ck.REFUSAL, ck.REPETITION, ck.WRONG_LANGUAGE,
                 ck.COPIES_RESPONSE, ck.TOO_SHORT, ck.TOO_LONG, ck.NOT_USER_VOICE, ck.RATIO_LOW, ck.RATIO_HIGH,
                 ck.COMMENTARY}
ENGINE_REASONS = {"parse_error", "schema_mismatch", "context_length", "engine_error", "timeout"}


# ---------------------------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize("raw, expected, chatty", [
    ("Sure! Here is the translation:\n\nAll human beings are born free.", "All human beings are born free.", True),
    ("Here's the English translation of the text: \"Everyone has rights.\"", "Everyone has rights.", True),
    ("Translation: All human beings are born free.", "All human beings are born free.", False),
    ("**English translation:** Everyone has rights.", "Everyone has rights.", False),
    ("```\nAll human beings are born free.\n```", "All human beings are born free.", False),
    ("“Everyone has the right to life.”", "Everyone has the right to life.", False),
    ("Everyone has rights.\n\nNote: I kept the legal register.", "Everyone has rights.", False),
    ("Kila mtu ana haki.\n\nPronounced: \"ki-la\"", "Kila mtu ana haki.", False),
    ("Kifungu cha 4. Mtu ye yote asifanywe mtwana.\n\nI made the following changes to the original text:\n\n- Changed",
     "Kifungu cha 4. Mtu ye yote asifanywe mtwana.", False),
    ("Request: What rights does everyone have?", "What rights does everyone have?", False),
    ("Swahili:\nKila mtu ana haki gani?", "Kila mtu ana haki gani?", False),
    ("**Kiswahili:** Kila mtu ana haki gani?", "Kila mtu ana haki gani?", False),
    ("A good question to ask about human rights would be: \"What are human rights?\"", "What are human rights?",
     True),
    ("What does \"freedom\" mean here?", "What does \"freedom\" mean here?", False),
])
def test_clean_output_strips_wrappers(raw, expected, chatty):
    assert ck.clean_output(raw) == (expected, chatty)


@pytest.mark.parametrize("raw, reason", [
    ("", ck.EMPTY),
    ("   \n ", ck.EMPTY),
    ("```\n```", ck.EMPTY),
    ("Sure, here is the translation.", ck.CHATTY),  # only chatter
    ("Sure! The declaration says that people are free", ck.CHATTY),  # chatter that cannot be cut off
    ("Here is the English translation of the text you gave me.", ck.CHATTY),
    ("The following sentence in Swahili is \"Bwaka kama\". The original contains a verb.", ck.CHATTY),
    ("I'm sorry, but I cannot translate this text.", ck.REFUSAL),
    ("As an AI language model, I do not have personal opinions.", ck.REFUSAL),
    ("I cannot help with that request.", ck.REFUSAL),
    ("kuwa " * 40, ck.REPETITION),
    ("Everyone has the right to life. " * 6, ck.REPETITION),
    ("Everyone has the right to life, liberty and security of person, and " + "to be free " * 8, ck.REPETITION),
    ("Everyone has the right to life, liberty and security of person.", None),
    ("I can't sleep at night; what does the declaration say about rest and leisure?", None),  # not a refusal
])
def test_text_checks_name_the_problem(raw, reason):
    cleaned, chatty = ck.clean_output(raw)
    assert ck.text_problem(cleaned, chatty) == reason


def test_natural_text_is_not_repetitive():
    """The UDHR in 16 languages (legal, formulaic text) stays well under the repetition limits."""
    rows = [json.loads(line) for line in (EXAMPLES / "lid_eval" / "udhr_paragraphs.jsonl").read_text().splitlines()]
    assert sum(ck.is_repetitive(r["text"]) for r in rows) == 0
    assert max(ck.repeated_ngram_share(r["text"]) for r in rows) < ck.CheckSettings().max_repeated_ngrams


def test_result_problem_order():
    assert ck.result_problem(None, "error", "timeout") == ("", "timeout")  # the engine's own reason
    assert ck.result_problem("All human", "length", None) == ("All human", ck.TRUNCATED)
    assert ck.result_problem("Sure! Here is the translation:", "stop", None) == ("", ck.CHATTY)
    assert ck.result_problem("Translation: Hello there, friend.", "stop", None) == ("Hello there, friend.", None)


def instruction_problem(text: str, response: str, settings: ck.CheckSettings = ck.CheckSettings()) -> str | None:
    """The first of Instruct's checks an instruction fails, LID aside (it needs the model's verdict)."""
    checks = [c for c in Instruct.CHECKS if c is not LANGUAGE_CHECK]
    return first_failure(checks, Output(text, response, "eng", "eng"), settings)


def test_instruction_checks():
    response = ("Everyone has the right to education. Education shall be free, at least in the elementary "
                "and fundamental stages. Elementary education shall be compulsory.")
    good = "What does the declaration say about the right to education?"
    assert instruction_problem(good, response) is None
    copied = "Explain: Education shall be free, at least in the elementary and fundamental stages."
    assert ck.copy_share(copied, response) > 0.5
    assert instruction_problem(copied, response) == ck.COPIES_RESPONSE
    # What SmolLM2 wrote for one UDHR paragraph: the answer box echoed, then a line about the request.
    pasted = f"<<<\n{response}\n\nPlease give me a detailed overview of this topic with a list of key points."
    assert instruction_problem(pasted, response) == ck.COPIES_RESPONSE
    assert instruction_problem("Why?", response) == ck.TOO_SHORT
    assert instruction_problem("Tell me more " * 60, response) == ck.TOO_LONG
    for voice in ("I'm ready to assist. What can I help you with today?",
                  "The user requested to explain the importance of the right to education.",
                  "Tell me about education.\n\nThe user requested a detailed overview of the topic.",
                  "What a wonderful question!", "Great question, let me think about it.",
                  "The text describes a fundamental principle of human rights."):
        assert instruction_problem(voice, response) == ck.NOT_USER_VOICE, voice
    # What SmolLM2 wrote when asked for JSON: about the prompt, not a request a user would send.
    meta = "Write a response in JSON format that includes a list of the requested task type and a description."
    assert instruction_problem(meta, response) == ck.NOT_USER_VOICE
    echo = "<<<\nNo one shall be held liable for any offense that is punishable by law.\n>>>"
    assert instruction_problem(echo, response) == ck.COPIES_RESPONSE  # the prompt's answer box, echoed
    strict = ck.CheckSettings(max_instruction_chars=40)
    assert instruction_problem(good, response, strict) == ck.TOO_LONG


def test_language_verdicts_with_the_real_identifier():
    ident = lid.load_identifier(lid.choose_model("eng"))
    en = "What does the declaration say about the right to education and to work?"
    sw = "Kila mtu ana haki ya kupata elimu. Elimu itatolewa bure, angalau katika hatua za mwanzo."
    v_en, v_sw = ck.language_verdicts([en, sw], "eng", ident, 0.5)
    assert v_en.ok and v_en.label == "eng" and v_en.prob > 0.5
    assert not v_sw.ok and v_sw.label == "swh"
    [v] = ck.language_verdicts([sw], "swh", lid.load_identifier(lid.choose_model("swh")), 0.5)
    assert v.ok
    # A copied source paragraph followed by longer English commentary: English overall, but not a translation.
    mixed = (sw + "\n\nThe Swahili language is a Bantu language spoken in Tanzania and Kenya, and this sentence "
             "says that everyone has the right to get an education, which is free in the first stages of school.")
    [v] = ck.language_verdicts([mixed], "eng", ident, 0.5)
    assert v.label == "eng" and not v.ok


@pytest.mark.parametrize("text, commentary", [
    ("The Swahili language is a Bantu language. The sentence is translated into English with care.", True),
    ("The Swahili sentence means that everyone has rights.", True),
    ("This is translated to English as: everyone has rights.", True),
    ("The original text says that everyone has rights.", True),
    ("Everyone has the right to a nationality. No one shall be arbitrarily deprived of it.", False),
    ("Everyone has the right to education, and parents choose the kind of education.", False),
])
def test_commentary_instead_of_translation(text, commentary):
    assert ck.is_commentary(text) is commentary


def test_translation_length_ratio_bounds():
    s = ck.CheckSettings()
    assert ck.translation_ratio_bounds("swh", s) == (0.3, 3.0)
    lo, hi = ck.translation_ratio_bounds("cmn", s)
    assert lo > 0.3 and hi > 3.0  # English is several times longer than Chinese in characters


def test_numbers_and_entities():
    assert fidelity.numbers("It cost 1,000 shillings in 2015, or ٣ coins.") == ["1000", "2015", "3"]
    assert fidelity.numbers_kept("List 3 rights from Article 25.", "Orodhesha haki 3 kutoka Kifungu cha 25.")
    assert not fidelity.numbers_kept("List 3 rights from Article 25.", "Orodhesha haki tatu kutoka Kifungu cha 25.")
    text = "Why did Barack Obama visit Nairobi in 2015, and what did the UN and UNESCO say about COVID-19?"
    # Runs of capitalised words (names, titles) are left out; single names, acronyms and codes stay.
    assert fidelity.entities(text) == ["Nairobi", "UN", "UNESCO", "COVID-19"]
    assert fidelity.entities("Explain the Universal Declaration of Human Rights.") == []
    assert fidelity.entities_kept("Why visit Nairobi?", "Kwa nini kutembelea Nairobi?")
    assert fidelity.entities_kept("Tell me about Kenya.", "Niambie kuhusu Wakenya.")  # inside a word counts
    assert not fidelity.entities_kept("Why visit Nairobi?", "Kwa nini kutembelea mji mkuu?")


# ---------------------------------------------------------------------------------------------- task types


def test_task_types_are_fixed_per_row_and_varied():
    text = "Everyone has the right to rest and leisure."
    picks = [pick_task_type(f"row{i}", text) for i in range(200)]
    assert picks == [pick_task_type(f"row{i}", text) for i in range(200)]  # reproducible
    assert set(picks) == set(TASK_TYPES) - {"list"}  # all the types that fit, and list only for lists
    listing = "Rights:\n- to life\n- to liberty\n- to security\n- to rest"
    assert "list" in eligible_types(listing) and "list" not in eligible_types(text)
    assert pick_task_type("row1", text, seed=1) in TASK_TYPES


def test_prompts_render_and_can_be_files(tmp_path):
    msgs = get_prompt("translate_to_en").render(source_lang="Swahili", text="Habari")
    assert "Swahili" in msgs[0]["content"] and "Habari" in msgs[-1]["content"]
    msgs = get_prompt("reverse_instruction").render(response="Text.", task_type="question", task_hint="a question")
    assert "a question" in msgs[-1]["content"]
    msgs = get_prompt("reverse_instruction").render(response="T.", task_type="auto", task_hint="question, list")
    assert '"task_type"' in msgs[-1]["content"]
    assert "Swahili" in get_prompt("backtranslate.v1").render(target_lang="Swahili", text="Hi")[0]["content"]
    own = tmp_path / "mine.v3.toml"
    own.write_text('user = "Say {{ text }}"\n')
    assert get_prompt(str(own)).identity["version"] == 3
    with pytest.raises(TranslateError, match="seq2seq"):
        Translate(translator="seq2seq")
    with pytest.raises(TranslateError, match="translator must be"):
        Translate(translator="google")


# ---------------------------------------------------------------------------------------------- fidelity gate


def _scored(rows: list[dict]) -> pa.Table:
    base = {"id": "x", "lang": "swh", "instruction_en": "", "instruction": "", "bt_lid_label": "swh",
            "bt_lid_score": 0.99, "bt_script_ok": True, "bt_length_ratio": 1.1, "bt_numbers_ok": True,
            "bt_entities_ok": True, "bt_roundtrip": None, "bt_roundtrip_sim": None}
    return pa.Table.from_pylist([{**base, "id": f"r{i}", **r} for i, r in enumerate(rows)])


def test_fidelity_scores_and_reasons():
    s = fidelity_scores("List 3 facts about Nairobi.", "Orodhesha mambo 3 kuhusu Nairobi.", "swh")
    assert s["bt_script_ok"] and s["bt_numbers_ok"] and s["bt_entities_ok"]
    assert 1.0 < s["bt_length_ratio"] < 1.5
    assert fidelity_scores("Name 2 cities.", "ሁለት ከተሞችን ጥቀስ።", "amh")["bt_entities_ok"] is None  # not Latin
    assert not fidelity_scores("Hello", "Привет", "swh")["bt_script_ok"]
    th = FidelityThresholds()
    rows = _scored([{}, {"bt_lid_label": "eng"}, {"bt_lid_score": 0.2}, {"bt_script_ok": False},
                    {"bt_length_ratio": 0.2}, {"bt_length_ratio": 5.0}, {"bt_numbers_ok": False},
                    {"bt_entities_ok": False}, {"bt_roundtrip_sim": 0.1}, {"bt_entities_ok": None}]).to_pylist()
    assert [fidelity_reason(r, th) for r in rows] == [
        None, "wrong_language", "wrong_language", "wrong_script", "length_ratio_low", "length_ratio_high",
        "numbers_lost", "entities_lost", "roundtrip_low", None]
    assert th.length_bounds("cmn")[0] < th.length_bounds("swh")[0]  # Chinese is short in characters


def test_fidelity_gate_reruns_alone(tmp_path):
    table = _scored([{}, {"bt_numbers_ok": False}, {"bt_lid_label": "eng"}, {"bt_entities_ok": False}])
    scored = run_stage(Fidelity(thresholds=FidelityThresholds(min_lid_score=0.0, require_lid_top=False,
                                                              require_script=False, min_length_ratio=0.0,
                                                              max_length_ratio=100.0,
                                                              require_numbers=False, require_entities=False)),
                       TableSource(table), tmp_path, progress=False)
    gated = apply_fidelity(scored, FidelityThresholds(), tmp_path)
    assert gated.read().column("id").to_pylist() == ["r0"]
    assert gated.stats()["dropped"] == {"numbers_lost": 1, "wrong_language": 1, "entities_lost": 1}
    lax = apply_fidelity(scored, FidelityThresholds(require_entities=False), tmp_path)
    assert lax.read().column("id").to_pylist() == ["r0", "r3"]
    assert lax.fingerprint != gated.fingerprint


# ---------------------------------------------------------------------------------------------- round trip


@pytest.mark.requires("minilm")
def test_roundtrip_similarity_with_the_packaged_embedder():
    emb = load_embedder(DEFAULT_EMBEDDER)
    a = emb.encode(["What does the declaration say about education?", "Why is rest important?"])
    b = emb.encode(["What does the declaration say about schooling?", "List three colours of the rainbow."])
    same, other = cosine(a, b)
    assert same > 0.7 and other < 0.3


def test_roundtrip_without_sentence_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match="pip install sentence-transformers"):
        load_embedder(DEFAULT_EMBEDDER)


# ---------------------------------------------------------------------------------------------- with SmolLM2


@pytest.fixture(scope="module")
def run_sw(tmp_path_factory) -> Path:
    """Stage 1 on the example corpus: six Swahili fragments of at least 150 characters."""
    rundir = tmp_path_factory.mktemp("run_sw")
    extract([str(EXAMPLES / "corpus")], rundir, ExtractSettings(lang="sw", fragments=6, min_len=150), progress=False)
    return rundir


@pytest.fixture
def run(run_sw, tmp_path) -> Path:
    """A copy of the stage-1 run, so that each test's later stages start from the same place."""
    shutil.copytree(run_sw, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def smol():
    """One SmolLM2 engine for the tests that build their stages themselves (bf16: twice as fast on CPU)."""
    require("smollm2")
    engine = load_engine("hf", "smollm2", dtype="bfloat16")
    yield engine
    engine.close()


def _on(stage, engine):
    stage.use_engine(engine)
    return stage


def _command(rundir: Path, command: str, **section) -> StageOutput:
    """What `synth <command>` runs, with these settings in its section; the output of its last stage."""
    outputs = run_command(rundir, command, RunSettings(sections={command: section}), progress=False)
    return list(outputs.values())[-1]


def _stage_stats(rundir: Path, key: str) -> dict:
    return json.loads((rundir / "stats.json").read_text())["stages"][key]


def _accounted(out: StageOutput, n_in: int) -> dict[str, int]:
    """Every row that came in went out or was dropped under a reason; returns the reasons."""
    s = out.stats()
    assert s["rows_in"] == n_in
    assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values()), s
    assert s["rows_out"] == out.num_rows
    return s["dropped"]


def _aligned(before: pa.Table, after: pa.Table, same: list[str]) -> None:
    """Rows of ``after`` are rows of ``before`` in the same order, their columns untouched."""
    ids = before.column("id").to_pylist()
    kept = after.column("id").to_pylist()
    assert len(set(kept)) == len(kept)
    assert [i for i in ids if i in set(kept)] == kept
    by_id = {r["id"]: r for r in before.select(same).to_pylist()}
    for r in after.select(same).to_pylist():
        assert r == by_id[r["id"]]


RESPONSES = pa.table({
    "id": ["a", "b", "c"], "lang": ["swh"] * 3, "fragment": ["Kila mtu ana haki ya elimu."] * 3,
    "response_en": ["Everyone has the right to education. Education shall be free in the elementary stages.",
                    "Everyone has the right to rest and leisure, including reasonable limitation of working hours.",
                    "Everyone has the right to freedom of peaceful assembly and association."],
    "instruction_en": ["What is the right to education?", "Why is rest important?", "List 3 rights everyone has."],
    "selected": [True, False, None],
})


@pytest.mark.slow
def test_real_prompts_cut_at_two_tokens_are_dropped(run, smol):
    """max_tokens=2: every output of every stage is cut off, and nothing cut off is kept."""
    n = StageOutput.current(run, "01_extract").num_rows
    out = run_on(_on(Translate(max_tokens=2, **FAST), smol), StageOutput.current(run, "01_extract"), run, False)
    assert _accounted(out, n) == {ck.TRUNCATED: n}
    assert out.num_rows == 0 and "response_en" in out.read().column_names  # empty, with its columns
    # Instruct with the model choosing the task type (JSON through structured output): cut-off JSON is
    # "truncated", not a parse error.
    out = run_stage(_on(Instruct(task_types="model", max_tokens=2, **FAST), smol), TableSource(RESPONSES), run,
                    progress=False)
    assert out.stats()["dropped"] == {ck.TRUNCATED: 3}
    # Backtranslate: rows stage 4 did not select (False, or no decision) leave first, under their own reason.
    out = run_stage(_on(Backtranslate(max_tokens=2, **FAST), smol), TableSource(RESPONSES), run, progress=False)
    assert out.stats()["dropped"] == {NOT_SELECTED: 2, ck.TRUNCATED: 1}


CHATTY = """
system = "You are a cheerful assistant."
user = '''Do not translate anything. Reply exactly: Sure! I would be happy to help you translate this text.

{{ text }}'''
"""


@pytest.mark.slow
def test_bad_prompt_output_is_caught(run, smol, tmp_path):
    """A prompt that asks for chatter instead of a translation: nothing it writes is kept."""
    bad = tmp_path / "chatty.v1.toml"
    bad.write_text(CHATTY)
    n = StageOutput.current(run, "01_extract").num_rows
    stage = _on(Translate(prompt=str(bad), max_tokens=16, **FAST), smol)
    out = run_on(stage, StageOutput.current(run, "01_extract"), run, False)
    reasons = _accounted(out, n)
    print("bad prompt drops:", reasons)
    assert out.num_rows == 0
    assert set(reasons) <= CHECK_REASONS


# Prompts SmolLM2-135M follows (it can neither translate Swahili nor copy a sentence), found by trying: a
# sentence (stage 2), a question it introduces with chatter that the cleaning strips (stage 3), and a short
# fixed question in place of a translation and of the round trip (stage 5). The same for every row.
GIST = "user = '''Write one short English sentence about human rights.'''\n"
QUESTION = "user = '''What is a good question to ask about human rights? Reply with only the question.'''\n"
FIXED = "user = '''Write a question that asks what human rights are. Reply with the question only.'''\n"
ABOUT = "user = '''{{ response }}\n\nWhat is a good question to ask about this? Reply with the question only.'''\n"
ECHO = "user = '''{{ text }}'''\n"


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_three_stages_in_a_row(run, tmp_path):
    """2 → 3 → 5 (+ round trip, + gate) through the stage functions: every row gets its column or leaves under
    a reason; counts add up per stage; rows keep their ids, order and columns; the fragment is never replaced."""
    prompts = {}
    for name, text in (("gist", GIST), ("question", QUESTION), ("fixed", FIXED)):
        prompts[name] = tmp_path / f"{name}.v1.toml"
        prompts[name].write_text(text)
    frags = StageOutput.current(run, "01_extract").read()

    o2 = _command(run, "translate", prompt=str(prompts["gist"]), max_tokens=40, **FAST)
    r2 = _accounted(o2, frags.num_rows)
    t2 = o2.read()
    _aligned(frags, t2, ["id", "lang", "fragment", "source_id"])
    assert t2.num_rows > 0 and all(t.strip() for t in t2.column("response_en").to_pylist())
    assert set(r2) <= CHECK_REASONS | ENGINE_REASONS

    o3 = _command(run, "instruct", prompt=str(prompts["question"]), max_tokens=32, **FAST)
    r3 = _accounted(o3, t2.num_rows)
    t3 = o3.read()
    _aligned(t2, t3, ["id", "lang", "fragment", "response_en"])
    assert t3.num_rows > 0 and all(t.strip() for t in t3.column("instruction_en").to_pylist())
    assert set(t3.column("task_type").to_pylist()) <= set(TASK_TYPES)
    assert set(r3) <= CHECK_REASONS | ENGINE_REASONS

    _command(run, "backtranslate", prompt=str(prompts["fixed"]), roundtrip=True,
             roundtrip_prompt=str(prompts["fixed"]), max_tokens=32, **FAST)
    o5 = StageOutput.current(run, "05_backtranslate")
    gated = StageOutput.current(run, "05_fidelity")  # the command's last stage is the final decontamination
    r5 = _accounted(o5, t3.num_rows)
    t5 = o5.read()
    _aligned(t3, t5, ["id", "lang", "fragment", "response_en", "instruction_en"])
    assert set(r5) <= CHECK_REASONS | ENGINE_REASONS
    for col in ("instruction", "bt_lid_label", "bt_lid_score", "bt_script_ok", "bt_length_ratio", "bt_numbers_ok",
                "bt_roundtrip_sim"):
        assert t5.column(col).null_count == 0, col
    assert t5.num_rows > 0 and t5.column("bt_roundtrip").null_count == 0  # the round trip ran and was embedded
    for r in t5.to_pylist():
        assert -1.0 <= r["bt_roundtrip_sim"] <= 1.0 and r["bt_length_ratio"] > 0

    # The gate: FIXED makes SmolLM2 write an English question for every row, and English is not Swahili, so
    # every row leaves as wrong_language (both sides unconditional: none kept, each for that reason, and the
    # per-row verdicts recomputed from the scored rows agree); a lax gate, re-run alone from the scored rows
    # without any model, keeps them all.
    rg = _accounted(gated, t5.num_rows)
    assert set(rg) <= set(FIDELITY_REASONS)
    scored = t5.to_pylist()
    assert all(r["bt_lid_label"] != "swh" for r in scored)
    verdicts = [fidelity_reason(r, FidelityThresholds()) for r in scored]
    assert verdicts == ["wrong_language"] * t5.num_rows
    assert gated.num_rows == 0 and rg == {"wrong_language": t5.num_rows}
    lax = apply_fidelity(o5, FidelityThresholds(min_lid_score=0.0, require_lid_top=False, require_script=False,
                                                min_length_ratio=0.0, max_length_ratio=1e9, require_numbers=False,
                                                require_entities=False, min_roundtrip_sim=0.0))
    assert lax.num_rows == t5.num_rows
    _aligned(t5, lax.read(), ["id", "fragment", "instruction_en", "instruction"])

    stats = json.loads((run / "stats.json").read_text())["stages"]
    assert {"02_translate", "03_instruct", "05_backtranslate", "05_fidelity"} <= set(stats)
    print("funnel:", frags.num_rows, "→", t2.num_rows, "→", t3.num_rows, "→", t5.num_rows, "→", gated.num_rows)
    print("drops:", {"02": r2, "03": r3, "05": r5, "gate": rg})
    print("counters 05:", _stage_stats(run, "05_backtranslate")["counters"])


@pytest.mark.slow
def test_one_engine_stream_spans_batches_and_shards(smol, tmp_path):
    """Instruct over 3 shards read in batches of 2: every request goes through one stream, so more than a
    shard's requests are at the engine at once (nothing drains at a batch or shard end); each row still lands
    in its own shard's output or drops under a reason counted in that shard."""
    prompt = tmp_path / "question.v1.toml"
    prompt.write_text(ABOUT)
    n, per_shard = 12, 5
    table = pa.table({"id": [f"r{i:02d}" for i in range(n)], "lang": ["eng"] * n,
                      "response_en": [f"{RESPONSES.column('response_en')[i % 3].as_py()} (Article {i + 1}.)"
                                      for i in range(n)]})
    engine = CachedEngine(smol, RequestCache(tmp_path / "requests.sqlite"))
    try:
        stage = _on(Instruct(prompt=str(prompt), max_tokens=48, **FAST), engine)
        out = run_stage(stage, TableSource(table, per_shard), tmp_path / "run", batch_size=2, progress=False)
    finally:
        engine.cache.close()  # the engine itself is the module's
    assert engine.counts.sent == n
    assert engine.counts.max_in_flight > per_shard  # requests of several shards at the engine at once
    _accounted(out, n)
    for i, shard in enumerate(out.shards):
        ids = set(pq.read_table(shard).column("id").to_pylist())
        stats = read_shard_meta(shard)["stats"]  # per language
        rows_in, rows_out = sum(stats["rows_in"].values()), sum(stats["rows_out"].values())
        dropped = sum(n for by_reason in stats["dropped"].values() for n in by_reason.values())
        assert ids <= {f"r{j:02d}" for j in range(i * per_shard, min(n, (i + 1) * per_shard))}
        assert rows_in == min(per_shard, n - i * per_shard) == rows_out + dropped and rows_out == len(ids)
        assert stats["counters"]["llm_requests"] == rows_in
    print("kept", out.num_rows, "dropped", out.stats()["dropped"])
    assert out.num_rows > 0


class _ByBatch(Backtranslate):
    """The same stage, batch by batch (``process``), as seq2seq and Apertium run it."""

    def streams(self) -> bool:
        return False


@pytest.mark.slow
def test_backtranslate_streams_both_passes(smol, tmp_path):
    """Backtranslate with the round trip over 3 shards read in batches of 2: the forward translations stream
    across batches and shards, the round trip streams beside them (reading the forward pass's finished
    batches), and the rows, columns and counts are those of the stage run batch by batch on the same answers."""
    prompt = tmp_path / "echo.v1.toml"
    prompt.write_text(ECHO)  # one request per text (FIXED would be one request for every row)
    n = 8
    rows = pa.table({"id": [f"b{i}" for i in range(n)], "lang": ["swh"] * (n - 2) + ["eng"] * 2,
                     "fragment": ["Kila mtu ana haki ya elimu."] * n,
                     "instruction_en": [f"What does article {i + 1} of the declaration say?" for i in range(n)],
                     "selected": [True, True, False, True, None, True, True, True]})
    settings = {"prompt": str(prompt), "roundtrip": True, "roundtrip_prompt": str(prompt), "max_tokens": 16,
                **FAST}
    engine = CachedEngine(smol, RequestCache(tmp_path / "requests.sqlite"))
    try:
        streamed = run_stage(_on(Backtranslate(**settings), engine), TableSource(rows, 3), tmp_path / "a",
                             batch_size=2, progress=False)
        sent = engine.counts.sent
        plain = run_stage(_on(_ByBatch(**settings), engine), TableSource(rows, 3), tmp_path / "b", batch_size=2,
                          progress=False)
    finally:
        engine.cache.close()
    swahili_selected = 4  # b0, b1, b3, b5 (b6, b7: English, copied both ways; b2, b4 not selected)
    assert engine.counts.max_in_flight > 2  # more than one batch's requests at the engine at once
    assert engine.counts.sent == sent  # batch by batch, every answer came from the cache: the same answers
    kept = streamed.read()
    assert kept.equals(plain.read()) and kept.num_rows > 0
    a, b = streamed.stats(), plain.stats()
    assert a["dropped"] == b["dropped"] and a["dropped"].get(NOT_SELECTED) == 2
    assert a["rows_in"] == n == a["rows_out"] + sum(a["dropped"].values())
    tokens = ("prompt_tokens", "completion_tokens", "copied_same_language")
    assert {k: a["counters"][k] for k in tokens} == {k: b["counters"][k] for k in tokens}
    assert a["counters"]["copied_same_language"] == 2  # counted once, not again by the round trip
    assert a["counters"]["llm_requests"] == sent >= swahili_selected  # forward, and round trips of those kept
    assert kept.column("bt_roundtrip_sim").null_count == 0


class _Recorder(Engine):
    """The engine it wraps, recording every request it is sent and every answer it gives (``stream`` runs in
    waves over ``generate``)."""

    name = "recorder"

    def __init__(self, inner: Engine) -> None:
        self.inner, self.model_key = inner, inner.model_key
        self.sent: list[Request] = []
        self.answers: list[Result] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        self.sent += requests
        results = self.inner.generate(requests)
        self.answers += results
        return results


SPANISH = ["Gracias por todo.", "Buenos días.", "Hola."]


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_the_real_translation_prompts_through_smollm2(smol, tmp_path):
    """The shipped prompts translate_to_en and backtranslate (the other tests here use their own, which SmolLM2
    can follow), on short Spanish that SmolLM2 does translate into English. This proves the plumbing of the real
    prompts, not translation quality: each row's request is the real prompt rendered with the language's name
    and the row's text; every answer is parsed and checked, the row kept (English by LID) or dropped under a named
    reason; the tokens counted are the engine's. Into Spanish, SmolLM2 writes garbage that the checks catch."""
    rows = pa.table({"id": [f"es{i}" for i in range(len(SPANISH))], "lang": ["spa"] * len(SPANISH),
                     "fragment": SPANISH})
    engine = _Recorder(smol)
    out = run_stage(_on(Translate(max_tokens=24, **FAST), engine), TableSource(rows), tmp_path / "a",
                    progress=False)
    to_en = get_prompt("translate_to_en")
    assert [r.id for r in engine.sent] == [f"es{i}#0" for i in range(len(SPANISH))]  # one piece each
    for req, text in zip(engine.sent, SPANISH, strict=True):
        assert req.messages == to_en.render(source_lang="Spanish", text=text)
        assert "Spanish" in req.messages[0]["content"] and text in req.messages[-1]["content"]
    dropped = _accounted(out, len(SPANISH))
    assert set(dropped) <= CHECK_REASONS | ENGINE_REASONS
    kept = out.read().to_pylist()
    print("translate_to_en:", [(r["fragment"], r["response_en"]) for r in kept], dropped)
    assert kept, "SmolLM2 translates 'Gracias por todo.' (to 'Thank you for everything.'): nothing kept is a bug"
    ident = lid.load_identifier(lid.choose_model("eng"))
    for r in kept:
        assert r["response_en"].strip() and r["response_en"] != r["fragment"]
        [v] = ck.language_verdicts([r["response_en"]], "eng", ident, 0.5)
        assert v.ok and r["response_en_lid"] == pytest.approx(v.prob, abs=1e-4)
    counters = out.stats()["counters"]
    assert counters["llm_requests"] == len(SPANISH)
    assert counters["prompt_tokens"] == sum(a.prompt_tokens for a in engine.answers) > 0
    assert counters["completion_tokens"] == sum(a.completion_tokens for a in engine.answers) > 0

    # Back into Spanish with the shipped backtranslate prompt: the English instruction of each selected row.
    instructions = ["Thank you for everything.", "Good morning."]
    rows = pa.table({"id": ["b0", "b1"], "lang": ["spa"] * 2, "fragment": SPANISH[:2],
                     "instruction_en": instructions, "selected": [True, True]})
    engine = _Recorder(smol)
    out = run_stage(_on(Backtranslate(max_tokens=16, **FAST), engine), TableSource(rows), tmp_path / "b",
                    progress=False)
    back = get_prompt("backtranslate")
    assert len(engine.sent) == 2
    for req, text in zip(engine.sent, instructions, strict=True):
        assert req.messages == back.render(target_lang="Spanish", text=text)
        assert "Spanish" in req.messages[0]["content"] and text in req.messages[-1]["content"]
    dropped = _accounted(out, 2)
    assert set(dropped) <= CHECK_REASONS | ENGINE_REASONS
    print("backtranslate:", out.read().select(["id", "instruction"]).to_pylist(), dropped)
    assert out.read().column("instruction").null_count == 0
    assert out.stats()["counters"]["completion_tokens"] == sum(a.completion_tokens for a in engine.answers) > 0
