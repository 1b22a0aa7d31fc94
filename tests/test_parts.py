"""Parts of stages: check lists run by LLMStage, gates that drop or mark, translators behind one protocol, and
the one identity of models and files. Real LID and real stages; no model is asked (English rows are copied
by the translate stage, not translated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from synth import checks as ck
from synth.checks import CheckSettings
from synth.extract import lid
from synth.gate import Check, Gate, first_failure
from synth.identity import file_digest, identity
from synth.kernel import TableSource
from synth.llm.stage import Output
from synth.runner import run_stage
from synth.stages.instruct import Instruct
from synth.stages.translate import Translate
from synth.translate import BACKENDS, FORWARD, ROUND_TRIP, TranslateError, Translator, backend
from synth.translate.llm import LLMTranslator
from synth.translate.seq2seq import Seq2SeqBackend

ENGLISH_ROWS = [
    ("calm", "Everyone has the right to rest and leisure, including reasonable limits on working hours."),
    ("loud", "EVERYONE HAS THE RIGHT TO REST AND LEISURE, INCLUDING REASONABLE LIMITS ON WORKING HOURS."),
    ("swahili", "Kila mtu ana haki ya kupumzika na starehe, pamoja na mipaka ya saa za kazi na likizo."),
    ("calm2", "No one shall be subjected to arbitrary arrest, detention or exile by any government."),
]


def shouting(o: Output, s: CheckSettings) -> bool:
    """Most letters in capitals."""
    letters = [c for c in o.text if c.isalpha()]
    return sum(c.isupper() for c in letters) > len(letters) / 2


@dataclass
class LoudTranslate(Translate):
    CHECKS = (*Translate.CHECKS, Check("shouting", shouting))  # the new check: one function, one line


def _english_table() -> pa.Table:
    return pa.table({"id": [i for i, _ in ENGLISH_ROWS], "lang": ["eng"] * len(ENGLISH_ROWS),
                     "fragment": [t for _, t in ENGLISH_ROWS]})


def _run(stage: Translate, tmp_path: Path):
    stage._translator = stage.translator_for()  # English rows are copied: the engine is never loaded
    return run_stage(stage, TableSource(_english_table()), tmp_path, progress=False)


def test_a_new_check_is_run_and_counted_by_the_stage(tmp_path):
    base = _run(Translate(engine="hf", cache=None), tmp_path)
    assert base.read().column("id").to_pylist() == ["calm", "loud", "calm2"]
    assert base.stats()["dropped"] == {ck.WRONG_LANGUAGE: 1}

    loud = _run(LoudTranslate(engine="hf", cache=None), tmp_path)
    assert loud.fingerprint != base.fingerprint  # the check list names the output: nothing stale is reused
    assert loud.read().column("id").to_pylist() == ["calm", "calm2"]
    stats = loud.stats()
    assert stats["by_lang"]["eng"]["dropped"] == {ck.WRONG_LANGUAGE: 1, "shouting": 1}
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["dropped"].values())
    assert stats["counters"]["copied_same_language"] == len(ENGLISH_ROWS)
    lids = loud.read().column("response_en_lid").to_pylist()
    assert all(p > 0.5 for p in lids)  # LID's verdict is what the language check read


def test_every_check_names_a_real_setting():
    for stage in (Translate, Instruct):
        assert len({c.reason for c in stage.CHECKS}) == len(stage.CHECKS)
        for c in stage.CHECKS:
            assert c.setting is None or hasattr(CheckSettings(), c.setting), (stage.__name__, c)


def test_first_failure_is_in_list_order():
    checks = [Check("a", lambda x, s: x > s), Check("b", lambda x, s: x > 2 * s)]
    assert first_failure(checks, 5, 1) == "a"  # both fail: the first line names the row
    assert first_failure(checks[::-1], 5, 1) == "b"
    assert first_failure(checks, 0, 1) is None


# ---------------------------------------------------------------------------------------------- gates


@dataclass
class ByFlag(Gate):
    key = "09_flagged"

    def decide(self, batch: pa.Table) -> list[str | None]:
        return ["flagged" if f else None for f in batch.column("flag").to_pylist()]


@dataclass
class MarkByFlag(ByFlag):
    key = "09_marked"
    marks = True


def test_a_gate_drops_and_a_marking_gate_keeps_but_does_not_count_a_drop(tmp_path):
    table = pa.table({"id": list("abcde"), "lang": ["swh", "swh", "yor", "yor", "yor"],
                      "flag": [True, False, True, True, False]})
    dropped = run_stage(ByFlag(), TableSource(table), tmp_path, progress=False).stats()
    assert dropped["rows_out"] == 2 and dropped["by_lang"]["yor"]["dropped"] == {"flagged": 2}
    assert dropped["marked"] == {}

    marked = run_stage(MarkByFlag(), TableSource(table), tmp_path, progress=False)
    s = marked.stats()
    assert marked.num_rows == s["rows_out"] == s["rows_in"] == 5  # every row stays
    assert s["dropped"] == {} and s["marked"] == {"flagged": 3}
    assert s["by_lang"]["swh"]["marked"] == {"flagged": 1} and s["by_lang"]["yor"]["marked"] == {"flagged": 2}


# ---------------------------------------------------------------------------------------------- translators

MT = "facebook/nllb-200-distilled-600M"


def test_backends_are_found_by_name_and_follow_the_protocol():
    assert backend("llm") is LLMTranslator and backend("seq2seq") is Seq2SeqBackend
    for name in BACKENDS:
        cls = backend(name)
        for member in ("params", "setup", "plan", "collect", "translate", "close"):
            assert callable(getattr(cls, member)), (name, member)
        assert isinstance(cls.FIELDS, frozenset)  # its own settings (apertium has none: the pair is the row's)
    assert isinstance(Translate(engine="hf").translator_for(), Translator)
    assert isinstance(Translate(translator="seq2seq", mt_model=MT).translator_for(), Translator)
    with pytest.raises(TranslateError, match="translator must be one of llm, seq2seq, apertium"):
        backend("google")
    with pytest.raises(TranslateError, match="needs mt_model"):
        Translate(translator="seq2seq")


def test_each_translator_contributes_its_own_fingerprint_params():
    llm = Translate(engine="hf")
    mt = Translate(translator="seq2seq", mt_model=MT, mt_num_beams=2)
    p_llm, p_mt = llm.params(), mt.params()
    assert p_llm["prompt"] == llm.translator_for().params(llm.named_facts())["prompt"] and "model" in p_llm
    assert not any(k.startswith("mt_") for k in p_llm)
    assert p_mt["mt_model"] == f"{MT}@main" and p_mt["mt_num_beams"] == 2
    assert not {"engine", "model", "prompt", "chunk_chars", "max_tokens"} & set(p_mt)
    assert llm.fingerprint("x") != mt.fingerprint("x")
    # A setting of the backend not in use does not change the fingerprint; one of the backend in use does.
    assert Translate(engine="hf", mt_num_beams=5).fingerprint("x") == llm.fingerprint("x")
    assert Translate(translator="seq2seq", mt_model=MT, mt_num_beams=2, chunk_chars=10).fingerprint("x") \
        == mt.fingerprint("x")
    assert Translate(translator="seq2seq", mt_model=MT, mt_num_beams=3).fingerprint("x") != mt.fingerprint("x")


def test_the_round_trip_direction_reads_its_own_settings():
    from synth.stages.backtranslate import Backtranslate

    stage = Backtranslate(translator="seq2seq", mt_model=MT, roundtrip=True, roundtrip_mt_model="x/back")
    assert Seq2SeqBackend(stage).model(FORWARD) == MT and Seq2SeqBackend(stage).model(ROUND_TRIP) == "x/back"
    assert stage.params()["roundtrip_mt_model"] == "x/back@main"
    llm = Backtranslate(engine="hf", roundtrip=True)
    translator = llm.translator_for(FORWARD, ROUND_TRIP)
    assert translator.engine is llm.engine_service() and translator.engine.llm is None  # one engine, loaded in setup
    both = translator.params(llm.named_facts())
    assert both["roundtrip_prompt"]["prompt"] == "translate_to_en" and both["prompt"]["prompt"] == "backtranslate"
    assert llm.params()["prompt"]["prompt"] == "backtranslate"


# ---------------------------------------------------------------------------------------------- identity


def test_one_identity_for_models_and_files(tmp_path):
    from synth.llm import hf, vllm

    assert hf.model_identity is vllm.model_identity is identity  # the engines' cache keys use the same function
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"d": 16}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 1000)  # large: sampled at both ends
    ident = identity(model)
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    model.rename(moved)
    assert identity(moved) == ident and str(tmp_path) not in ident
    (moved / "config.json").write_text('{"d": 32}')
    assert identity(moved) != ident
    assert identity("org/name", "v2") == "org/name@v2"
    ftz = moved / "weights.bin"
    assert lid.identity(str(ftz)) == f"fasttext:{identity(ftz)}" and lid.identity("lid176") == "lid176"
    with pytest.raises(ValueError, match="neither"):
        lid.identity(str(tmp_path / "missing.ftz"))
    assert len(file_digest(ftz)) == 64  # every byte, for manifests
