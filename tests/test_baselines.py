"""The baselines: translation-based (stage 5's translator and gate on an English IFT dataset, here Apertium) and
template-based (versioned templates on labelled data), both in synth's final schema with a card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.baselines import BaselineError, ift_pair, load_template, read_ift, templated, translated
from synth.cli import app
from synth.extract import lid

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = ROOT / "examples" / "eval" / "summarization.jsonl"
IFT = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Explain in two sentences why everyone has the right to education."},
                  {"role": "assistant", "content": "Education helps every person develop their talents. It also "
                                                   "helps people understand each other and live in peace."}]},
    {"instruction": "List three freedoms that the declaration protects.", "input": "",
     "output": "The declaration protects the freedom of thought, the freedom of expression and the freedom of "
               "peaceful assembly."},
    {"conversations": [{"from": "human", "value": "Write a short letter to a friend about the right to rest."},
                       {"from": "gpt", "value": "Dear Ana, everyone has the right to rest and leisure, including "
                                                "holidays with pay. I hope you enjoy yours."}]},
    {"text": "a record with no pair"},
]


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_every_ift_form_gives_its_pair():
    assert ift_pair(IFT[0])[0].startswith("Explain in two") and ift_pair(IFT[0])[1].startswith("Education")
    assert ift_pair(IFT[1]) == (IFT[1]["instruction"], IFT[1]["output"])
    assert ift_pair({"instruction": "Translate.", "input": "Hello", "output": "Hola"}) == ("Translate.\n\nHello",
                                                                                          "Hola")
    assert ift_pair(IFT[2])[1].startswith("Dear Ana")
    assert ift_pair(IFT[3]) is None and ift_pair({"messages": [{"role": "user", "content": "hi"}]}) is None


def test_read_ift_from_jsonl_and_parquet(tmp_path):
    table, skipped = read_ift([str(_jsonl(tmp_path / "a.jsonl", IFT))])
    assert table.num_rows == 3 and skipped == 1 and len(set(table.column("id").to_pylist())) == 3
    pq.write_table(pa.table({"instruction": ["Say hi."], "output": ["Hi!"]}), tmp_path / "b.parquet")
    more, _ = read_ift([str(tmp_path / "b.parquet")])
    assert more.column("response_en").to_pylist() == ["Hi!"]
    with pytest.raises(BaselineError, match="no instruction pairs"):
        read_ift([str(_jsonl(tmp_path / "c.jsonl", IFT[3:]))])


@pytest.mark.requires("apertium")
def test_translated_baseline_with_apertium_keeps_pairs_in_the_target_language(tmp_path):
    result = translated([str(_jsonl(tmp_path / "ift.jsonl", IFT))], tmp_path / "out", "es",
                        {"translator": "apertium"}, progress=False)
    final = pq.read_table(result.final / "data")
    assert result.rows == final.num_rows == 3
    ident = lid.load_identifier(lid.resolve("auto", "spa"))
    for row in final.to_pylist():
        assert row["lang"] == "spa" and row["messages"][1]["content"] == row["response"]
        assert ident.predict([row["response"]])[0][0] == "spa", row["response"]
        assert row["bt_lid_label"] == "spa"
    assert "la libertad" in " ".join(final.column("response").to_pylist())
    card = (result.final / "README.md").read_text()
    assert "translation-based baseline" in card and "apertium-eng-spa" in card
    assert "| response_fidelity | 3 | 3 |" in card and "| paired | 3 | 3 |" in card


def test_templated_baseline_uses_the_target_languages_phrasings(tmp_path):
    records = [json.loads(line) for line in SUMMARIES.read_text().splitlines()]
    data = _jsonl(tmp_path / "sum.jsonl", [*records, {"text": "no summary"}])
    result = templated([str(data)], tmp_path / "out", "es", "summarize")
    final = pq.read_table(result.final / "data").to_pylist()
    tpl = load_template("summarize")
    assert result.rows == len(records) and result.stats["stages"]["templated"]["dropped"] == {"missing_field": 1}
    for row, rec in zip(final, records, strict=True):
        assert rec["text"] in row["instruction"] and row["response"] == rec["summary"]
        assert any(row["instruction"] == p.replace("{{ text }}", rec["text"]) for p in tpl.instructions["spa"])
        assert row["task_type"] == "summarize.v1"
    assert len({r["instruction"].split("\n")[0] for r in final}) > 1  # the phrasings vary, row by row
    again = templated([str(data)], tmp_path / "again", "es", "summarize.v1")
    assert pq.read_table(again.final / "data").column("instruction").to_pylist() == [r["instruction"]
                                                                                      for r in final]
    card = (result.final / "README.md").read_text()
    assert f"summarize.v1 (sha {tpl.sha}), instructions in spa" in card
    english = templated([str(data)], tmp_path / "en", "yo", "summarize")  # no Yoruba phrasings: English ones
    assert pq.read_table(english.final / "data").column("lang").to_pylist()[0] == "yor"
    assert "instructions in eng" in (english.final / "README.md").read_text()


def test_templated_cli_and_clear_errors(tmp_path):
    res = CliRunner().invoke(app, ["baseline", "templated", "-i", str(SUMMARIES), "--lang", "es", "--out",
                                   str(tmp_path / "o"), "--template", "qa"])
    # rich wraps the message at the path's length: compare with the wrapping undone
    assert res.exit_code == 2 and "no record has every field" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["baseline", "templated", "-i", str(SUMMARIES), "--lang", "es", "--out",
                                   str(tmp_path / "o"), "--template", "nosuch"])
    assert res.exit_code == 2 and "no template 'nosuch'" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["baseline", "templated", "-i", str(SUMMARIES), "--lang", "es", "--out",
                                   str(tmp_path / "o"), "--limit", "4"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "o" / "final" / "data").num_rows == 4
