import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from toy_stages import Length, LookAhead, Pinned, Upper, toy_source, toy_table

from synth import StageOutput, run_stage
from synth.devices import DeviceError, local_groups
from synth.identity import file_digest
from synth.io import ShardError, read_shard_meta, read_sidecar
from synth.kernel import StageError, TableSource

N, PER_SHARD = 400, 50
EXPECTED_DROPS = len([i for i in range(N) if i % 7 == 0])


def test_stage_over_shards_counts_every_row(tmp_path):
    out = run_stage(Upper(), toy_source(N, PER_SHARD), tmp_path, workers=2, batch_size=16, progress=False)
    table = out.read()
    assert len(out.shards) == N // PER_SHARD
    assert table.num_rows == N - EXPECTED_DROPS
    assert table.column("upper").to_pylist()[0] == "ROW 1 GOOD TEXT"
    assert out.dir.parent.name == "01_toy" and out.dir.name == out.fingerprint

    stats = json.loads((tmp_path / "stats.json").read_text())["stages"]["01_toy"]
    assert stats["rows_in"] == N and stats["rows_out"] == N - EXPECTED_DROPS
    assert stats["dropped"] == {"contains_drop_word": EXPECTED_DROPS}
    sw = stats["by_lang"]["sw"]
    assert sw["in"] == sw["out"] + sw["dropped"]["contains_drop_word"]
    assert sum(v["in"] for v in stats["by_lang"].values()) == N

    manifest = json.loads((out.dir / "_manifest.json").read_text())
    assert manifest["rows"] == table.num_rows
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert StageOutput.current(tmp_path, "01_toy").dir == out.dir


def test_same_rows_with_one_or_many_workers(tmp_path):
    a = run_stage(Upper(), toy_source(), tmp_path / "a", workers=1, progress=False).read()
    b = run_stage(Upper(), toy_source(), tmp_path / "b", workers=2, progress=False).read()
    assert a.equals(b)


def test_fingerprint_follows_data_settings_only(tmp_path):
    base = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    # sleep is not data-relevant: same folder, nothing recomputed
    mtimes = {p: p.stat().st_mtime_ns for p in base.shards}
    again = run_stage(Upper(sleep=0.001), toy_source(), tmp_path, progress=False)
    assert again.dir == base.dir
    assert {p: p.stat().st_mtime_ns for p in again.shards} == mtimes
    # a threshold is: new folder, recomputed, different rows
    other = run_stage(Upper(drop_word="good"), toy_source(), tmp_path, progress=False)
    assert other.fingerprint != base.fingerprint
    assert other.num_rows == EXPECTED_DROPS
    assert StageOutput.current(tmp_path, "01_toy").fingerprint == other.fingerprint
    # a different input changes it too, and so does it for a downstream stage
    assert Upper().fingerprint("x") != Upper().fingerprint("y")
    assert run_stage(Length(), base.as_source(), tmp_path, progress=False).fingerprint != run_stage(
        Length(), other.as_source(), tmp_path, progress=False).fingerprint


def test_truncated_shard_is_detected_and_redone(tmp_path):
    out = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    expected = out.read()
    victim = out.shards[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=victim.name):
        out.read()
    again = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    assert again.read().equals(expected)


def test_corrupt_bytes_inside_a_shard_fail_the_checksum_and_are_redone(tmp_path):
    out = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    expected = out.read()
    victim = out.shards[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF  # footer intact, a data page damaged
    victim.write_bytes(bytes(data))
    other = out.shards[2].stat().st_mtime_ns
    again = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    assert again.read().equals(expected)
    assert out.shards[2].stat().st_mtime_ns == other  # only the damaged shard was redone


def test_unreadable_input_names_the_file(tmp_path):
    up = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    up.shards[2].write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ShardError, match=r"part-00002\.parquet"):
        run_stage(Length(), up.as_source(), tmp_path, progress=False)


