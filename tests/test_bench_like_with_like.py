"""The rules that make bench/stage_llm.py, bench/ray.py and bench/kill_trials.py compare like with like, without a
model: stage_llm refuses a ratio unless both sides did the same work in every run, and alternates their order;
ray warms every side up before rounds in rotated order; kill_trials' generated corpus and its load signal (the
first answer in a trial's request cache). The benchmarks themselves are run by hand (bench/README.md)."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stage_llm():
    path = list(sys.path)
    try:
        yield load("stage_llm")
    finally:
        sys.path[:] = path


def test_stage_llm_alternates_and_refuses_a_ratio_for_unequal_work(stage_llm):
    order = []

    def side(name, tokens):
        def fn():
            order.append(name)
            return 4, tokens
        return fn

    same = stage_llm.compare([("raw", side("raw", 32)), ("ours", side("ours", 32))], 3)
    assert order == ["raw", "ours", "ours", "raw", "raw", "ours"]  # alternating: load drift hits both sides
    assert [len(r["runs"]) for r in same] == [3, 3]
    assert all(r["cpu_seconds"] >= 0 and r["own_cpu_seconds"] >= 0 for r in same)
    assert stage_llm.same_work(same) is None

    counts = iter([32, 31])
    unequal = stage_llm.compare([("raw", lambda: (4, 32)), ("ours", lambda: (4, next(counts)))], 2)
    why = stage_llm.same_work(unequal)
    assert why and "31 tok" in why
    assert "NO RATIO" in stage_llm.table("t", unequal, why) and "%" not in stage_llm.table("t", unequal, why)


def test_ray_bench_warms_up_then_rotates():
    ray_bench = load("ray")
    seen = []
    sides = [lambda warm, k=k: seen.append((k, warm)) for k in "abc"]
    ray_bench.rounds(sides, 3)
    assert seen[:3] == [("a", True), ("b", True), ("c", True)]
    timed = [k for k, warm in seen[3:] if not warm]
    assert timed == list("abc" "bca" "cab")  # each side first, second and last once


def test_kill_trials_corpus_and_load_signal(tmp_path):
    sys.path.insert(0, str(REPO))
    try:
        from bench.kill_trials import cached_answers, make_input
    finally:
        sys.path.remove(str(REPO))
    folder = make_input(tmp_path / "in", 50)
    lines = (folder / "docs.jsonl").read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) == 50

    cache = tmp_path / "requests.sqlite"
    assert cached_answers(cache) == 0  # not there yet: the run has not loaded its model
    db = sqlite3.connect(cache)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
    db.commit()
    assert cached_answers(cache) == 0
    db.execute("INSERT INTO results VALUES ('k', '{}')")
    db.commit()
    assert cached_answers(cache) == 1  # the first answer: the engine is up
    db.close()


def test_kill_trials_tell_float_noise_from_a_changed_row():
    """A resumed row whose judge's expected score differs in its fifth digit is the same row but for float noise;
    another text, score or a float past the noise is a changed row; a lost or extra row is counted as such."""
    import json

    sys.path.insert(0, str(REPO))
    try:
        from bench.kill_trials import compare
    finally:
        sys.path.remove(str(REPO))

    def row(i, text="a", expected=2.0512077808380127, quality=2):
        return json.dumps({"id": i, "instruction": text, "quality": quality, "quality_expected": expected})

    reference = [row("1"), row("2"), row("3"), row("4")]
    resumed = [row("1"), row("2", expected=2.0512173175811768), row("3", text="b"), row("5", expected=2.1)]
    got = compare(reference, resumed)
    assert got == {"lost": 1, "duplicated": 0, "changed": 2, "changed_beyond_float_noise": 1, "extra": 1}
    assert compare([row("1")], [row("1", expected=2.06)])["changed_beyond_float_noise"] == 1
    assert compare([row("1")], [row("1", quality=3)])["changed_beyond_float_noise"] == 1
