import gzip
import json
import pickle
import tracemalloc
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from synth.extract.inputs import InputPart, UnreadableInput, expand_inputs
from synth.extract.readers import plan_parts, read_part


def read_all(parts, **kw):
    """Every document of every part as (source, source_id, text), and every error as (reason, where)."""
    errors = []
    docs = [(d.source, d.source_id, d.text) for p in parts
            for d in read_part(p, lambda r, w: errors.append((r, w)), **kw)]
    return docs, errors


def read_files(paths, **kw):
    return read_all(plan_parts([Path(p) for p in paths]), **kw)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


RECORDS = [{"text": f"document {i} — ünïcødé {'x' * (i % 7)}", "id": f"id-{i}"} for i in range(50)]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_txt_file_mode_one_document_per_file(here):
    Path("corpus").mkdir()
    Path("corpus/a.txt").write_bytes(b"\xef\xbb\xbfFirst file.\n\nSecond paragraph.\n")
    Path("corpus/b.txt").write_text("Another file.", encoding="utf-8")
    docs, errors = read_files(expand_inputs(["corpus"]))
    assert docs == [("corpus/a.txt", "doc", "First file.\n\nSecond paragraph.\n"),
                    ("corpus/b.txt", "doc", "Another file.")]
    assert errors == []


def test_txt_paragraph_mode(here):
    Path("p.txt").write_bytes(b"One line\nsame paragraph\n\n\n  \t\nTwo\r\n\r\nThree, no newline")
    docs, errors = read_files(["p.txt"], txt_mode="paragraphs")
    assert docs == [("p.txt", "p0", "One line\nsame paragraph"), ("p.txt", "p1", "Two"),
                    ("p.txt", "p2", "Three, no newline")]
    assert errors == []


def test_jsonl_round_trip_with_ids(here):
    write_jsonl(Path("a.jsonl"), RECORDS)
    docs, errors = read_files(["a.jsonl"])
    assert docs == [("a.jsonl", f"L{i + 1}", r["text"]) for i, r in enumerate(RECORDS)]
    docs, _ = read_files(["a.jsonl"], id_field="id")
    assert [d[1] for d in docs] == [r["id"] for r in RECORDS]
    assert errors == []


def test_json_extension_and_text_field_override(here):
    Path("b.json").write_text('{"content": "from content", "text": "not this", "n": 7}\n'
                              '{"content": "second", "n": null}\n', encoding="utf-8")
    docs, errors = read_files(["b.json"], text_field="content", id_field="n")
    assert docs == [("b.json", "7", "from content"), ("b.json", "L2", "second")]
    assert errors == []


def test_parquet_text_field_ids_and_row_group_parts(here):
    table = pa.table({"body": [f"row {i}" for i in range(100)], "id": [None if i % 3 else f"k{i}" for i in range(100)]})
    pq.write_table(table, "t.parquet", row_group_size=10)
    parts = plan_parts([Path("t.parquet")], rows_per_part=25)
    assert [(p.start, p.end) for p in parts] == [(0, 3), (3, 6), (6, 9), (9, None)]  # whole row groups
    docs, errors = read_all(parts, text_field="body", id_field="id")
    assert [d[2] for d in docs] == table.column("body").to_pylist()
    assert [d[1] for d in docs[:4]] == ["k0", "r1", "r2", "k3"]
    assert docs[31][1] == "r31" and docs[-1][0] == "t.parquet"
    assert errors == []


def test_parquet_nulls_and_missing_column(here):
    pq.write_table(pa.table({"text": ["ok", None, "  ", "fine"]}), "n.parquet")
    docs, errors = read_files(["n.parquet"])
    assert [d[1:] for d in docs] == [("r0", "ok"), ("r3", "fine")]
    assert errors == [("missing_text_field", "n.parquet:row 1"), ("empty_document", "n.parquet:row 2")]
    with pytest.raises(UnreadableInput, match=r"n\.parquet: no column 'body' \(columns: text\)"):
        read_files(["n.parquet"], text_field="body")


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_files_match_plain(here, suffix):
    write_jsonl(Path("plain.jsonl"), RECORDS)
    raw = Path("plain.jsonl").read_bytes()
    if suffix == ".gz":
        data = gzip.compress(raw[:500]) + gzip.compress(raw[500:])  # two members, like `cat a.gz b.gz`
    else:
        c = zstandard.ZstdCompressor(write_checksum=True)
        data = c.compress(raw[:500]) + c.compress(raw[500:])  # two frames
    Path(f"c.jsonl{suffix}").write_bytes(data)
    parts = plan_parts([Path(f"c.jsonl{suffix}")], target_bytes=64)
    assert len(parts) == 1  # a compressed stream is never split
    docs, errors = read_all(parts)
    plain, _ = read_files(["plain.jsonl"])
    assert [d[1:] for d in docs] == [d[1:] for d in plain] and len(docs) == len(RECORDS)
    assert docs[0][0] == f"c.jsonl{suffix}" and errors == []


