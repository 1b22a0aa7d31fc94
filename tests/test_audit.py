"""Quality control: the relevance check (``off_topic``), the audit of any dataset, and the checks it adds.

The pairs are a fixed subset of bench/qc.py's labelled set (``tests/data/qc_subset.jsonl``: English and Spanish,
good pairs and corrupted ones, with their kind), so a test here measures the same thing the bench does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.audit import audit, pair_of, read_pairs
from synth.checks import looks_truncated
from synth.cli import app
from synth.fidelity import entities_kept
from synth.kernel import TableSource
from synth.runner import run_stage
from synth.select import Embed, SelectSettings, select
from synth.select.relevance import calibrated_threshold, parse_min_relevance

SUBSET = Path(__file__).parent / "data" / "qc_subset.jsonl"


def _subset(lang: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in SUBSET.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if lang is None or r["lang"] == lang]


@pytest.fixture(scope="module")
def embedded_pairs(tmp_path_factory):
    """English pairs of the subset as the judge left them (every score 4), through the embed stage."""
    rows = _subset("eng")
    table = pa.table({"id": [r["id"] for r in rows], "lang": ["eng"] * len(rows),
                      "instruction_en": [r["instruction_en"] for r in rows],
                      "response_en": [r["response_en"] for r in rows], "quality": [4.0] * len(rows)})
    out = run_stage(Embed(), TableSource(table, rows_per_shard=10), tmp_path_factory.mktemp("run"), progress=False)
    return out, {r["id"]: r["kind"] for r in rows}


def test_embed_scores_relevance_and_selection_drops_swapped_pairs_as_off_topic(embedded_pairs, tmp_path):
    out, kinds = embedded_pairs
    rel = dict(zip(out.read().column("id").to_pylist(), out.read().column("relevance").to_pylist(), strict=True))
    assert out.manifest["params"]["relevance"] == "model:2e2da64bd3b63c88"  # the key of its calibrated threshold
    good = [rel[i] for i, k in kinds.items() if k == "good"]
    unrelated = [rel[i] for i, k in kinds.items() if k == "swap_unrelated"]
    assert min(good) > max(unrelated)  # the score itself separates answers from unrelated text

    marked = {r["id"]: r for r in select(out, tmp_path, SelectSettings(min_quality=None), progress=False).read()
              .to_pylist()}
    reason = {i: marked[i]["select_reason"] for i in kinds}
    assert all(reason[i] is None for i, k in kinds.items() if k == "good"), reason
    for kind in ("swap_unrelated", "boilerplate"):
        assert all(reason[i] == "off_topic" for i, k in kinds.items() if k == kind), (kind, reason)
    same = [reason[i] == "off_topic" for i, k in kinds.items() if k == "swap_same_topic"]
    assert sum(same) >= len(same) / 2  # harder: the bench measures 69 % caught

    kept = select(out, tmp_path, SelectSettings(min_quality=None, min_relevance="off"), progress=False).read()
    assert "off_topic" not in kept.column("select_reason").to_pylist()  # the check can be turned off


def test_an_unmeasured_model_gets_no_relevance_threshold():
    assert calibrated_threshold("model:2e2da64bd3b63c88") == pytest.approx(0.24)
    assert calibrated_threshold("someone/else@main") is None and calibrated_threshold(None) is None
    assert parse_min_relevance("auto") == "auto" and parse_min_relevance("off") is None
    assert parse_min_relevance("0.3") == 0.3
    with pytest.raises(ValueError, match="min_relevance"):
        parse_min_relevance("high")


def test_a_cross_encoder_scores_relevance_when_one_is_given(tmp_path):
    """The plumbing of ``relevance_model``, not its quality: a tiny, untrained BERT cross-encoder built from a
    config (with all-MiniLM-L6-v2's tokenizer) gives every pair its sigmoid score, which selection thresholds."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from synth.select.embed import default_embedding_model

    tok = AutoTokenizer.from_pretrained(default_embedding_model())
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=1))
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    rows = _subset("eng")[:6]
    table = pa.table({"id": [r["id"] for r in rows], "lang": ["eng"] * 6, "quality": [4.0] * 6,
                      "instruction_en": [r["instruction_en"] for r in rows],
                      "response_en": [r["response_en"] for r in rows]})
    out = run_stage(Embed(relevance_model=str(tmp_path / "ce")), TableSource(table), tmp_path / "run",
                    progress=False)
    got = np.array(out.read().column("relevance").to_pylist())
    logits = CrossEncoder(str(tmp_path / "ce"), device="cpu").predict(
        [(r["instruction_en"], r["response_en"]) for r in rows], activation_fn=torch.nn.Identity())
    assert np.allclose(got, 1 / (1 + np.exp(-np.asarray(logits))), atol=1e-5)
    assert out.manifest["params"]["relevance"].startswith("ce:")  # the cross-encoder names the score
    middle = float(np.median(got))
    marked = select(out, tmp_path, SelectSettings(min_quality=None, min_relevance=middle), progress=False).read()
    dropped = [r["id"] for r in marked.to_pylist() if r["select_reason"] == "off_topic"]
    assert sorted(dropped) == sorted(i for i, v in zip(table.column("id").to_pylist(), got, strict=True)
                                     if v < middle) != []
    # no threshold measured for an untrained model: "auto" leaves the check off rather than guess
    auto = select(out, tmp_path, SelectSettings(min_quality=None), progress=False).read()
    assert "off_topic" not in auto.column("select_reason").to_pylist()


