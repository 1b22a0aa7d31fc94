"""Pick an engine by name; the CLI and the stages call this and nothing engine-specific."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from synth.devices import visible_gpus
from synth.llm.base import Engine, EngineOptionError
from synth.llm.cache import CachedEngine, Lazy, RequestCache

# The engines, by the name users give: one line each ("module:Class"; imported when asked for).
ENGINES = {
    "hf": "synth.llm.hf:HFEngine",
    "vllm": "synth.llm.vllm:VLLMEngine",
    "openai": "synth.llm.openai:OpenAIEngine",
}
ENGINE_HELP = "hf, vllm or openai (default: vllm with a GPU, else hf)."
MODEL_HELP = "Model directory or hub name; 'smollm2' is the offline model that ships in a package."


def default_engine() -> str:
    """vLLM where this machine has a GPU (NVML's count: CUDA is not touched) and vLLM is installed, else
    transformers on the CPU. On a cluster whose head has no GPU, name the engine: the head decides this."""
    if visible_gpus() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "hf"


def engine_class(engine: str) -> type[Engine]:
    """The engine class called ``engine`` (its module is imported now; the library it wraps only when built)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    module, _, cls = ENGINES[engine].partition(":")
    return getattr(importlib.import_module(module), cls)


def check_options(cls: type[Engine], options: dict[str, Any]) -> None:
    """Refuse options ``cls`` does not take, in one line, before anything is loaded or written: a typo, or an
    ``hf_token`` given to an engine that reads none, would otherwise end in a TypeError deep in a worker. An
    engine that passes extra options on (vLLM's, to ``vllm.LLM``) leaves them to the library."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n not in ("self", "model") and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                          p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EngineOptionError(f"the {cls.name} engine does not take the option{'s' * (len(unknown) > 1)} "
                                f"{', '.join(unknown)}; it takes: {', '.join(accepted)}")


def load_engine(engine: str | None, model: str, cache: str | Path | None = None, **options: Any) -> Engine:
    """An engine by name (``hf``, ``vllm``, ``openai``; None: ``default_engine()``), wrapped in the request cache
    when ``cache`` is given. Behind the cache the engine is built on the first request the cache cannot answer,
    so a job the cache answers whole never loads the model."""
    cls = engine_class(engine or default_engine())
    check_options(cls, options)
    if cache is None:
        return cls(model, **options)
    model_key, dtype = cls.key(model, **options)
    return CachedEngine(Lazy(cls.name, model_key, dtype, lambda: cls(model, **options)), RequestCache(cache))