def test_compressed_txt_paragraphs(here):
    Path("t.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"alpha\n\nbeta\ngamma\n"))
    Path("u.txt.gz").write_bytes(gzip.compress(b"one file"))
    assert read_files(["t.txt.zst"], txt_mode="paragraphs")[0] == [("t.txt.zst", "p0", "alpha"),
                                                                   ("t.txt.zst", "p1", "beta\ngamma")]
    assert read_files(["u.txt.gz"])[0] == [("u.txt.gz", "doc", "one file")]


@pytest.mark.requires("datasets")
def test_datasets_save_to_disk_folder(here):
    import datasets

    rows = {"text": [f"sentence {i}" for i in range(300)], "uid": [f"u{i}" for i in range(300)]}
    datasets.Dataset.from_dict(rows).save_to_disk("ds", num_shards=2)
    assert expand_inputs(["ds"]) == [Path("ds")]
    parts = plan_parts(expand_inputs(["ds"]), rows_per_part=40)
    assert len(parts) == 8  # two arrow files of 150 rows, four ranges each
    docs, errors = read_all(parts, id_field="uid")
    assert [d[2] for d in docs] == rows["text"] and [d[1] for d in docs] == rows["uid"]
    assert docs[0][0] == "ds/data-00000-of-00002.arrow" and docs[-1][0] == "ds/data-00001-of-00002.arrow"
    assert read_all(parts[5:6])[0][0][1] == "r40"  # rows count within their arrow file
    assert errors == []

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                               "test": datasets.Dataset.from_dict({"text": ["t"]})})
    dd.save_to_disk("dd")
    assert expand_inputs(["dd"]) == [Path("dd/test"), Path("dd/train")]  # not dataset_dict.json


def test_folders_globs_and_missing_paths(here):
    for name in ["c/b.jsonl", "c/a.txt", "c/sub/z.jsonl.gz", "c/sub/y.parquet", "c/.hidden.jsonl", "c/notes.md",
                 "c/.git/x.jsonl", "d/e.jsonl"]:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"x")
    assert expand_inputs(["c"]) == [Path(p) for p in ["c/a.txt", "c/b.jsonl", "c/sub/y.parquet", "c/sub/z.jsonl.gz"]]
    assert expand_inputs(["c/**/*.jsonl*", "c/b.jsonl", "d/*.jsonl"]) == [
        Path("c/b.jsonl"), Path("c/sub/z.jsonl.gz"), Path("d/e.jsonl")]  # in order given, no duplicates
    assert expand_inputs([str(here / "d")]) == [here / "d/e.jsonl"]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        expand_inputs(["c", "nope.jsonl"])
    with pytest.raises(FileNotFoundError, match=r"c/\*\.csv"):
        expand_inputs(["c/*.csv"])
    with pytest.raises(FileNotFoundError, match="c/sub/empty"):
        Path("c/sub/empty").mkdir()
        expand_inputs(["c/sub/empty"])
    with pytest.raises(ValueError, match="c/notes.md: unsupported"):
        expand_inputs(["c/notes.md"])


# ----------------------------------------------------------------------------------------- splitting


JSONL_LINES = [json.dumps({"text": f"line {i} " + "w" * (i * 7 % 90)}) for i in range(60)]
JSONL_BYTES = ("\n".join(JSONL_LINES[:30] + [json.dumps({"text": "long " * 80})] + JSONL_LINES[30:])).encode()
PARAS_BYTES = b"".join(
    b"para %d line one\n" % i + b"second line %d\n" % i * (i % 4) + b"\n" * (1 + i % 3) + b"   \n" * (i % 5 == 0)
    for i in range(40)
) + b"last paragraph without newline"