def test_stage_failure_names_stage_and_input_and_keeps_finished_shards(tmp_path):
    table = toy_table()
    with pytest.raises(StageError, match=r"01_toy failed on rows 200\.\..*cannot handle"):
        run_stage(Upper(fail_on=table.column("text")[210].as_py()), TableSource(table, 50), tmp_path,
                  progress=False)
    done = sorted(p.name for p in tmp_path.glob("01_toy/*/part-*.parquet"))
    assert "part-00000.parquet" in done and "part-00004.parquet" not in done
    assert not list(tmp_path.glob("01_toy/*/.*.tmp"))
    out = run_stage(Upper(), TableSource(table, 50), tmp_path, progress=False)
    assert out.num_rows == N - EXPECTED_DROPS


def test_a_stream_that_holds_batches_back_gives_the_same_shards(tmp_path):
    """A stage whose outputs lag far behind its reads (10 batches of 16 over shards of 50 rows, as an LLM stage
    keeps later shards' requests in flight): the same rows in the same shards, with the same stats per shard."""
    plain = run_stage(Upper(), toy_source(), tmp_path / "plain", batch_size=16, progress=False)
    lagged = run_stage(LookAhead(lag=10), toy_source(), tmp_path / "lagged", batch_size=16, progress=False)
    assert lagged.fingerprint == plain.fingerprint and len(lagged.shards) == N // PER_SHARD
    for a, b in zip(plain.shards, lagged.shards, strict=True):
        assert pq.read_table(a).equals(pq.read_table(b)), b.name
        assert read_shard_meta(a)["stats"] == read_shard_meta(b)["stats"], b.name
    empty = run_stage(LookAhead(lag=3), TableSource(toy_table(0)), tmp_path / "empty", progress=False)
    assert empty.num_rows == 0 and len(empty.shards) == 1 and empty.shards[0].exists()


def test_a_failure_in_a_lagging_stream_keeps_the_committed_shards_only(tmp_path):
    """The failing batch is processed while later shards are open: those are aborted (no temp file is left),
    the error names the oldest open shard, and the shards already out are kept and reused."""
    table = toy_table()
    with pytest.raises(StageError, match=r"01_toy failed on rows 200\.\..*cannot handle"):
        run_stage(LookAhead(lag=10, fail_on=table.column("text")[210].as_py()), TableSource(table, 50), tmp_path,
                  batch_size=16, progress=False)
    done = sorted(p.name for p in tmp_path.glob("01_toy/*/part-*.parquet"))
    assert done == [f"part-{i:05d}.parquet" for i in range(4)]
    assert not list(tmp_path.glob("01_toy/*/.*.tmp"))
    kept = {p: p.stat().st_mtime_ns for p in tmp_path.glob("01_toy/*/part-*.parquet")}
    out = run_stage(LookAhead(lag=10), TableSource(table, 50), tmp_path, batch_size=16, progress=False)
    assert out.num_rows == N - EXPECTED_DROPS
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())


def test_engine_copies_each_get_their_own_gpus(tmp_path, fake_gpus):
    """A stage asking for engine copies on GPUs "3,5" runs in two processes, one seeing GPU 3 and one GPU 5
    (``CUDA_VISIBLE_DEVICES``), with the rows of a single process; the six GPUs are NVML's stand-in
    (tests/fake_nvml.py), the rest is the code that runs on a GPU machine."""
    fake_gpus(",".join(["NVIDIA H100:9.0"] * 6))
    plain = run_stage(Upper(), toy_source(), tmp_path / "plain", batch_size=16, progress=False).read()
    out = run_stage(Pinned(gpus="3,5"), toy_source(), tmp_path / "copies", batch_size=16, progress=False).read()
    assert out.drop_columns(["made_by"]).equals(plain)
    made_by = {tuple(m.split(":")) for m in out.column("made_by").to_pylist()}
    assert len(made_by) == 2 and sorted(gpu for _, gpu in made_by) == ["3", "5"]
    assert len({pid for pid, _ in made_by}) == 2 and str(os.getpid()) not in {pid for pid, _ in made_by}
    with pytest.raises(DeviceError, match="3 replicas of 1 GPU"):
        local_groups(Pinned(replicas=3, gpus="3,5").placement())


