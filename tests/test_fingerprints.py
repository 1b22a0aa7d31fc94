"""The output names of a run's stages, pinned: a change of code layout (a module moved, a class split, a setting
read another way) must rename no output, or a killed run would not resume across it and a finished one would be
computed again. A change that means to change rows changes a fingerprint on purpose: then update
``tests/data/fingerprints_sw.json`` with ``bench/fingerprints.py --config tests/data/fingerprints_sw.toml``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.mark.requires("smollm2")
def test_stage_fingerprints_are_those_pinned():
    """Swahili, the LLM translating both ways with a round trip, every model the offline default (float32 on any
    CPU): the fingerprint of every stage the registry builds from settings."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fingerprints.py"), "--config",
                          str(DATA / "fingerprints_sw.toml")], capture_output=True, text=True, cwd=ROOT, check=True)
    now, pinned = json.loads(out.stdout), json.loads((DATA / "fingerprints_sw.json").read_text())
    changed = {k: (pinned.get(k), v) for k, v in now.items() if pinned.get(k) != v}
    assert not changed and set(now) == set(pinned), (
        f"stage outputs renamed (pinned, now): {changed}; stages {sorted(set(now) ^ set(pinned))} added or gone")
