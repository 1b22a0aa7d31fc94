"""bench/qc.py at a small size: the labelled set builds offline (its Apertium translations are cached) and the
chain's measured shares come out as the bench reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_qc_bench_measures_the_checks_on_the_labelled_set():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "qc.py"), "--langs", "en,es", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    caught, before = got["caught"], got["before"]["caught"]
    assert caught["swap_unrelated"] == caught["boilerplate"] == caught["truncated_response"] == 1.0
    assert caught["wrong_language"] == caught["number_changed"] == 1.0
    assert before["swap_unrelated"] < 0.5 and before["truncated_response"] < 0.5  # what relevance and truncation add
    assert got["false_drop"] <= 0.1 and got["checks"]["off_topic"]["false_drop"] == 0.0
    assert set(caught) == {"swap_same_topic", "swap_unrelated", "wrong_language", "number_changed", "name_dropped",
                           "noun_mistranslated", "truncated_response", "copies_response", "boilerplate",
                           "asks_missing"}
