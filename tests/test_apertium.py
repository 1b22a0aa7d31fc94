"""The Apertium translator: real ``apertium`` processes (Debian's apertium and apertium-eng-spa), in stages 2 and 5
and the fidelity gate, and the end-to-end Spanish run that keeps real translated rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_judge import NO_QUALITY_BAR

from synth.extract import lid
from synth.kernel import TableSource
from synth.runner import run_stage
from synth.stages.backtranslate import Backtranslate, Fidelity
from synth.stages.translate import Translate
from synth.stats import ShardStats
from synth.translate import FORWARD, ROUND_TRIP, Translator
from synth.translate.apertium import MARKER, ApertiumMissing, mode_for, pair_versions, run_apertium, translate_batch

pytestmark = pytest.mark.requires("apertium")

ROOT = Path(__file__).resolve().parents[1]
SPANISH = [p for p in (ROOT / "examples" / "corpus_es" / "udhr_spanish.txt").read_text().split("\n\n") if len(p) > 120]
INSTRUCTIONS = ["Explain in two sentences why everyone has the right to education.",
                "Write a short letter to a friend about the right to rest and leisure.",
                "List three freedoms that the declaration protects."]


def test_a_batch_is_one_process_and_matches_text_by_text():
    texts = ["The red car.", "Write a poem about the 3 dogs of John Smith.\n\nThen a second paragraph.", "",
             "the big"]
    batch = translate_batch("eng-spa", texts)
    assert batch == [run_apertium("eng-spa", t).strip() for t in texts]
    assert batch[0] == "El coche rojo." and "\n\n" in batch[1] and batch[2] == ""


def test_a_text_holding_a_marker_keeps_every_row_in_place():
    texts = ["The dog eats.", f"A trap: {MARKER.format(0)} here.\n\n{MARKER.format(1)}", "The cat sleeps."]
    out = translate_batch("eng-spa", texts)
    assert len(out) == 3
    assert out[0] == run_apertium("eng-spa", texts[0]).strip()
    assert out[2] == run_apertium("eng-spa", texts[2]).strip()


def test_pairs_are_found_at_start_and_a_missing_one_names_its_package():
    assert mode_for("es", "en") == "spa-eng" and mode_for("eng", "spa") == "eng-spa"
    with pytest.raises(ApertiumMissing, match=r"apertium-eng-swh.*apt-get install"):
        mode_for("eng", "sw")
    assert "apertium-eng-spa" in pair_versions()


def test_a_missing_binary_says_which_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ApertiumMissing, match="apt-get install apertium apertium-eng-spa"):
        Translate(translator="apertium")


def test_its_identity_is_the_pair_packages_not_the_llm():
    stage = Translate(translator="apertium")
    assert isinstance(stage.translator_for(), Translator)
    assert stage.params()["apertium"]["apertium-eng-spa"] == pair_versions()["apertium-eng-spa"]
    assert stage.fingerprint("x") == Translate(translator="apertium", model="other", prompt="x").fingerprint("x")
    assert stage.fingerprint("x") != Translate(engine="hf").fingerprint("x")


def test_a_run_names_only_its_own_pair(monkeypatch):
    """``synth run --lang es`` gives the stage its language: installing another pair (here, Occitan's modes
    appear) recomputes nothing of a Spanish run; a stage made without a language names every installed pair."""
    from synth.translate import apertium

    spanish, anything = Translate(translator="apertium", lang="spa"), Translate(translator="apertium")
    before = (spanish.fingerprint("x"), anything.fingerprint("x"))
    assert list(spanish.params()["apertium"]) == ["apertium-eng-spa"]
    real = apertium.modes()
    monkeypatch.setattr(apertium, "modes", lambda: (*real, "eng-oci", "oci-eng"))  # a pair no machine here has
    apertium.pair_versions.cache_clear()
    try:
        assert spanish.fingerprint("x") == before[0]
        assert anything.fingerprint("x") != before[1] and "eng-oci" in anything.params()["apertium"]
        assert set(Backtranslate(translator="apertium", lang="oci").params()["apertium"]) == {"eng-oci", "oci-eng"}
    finally:
        apertium.pair_versions.cache_clear()


def test_a_batch_backend_plans_no_requests_and_translates_in_collect():
    """The translator protocol's streaming pair, for a backend without an engine: ``plan`` asks nothing, ``collect``
    translates (and copies what is already in its target language); the stage's engine is never loaded."""
    stage = Backtranslate(translator="apertium", roundtrip=True)
    translator = stage.translator_for(FORWARD, ROUND_TRIP)
    assert translator.engine is stage.engine_service()  # the stage's one engine, handed over
    translator.setup()
    texts, stats = [*INSTRUCTIONS[:2], "Hello there."], ShardStats()
    requests, plan = translator.plan(texts, ["eng"] * 3, ["spa", "spa", "eng"], ["a", "b", "c"], FORWARD)
    assert requests == []
    done = translator.collect(texts, plan, [], stats)
    assert [t for t, _ in done] == [*translate_batch("eng-spa", texts[:2]), "Hello there."]
    assert stats.counters == {"copied_same_language": 1, "apertium_calls": 1}
    [(back, reason)] = translator.translate([done[0][0]], ["spa"], ["eng"], ["a"], stats, ROUND_TRIP, counted=False)
    assert reason is None and back == run_apertium("spa-eng", done[0][0]).strip()
    assert stats.counters["copied_same_language"] == 1 and stage.engine_service().llm is None