def _write_forms(path: Path, rows: list[dict]) -> None:
    """The subset's rows in the three forms trainers use, in turn, and one line that is not JSON."""
    lines = []
    for i, r in enumerate(rows):
        if i % 3 == 0:
            rec = {"id": r["id"], "messages": [{"role": "system", "content": "Be helpful."},
                                               {"role": "user", "content": r["instruction"]},
                                               {"role": "assistant", "content": r["response"]}]}
        elif i % 3 == 1:
            rec = {"id": r["id"], "instruction": r["instruction"], "input": "", "output": r["response"]}
        else:
            rec = {"id": r["id"], "conversations": [{"from": "human", "value": r["instruction"]},
                                                    {"from": "gpt", "value": r["response"]}]}
        lines.append(json.dumps(rec, ensure_ascii=False))
    lines.insert(3, '{"id": "broken", "messages": [')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_synth_audit_keeps_good_pairs_and_names_why_the_others_go(tmp_path):
    """English data in messages, alpaca and sharegpt form through the CLI: good pairs kept; swapped pairs off
    topic; an instruction in the wrong language, a cut response, boilerplate and a broken line dropped, each
    under its reason; audit.parquet, final/ in synth's schema and report.html written."""
    rows = _subset("eng")
    _write_forms(tmp_path / "data.jsonl", rows)
    res = CliRunner().invoke(app, ["audit", str(tmp_path / "data.jsonl"), "--lang", "en", "--out",
                                   str(tmp_path / "out"), "--quiet"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "out" / "audit.parquet")
    assert table.column_names[:3] == ["id", "keep", "reason"] and table.num_rows == len(rows) + 1
    got = {r["id"]: r for r in table.to_pylist()}
    assert got["data.jsonl:4"]["reason"] == "malformed_json"  # no id to read: where it was names it
    kinds = {r["id"]: r["kind"] for r in rows}
    assert all(got[i]["keep"] for i, k in kinds.items() if k == "good"), [got[i] for i, k in kinds.items()
                                                                          if k == "good" and not got[i]["keep"]]
    expected = {"swap_unrelated": {"off_topic"}, "wrong_language": {"wrong_language"},
                "truncated_response": {"truncated_response"}, "boilerplate": {"off_topic", "response_boilerplate"}}
    for i, kind in kinds.items():
        if kind in expected:
            assert got[i]["reason"] in expected[kind] and not got[i]["keep"], (kind, got[i])
    final = pq.read_table(tmp_path / "out" / "final" / "data")
    assert sorted(final.column("id").to_pylist()) == sorted(i for i, r in got.items() if r["keep"])
    assert final.column("messages")[0].as_py()[0]["role"] == "user"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "off_topic" in html and "malformed_json" in html
    assert "off_topic" in res.output and "rows kept" in res.output


def test_audit_of_spanish_pairs_checks_fidelity_against_the_english(tmp_path):
    """Spanish rows with their English intermediates (as a synth export has them): the English instruction
    left in place of the Spanish one is caught by the instruction's language, swaps by relevance."""
    rows = _subset("spa")
    path = tmp_path / "es.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = audit(path, tmp_path / "out", "es", progress=False)
    got = {r["id"]: r for r in pq.read_table(result.table).to_pylist()}
    kinds = {r["id"]: r["kind"] for r in rows}
    assert [got[i]["reason"] for i, k in kinds.items() if k == "wrong_language"] == ["wrong_language"] * 4
    assert all(got[i]["reason"] == "off_topic" for i, k in kinds.items() if k == "swap_unrelated")
    good = [got[i] for i, k in kinds.items() if k == "good"]
    assert sum(r["keep"] for r in good) >= len(good) - 2, [r["reason"] for r in good]  # Apertium's own slips
    assert result.kept == sum(r["keep"] for r in got.values()) and result.rows == len(rows)


def test_read_pairs_takes_every_form_and_keeps_bad_rows_in_place(tmp_path):
    assert pair_of({"messages": [{"role": "user", "content": "Hi there?"}, {"role": "assistant", "content": "Hello"}]}
                   ) == ("Hi there?", "Hello")
    assert pair_of({"instruction": "Sum", "input": "2 and 3", "output": "5"}) == ("Sum\n\n2 and 3", "5")
    assert pair_of({"conversations": [{"from": "gpt", "value": "x"}]}) is None
    assert pair_of({"instruction": "", "response": "x"}) is None
    path = tmp_path / "a.json"  # alpaca's files are one JSON array
    path.write_text(json.dumps([{"instruction": "Name a colour of the sky.", "input": "", "output": "Blue."},
                                {"instruction": "no answer"}]))
    table = read_pairs(path, "en")
    assert table.column("input_error").to_pylist() == [None, "no_pair"]
    assert table.column("id").to_pylist() == ["a.json:1", "a.json:2"] and set(table.column("lang").to_pylist()) == {
        "eng"}
    with pytest.raises(ValueError, match="no such file"):
        read_pairs(tmp_path / "missing.jsonl", "en")


def test_truncation_and_exonyms():
    assert looks_truncated("The river flows north through four countries and then it turns")
    assert not looks_truncated("The river flows north through four countries and then it turns east.")
    assert not looks_truncated("Ingredients:\n- two eggs\n- a cup of flour")  # a list item, not a cut sentence
    assert entities_kept("Which rivers flow into the Mississippi?", "¿Qué ríos afluyen al Misisipi?")
    assert entities_kept("How is pizza made in Naples?", "¿Cómo se hace la pizza en Nápoles?")
    assert not entities_kept("Where does the Danube rise?", "¿Dónde nace eso?")
