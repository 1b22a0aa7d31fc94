"""No orphans: a synth process SIGKILLed alone (as an OOM killer would) leaves no process it started behind.

- `synth generate --engine vllm`, mid-generation: no vLLM engine process outlives it.
- A child SIGKILLed with its parent within milliseconds of starting (the case the watchdog's poll, twice a second,
  missed): the kernel kills the local executor's pool processes and the processes started while a vLLM engine is
  built (a fork and a spawn child, each with a child of its own, like vLLM's engine core and its workers) within
  2 s; and the watchdog, the second line, stops a child that nothing ties to its parent, started just before.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from llm_server import CPU_ENV, descendants, wait_gone

SYNTH = str(Path(sys.executable).with_name("synth"))


@pytest.mark.slow
@pytest.mark.requires("vllm", "smollm2")
def test_sigkill_of_synth_generate_leaves_no_engine_process(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Write a long story about the number {i}."})
                               + "\n" for i in range(400)))
    proc = subprocess.Popen([SYNTH, "generate", "--engine", "vllm", "--model", "smollm2", "--input", str(prompts),
                             "--out", str(tmp_path / "out.jsonl"), "--no-cache", "--max-tokens", "128",
                             "--engine-opt", "max_model_len=512", "--quiet"],
                            env={**os.environ, **CPU_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not descendants(proc.pid, match="VLLM") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        engine = descendants(proc.pid, match="VLLM")
        assert engine, f"no vLLM engine process came up (synth exited {proc.poll()})"
        time.sleep(3)  # the engine core loads; the watchdog (twice a second) has noted it
        everything = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # synth alone: its children get no signal
        proc.wait(30)
        left = wait_gone(everything, 40)
        assert left == [], f"processes outlived synth: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# -- a child started just before its parent is SIGKILLed -------------------------------------------------------

GONE_S = 2.0  # a kernel-tied child dies with its parent: this is slack for a loaded machine, not a poll
ROOT = Path(__file__).resolve().parent.parent

POOL_PARENT = """
import multiprocessing, os, sys, time
from synth.executors.local import _pool

if __name__ == "__main__":
    pool = _pool(1)
    if sys.argv[1] == "started":  # the child has run a task: tied to this process
        child = pool.submit(os.getpid).result()
    else:  # the child is still starting (importing synth), not yet tied
        pool.submit(os.getpid)
        child = multiprocessing.active_children()[0].pid
    print(child, flush=True)
    time.sleep(120)
"""

VLLM_LIKE_PARENT = """
import multiprocessing, sys, time
from synth.watchdog import children_die_with_me

def engine_core(method, queue):  # a child that starts a worker of its own, as vLLM's engine core does
    worker = multiprocessing.get_context(method).Process(target=time.sleep, args=(120,))
    worker.start()
    queue.put(worker.pid)
    time.sleep(120)

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    queue = ctx.Queue()
    with children_die_with_me():  # as VLLMEngine builds vllm.LLM
        core = ctx.Process(target=engine_core, args=(sys.argv[1], queue))
        core.start()
    print(core.pid, queue.get(timeout=60), flush=True)
    time.sleep(120)
"""

WATCHDOG_PARENT = """
import subprocess, time
from synth.watchdog import start_watchdog

start_watchdog()
child = subprocess.Popen(["sleep", "120"])  # nothing ties it: a library's own subprocess, started at once
print(child.pid, flush=True)
time.sleep(120)
"""


def _kill_parent_once_started(tmp_path: Path, script: str, *args: str) -> list[int]:
    """Run ``script`` as the parent; the moment it prints its children's pids, SIGKILL it (alone: its children
    get no signal). Returns the pids."""
    path = tmp_path / "parent.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.Popen([sys.executable, str(path), *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        children = [int(pid) for pid in line.split()]
        os.kill(proc.pid, signal.SIGKILL)
        assert children, f"the parent printed no pids (exit {proc.poll()})"
        return children
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()


def _assert_gone(children: list[int], timeout: float) -> None:
    left = wait_gone(children, timeout)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"children outlived their SIGKILLed parent by {timeout:.0f} s: {left}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("when", ["started", "starting"])
def test_local_executor_process_dies_with_the_driver(tmp_path, when):
    """A pool process dies with the driver: at once once started; while starting, as soon as it would be tied
    (its parent already gone, it kills itself), after importing synth: more slack for a loaded machine."""
    children = _kill_parent_once_started(tmp_path, POOL_PARENT, when)
    _assert_gone(children, GONE_S if when == "started" else 30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_started_while_an_engine_is_built_die_with_it(tmp_path, method):
    """vLLM's engine core and its workers, as vLLM starts them (fork by default, spawn once CUDA is up)."""
    children = _kill_parent_once_started(tmp_path, VLLM_LIKE_PARENT, method)
    assert len(children) == 2
    _assert_gone(children, GONE_S)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watchdog reads /proc")
def test_watchdog_stops_a_child_started_just_before_the_kill(tmp_path):
    """Started after the watchdog's last look (here: before its first), SIGKILLed parent: the watchdog still
    finds it (the parent's process group, orphaned) and stops it."""
    children = _kill_parent_once_started(tmp_path, WATCHDOG_PARENT)
    _assert_gone(children, 10)
