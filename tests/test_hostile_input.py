"""Hostile input, one test each: every case ends in a counted skip with a named reason (and the file and line
in its example), or a one-line error naming the file; never a traceback or a hang. Each runs the real extract
stage next to a good file, so the run goes on past the bad one."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from synth.errors import SynthError
from synth.extract.inputs import expand_inputs
from synth.extract.readers import plan_parts
from synth.kernel import StageOutput, TableSource
from synth.runner import run_stage
from synth.stages.extract import CorpusSource, ExtractSettings, extract
from synth.stages.score import Score

GOOD = ("Everyone has the right to rest and leisure, including reasonable limitation of working hours and "
        "periodic holidays with pay. All human beings are born free and equal in dignity and rights.")


def run(tmp_path: Path, bad: dict[str, bytes], **settings) -> dict:
    """Extract a folder holding ``bad`` files and one good one; the fragments stage's stats."""
    corpus = tmp_path / "in"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "good.txt").write_text(GOOD)
    for name, data in bad.items():
        (corpus / name).write_bytes(data)
    out = extract([str(corpus)], tmp_path / "run", ExtractSettings(lang="en", min_len=10, **settings),
                  progress=False)
    assert out.num_rows >= 1  # the good file made it through
    return StageOutput.current(tmp_path / "run", "01_fragments").stats()


def where(stats: dict, reason: str) -> list[str]:
    """The examples' locations for a drop reason; the reason must be counted."""
    assert stats["dropped"].get(reason, 0) >= 1, stats["dropped"]
    return [e["where"] for e in stats["examples"] if e["reason"] == reason]


def test_invalid_utf8(tmp_path):
    stats = run(tmp_path, {"latin1.jsonl": json.dumps({"text": "x"}).replace("x", "caf\udce9").encode(
        "utf-8", "surrogateescape") + b"\n"})
    assert where(stats, "invalid_utf8") == [f"{tmp_path / 'in' / 'latin1.jsonl'}:1"]


def test_malformed_jsonl_line_in_the_middle(tmp_path):
    lines = [json.dumps({"text": GOOD + f" ({i})"}) for i in range(3)]
    lines[1] = '{"text": "cut off'
    stats = run(tmp_path, {"mixed.jsonl": "\n".join(lines).encode() + b"\n"})
    assert where(stats, "malformed_json") == [f"{tmp_path / 'in' / 'mixed.jsonl'}:2"]
    assert stats["rows_out"] >= 3  # the lines before and after it, and the good file


def test_binary_file_named_txt(tmp_path):
    stats = run(tmp_path, {"image.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(4096)})
    (msg,) = where(stats, "unreadable_file")
    assert "image.txt: binary file" in msg


def test_empty_file(tmp_path):
    stats = run(tmp_path, {"empty.txt": b""})
    assert where(stats, "empty_document") == [f"{tmp_path / 'in' / 'empty.txt'}:1"]
    for mode in ("paragraphs", "jsonl"):  # no document at all in the file: counted as an empty file
        name = "empty.jsonl" if mode == "jsonl" else "empty.txt"
        stats = run(tmp_path / mode, {name: b"\n\n"}, txt_mode="paragraphs")
        assert where(stats, "empty_file") == [f"{tmp_path / mode / 'in' / name}:1"]


MEASURE = """
import json, resource, sys
from pathlib import Path
from test_hostile_input import run
run(Path(sys.argv[1]), {})  # the same run without the huge file: models loaded, buffers warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = run(Path(sys.argv[2]), {})
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_kb": grew, "stats": stats}))
"""


@pytest.mark.slow
def test_a_100_mb_single_line_in_bounded_memory(tmp_path):
    """Peak memory is measured in a fresh process (tracemalloc would slow the model loads a hundredfold): the
    run with the 100 MB line may not take more than a run without it, give or take 60 MB."""
    corpus = tmp_path / "huge" / "in"
    corpus.mkdir(parents=True)
    with open(corpus / "huge.jsonl", "wb") as f:
        f.write(b'{"text": "')
        for _ in range(100):
            f.write(b"a" * (1 << 20))
        f.write(b'"}\n')
    res = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "plain"), str(tmp_path / "huge")],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert where(out["stats"], "document_too_large") == [f"{corpus / 'huge.jsonl'}:1"]
    assert out["grew_kb"] < 60 << 10, f"{out['grew_kb'] >> 10} MB more for a 100 MB line"


