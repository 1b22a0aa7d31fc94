"""Pick an engine by name; the CLI and the stages call this and nothing engine-specific."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.llm.base import Engine
from synth.llm.cache import CachedEngine, RequestCache

ENGINES = ("hf", "vllm", "openai")


def default_engine() -> str:
    """vLLM where a GPU is present and vLLM is installed, else transformers on the CPU."""
    try:
        import torch

        if torch.cuda.is_available():
            import importlib.util

            if importlib.util.find_spec("vllm") is not None:
                return "vllm"
    except ImportError:
        pass
    return "hf"


def load_engine(engine: str, model: str, cache: str | Path | None = None, **options: Any) -> Engine:
    """An engine by name (``hf``, ``vllm``, ``openai``), wrapped in the request cache when ``cache`` is given."""
    if engine == "hf":
        from synth.llm.hf import HFEngine

        eng: Engine = HFEngine(model, **options)
    elif engine == "vllm":
        from synth.llm.vllm import VLLMEngine

        eng = VLLMEngine(model, **options)
    elif engine == "openai":
        from synth.llm.openai import OpenAIEngine

        eng = OpenAIEngine(model, **options)
    else:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return CachedEngine(eng, RequestCache(cache)) if cache is not None else eng
