"""Resume with vLLM keeps the weaker promise the README makes ("Resume with vLLM"): the instruct stage on the vllm
engine, SIGKILLed while answers are coming in and run again, loses no row, duplicates none, counts every drop,
keeps the shards it had committed, and asks the engine only for what the request cache did not hold: no answer
that was paid for is asked again. (Identical rows are not promised: vLLM's greedy output may change with the
batch; `bench/kill_trials.py --engine vllm` measures how often it does.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from llm_server import CPU_ENV

from synth.io import read_shard_meta
from synth.kernel import StageOutput

N, PER_SHARD = 24, 8
CHILD = textwrap.dedent("""
    import sys
    import pyarrow as pa
    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.stages.instruct import Instruct

    if __name__ == "__main__":
        rundir, cache = sys.argv[1], sys.argv[2]
        topics = ["rivers", "bread", "bees", "tides", "glass", "maps", "salt", "wind"]
        table = pa.table({
            "id": [f"r{i:02d}" for i in range(24)], "lang": ["eng"] * 24,
            "response_en": [f"A short note on {topics[i % 8]}, part {i + 1}: people have studied {topics[i % 8]} "
                            f"for a long time, and there is always more to learn about them." for i in range(24)]})
        stage = Instruct(engine="vllm", model="smollm2", cache=cache, engine_options={"max_model_len": 1024})
        run_stage(stage, TableSource(table, 8), rundir, batch_size=4, progress=False)
""")


def _cached(path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


@pytest.mark.slow
@pytest.mark.requires("vllm", "smollm2")
def test_killed_vllm_stage_resumes_without_losing_or_paying_twice(tmp_path):
    script, rundir, cache = tmp_path / "child.py", tmp_path / "run", tmp_path / "requests.sqlite"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(rundir), str(cache)]
    env = {**os.environ, **CPU_ENV}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while _cached(cache) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # synth and the vLLM engine core it started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    paid = _cached(cache)
    assert not list(rundir.glob("03_instruct/*/_manifest.json")), "the stage had finished: the kill came too late"
    assert 3 <= paid < N, f"{paid} answers cached at the kill"
    kept = {p: p.stat().st_mtime_ns for p in rundir.glob("03_instruct/*/part-*.parquet")}

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = StageOutput.current(rundir, "03_instruct")
    stats = out.stats()
    ids = out.read(columns=["id"]).column("id").to_pylist()
    # no row lost or duplicated, every drop counted
    assert stats["rows_in"] == N == stats["rows_out"] + sum(stats["dropped"].values()), stats
    assert len(ids) == len(set(ids)) == stats["rows_out"] and set(ids) <= {f"r{i:02d}" for i in range(N)}
    # shards committed before the kill were kept as they were
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    # the rerun asked the engine only for what the cache lacked: each request it sent is a new cache entry
    redone = [read_shard_meta(p)["stats"] for p in out.shards if p not in kept]
    sent = sum(m["counters"].get("llm_requests", 0) for m in redone)
    hits = sum(m["counters"].get("llm_cache_hits", 0) for m in redone)
    assert sent + hits == sum(sum(m["rows_in"].values()) for m in redone)
    assert sent == _cached(cache) - paid, (sent, hits, paid, _cached(cache))
    assert hits >= paid - PER_SHARD * len(kept)  # the answers of the rows still open were served from the cache
