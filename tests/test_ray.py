"""The ray executor on a real Ray cluster on 127.0.0.1 (a head and a second node with its own resource, started
with ``ray start`` and stopped by the fixture, tests/ray_cluster.py): the same rows as the local executor, a Ray
worker or engine actor SIGKILLed mid-stage, the driver SIGKILLed mid-run, a node that cannot see the run
directory. Under CI=true a missing Ray fails these tests (tests/required.py).

The request cache's concurrent writers are tested without Ray: several processes on one sqlite file is what the
engine actors of one host are.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from offline_judge import NO_QUALITY_BAR
from ray_cluster import driving, env
from ray_stages import Slow
from required import require
from toy_stages import Upper, toy_source

import synth
from synth.errors import SynthError
from synth.kernel import StageOutput
from synth.llm.cache import RequestCache
from synth.llm.request import Result
from synth.runner import run_stage

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus" / "noise" / "udhr_english.txt"
LLM_STAGES = ("translate", "instruct", "score", "backtranslate")


@pytest.fixture(scope="module")
def cluster():
    require("ray")
    with driving() as c:
        yield c


def _ray_executor(cluster, **options):
    from synth.executors.ray import RayExecutor

    return RayExecutor(address=cluster.address, **options)


def _rows(out: StageOutput):
    return out.read().sort_by("id").to_pylist()


@pytest.mark.slow
def test_toy_stage_on_ray_gives_the_local_rows_fingerprint_and_stats(cluster, tmp_path, monkeypatch):
    """Also with a relative run directory: the nodes were started elsewhere, and the tasks work in the driver's
    directory."""
    local = run_stage(Upper(), toy_source(), tmp_path / "local", progress=False)
    ex = _ray_executor(cluster)
    monkeypatch.chdir(tmp_path)
    try:
        remote = run_stage(Upper(), toy_source(), "ray", progress=False, executor=ex)
    finally:
        ex.close()
    assert remote.fingerprint == local.fingerprint and len(remote.shards) == 8
    assert _rows(remote) == _rows(local)
    assert remote.stats()["dropped"] == local.stats()["dropped"] and remote.stats()["counters"]["chars"] > 0
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())["stages"]["01_toy"]
    assert stats["rows_out"] == remote.num_rows and not list(remote.dir.glob(".*.tmp"))


@pytest.mark.slow
def test_a_failing_shard_on_ray_stops_the_stage_with_the_stage_and_shard_named(cluster, tmp_path):
    ex = _ray_executor(cluster)
    try:
        with pytest.raises(SynthError, match=r"stage 01_toy failed on rows 50\.\.: ValueError: cannot handle"):
            run_stage(Upper(fail_on="row 60 good text"), toy_source(), tmp_path / "run", progress=False, executor=ex)
    finally:
        ex.close()
    assert not list((tmp_path / "run").glob("01_toy/*/part-00001.parquet"))  # the failed shard was not written


def _kill_first_worker(pid_dir: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first process that reports a shard in progress (a Ray worker, or an engine actor)."""
    while not stop.is_set():
        pids = sorted(int(p.name) for p in pid_dir.iterdir())
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("on", ["task", "actor"])
def test_sigkilled_worker_mid_stage_is_retried_without_losing_or_repeating_a_row(cluster, tmp_path, on):
    """A worker process killed in the middle of a shard: its task (or, on an engine actor, its shard) runs again
    elsewhere and the stage's rows equal the local executor's: none lost, none twice."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    stage = Slow(pid_dir=str(pid_dir), sleep=1.0, on_actor=on == "actor")
    ex = _ray_executor(cluster, actors=2)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_worker, args=(pid_dir, killed, stop))
    killer.start()
    try:
        out = run_stage(stage, toy_source(120, 20), tmp_path / "ray", progress=False, executor=ex)
    finally:
        stop.set()
        killer.join()
        ex.close()
    assert killed, "no worker was killed"
    assert len(list(pid_dir.iterdir())) > 1  # the killed shard ran again in another process
    local = run_stage(Slow(), toy_source(120, 20), tmp_path / "local", progress=False)
    rows = _rows(out)
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows})  # no id twice
    assert rows == _rows(local) and len(out.shards) == 6
    assert sorted(p.name for p in out.dir.iterdir() if p.name.startswith(".")) == []  # no temp file left


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_stages import Slow
from toy_stages import toy_source
from synth.executors.ray import RayExecutor
from synth.runner import run_stage

out = run_stage(Slow(sleep={sleep}), toy_source(120, 20), {rundir!r}, progress=False,
                executor=RayExecutor(address={address!r}))
print(out.num_rows)
"""