def test_the_run_gives_the_translating_stages_its_language():
    from synth.orchestrate import RunSettings
    from synth.pipeline import PIPELINE

    settings = RunSettings.from_dict({"lang": "es", "translate": {"translator": "apertium"}})
    assert settings.values(PIPELINE["02_translate"])["lang"] == "spa"
    assert settings.values(PIPELINE["05_backtranslate"])["lang"] == "spa"


def test_stage_2_translates_native_spanish_into_english(tmp_path):
    rows = pa.table({"id": [f"es{i}" for i in range(len(SPANISH))], "lang": ["spa"] * len(SPANISH),
                     "fragment": SPANISH})
    out = run_stage(Translate(translator="apertium"), TableSource(rows), tmp_path, progress=False)
    stats = out.stats()
    assert stats["rows_in"] == len(SPANISH) and out.num_rows >= 0.9 * len(SPANISH), stats["dropped"]
    table = out.read()
    for row in table.to_pylist():
        assert row["response_en_lid"] > 0.5
    ident = lid.load_identifier(lid.resolve("auto", "eng"))
    assert {label for label, _ in ident.predict(table.column("response_en").to_pylist())} == {"eng"}


def test_stage_5_and_the_fidelity_gate_keep_apertium_translations(tmp_path):
    rows = pa.table({"id": ["a", "b", "c"], "lang": ["spa"] * 3, "fragment": SPANISH[:3],
                     "instruction_en": INSTRUCTIONS, "selected": [True] * 3})
    bt = run_stage(Backtranslate(translator="apertium"), TableSource(rows), tmp_path, progress=False)
    gate = Fidelity()
    gate._input_schema = bt.read().schema
    kept = run_stage(gate, TableSource(bt.read()), tmp_path, progress=False)
    assert kept.num_rows == 3, kept.stats()["dropped"]
    got = kept.read()
    assert set(got.column("bt_lid_label").to_pylist()) == {"spa"}
    assert got.column("instruction").to_pylist()[2].startswith("Lista")


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_a_spanish_run_keeps_real_translated_rows_end_to_end(tmp_path):
    """The offline target-language run of `make demo`: Apertium translates (stages 2 and 5), SmolLM2 writes the
    English instructions and judges them. Rows reach final/ with native Spanish responses that synth's own LID
    calls Spanish and back-translated instructions that passed the fidelity gate."""
    import synth
    from synth.kernel import StageOutput

    cache = {"cache": str(tmp_path / "requests.sqlite")}
    apertium = {**cache, "translator": "apertium"}
    result = synth.run(tmp_path / "run", lang="es", inputs=[str(ROOT / "examples" / "corpus_es")], fragments=8,
                       progress=False, translate=apertium, backtranslate=apertium, instruct=cache, score=cache,
                       select=NO_QUALITY_BAR)
    final = pq.read_table(result.final / "data")
    assert result.rows == final.num_rows > 0
    ident = lid.load_identifier(lid.resolve("auto", "spa"))
    assert {label for label, _ in ident.predict(final.column("response").to_pylist())} == {"spa"}
    assert set(final.column("bt_lid_label").to_pylist()) == {"spa"}
    gated = set(StageOutput.current(result.rundir, "05_fidelity").read(columns=["id"]).column("id").to_pylist())
    assert set(final.column("id").to_pylist()) <= gated
    extracted = StageOutput.current(result.rundir, "01_extract").read(columns=["id", "fragment"]).to_pylist()
    native = {r["id"]: r["fragment"] for r in extracted}
    assert all(native[r["id"]] == r["response"] for r in final.to_pylist())  # the native text, untouched
    card = (result.final / "README.md").read_text()
    assert "apertium-eng-spa" in card and "Why no rows" not in card
