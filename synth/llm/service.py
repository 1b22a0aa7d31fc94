"""An LLM engine as a service a stage holds: its settings, what of them names the rows, where its copies run, and,
once open, asking it with the counts a shard's stats keep.

A stage that calls an LLM holds one (``LLMStage.engine_service``) and hands the same one to the translator it
uses (``synth.translate``), so a stage's forward and round-trip translations share one loaded model and one
engine window. Nothing is loaded until ``open``; a stage whose translator asks nothing (Apertium) never opens it.

A request that failed because of its answer (``parse_error``, ``context_length``…) is a drop with that reason
and its row is counted. A request that failed for reasons outside it (the server down or overloaded past the
engine's retries, a wrong key, a timeout) fails the shard instead: dropping the row would lose it for good,
since a finished shard is never redone. The answers that did come back are cached, so the rerun pays only for
the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import pyarrow as pa

from synth.devices import Gpu, Placement, parse_gpus
from synth.identity import identity as model_identity
from synth.kernel import StageError
from synth.llm.base import Engine
from synth.llm.factory import engine_class, load_engine
from synth.llm.request import Request, Result, output_options
from synth.models import resolve_model
from synth.stats import ShardStats

Build = Callable[[pa.Table], tuple[list[Request], Any]]  # a batch -> its requests, and what finish needs
Finish = Callable[[pa.Table, Any, list[Result], ShardStats], pa.Table]  # the batch's output from its answers
QUIET_BATCHES = 4  # batches in a row that ask the engine nothing, after which the stream in progress drains
SETTINGS = ("engine", "model", "revision", "engine_options", "cache", "replicas", "gpus")  # LLMStage's fields


@dataclass
class EngineService:
    """One engine's settings (as ``LLMStage`` names them) and, once ``open``, the engine itself."""

    engine: str
    model: str
    revision: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    replicas: int | str = "auto"
    gpus: str | None = None
    llm: Engine | None = field(default=None, repr=False)  # set by open, or handed in (``of(stage, engine)``)
    owned: bool = field(default=False, repr=False)  # close closes only an engine this service loaded

    @classmethod
    def of(cls, settings: Any, engine: Engine | None = None) -> EngineService:
        """The service ``settings`` (a stage) describes; with ``engine``, that loaded engine, which it never
        closes (a test's or a benchmark's, shared by several stages)."""
        return cls(**{k: getattr(settings, k) for k in SETTINGS}, llm=engine)

    # -- what names the rows, and where the copies run ------------------------------------------------------

    def params(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The fingerprint's part for the engine: its name, the model's identity (content digest for a local
        dir, not the path it happens to live at), the precision the copies run (``facts``: never "auto", which
        means bf16 on some CPUs only) and the engine options that change rows (the list the request-cache key is
        made from too, ``synth.llm.request.OUTPUT_OPTIONS``, credentials redacted)."""
        path = self.model_path()
        p: dict[str, Any] = {
            "engine": self.engine,
            "model": model_identity(path, self.revision) if path is not None else f"{self.engine}:{self.model}",
            "revision": self.revision,
            "dtype": facts["dtype"],
        }
        changing = {**output_options(self.engine_options), **output_options(facts)}
        if changing:
            p["engine_options"] = changing
        return p

    def model_path(self) -> str | None:
        """The model's local directory (a hub name as given); None for an engine that calls a server."""
        return None if engine_class(self.engine).remote else resolve_model(self.model)

    def placement(self) -> Placement:
        """Copies of the engine: each takes the GPUs its engine declares (a tensor-parallel group; none for a
        server client, which gets one copy unless ``replicas`` is a number)."""
        per_copy = engine_class(self.engine).devices_per_copy(self.engine_options)
        return Placement(per_copy, self.replicas, parse_gpus(self.gpus))

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        """The engine's facts on a copy that sees ``gpus``: its dtype, and what its environment switches on."""
        return engine_class(self.engine).facts(self.model_path(), self.engine_options, gpus)

    # -- the engine -------------------------------------------------------------------------------------------

    def open(self) -> EngineService:
        """Load the engine (behind the request cache) unless it is loaded or was handed in."""
        if self.llm is None:
            self.llm = load_engine(self.engine, self.model, cache=self.cache,
                                   **({"revision": self.revision} if self.revision else {}), **self.engine_options)
            self.owned = True
        return self

    def close(self) -> None:
        if self.owned and self.llm is not None:
            self.llm.close()
            self.llm, self.owned = None, False

    def ask(self, requests: list[Request], stats: ShardStats) -> list[Result]:
        """Generate, and count tokens, cache hits and failures (by reason) into the shard's stats.

        The requests stream through the engine's bounded window (``Engine.stream``): no waves, identical ones
        sent once, answers cached as they finish."""
        return count(list(self.open().llm.stream(requests)), stats)

    def streamed(self, batches: Iterator[tuple[pa.Table, ShardStats]], build: Build,
                 finish: Finish) -> Iterator[tuple[pa.Table, ShardStats]]:
        """One pass of ``build``'s requests for every batch through one engine stream, each batch's ``finish``
        and its stats in batch order: the engine's window spans batches and shards, so it never drains at a
        batch end, and the answers of one batch are checked while later batches generate. At most a window of
        requests, plus the batches they come from, is held. A second pass may read this one's output: both
        streams share the engine, and its window holds both passes' requests.

        Batches that ask nothing (rows copied, or a translator that plans no requests) do not open a stream, nor
        load the engine; after ``QUIET_BATCHES`` of them in a row the stream in progress is let finish, so a long
        run of them is never held in memory waiting."""
        source = iter(batches)
        waiting: deque[tuple[pa.Table, ShardStats, Any, int]] = deque()  # batches whose answers are not all in
        answers: list[Result] = []
        exhausted = False

        def requests() -> Iterator[Request]:
            nonlocal exhausted
            quiet = 0
            for batch, stats in source:
                reqs, context = build(batch)
                waiting.append((batch, stats, context, len(reqs)))
                yield from reqs
                quiet = 0 if reqs else quiet + 1
                if quiet >= QUIET_BATCHES:
                    return
            exhausted = True

        def answered() -> Iterator[tuple[pa.Table, ShardStats]]:
            while waiting and len(answers) >= waiting[0][3]:
                batch, stats, context, n = waiting.popleft()
                results = count(answers[:n], stats)
                del answers[:n]
                yield finish(batch, context, results, stats), stats

        while not exhausted:
            segment = requests()
            first = next(segment, None)
            if first is not None:  # the engine is touched only when something is asked
                for result in self.open().llm.stream(chain([first], segment)):
                    answers.append(result)
                    yield from answered()
            yield from answered()  # what is left: batches that asked nothing


def count(results: list[Result], stats: ShardStats) -> list[Result]:
    """Count tokens, cache hits and failures of a batch's answers into its shard's stats; stop the shard if a
    request failed for reasons outside it (see the module's docstring).

    Tokens are counted for every result, cached or not: they measure the work the rows need (what ``synth plan``
    projects from); ``llm_requests`` and ``llm_cache_hits`` say how much of it was paid now."""
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