def test_byte_split_jsonl_every_line_once(here):
    Path("big.jsonl").write_bytes(JSONL_BYTES)  # no trailing newline; one line longer than 3 targets
    whole, _ = read_all([InputPart(str(here / "big.jsonl"), "jsonl", source="big.jsonl")])
    parts = plan_parts([Path("big.jsonl")], target_bytes=100)
    assert len(parts) > 20 and parts == plan_parts([Path("big.jsonl")], target_bytes=100)
    assert all(JSONL_BYTES[p.start - 1:p.start] == b"\n" for p in parts[1:])  # cut at line starts
    assert [p.end for p in parts[:-1]] == [p.start for p in parts[1:]] and parts[-1].end is None
    docs, errors = read_all(parts)
    assert docs == whole and len(docs) == 61 and errors == []
    assert docs[-1][1] == "L61" and len({p.key() for p in parts}) == len(parts)
    assert pickle.loads(pickle.dumps(parts[3])) == parts[3]
    assert parts[1].key() == f"big.jsonl[{parts[1].start}:{parts[1].end}]"


def test_byte_split_txt_paragraphs_every_paragraph_once(here):
    Path("p.txt").write_bytes(PARAS_BYTES)
    whole, _ = read_files(["p.txt"], txt_mode="paragraphs")
    assert len(whole) == 41 and whole[-1][1:] == ("p40", "last paragraph without newline")
    parts = plan_parts([Path("p.txt")], target_bytes=50, txt_mode="paragraphs")
    assert len(parts) > 10 and len(plan_parts([Path("p.txt")], target_bytes=50)) == 1  # file mode: never cut
    docs, errors = read_all(parts, txt_mode="paragraphs")
    assert docs == whole and errors == []
    with pytest.raises(ValueError, match="txt_mode='file'"):
        read_all(parts[1:2])


@pytest.mark.parametrize("kind, data, mode", [("jsonl", JSONL_BYTES[:700], "file"),
                                              ("txt", PARAS_BYTES[:400], "paragraphs")])
