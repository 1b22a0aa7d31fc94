"""A small run of bench/ceiling.py (synth's own ceiling as an LLM client against a stand-in server on 127.0.0.1
that answers at once): the bench works end to end and every request becomes a kept row. The numbers it prints
are the bench's business (bench/README.md); no timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_ceiling_bench_runs_a_stage_end_to_end(tmp_path):
    out = tmp_path / "ceiling.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "ceiling.py"), "--n", "400", "--shard-rows", "100",
                           "--concurrency", "40", "--cache", "both", "--raw-n", "200", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {r["row"]: r for r in report["rows"]}
    stage = [r for name, r in rows.items() if "instruct stage" in name]
    assert len(stage) == 2 and all(r["requests"] == 400 and r["rows_out"] == 400 and not r["dropped"] for r in stage)
    assert all(r["req_per_s"] > 0 and r["cpu_s_per_1k"] > 0 and r["peak_rss_mb"] > 0 for r in stage)
    assert any(r.get("cache_mb") for r in stage)  # the sqlite row really stored its answers
    assert "| row |" in proc.stdout
