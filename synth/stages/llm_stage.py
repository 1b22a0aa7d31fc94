"""The base of every stage that calls an LLM: engine set-up, the request cache, token and cache counters.

Stages say what to ask (``requests``) and what to do with the answers; the engine layer does batching,
retries and caching. A failed request is a drop with the engine's reason (``timeout``, ``parse_error``…),
never a crash, and its row is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synth.llm import Engine, Request, Result, load_engine
from synth.llm.factory import default_engine
from synth.llm.identity import model_identity
from synth.models import resolve_model
from synth.runner import Stage
from synth.stats import ShardStats


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
        # The model's identity (content digest for a local dir), not the path it happens to live at.
        p["model"] = model_identity(resolve_model(self.model), self.revision) if self.engine != "openai" \
            else f"openai:{self.model}"
        return p

    def setup(self) -> None:
        if getattr(self, "_llm", None) is None:
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
        return results