def test_any_cut_point_gives_every_item_once(tmp_path, kind, data, mode):
    """Parts made by hand at every offset: the read-time rule alone places each line/paragraph once."""
    path = tmp_path / f"f.{kind}"
    path.write_bytes(data)
    whole, _ = read_all([InputPart(str(path), kind)], txt_mode=mode)
    assert len(whole) > 5
    for cut in range(1, len(data) + 1):
        left = InputPart(str(path), kind, 0, cut)
        right = InputPart(str(path), kind, cut, None)
        three = [InputPart(str(path), kind, 0, cut // 2), InputPart(str(path), kind, cut // 2, cut), right]
        assert read_all([left, right], txt_mode=mode)[0] == whole, cut
        assert read_all(three, txt_mode=mode)[0] == whole, cut


# ----------------------------------------------------------------------------------------- bad input


def test_bad_jsonl_lines_skipped_with_reason_and_line(here):
    lines = [b'{"text": "good 1"}', b'{"text": "bad \xff byte"}', b'{"text": "unclosed', b'{"other": "x"}',
             b'{"text": null}', b'{"text": 42}', b'{"text": "   "}', b"", b'{"text": "\\ud800 lone"}', b"[1, 2]",
             b'{"text": "good 2"}']
    Path("bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    docs, errors = read_files(["bad.jsonl"])
    assert docs == [("bad.jsonl", "L1", "good 1"), ("bad.jsonl", "L11", "good 2")]
    assert errors == [("invalid_utf8", "bad.jsonl:2"), ("malformed_json", "bad.jsonl:3"),
                      ("missing_text_field", "bad.jsonl:4"), ("missing_text_field", "bad.jsonl:5"),
                      ("not_a_string", "bad.jsonl:6"), ("empty_document", "bad.jsonl:7"),
                      ("invalid_utf8", "bad.jsonl:9"), ("missing_text_field", "bad.jsonl:10")]


def test_bad_txt_paragraph_and_file(here):
    Path("p.txt").write_bytes(b"good one\n\nbad \xc3\x28 here\nstill bad\n\ngood two\n")
    docs, errors = read_files(["p.txt"], txt_mode="paragraphs")
    assert docs == [("p.txt", "p0", "good one"), ("p.txt", "p2", "good two")]
    assert errors == [("invalid_utf8", "p.txt:3")]

    Path("latin1.txt").write_bytes("Ça déjà été rejeté\nà côté".encode("latin-1"))
    Path("one_bad.txt").write_bytes(b"fine text " * 100 + b"\xff" + b" more")
    docs, errors = read_files(["latin1.txt", "one_bad.txt"])
    assert errors == [("invalid_utf8", "latin1.txt:1")]
    assert docs == [("one_bad.txt", "doc", "fine text " * 100 + "\ufffd more")]  # under 1% replaced: kept


def test_huge_line_is_skipped_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "before"}\n{"text": "')
        block = b"a" * (1 << 20)
        for _ in range(100):
            f.write(block)
        f.write(b'"}\n{"text": "after"}\n')
    del block
    errors = []
    tracemalloc.start()
    try:
        docs = [d.text for d in read_part(InputPart(str(path), "jsonl"), lambda r, w: errors.append((r, w)))]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert docs == ["before", "after"]
    assert errors == [("document_too_large", f"{path}:2")]
    assert peak < 40 << 20, f"peak {peak >> 20} MB while skipping a 100 MB line"


def test_size_limit_applies_to_every_format(here):
    write_jsonl(Path("s.jsonl"), [{"text": "short"}, {"text": "x" * 500}])
    Path("s.txt").write_text("y" * 500 + "\n\nshort\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["short", "z" * 500]}), "s.parquet")
    docs, errors = read_files(["s.jsonl", "s.parquet"], max_doc_bytes=100)
    assert [d[2] for d in docs] == ["short", "short"]
    assert errors == [("document_too_large", "s.jsonl:2"), ("document_too_large", "s.parquet:row 1")]
    assert read_files(["s.txt"], txt_mode="paragraphs", max_doc_bytes=100) == (
        [("s.txt", "p1", "short")], [("document_too_large", "s.txt:1")])
    assert read_files(["s.txt"], max_doc_bytes=100) == ([], [("document_too_large", "s.txt:1")])


@pytest.mark.parametrize("name, data, why", [
    ("img.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary file"),
    ("bin.jsonl", b'{"text": "ok"}\n' + b"\x00" * 100, "binary file"),
    ("wide.txt", "UTF-16 text".encode("utf-16"), "UTF-16"),
    ("array.json", b'[{"text": "a"}, {"text": "b"}]', "JSON array"),
    ("pretty.jsonl", b'{\n  "text": "a"\n}\n', "pretty-printed JSON"),
    ("notgz.jsonl.gz", b'{"text": "plain, misnamed"}\n', "not a valid gzip"),
    ("notzst.txt.zst", b"plain text, misnamed", "not a valid zstd"),
])
def test_unreadable_text_files_raise_naming_the_file(here, name, data, why):
    Path(name).write_bytes(data)
    with pytest.raises(UnreadableInput, match=rf"^{name.replace('.', '[.]')}: .*{why}"):
        read_files([name], txt_mode="paragraphs")


@pytest.mark.parametrize("damage", ["truncated footer", "garbage", "empty"])
def test_corrupt_parquet_raises_naming_the_file(here, damage):
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(1000)]}), "ok.parquet")
    good = Path("ok.parquet").read_bytes()
    data = {"truncated footer": good[:-20], "garbage": b"PAR1 this is not parquet at all", "empty": b""}[damage]
    Path("bad.parquet").write_bytes(data)
    parts = plan_parts([Path("bad.parquet")])  # planning does not fail; reading names the file
    assert parts == [InputPart(str(here / "bad.parquet"), "parquet", source="bad.parquet")]
    with pytest.raises(UnreadableInput, match=r"^bad\.parquet: not a readable Parquet file"):
        read_all(parts)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_stream_yields_complete_lines_then_reports(here, codec):
    lines = [json.dumps({"text": f"record number {i} with some words to compress"}) for i in range(20000)]
    raw = ("\n".join(lines) + "\n").encode()
    name = "t.jsonl.gz" if codec == "gzip" else "t.jsonl.zst"
    whole = gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw)
    Path(name).write_bytes(whole[: len(whole) // 2])
    docs, errors = read_files([name])
    assert 100 < len(docs) < 20000
    assert [d[2] for d in docs] == [f"record number {i} with some words to compress" for i in range(len(docs))]
    assert errors == [("truncated_stream", f"{name}:{len(docs) + 1}")]  # the cut line is not passed on as a doc


def test_truncated_stream_in_txt_modes(here):
    raw = b"".join(b"paragraph %d\nline two of %d\nline three of %d\n\n" % (i, i * 7, i * 13) for i in range(5000))
    packed = gzip.compress(raw)
    for cut in range(len(packed) - 100, 0, -7):  # a cut that leaves the last paragraph half read
        prefix = zlib.decompressobj(31).decompress(packed[:cut])
        complete = prefix[: prefix.rindex(b"\n") + 1]
        if complete.endswith(b"line two of %d\n" % (complete.count(b"\n\n") * 7)):
            break
    Path("t.txt.gz").write_bytes(packed[:cut])
    docs, errors = read_files(["t.txt.gz"], txt_mode="paragraphs")
    expected = [p.decode() for p in complete.split(b"\n\n")[:-1]]  # only paragraphs seen to their end
    assert [d[2] for d in docs] == expected and len(expected) > 100
    assert errors == [("truncated_stream", f"t.txt.gz:{complete.count(10) + 1}")]
    assert read_files(["t.txt.gz"]) == ([], [("truncated_stream", "t.txt.gz:1")])


def test_arrow_files_and_damage(here):
    table = pa.table({"text": [f"row {i}" for i in range(5000)]})
    with pa.ipc.new_file("f.arrow", table.schema) as w:  # the IPC file format, not only `datasets`' stream
        for b in table.to_batches(max_chunksize=1000):
            w.write_batch(b)
    with pa.ipc.new_stream("s.arrow", table.schema) as w:
        for b in table.to_batches(max_chunksize=1000):
            w.write_batch(b)
    parts = plan_parts([Path("f.arrow")], rows_per_part=1500)
    assert [(p.start, p.end) for p in parts] == [(0, 1500), (1500, 3000), (3000, 4500), (4500, None)]
    assert [d[2] for d in read_all(parts)[0]] == table.column("text").to_pylist()

    data = Path("s.arrow").read_bytes()
    Path("cut.arrow").write_bytes(data[: len(data) * 2 // 3])
    docs, errors = read_files(["cut.arrow"])
    assert [d[1] for d in docs] == [f"r{i}" for i in range(3000)]  # whole batches before the damage
    assert errors == [("truncated_stream", "cut.arrow:row 3000")]
    Path("junk.arrow").write_bytes(b"not arrow" * 10)
    with pytest.raises(UnreadableInput, match=r"^junk\.arrow: not a readable Arrow file"):
        read_files(["junk.arrow"])


def test_broken_datasets_folder_fails_by_name_when_read(here):
    Path("ds").mkdir()
    Path("ds/state.json").write_text("{not json")
    parts = plan_parts(expand_inputs(["ds"]))
    assert [p.source for p in parts] == ["ds"]
    with pytest.raises(UnreadableInput, match=r"^ds: a datasets folder whose state\.json cannot be read"):
        read_all(parts)


def test_damaged_parquet_row_group_costs_only_its_rows(here):
    table = pa.table({"text": [f"row {i} " * 5 for i in range(5000)]})
    pq.write_table(table, "p.parquet", row_group_size=1000, compression="snappy")
    page = pq.read_metadata("p.parquet").row_group(2).column(0).data_page_offset
    data = bytearray(Path("p.parquet").read_bytes())
    data[page + 40: page + 200] = b"\xab" * 160
    Path("p.parquet").write_bytes(bytes(data))
    docs, errors = read_files(["p.parquet"])
    assert [d[1] for d in docs] == [f"r{i}" for i in [*range(2000), *range(3000, 5000)]]
    assert errors == [("corrupt_row_group", "p.parquet:row 2000")]
