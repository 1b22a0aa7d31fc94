"""bench/trainers.py at its smallest: the TRL row with synth's own venv (no install), one LoRA step on the example
export, read back from the trainer's own log as the table reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_trainers_bench_trains_the_export_with_trl_and_reads_its_first_loss(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "trainers.py"), "--trainers", "trl", "--reuse", "trl",
                          "--steps", "1", "--logs", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    [row] = json.loads(out.stdout)
    assert row["status"] == "ok" and row["trainer"] == "trl" and row["rows"] == 12 and row["steps"] == 1
    log = (tmp_path / "trl.log").read_text()
    assert f"'loss': '{row['first_loss']}'" in log  # the first logged loss, as TRL printed it
    assert 0 < row["first_loss"] < 20
