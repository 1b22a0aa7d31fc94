"""The base of every stage that calls an LLM: engine set-up, the request cache, token and cache counters.

Stages say what to ask (``requests``) and what to do with the answers; the engine layer does batching,
retries and caching. A request that failed because of its answer (``parse_error``, ``context_length``…) is a
drop with that reason and its row is counted. A request that failed for reasons outside it (the server down or
overloaded past the engine's retries, a wrong key, a timeout) fails the shard instead: dropping the row would
lose it for good, since a finished shard is never redone. The answers that did come back are cached, so the
rerun pays only for the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from synth.llm import Engine, Request, Result, load_engine
from synth.llm.factory import default_engine
from synth.llm.identity import model_identity
from synth.llm.precision import resolve_dtype
from synth.models import resolve_model
from synth.runner import Stage, StageError
from synth.stats import ShardStats

OUTPUT_OPTIONS = ("max_model_len", "max_input_tokens", "base_url", "quantization")


@dataclass
class LLMStage(Stage):
    """Fields shared by LLM stages. ``engine_options`` and ``cache`` do not change the rows."""

    engine: str = field(default_factory=default_engine)
    model: str = "smollm2"
    revision: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict, metadata={"fingerprint": False})
    cache: str | None = field(default=None, metadata={"fingerprint": False})  # sqlite path

    def params(self) -> dict[str, Any]:
        p = super().params()
        # Engine options are left out of the fingerprint (batch sizes, threads, GPU memory do not change rows),
        # except those that do: precision, the context window (what fails as too long) and the server.
        changing = {k: v for k, v in sorted(self.engine_options.items()) if k in OUTPUT_OPTIONS}
        if changing:
            p["engine_options"] = changing
        # The model's identity (content digest for a local dir), not the path it happens to live at.
        path = resolve_model(self.model) if self.engine != "openai" else None
        p["model"] = model_identity(path, self.revision) if path is not None else f"openai:{self.model}"
        # The precision the engine will really run (never "auto", which means bf16 on some CPUs only).
        p["dtype"] = resolve_dtype(self.engine, path, self.engine_options.get("dtype"),
                                   self.engine_options.get("device"))
        return p

    def setup(self) -> None:
        if getattr(self, "_llm", None) is None:
            self._owns_llm = True  # teardown closes only an engine this stage made, not one handed to it
            self._llm: Engine = load_engine(self.engine, self.model, cache=self.cache,
                                            **({"revision": self.revision} if self.revision else {}),
                                            **self.engine_options)

    def ask(self, requests: list[Request], stats: ShardStats) -> list[Result]:
        """Generate, and count tokens, cache hits and failures (by reason) into the shard's stats.

        Tokens are counted for every result, cached or not: they measure the work the rows need (what
        ``synth plan`` projects from); ``llm_requests`` and ``llm_cache_hits`` say how much of it was paid now."""
        results = self._llm.generate(requests)
        for r in results:
            if r.cached:
                stats.count("llm_cache_hits")
            else:
                stats.count("llm_requests")
                stats.count("llm_seconds", round(r.latency, 3))
            stats.count("prompt_tokens", r.prompt_tokens)
            stats.count("completion_tokens", r.completion_tokens)
        failed = [r for r in results if r.transient]
        if failed:
            reasons = ", ".join(f"{k} ×{v}" for k, v in Counter(r.error for r in failed).most_common(3))
            raise StageError(f"{len(failed)} of {len(results)} requests failed for reasons outside them "
                             f"({reasons}); the shard is not written. "
                             f"{len(results) - len(failed)} answers are cached: fix the engine or server and run "
                             f"the same command again")
        return results

    def teardown(self) -> None:
        if getattr(self, "_owns_llm", False) and getattr(self, "_llm", None) is not None:
            self._llm.close()
            self._llm, self._owns_llm = None, False