def test_truncated_gz_and_zst(tmp_path):
    docs = "".join(json.dumps({"text": f"{GOOD} ({i})"}) + "\n" for i in range(400)).encode()
    gz, zst = gzip.compress(docs), zstandard.ZstdCompressor().compress(docs)
    stats = run(tmp_path, {"cut.jsonl.gz": gz[: len(gz) // 2], "cut.jsonl.zst": zst[: len(zst) // 2]})
    cut = where(stats, "truncated_stream")
    assert sorted(w.rsplit(":", 1)[0] for w in cut) == [str(tmp_path / "in" / n) for n in ("cut.jsonl.gz",
                                                                                          "cut.jsonl.zst")]
    assert stats["rows_in"] > 2  # what came before the damage was kept


def test_corrupt_parquet(tmp_path):
    good = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"text": [GOOD] * 50}), good)
    data = bytearray(good.read_bytes())
    stats = run(tmp_path, {"garbage.parquet": b"PAR1" + os.urandom(2000) + b"PAR1",
                           "flipped.parquet": bytes(data[: len(data) // 2]) + bytes(len(data) - len(data) // 2)})
    msgs = where(stats, "unreadable_file")
    assert sorted(m.split(":")[0] for m in msgs) == sorted(str(tmp_path / "in" / n) for n in ("flipped.parquet",
                                                                                             "garbage.parquet"))
    assert all("not a readable Parquet file" in m for m in msgs)


def test_symlink_loop_in_an_input_folder(tmp_path):
    corpus = tmp_path / "in"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "sub" / "up").symlink_to(corpus, target_is_directory=True)  # a cycle through a folder link
    (corpus / "self.txt").symlink_to(corpus / "self.txt")  # a link to itself: ELOOP when opened
    stats = run(tmp_path, {})
    (msg,) = where(stats, "unreadable_file")
    assert "self.txt: cannot open (Too many levels of symbolic links)" in msg
    assert stats["rows_in"] == 2  # the good file once, however the links are walked, and the loop, counted


def _without_root_file_powers() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so root
    is refused a mode-000 folder like anyone else (a real refusal by the kernel, not a simulated one)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_folder_without_read_permission(tmp_path):
    corpus = tmp_path / "in"
    (corpus / "closed").mkdir(parents=True)
    (corpus / "good.txt").write_text(GOOD)
    (corpus / "closed" / "more.txt").write_text(GOOD)
    os.chmod(corpus / "closed", 0o000)
    script = "import sys\nfrom synth.cli import app\nsys.argv = ['synth'] + sys.argv[1:]\napp()"
    try:
        res = subprocess.run([sys.executable, "-c", script, "extract", "--lang", "en", "--input", str(corpus),
                              "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "COLUMNS": "400"},
                             preexec_fn=_without_root_file_powers if os.getuid() == 0 else None)
    finally:
        os.chmod(corpus / "closed", 0o755)
    said = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in said, said[-3000:]
    assert f"{corpus / 'closed'}: cannot read this folder (Permission denied)" in said, said[-3000:]


def test_a_file_deleted_while_the_run_lists_it(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "good.txt").write_text(GOOD)
    (corpus / "gone.txt").write_text(GOOD)
    settings = ExtractSettings(lang="en", min_len=10)
    source = CorpusSource(plan_parts(expand_inputs([str(corpus)])), settings)
    source.fingerprint()  # listed and named, as the runner does first
    (corpus / "gone.txt").unlink()
    rows = pa.concat_tables([t for task in source.tasks() for t in source.read(task, 64)]).to_pylist()
    (gone,) = [r for r in rows if r["error"]]
    assert gone["error"] == "unreadable_file" and "gone.txt: cannot open (No such file or directory)" in gone["where"]
    assert [r["text"] for r in rows if not r["error"]] == [GOOD]


def test_a_file_deleted_before_it_is_planned(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "good.jsonl").write_text(json.dumps({"text": GOOD}) + "\n")
    (corpus / "gone.jsonl").write_text(json.dumps({"text": GOOD}) + "\n")
    files = expand_inputs([str(corpus)])
    (corpus / "gone.jsonl").unlink()
    source = CorpusSource(plan_parts(files, target_bytes=1), ExtractSettings(lang="en", min_len=10))
    source.fingerprint()
    rows = pa.concat_tables([t for task in source.tasks() for t in source.read(task, 64)]).to_pylist()
    assert [(r["error"], "gone.jsonl: cannot open" in (r["where"] or "")) for r in rows] == [
        ("unreadable_file", True), (None, False)]  # gone.jsonl sorts before good.jsonl


def test_an_engine_option_the_engine_does_not_take(tmp_path):
    stage = Score(engine="hf", model="smollm2", engine_options={"hf_tokn": "x"}, cache=None)
    rows = pa.table({"id": ["r0"], "lang": ["swh"], "instruction_en": ["Say hi."], "response_en": ["Hi!"]})
    with pytest.raises(SynthError) as e:
        run_stage(stage, TableSource(rows), tmp_path, progress=False)
    assert str(e.value) == ("the hf engine does not take the option hf_tokn; it takes: revision, device, dtype, "
                            "batch_size, max_input_tokens")
