"""The run-directory lock and verified resume: a second process on a run stops at once naming the holder, a lock
left by a killed process is taken over, and a shard damaged before its stage finished is found and redone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from toy_stages import Upper, toy_source

from synth import StageOutput, run_stage
from synth.io import read_sidecar, sidecar
from synth.kernel import CURRENT, MANIFEST
from synth.lock import LOCK_FILE, RunLocked, acquire, release, run_lock

HOLDER = textwrap.dedent("""
    import os, sys, time
    from synth.lock import acquire
    acquire(sys.argv[1])
    if len(sys.argv) > 2:  # a child that outlives this process, as vLLM's engine core would
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
    print("locked", flush=True)
    time.sleep(120)
""")


def hold(rundir, *extra: str) -> subprocess.Popen:
    """Another process that takes the run's lock and keeps it; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(rundir), *extra], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_stops_at_once_naming_the_holder(tmp_path):
    proc = hold(tmp_path)
    try:
        with pytest.raises(RunLocked) as e:
            run_stage(Upper(), toy_source(), tmp_path, progress=False)
        msg = str(e.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg and "started 20" in msg
        assert not (tmp_path / "01_toy").exists()  # stopped before touching anything
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capfd):
    proc = hold(tmp_path, "fork")
    os.kill(proc.pid, signal.SIGKILL)  # the holder alone: its forked child lives on
    proc.wait()
    try:
        out = run_stage(Upper(), toy_source(), tmp_path, progress=False)
        assert out.num_rows > 0
        said = capfd.readouterr().err
        assert f"taking over the lock left by pid {proc.pid}" in said and "no longer running" in said
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orphaned child


TRY = textwrap.dedent("""
    import sys
    from synth.lock import RunLocked, acquire
    try:
        acquire(sys.argv[1])
    except RunLocked as e:
        print("refused:", e)
    else:
        print("locked")
""")


def another_process_gets(rundir) -> str:
    """What another process gets when it tries to take the run's lock now: "locked", or "refused: <why>"."""
    return subprocess.run([sys.executable, "-c", TRY, str(rundir)], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_the_lock_is_reentrant_and_released(tmp_path):
    """Taken twice by this process, the lock is held until the second release: the inner release (the runner's,
    at the end of its stage) does not drop the outer hold, and the last release lets another process take it."""
    mine = f"refused: {tmp_path} is in use by another synth process: pid {os.getpid()} on {socket.gethostname()}"
    acquire(tmp_path)
    with run_lock(tmp_path):
        out = run_stage(Upper(), toy_source(), tmp_path, progress=False)  # the runner takes it again inside
        assert out.num_rows > 0
        assert another_process_gets(tmp_path).startswith(mine)  # the stage's own release kept it
    assert another_process_gets(tmp_path).startswith(mine)  # one hold left
    release(tmp_path)
    assert another_process_gets(tmp_path) == "locked"  # fully released
    proc = hold(tmp_path)  # and held by another process, this one is refused
    try:
        with pytest.raises(RunLocked, match=f"pid {proc.pid} "):
            acquire(tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _unfinish(out: StageOutput) -> None:
    """What a crash before the end of the stage leaves: shards (and their sidecars), no manifest, no CURRENT."""
    (out.dir / MANIFEST).unlink()
    (out.dir.parent / CURRENT).unlink()


def test_a_shard_damaged_mid_stage_is_found_by_its_checksum_and_redone(tmp_path, capfd):
    out = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    expected = out.read()
    shards = out.shards
    assert all(read_sidecar(p) == {"sha256": s["sha256"], "rows": s["rows"]}
               for p, s in zip(shards, out.manifest["shards"], strict=True))
    _unfinish(out)
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a data page: the footer (rows, metadata) still reads fine
    victim.write_bytes(bytes(data))
    sidecar(shards[4]).unlink()  # a shard whose record is lost is not trusted either
    untouched = {p: p.stat().st_mtime_ns for p in shards if p not in (victim, shards[4])}
    capfd.readouterr()
    again = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    said = capfd.readouterr().err
    assert again.read().equals(expected)
    assert f"redoing {victim}: sha256 differs" in said and f"redoing {shards[4]}: no sha256 recorded" in said
    assert said.count("redoing") == 2
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # only those two were redone


def test_a_shard_whose_rows_differ_from_the_record_is_redone(tmp_path, capfd):
    out = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    expected = out.read()
    _unfinish(out)
    record = read_sidecar(out.shards[0])
    sidecar(out.shards[0]).write_text(json.dumps({**record, "rows": record["rows"] + 1}))
    again = run_stage(Upper(), toy_source(), tmp_path, progress=False)
    assert again.read().equals(expected)
    assert f"rows, {record['rows'] + 1} recorded" in capfd.readouterr().err
