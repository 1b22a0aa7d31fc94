"""One interface over several LLM engines: ``generate(requests) -> results``, with a request cache."""

from synth.llm.base import Engine
from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.factory import load_engine
from synth.llm.request import Request, Result, Sampling

__all__ = ["Engine", "Request", "Result", "Sampling", "CachedEngine", "RequestCache", "load_engine"]
