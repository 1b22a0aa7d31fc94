"""The English + multilingual mixer: exact counts, even spread, determinism, held-out languages, clear errors."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.train.mix import MixError, even_split, mix


def write_rows(path: Path, lang: str, n: int, extra_col: bool = False) -> Path:
    """An export-style shard: id, lang, messages, instruction, response (+ an optional score column)."""
    rows = [{"id": f"{lang}-{i}", "lang": lang,
             "messages": [{"role": "user", "content": f"q {lang} {i}"}, {"role": "assistant", "content": f"a {i}"}],
             "instruction": f"q {lang} {i}", "response": f"a {i}"} for i in range(n)]
    table = pa.Table.from_pylist(rows)
    if extra_col:
        table = table.append_column("quality", pa.array([4.0] * n))
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    eng = write_rows(tmp_path / "eng", "eng", 60)
    multi = {lang: write_rows(tmp_path / lang, lang, n, extra_col=(lang == "yor"))
             for lang, n in (("swh", 20), ("yor", 12), ("zul", 15), ("hau", 9))}
    return eng, multi


def train_counts(report) -> Counter:
    return Counter(pq.read_table(report.train_path).column("lang").to_pylist())


def test_even_split_remainder_goes_to_first_languages_in_code_order():
    assert even_split(10, ["zul", "swh", "yor", "hau"]) == {"hau": 3, "swh": 3, "yor": 2, "zul": 2}
    assert even_split(3, ["b", "a"]) == {"a": 2, "b": 1}
    assert even_split(0, []) == {}


def test_counts_are_exact_and_spread_evenly(inputs, tmp_path):
    eng, multi = inputs
    rep = mix(eng, multi, budget=41, n_multilingual=10, out=tmp_path / "mix")
    counts = train_counts(rep)
    assert sum(counts.values()) == 41
    assert counts["eng"] == 31 == rep.n_english
    per = {lang: counts[lang] for lang in ("hau", "swh", "yor", "zul")}
    assert per == {"hau": 3, "swh": 3, "yor": 2, "zul": 2} == {k: rep.per_lang[k] for k in per}
    assert max(per.values()) - min(per.values()) <= 1
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert manifest["per_lang"] == dict(counts) | {"eng": 31}
    assert manifest["n_multilingual"] == 10 and manifest["budget"] == 41
    assert len(set(pq.read_table(rep.train_path).column("id").to_pylist())) == 41  # no row drawn twice


def test_share_of_budget_and_list_input(inputs, tmp_path):
    eng, multi = inputs
    rep = mix(eng, list(multi.values()), budget=40, share=0.25, out=tmp_path / "mix", langs=["sw", "yo", "zu"])
    counts = train_counts(rep)
    assert rep.n_multilingual == 10 and counts["eng"] == 30
    assert {k: counts[k] for k in ("swh", "yor", "zul")} == {"swh": 4, "yor": 3, "zul": 3}
    assert "hau" not in counts


def test_deterministic_for_a_seed(inputs, tmp_path):
    eng, multi = inputs
    a = mix(eng, multi, budget=30, n_multilingual=8, out=tmp_path / "a", seed=3)
    b = mix(eng, multi, budget=30, n_multilingual=8, out=tmp_path / "b", seed=3)
    c = mix(eng, multi, budget=30, n_multilingual=8, out=tmp_path / "c", seed=4)
    ids = [pq.read_table(r.train_path).column("id").to_pylist() for r in (a, b, c)]
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_unseen_languages_get_no_training_rows_and_val_is_disjoint(inputs, tmp_path):
    eng, multi = inputs
    rep = mix(eng, multi, budget=30, n_multilingual=9, unseen=["yor"], n_val=2, out=tmp_path / "mix")
    counts = train_counts(rep)
    assert rep.unseen == ["yor"] and "yor" not in counts
    assert {k: counts[k] for k in rep.seen} == {"hau": 3, "swh": 3, "zul": 3}
    assert set(rep.val_paths) == {"eng", "hau", "swh", "yor", "zul"}
    train_ids = set(pq.read_table(rep.train_path).column("id").to_pylist())
    for lang, path in rep.val_paths.items():
        val = pq.read_table(path)
        assert val.num_rows == 2 and set(val.column("lang").to_pylist()) == {lang}
        assert not train_ids & set(val.column("id").to_pylist())
    drawn = mix(eng, multi, budget=30, n_multilingual=9, unseen=1, seed=7, out=tmp_path / "m2")
    again = mix(eng, multi, budget=30, n_multilingual=9, unseen=1, seed=7, out=tmp_path / "m3")
    assert len(drawn.unseen) == 1 and drawn.unseen == again.unseen


def test_too_few_rows_is_a_clear_error(inputs, tmp_path):
    eng, multi = inputs
    with pytest.raises(MixError, match=r"hau has 9 rows but needs 10") as err:
        mix(eng, multi, budget=60, n_multilingual=40, out=tmp_path / "mix")
    assert "Lower the budget" in str(err.value)
    with pytest.raises(MixError, match=r"eng has 60 rows but needs 61"):
        mix(eng, multi, budget=61, n_multilingual=0, out=tmp_path / "mix")
    with pytest.raises(MixError, match="exactly one"):
        mix(eng, multi, budget=10, share=0.1, n_multilingual=1, out=tmp_path / "mix")
    with pytest.raises(MixError, match="no rows for language"):
        mix(eng, multi, budget=10, n_multilingual=2, langs=["amh"], out=tmp_path / "mix")
    assert not (tmp_path / "mix" / "manifest.json").exists()