def test_llm_stage_copies_follow_what_the_engine_declares(fake_gpus, monkeypatch):
    """One copy per GPU (per tensor-parallel group for vLLM); a server engine needs none of its own; GPUs named
    must be among those this process may use."""
    from synth.stages.instruct import Instruct

    fake_gpus(",".join(["NVIDIA H100:9.0"] * 4))
    def groups(**kw):
        return local_groups(Instruct(**kw).placement())

    assert groups(engine="vllm", gpus="0,1,2,3") == [["0"], ["1"], ["2"], ["3"]]
    assert groups(engine="vllm", gpus="0,1,2,3", engine_options={"tensor_parallel_size": 2}) == [["0", "1"], ["2", "3"]]
    assert groups(engine="vllm", gpus="0,1,2,3", engine_options={"tensor_parallel_size": 2,
                                                                "pipeline_parallel_size": 2}) == [["0", "1", "2", "3"]]
    assert groups(engine="hf", gpus="0,1", replicas=1) == [["0"]]
    assert groups(engine="hf", gpus="0,1", engine_options={"device": "cpu"}) == [[]]  # pinned to the CPU
    assert groups(engine="openai", gpus="0,1") == [[]] and groups(engine="openai", replicas=3) == [[], [], []]
    assert groups(engine="hf") == [["0"], ["1"], ["2"], ["3"]]
    with pytest.raises(DeviceError, match="--gpus 3,7: 7 is not among the GPUs this process may use"):
        groups(engine="hf", gpus="3,7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # an allocation (Slurm, a container) is not escaped
    with pytest.raises(DeviceError, match="0,1 are not among .*2,3"):
        groups(engine="hf", gpus="0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert groups(engine="hf") == [[]]  # no GPU: one copy, in this process


def test_all_rows_dropped_still_writes_valid_shards(tmp_path):
    out = run_stage(Upper(drop_word="row"), toy_source(), tmp_path, progress=False)
    assert out.num_rows == 0
    assert all(pq.read_metadata(p).num_rows == 0 for p in out.shards)
    assert json.loads((tmp_path / "stats.json").read_text())["stages"]["01_toy"]["dropped"] == {
        "contains_drop_word": N}


def test_chained_stages_keep_ids_aligned(tmp_path):
    up = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    down = run_stage(Length(), up.as_source(), tmp_path, workers=2, progress=False)
    a, b = up.read(), down.read()
    assert a.column("id").equals(b.column("id"))
    assert b.column("n").to_pylist() == [len(t) for t in a.column("upper").to_pylist()]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from toy_stages import Length, Upper, toy_source
    from synth import run_stage
    run_stage(Upper(sleep=float(sys.argv[2])), toy_source(1600, 50), sys.argv[1], workers=2, batch_size=10,
              progress=False)
""")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed), "0.05"], env=env,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("01_toy/*/part-*.parquet"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-shard
    proc.wait()
    finished = list(killed.glob("01_toy/*/part-*.parquet"))
    assert 5 <= len(finished) < 32, "the kill must land mid-run"
    assert not (killed / "stats.json").exists()
    # Every shard that made it has the checksum recorded before its rename, for the resume to verify.
    assert all(read_sidecar(p)["sha256"] == file_digest(p) for p in finished)

    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(killed), "0"], env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(clean), "0"], env=env, check=True)

    resumed, uninterrupted = StageOutput.current(killed, "01_toy"), StageOutput.current(clean, "01_toy")
    assert resumed.fingerprint == uninterrupted.fingerprint
    a, b = resumed.read(), uninterrupted.read()
    assert a.num_rows == b.num_rows == 1600 - len([i for i in range(1600) if i % 7 == 0])
    assert a.equals(b)
    assert len(set(a.column("id").to_pylist())) == a.num_rows
    sa, sb = (json.loads((d / "stats.json").read_text())["stages"]["01_toy"] for d in (killed, clean))
    for s in (sa, sb):
        s.pop("seconds")
    assert sa == sb
    assert not list(killed.glob("01_toy/*/.*.tmp"))


def test_tables_with_null_columns_are_cast_to_the_first_schema(tmp_path):
    t = pa.table({"id": ["a", "b"], "lang": ["sw", "sw"], "text": ["x", "y"]})
    out = run_stage(Upper(), TableSource(t, 1), tmp_path, batch_size=1, progress=False)
    assert out.read().column("upper").to_pylist() == ["X", "Y"]


def test_lineage_check_names_a_stale_downstream_output(tmp_path):
    from toy_stages import Length, Upper, toy_source

    from synth.kernel import StageError, check_lineage

    first = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    run_stage(Length(), first.as_source(), tmp_path, progress=False)
    check_lineage(tmp_path, ["02_length", "01_toy"])  # made from the current one: fine
    run_stage(Upper(drop_word="other"), toy_source(), tmp_path, progress=False)  # upstream re-run, new settings
    with pytest.raises(StageError, match="02_length was made from another 01_toy"):
        check_lineage(tmp_path, ["02_length", "01_toy"])


def test_progress_file_follows_a_running_stage_and_synth_status_shows_it(tmp_path, monkeypatch):
    """While a stage runs, RUNDIR/progress.json is rewritten (each shard, and a heartbeat between): shards, rows/s
    and an ETA from the pace so far, which `synth status` shows and which move as shards finish; at the end the
    stage is done with no ETA. A run whose process is gone is named so, not shown as running."""
    import threading

    from typer.testing import CliRunner

    from synth import progress
    from synth.cli import app

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.2)
    rundir = tmp_path / "run"
    worker = threading.Thread(target=run_stage, args=(Upper(sleep=0.6), toy_source(400, 50), rundir),
                              kwargs={"progress": False})
    worker.start()
    seen = []
    deadline = time.time() + 120
    while worker.is_alive() and time.time() < deadline:
        try:
            doc = progress.read_status(rundir)
        except (FileNotFoundError, ValueError):
            doc = None
        if doc and doc["stages"]["01_toy"]["state"] == "done":  # the stage's last write, read before the join
            break
        if doc and doc["stages"]["01_toy"]["shards_done"] not in {s["shards_done"] for s in seen}:
            seen.append(doc["stages"]["01_toy"])
            if len(seen) == 3:
                shown = CliRunner().invoke(app, ["status", str(rundir)])
        time.sleep(0.05)
    worker.join()
    assert len(seen) >= 3 and all(s["state"] == "running" for s in seen), seen
    assert seen[-1]["shards_total"] == 8 and seen[-1]["rows"] > seen[1]["rows"] > 0
    etas = [s["eta_s"] for s in seen if s["eta_s"] is not None and s["shards_done"] < s["shards_total"]]
    assert len(set(etas)) >= 2 and all(e > 0 for e in etas)  # an ETA that updates while shards remain
    assert shown.exit_code == 0 and "running" in shown.output and "01_toy" in shown.output, shown.output
    final = progress.read_status(rundir)
    assert final["state"] == "done" and final["stages"]["01_toy"]["shards_done"] == 8
    assert final["stages"]["01_toy"]["eta_s"] is None and final["stages"]["01_toy"]["rows"] == 400

    doc = json.loads((rundir / "progress.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    doc.update(state="running", pid=int(dead.stdout), updated=time.time())  # a process that has ended
    (rundir / "progress.json").write_text(json.dumps(doc))
    gone = CliRunner().invoke(app, ["status", str(rundir)])
    assert gone.exit_code == 0 and "gone" in gone.output and "resume" in gone.output, gone.output
    missing = CliRunner().invoke(app, ["status", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


@dataclass
class Costly(Upper):
    """``Upper`` that counts tokens as an LLM stage does: 100 prompt and 20 completion tokens a row."""

    def process(self, batch: pa.Table, stats) -> pa.Table:
        stats.count("prompt_tokens", 100 * batch.num_rows)
        stats.count("completion_tokens", 20 * batch.num_rows)
        return super().process(batch, stats)


def test_a_token_budget_stops_cleanly_and_a_larger_one_resumes_to_the_same_rows(tmp_path):
    """8 shards of 50 rows at 6,000 tokens a shard. Under a cap of 20,000 the stage commits 3 shards (18,000: a
    fourth would pass it) and stops with what was spent and how to go on; the same cap again starts nothing; a
    larger cap resumes the other 5 and ends with the rows of an uncapped run, no shard done twice."""
    from synth.budget import BudgetExceeded, spending
    from synth.progress import read_status

    reference = run_stage(Costly(), toy_source(400, 50), tmp_path / "uncapped", progress=False)
    rundir = tmp_path / "capped"
    with spending(20_000), pytest.raises(BudgetExceeded, match=r"18,000 tokens spent of --max-budget 20,000 tokens "
                                                                 r"\(the next shard takes about 6,000 tokens.*3 of 8 "
                                                                 r"shards"):
        run_stage(Costly(), toy_source(400, 50), rundir, progress=False)
    out = next((rundir / "01_toy").iterdir())
    committed = sorted(p.name for p in out.glob("part-*.parquet"))
    assert committed == [f"part-{i:05d}.parquet" for i in range(3)] and not list(out.glob(".*.tmp"))
    assert read_status(rundir)["stages"]["01_toy"]["state"] == "stopped"
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    with spending(20_000), pytest.raises(BudgetExceeded, match="3 of 8 shards"):
        run_stage(Costly(), toy_source(400, 50), rundir, progress=False)
    with spending(100_000):
        resumed = run_stage(Costly(), toy_source(400, 50), rundir, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # the 3 committed shards were kept
    assert resumed.read().equals(reference.read()) and resumed.fingerprint == reference.fingerprint
    assert resumed.stats()["counters"]["prompt_tokens"] == 40_000


@pytest.mark.parametrize("cap, plan, spent", [
    # Costly's shard: 5,000 prompt and 1,000 completion tokens. At 1 and 2 per million, 0.007 USD; through a
    # profile of 1,000 prefill and 100 decode tokens/s, 15 GPU-seconds.
    ("$0.025", {"prices": {"input_per_million": 1.0, "output_per_million": 2.0}}, "0.021 USD spent of --max-budget "
     "0.025 USD"),
    ("0.014gpu-h", {"prefill_tps": 1000, "decode_tps": 100}, "0.0125 GPU-hours spent of --max-budget 0.014 GPU-hours"),
    ("0.9EUR", {"prefill_tps": 1000, "decode_tps": 100, "prices": {"gpu_hour": 72.0, "currency": "EUR"}},
     "0.9 EUR spent of --max-budget 0.9 EUR"),
])
def test_a_budget_in_money_or_gpu_hours_stops_where_plan_reckons_it(tmp_path, cap, plan, spent):
    """The cap in money or GPU-hours is the tokens as `synth plan` prices them (run.toml's [plan]): the same
    three shards of eight commit as under the token cap, and a larger cap resumes to the uncapped rows."""
    from synth.budget import BudgetExceeded, spending
    from synth.orchestrate import RunSettings

    budget = RunSettings.from_dict({"max_budget": cap, "plan": plan}).budget()
    rundir = tmp_path / "capped"
    with spending(budget), pytest.raises(BudgetExceeded, match=re.escape(spent)) as stop:
        run_stage(Costly(), toy_source(400, 50), rundir, progress=False)
    assert "3 of 8 shards" in str(stop.value)
    with spending(RunSettings.from_dict({"max_budget": "1M", "plan": plan}).budget()):
        resumed = run_stage(Costly(), toy_source(400, 50), rundir, progress=False)
    assert resumed.read().equals(run_stage(Costly(), toy_source(400, 50), tmp_path / "uncapped", progress=False).read())


@pytest.mark.parametrize("cap, plan, message", [
    ("$40", {}, r"needs prices: \[plan.prices\] gpu_hour"),
    ("40EUR", {"prices": {"gpu_hour": 2.0}}, "--max-budget is in EUR, but .plan.prices. are in USD"),
    ("forty", {}, r"give tokens \(2M\), GPU-hours \(3gpu-h\) or money"),
    ("3gpu-h", {"gpu": "TPU"}, "TPU"),
])
def test_a_budget_that_cannot_be_reckoned_fails_when_the_run_is_set_up(cap, plan, message):
    from synth.orchestrate import RunSettings

    with pytest.raises(ValueError, match=message):
        RunSettings.from_dict({"max_budget": cap, "plan": plan})
