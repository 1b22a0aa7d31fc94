"""A small run of bench/decontaminate.py's leak measurement (UDHR items, labelled kinds of leak, the real
decontaminate stage): whole items are caught alone and inside a fragment of extract's length, n-1 shared tokens
and unrelated prose are not, and a half item in a long fragment is caught less often than the whole item. The
shares themselves are the bench's business (bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POSITIVE = {"exact", "inside", "case_punct_space", "half", "paraphrase_light"}
NEGATIVE = {"near_miss", "near_miss_prefix", "unrelated"}


def test_leak_bench_catches_whole_items_and_passes_unrelated_text():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "decontaminate.py"), "--leaks-only", "--items", "120",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    recall, false_positive, n = report["recall"], report["false_positive"], report["n"]
    assert set(recall) == POSITIVE and set(false_positive) == NEGATIVE and "throughput" not in report
    assert all(n[k] >= 50 for k in POSITIVE | NEGATIVE) and n["exact"] == 120
    assert recall["exact"] == 1.0 and false_positive["unrelated"] == 0.0 and false_positive["near_miss_prefix"] == 0.0
    assert recall["inside"] >= 0.75 and recall["case_punct_space"] >= 0.9
    assert recall["half"] < recall["inside"] <= recall["exact"]
