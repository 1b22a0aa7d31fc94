"""No orphans: `synth generate --engine vllm` SIGKILLed alone (as an OOM killer would), mid-generation, leaves no
vLLM engine process behind: synth's watchdog (synth.watchdog) stops what the dead process started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