@pytest.mark.slow
def test_sigkilled_driver_then_the_same_command_resumes_and_matches(cluster, tmp_path):
    """The driver killed once a shard is written: the same command again keeps that shard, does the rest, and
    the rows equal the local executor's."""
    rundir = tmp_path / "ray"
    script = tmp_path / "driver.py"
    tests = str(Path(__file__).resolve().parent)
    script.write_text(DRIVER.format(tests=tests, sleep=1.0, rundir=str(rundir), address=cluster.address))
    proc = subprocess.Popen([sys.executable, str(script)], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    first = None
    while first is None:
        assert proc.poll() is None, f"the driver ended before any shard was written:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no shard in 300s"
        first = next(iter(sorted(rundir.glob("01_slow/*/part-*.parquet"))), None)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(rundir.glob("01_slow/*/_manifest.json")), "the stage had finished: the kill came too late"
    mtime = first.stat().st_mtime_ns
    again = subprocess.run([sys.executable, str(script)], env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert first.stat().st_mtime_ns == mtime, "a finished shard was redone"
    out = StageOutput.current(rundir, "01_slow")
    local = run_stage(Slow(), toy_source(120, 20), tmp_path / "local", progress=False)
    assert _rows(out) == _rows(local)


@pytest.mark.slow
def test_a_node_that_cannot_see_the_run_directory_stops_the_run_with_its_name(cluster, tmp_path):
    """What this proves: the real check (a token file written by the driver, read back by a task pinned to each
    node) runs on both nodes and turns a node that cannot read the file into an error naming the node and the
    path, in seconds. The file is taken away right after the driver writes it (``after_token``), which is what a
    node whose mount lacks the run directory sees; one machine cannot give two nodes different mounts. A node
    that does not answer at all is named likewise after the timeout (here 0 s: no node can answer in time)."""
    from synth.executors.ray import check_shared_storage

    check = partial(check_shared_storage, after_token=lambda path: path.unlink())
    ex = _ray_executor(cluster, storage_check=check)
    t0 = time.monotonic()
    try:
        with pytest.raises(SynthError) as err:
            run_stage(Upper(), toy_source(), tmp_path / "run", progress=False, executor=ex)
    finally:
        ex.close()
    msg = str(err.value)
    assert time.monotonic() - t0 < 120
    assert str((tmp_path / "run").resolve()) in msg and "FileNotFoundError" in msg
    assert len(set(re.findall(r"\((\w{12})\): FileNotFoundError", msg))) == 2  # both nodes, by id
    assert not list((tmp_path / "run").glob("01_toy/*/part-*"))  # nothing ran

    ex = _ray_executor(cluster, check_timeout=0)
    try:
        with pytest.raises(SynthError, match="no answer in 0s"):
            run_stage(Upper(), toy_source(), tmp_path / "run2", progress=False, executor=ex)
    finally:
        ex.close()


def _english_corpus(folder: Path) -> Path:
    paras = [p for p in CORPUS.read_text().split("\n\n") if len(p) > 150][:6]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(2):
        (folder / f"part{k}.txt").write_text("\n\n".join(paras[k::2]))
    return folder


@pytest.mark.slow
@pytest.mark.requires("smollm2", "minilm")
def test_english_run_on_ray_gives_the_local_final_rows(cluster, tmp_path):
    """``synth.run`` with ``executor="ray"``: extract as Ray tasks, the LLM stages (hf engine, SmolLM2) and the
    embeddings on engine actors, each run with a request cache of its own so both really call the model; the
    final ids, instructions and responses equal the local executor's."""
    corpus = _english_corpus(tmp_path / "corpus")

    def run(name: str, **executor):
        cache = str(tmp_path / f"{name}.sqlite")
        return synth.run(tmp_path / name, lang="en", inputs=[str(corpus)], fragments=4, progress=False,
                         extract={"txt_mode": "paragraphs"}, select=NO_QUALITY_BAR,
                         **{s: {"cache": cache} for s in LLM_STAGES}, **executor)

    remote = run("ray", executor="ray", ray_address=cluster.address)
    local = run("local")
    assert remote.rows == local.rows > 0
    cols = ["id", "instruction", "response"]
    got, want = (pq.read_table(r.final / "data", columns=cols).sort_by("id") for r in (remote, local))
    assert got.equals(want)
    for key, out in local.outputs.items():
        assert remote.outputs[key].dir.name == out.dir.name, key  # same fingerprints, stage by stage
    stats = json.loads((remote.rundir / "stats.json").read_text())["stages"]
    assert stats["03_instruct"]["counters"]["llm_requests"] > 0  # the actor really generated
    assert "executor = \"ray\"" in (remote.rundir / "run.toml").read_text()


def _writer(path: str, worker: int, n: int) -> None:
    cache = RequestCache(path)
    for i in range(n):
        cache.put_many([(f"{worker}:{i}", Result(id=str(i), text=f"answer {worker} {i}"))])
        assert cache.get_many([f"{worker}:{i}"])  # reads between other processes' writes
    cache.close()


def test_request_cache_takes_concurrent_writers_from_several_processes(tmp_path):
    """What engine actors on one host do: several processes writing one sqlite cache (WAL) at once; every
    answer is there afterwards, none lost to a locked database."""
    path = str(tmp_path / "requests.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = RequestCache(path)
    assert len(cache) == 600
    assert cache.get_many(["3:149"])["3:149"]["text"] == "answer 3 149"


def test_executor_is_chosen_by_name_and_refuses_unknown_ones():
    from synth.executors import ExecutorError, make_executor

    assert make_executor("local").name == "local"
    assert make_executor("ray", "127.0.0.1:1").name == "ray"  # nothing starts before the first stage
    with pytest.raises(ExecutorError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(ExecutorError, match="needs --executor ray"):
        make_executor("local", "auto")


def test_io_temp_names_are_unique_per_attempt(tmp_path):
    from synth.io import ShardWriter

    a, b = ShardWriter(tmp_path / "part-00000.parquet"), ShardWriter(tmp_path / "part-00000.parquet")
    assert a.tmp != b.tmp  # two attempts in one process (or same pid on two hosts) never share a temp file


def test_cli_stage_commands_take_the_executor(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    res = CliRunner().invoke(app, ["extract", "--out", str(tmp_path / "r"), "--lang", "en", "-i", str(CORPUS),
                                   "--executor", "dask", "--quiet"])
    assert res.exit_code == 2 and "unknown executor 'dask'" in res.output


def _attempt(rundir: str, start: float) -> None:
    """One attempt at shard 0 of the Slow stage over the toy source, started at ``start`` (a duplicated task)."""
    from synth.kernel import ShardJob, run_task

    stage, source = Slow(sleep=0.2), toy_source(120, 20)
    fp = stage.fingerprint(source.fingerprint())
    time.sleep(max(0.0, start - time.time()))
    run_task(stage, ShardJob(source, Path(rundir) / stage.key / fp, fp, 1024), source.tasks()[0])


def test_duplicated_attempts_of_one_shard_leave_one_whole_shard(tmp_path):
    """Two attempts of the same shard committing at the same moment (what a retried task whose first attempt
    was not dead after all, or a task run twice, does): each writes its own temp file and renames it, so one whole
    shard is there, no temp file, and the stage finishes with every row once. (Their sidecars may race: the
    sha256 recorded can be the other attempt's; then the next run finds the mismatch and redoes that one shard,
    whose rows are the same.)"""
    ctx = mp.get_context("spawn")
    start = time.time() + 4  # both processes are up and waiting by then
    procs = [ctx.Process(target=_attempt, args=(str(tmp_path / "run"), start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    (out_dir,) = (tmp_path / "run" / "01_slow").iterdir()
    assert sorted(p.name for p in out_dir.iterdir() if p.suffix == ".parquet" or p.name.endswith(".tmp")) == [
        "part-00000.parquet"]
    out = run_stage(Slow(), toy_source(120, 20), tmp_path / "run", progress=False)
    local = run_stage(Slow(), toy_source(120, 20), tmp_path / "local", progress=False)
    assert _rows(out) == _rows(local)
