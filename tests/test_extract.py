"""Stage 1 end to end on real files: readers, LID, quality, dedup, sampling, bad input, resume."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.kernel import StageOutput
from synth.stages.extract import ExtractError, ExtractSettings, extract

EXAMPLES = Path(__file__).parents[1] / "examples"
EVAL = [json.loads(line) for line in (EXAMPLES / "lid_eval" / "udhr_paragraphs.jsonl").read_text().splitlines()]


def _settings(**kw) -> ExtractSettings:
    return ExtractSettings(**{"lang": "sw", "min_len": 60, "max_len": 2000, **kw})


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_example_corpus_gives_swahili_fragments_with_lineage(tmp_path):
    out = extract([str(EXAMPLES / "corpus")], tmp_path, ExtractSettings(lang="sw", min_len=150), progress=False)
    t = out.read()
    assert t.num_rows >= 15
    assert set(t.column("lang").to_pylist()) == {"swh"}
    assert len(set(t.column("id").to_pylist())) == t.num_rows
    assert all("udhr_swahili" in s for s in t.column("source").to_pylist())
    for col in ("fragment", "lid_score", "source_id", "q_words", "q_dup_line_ratio"):
        assert col in t.column_names
    assert "minhash" not in t.column_names
    stats = json.loads((tmp_path / "stats.json").read_text())["stages"]
    frag = stats["01_fragments"]
    assert frag["by_lang"]["eng"]["dropped"]["other_language"] > 0  # the English noise was seen and dropped
    assert frag["rows_in"] == frag["counters"]["documents"] + sum(
        n for r, n in frag["dropped"].items() if r in ("empty_document", "malformed_json", "invalid_utf8"))
    assert stats["01_extract"]["rows_in"] == frag["rows_out"]
    assert stats["01_extract"]["rows_out"] == t.num_rows


def _precision_recall(tmp_path, **kw) -> tuple[float, float, ExtractSettings]:
    records = [{"id": f"{r['lang']}-{i}", "text": r["text"]} for i, r in enumerate(EVAL)]
    _write_jsonl(tmp_path / "in" / "mixed.jsonl", records)
    settings = _settings(id_field="id", dedup=False, **kw)
    out = extract([str(tmp_path / "in")], tmp_path / "run", settings, progress=False)
    truth = [s.split("-")[0] for s in out.read().column("source_id").to_pylist()]
    swahili = sum(1 for r in EVAL if r["lang"] == "swh" and len(r["text"]) >= 60)
    precision, recall = truth.count("swh") / len(truth), truth.count("swh") / swahili
    print(f"{settings.lid_model} + thresholds: precision {precision:.3f}, recall {recall:.3f}, n={len(truth)}")
    return precision, recall, settings


def test_precision_on_multilingual_paragraphs(tmp_path):
    """23 languages of UDHR paragraphs, Lingala and Chichewa among them (close to Swahili for LID)."""
    precision, recall, settings = _precision_recall(tmp_path)
    assert settings.lid_model == "heliport"  # auto: heliport is installed (test extra) and measured better on swh
    assert precision >= 0.95
    assert recall >= 0.8


def test_weak_bundled_model_is_flagged_and_measured(tmp_path, capsys):
    precision, recall, settings = _precision_recall(tmp_path, lid_model="lid176")
    assert settings.lid_threshold == 0.5
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "lid176 has a measured precision of 0.55 for Swahili" in err  # the user is told (held-out numbers),
    assert "heliport measured precision 0.90" in err  # with heliport as the way out
    assert precision >= 0.75 and recall >= 0.4  # lid176 mistakes Lingala for Swahili: see lid_confusion.json


def test_bad_files_are_counted_and_do_not_stop_the_run(tmp_path):
    good = [{"text": r["text"]} for r in EVAL if r["lang"] == "swh"][:20]
    src = tmp_path / "in"
    _write_jsonl(src / "a_good.jsonl", good[:10])
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in good[10:]]
    lines.insert(2, b'{"text": "broken json')
    lines.insert(4, b'{"text": "Kila mtu \xff\xfe ana haki ya kuishi"}')
    lines.insert(6, b'{"other": "no text field"}')
    (src / "b_mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (src / "c_empty.txt").write_bytes(b"")
    (src / "d_binary.txt").write_bytes(b"\x00\x01\x02 ELF binary \x00" * 100)
    (src / "e_corrupt.parquet").write_bytes(b"PAR1 definitely not parquet")
    with gzip.open(src / "f_truncated.jsonl.gz", "wb") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good).encode())
    data = (src / "f_truncated.jsonl.gz").read_bytes()
    (src / "f_truncated.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])

    out = extract([str(src)], tmp_path / "run", _settings(dedup=False), progress=False)
    stats = out.stats()
    frag = StageOutput.current(tmp_path / "run", "01_fragments").stats()
    dropped = frag["dropped"]
    assert dropped["malformed_json"] == 1 and dropped["invalid_utf8"] == 1 and dropped["missing_text_field"] == 1
    assert dropped["unreadable_file"] == 2  # binary and corrupt parquet
    assert dropped.get("truncated_stream", 0) == 1
    where = " ".join(e["where"] for e in frag["examples"])
    assert "b_mixed.jsonl:3" in where and "d_binary.txt" in where and "e_corrupt.parquet" in where
    # every valid record was read as a document (the 20 of a_good and b_mixed, and the gzip's intact lines)
    complete_gz_lines = gzip.decompress(data).count(b"\n")  # the whole file, before truncation
    assert 20 < frag["counters"]["documents"] < 20 + complete_gz_lines
    reader_drops = sum(frag["dropped"].get(r, 0) for r in (
        "malformed_json", "invalid_utf8", "missing_text_field", "unreadable_file", "truncated_stream",
        "empty_document"))
    assert frag["rows_in"] == frag["counters"]["documents"] + reader_drops
    sources = {s.rsplit("/", 1)[-1] for s in out.read().column("source").to_pylist()}
    assert {"a_good.jsonl", "b_mixed.jsonl", "f_truncated.jsonl.gz"} <= sources
    assert stats["rows_out"] == out.num_rows


def test_nothing_readable_is_a_clear_error(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ExtractError, match=r"x\.parquet"):
        extract([str(tmp_path / "x.parquet")], tmp_path / "run", _settings(), progress=False)
    with pytest.raises(ExtractError, match="nothing/here"):
        extract([str(tmp_path / "nothing" / "here")], tmp_path / "run", _settings(), progress=False)


def test_duplicates_across_files_are_removed_keep_first(tmp_path):
    sw = [r["text"] for r in EVAL if r["lang"] == "swh" and len(r["text"]) > 150]
    long = "\n\n".join(sw[:3])
    near = long.replace("haki", "haki zote", 1)
    _write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": long}, {"text": sw[5]}])
    _write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": long.upper()}, {"text": near}, {"text": sw[6]}])
    out = extract([str(tmp_path / "in")], tmp_path / "run", _settings(min_len=500, max_len=4000),
                  progress=False)
    dropped = out.stats()["dropped"]
    assert dropped.get("exact_duplicate") == 1 and dropped.get("near_duplicate") == 1
    kept = out.read()
    assert [s.endswith("a.jsonl") for s in kept.column("source").to_pylist()].count(True) >= 1


def test_sampling_first_and_uniform(tmp_path):
    records = [{"text": r["text"]} for r in EVAL if r["lang"] == "swh"]
    _write_jsonl(tmp_path / "in" / "sw.jsonl", records)
    first = extract([str(tmp_path / "in")], tmp_path / "r1", _settings(fragments=10), progress=False)
    assert first.num_rows == 10
    assert first.stats()["dropped"]["over_target"] > 0
    u1 = extract([str(tmp_path / "in")], tmp_path / "r2", _settings(fragments=10, sample="uniform", seed=1),
                 progress=False)
    u1b = extract([str(tmp_path / "in")], tmp_path / "r3", _settings(fragments=10, sample="uniform", seed=1),
                  progress=False)
    u2 = extract([str(tmp_path / "in")], tmp_path / "r2", _settings(fragments=10, sample="uniform", seed=2),
                 progress=False)
    ids = lambda o: o.read().column("id").to_pylist()  # noqa: E731
    assert u1.num_rows == 10 and ids(u1) == ids(u1b) and ids(u1) != ids(u2)
    assert ids(first) != ids(u1)


def test_reading_stops_once_enough_fragments_are_kept(tmp_path):
    sw = [{"text": r["text"]} for r in EVAL if r["lang"] == "swh"]
    for i in range(12):
        _write_jsonl(tmp_path / "in" / f"part{i:02d}.jsonl", sw[i * 5 : i * 5 + 5])
    out = extract([str(tmp_path / "in")], tmp_path / "run", _settings(fragments=5), progress=False)
    assert out.num_rows == 5
    frags = StageOutput.current(tmp_path / "run", "01_fragments")
    assert len(frags.shards) < 12  # not every file was read
    full = extract([str(tmp_path / "in")], tmp_path / "run2", _settings(), progress=False)
    assert out.read().column("id").to_pylist() == full.read().column("id").to_pylist()[:5]


def test_changing_a_threshold_reruns_only_the_cheap_step(tmp_path):
    _write_jsonl(tmp_path / "in" / "sw.jsonl", [{"text": r["text"]} for r in EVAL if r["lang"] == "swh"])
    a = extract([str(tmp_path / "in")], tmp_path / "run", _settings(), progress=False)
    frags = StageOutput.current(tmp_path / "run", "01_fragments")
    mtimes = [p.stat().st_mtime_ns for p in frags.shards]
    b = extract([str(tmp_path / "in")], tmp_path / "run", _settings(lid_threshold=0.995), progress=False)
    assert [p.stat().st_mtime_ns for p in frags.shards] == mtimes
    assert b.fingerprint != a.fingerprint and b.num_rows < a.num_rows
    assert b.stats()["dropped"]["lid_score_low"] > 0


def test_parquet_input_with_text_field(tmp_path):
    rows = [r["text"] for r in EVAL if r["lang"] in ("swh", "eng")]
    pq.write_table(pa.table({"content": rows, "n": list(range(len(rows)))}), tmp_path / "c.parquet",
                   row_group_size=25)
    out = extract([str(tmp_path / "c.parquet")], tmp_path / "run", _settings(text_field="content"),
                  progress=False)
    assert out.num_rows > 30 and set(out.read().column("lang").to_pylist()) == {"swh"}


def test_cli_extract_writes_run_config_and_summary(tmp_path):
    res = CliRunner().invoke(app, ["extract", "--lang", "sw", "--input", str(EXAMPLES / "corpus"), "--out",
                                   str(tmp_path), "--fragments", "10", "--min-len", "150", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "01_extract: kept 10 of" in res.output and "rows (swh 10)" in res.output
    cfg = (tmp_path / "run.toml").read_text()
    assert 'lang = "swh"' in cfg and "fragments = 10" in cfg and "min_len = 150" in cfg


def test_cli_extract_bad_language_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["extract", "--lang", "xx-nonsense", "--input", str(EXAMPLES / "corpus"),
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown language code" in res.output
