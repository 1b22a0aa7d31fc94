"""The base of every stage that calls an LLM: engine set-up, the request cache, token and cache counters.

Stages say what to ask (``requests``) and what to do with the answers; the engine layer does batching,
retries and caching. Each stage declares its output checks in ``CHECKS`` (``gate.Check``: reason, function,
setting); ``apply_checks`` runs them in order on every answer that is not already broken and drops the rows
that fail, counted under the first failing check per language. A new check is one function and one line; the
check reasons are part of the fingerprint, so adding or removing one recomputes the stage's output.

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
from typing import Any, ClassVar

import pyarrow as pa

from synth import checks as ck
from synth.checks import CheckSettings, LanguageVerdict
from synth.devices import Gpu, Placement, parse_gpus
from synth.extract.lid import Identifier
from synth.gate import Check, first_failure
from synth.identity import identity as model_identity
from synth.kernel import Stage, StageError
from synth.llm import Engine, Request, Result, load_engine
from synth.llm.factory import default_engine, engine_class
from synth.llm.request import output_options
from synth.models import resolve_model
from synth.stats import ShardStats


def default_cache() -> str:
    """The request cache ``synth generate`` uses too: a rerun, in any run directory, does not pay twice."""
    from synth.models import cache_dir

    return str(cache_dir() / "llm" / "requests.sqlite")


def with_cache(settings: dict[str, Any]) -> dict[str, Any]:
    """Stage settings with ``cache="auto"`` (or none given) turned into the shared request cache."""
    if settings.get("cache", "auto") == "auto":
        settings["cache"] = default_cache()
    return settings


@dataclass
class Output:
    """One model answer under check: the cleaned ``text``, the ``source`` it was made from, the source's
    ``lang`` and the language the text must be in (``target``). ``verdict``: LID's, set by ``apply_checks``."""

    text: str
    source: str
    lang: str
    target: str
    verdict: LanguageVerdict | None = None


def wrong_language(o: Output, s: CheckSettings) -> bool:
    """LID's top language is not the target, or has less than ``min_lid_prob``, or a paragraph is in another."""
    if o.verdict is None:
        raise ValueError("wrong_language needs LID's verdict: give apply_checks the stage's identifier")
    return not o.verdict.ok


LANGUAGE_CHECK = Check(ck.WRONG_LANGUAGE, wrong_language, "min_lid_prob")
Build = Callable[[pa.Table], tuple[list[Request], Any]]  # a batch -> its requests, and what finish needs
Finish = Callable[[pa.Table, Any, list[Result], ShardStats], pa.Table]  # the batch's output from its answers
QUIET_BATCHES = 4  # batches in a row that ask the engine nothing, after which the stream in progress drains


@dataclass
class LLMStage(Stage):
    """Fields shared by LLM stages. ``engine_options`` and ``cache`` do not change the rows.

    ``CHECKS`` are run by ``apply_checks`` with the stage's ``checks`` settings (a ``CheckSettings`` field of
    the stages that have checks); ``ADDED`` are the columns the stage appends to its input's."""

    CHECKS: ClassVar[tuple[Check, ...]] = ()  # their reasons are in the fingerprint (Stage.fingerprint)
    ADDED: ClassVar[tuple[tuple[str, pa.DataType], ...]] = ()

    engine: str = field(default_factory=default_engine)
    model: str = "smollm2"
    revision: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict, metadata={"fingerprint": False})
    cache: str | None = field(default=None, metadata={"fingerprint": False})  # sqlite path
    # Engine copies on this machine, each in a process of its own with its own GPUs (synth.devices.assign):
    # "auto" = one per visible GPU (per tensor-parallel group); ``gpus`` ("0,1,2,3") overrides the visible ones.
    replicas: int | str = field(default="auto", metadata={"fingerprint": False})
    gpus: str | None = field(default=None, metadata={"fingerprint": False})

    def params(self) -> dict[str, Any]:
        p = super().params()
        # Engine options are left out of the fingerprint (batch sizes, threads, GPU memory do not change rows),
        # except those that do, the list the request-cache key is made from too (synth.llm.request.OUTPUT_OPTIONS),
        # credentials in them redacted; the precision is resolved below.
        facts = self.named_facts()
        changing = {**output_options(self.engine_options), **output_options(facts)}
        if changing:
            p["engine_options"] = changing
        # The model's identity (content digest for a local dir), not the path it happens to live at.
        path = self.model_path()
        p["model"] = model_identity(path, self.revision) if path is not None else f"{self.engine}:{self.model}"
        # The precision the copies really run (never "auto", which means bf16 on some CPUs only), found where
        # they run (Stage.facts).
        p["dtype"] = facts["dtype"]
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

    def setup(self) -> None:
        if getattr(self, "_llm", None) is None:
            self._owns_llm = True  # teardown closes only an engine this stage made, not one handed to it
            self._llm: Engine = load_engine(self.engine, self.model, cache=self.cache,
                                            **({"revision": self.revision} if self.revision else {}),
                                            **self.engine_options)

    def ask(self, requests: list[Request], stats: ShardStats) -> list[Result]:
        """Generate, and count tokens, cache hits and failures (by reason) into the shard's stats.

        The requests stream through the engine's bounded window (``Engine.stream``): no waves, identical ones
        sent once, answers cached as they finish."""
        return self.count(list(self._llm.stream(requests)), stats)

    # A stage with one request per row says what to ask (``build``) and what to do with the answers
    # (``finish``) instead of writing ``process``: its batches then stream through the engine together.

    def streams(self) -> bool:
        """Whether batches stream through one engine window (``build``/``finish``), else ``process`` each."""
        return type(self).build is not LLMStage.build

    def build(self, batch: pa.Table) -> tuple[list[Request], Any]:
        """The requests for a batch, and whatever ``finish`` needs besides their answers."""
        raise NotImplementedError

    def finish(self, batch: pa.Table, context: Any, results: list[Result], stats: ShardStats) -> pa.Table:
        """The batch's output, from its answers (in the order of ``build``'s requests)."""
        raise NotImplementedError

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        requests, context = self.build(batch)
        return self.finish(batch, context, self.ask(requests, stats) if requests else [], stats)

    def process_stream(self, batches: Iterator[tuple[pa.Table, ShardStats]]) -> Iterator[pa.Table]:
        """Every batch's requests through one engine stream (``streamed``); stages without ``build`` run
        ``process`` batch by batch."""
        if not self.streams():
            yield from super().process_stream(batches)
            return
        for table, _ in self.streamed(batches, self.build, self.finish):
            yield table

    def streamed(self, batches: Iterator[tuple[pa.Table, ShardStats]], build: Build,
                 finish: Finish) -> Iterator[tuple[pa.Table, ShardStats]]:
        """One pass of ``build``'s requests for every batch through one engine stream, each batch's ``finish``
        and its stats in batch order: the engine's window spans batches and shards, so it never drains at a
        batch end, and the answers of one batch are checked while later batches generate. At most a window of
        requests, plus the batches they come from, is held. A second pass may read this one's output: both
        streams share the engine, and its window holds both passes' requests.

        Batches that ask nothing (rows copied, not sent) do not open a stream; after ``QUIET_BATCHES`` of them
        in a row the stream in progress is let finish, so a long run of them is never held in memory waiting."""
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
                results = self.count(answers[:n], stats)
                del answers[:n]
                yield finish(batch, context, results, stats), stats

        while not exhausted:
            segment = requests()
            first = next(segment, None)
            if first is not None:  # the engine is touched only when something is asked
                for result in self._llm.stream(chain([first], segment)):
                    answers.append(result)
                    yield from answered()
            yield from answered()  # what is left: batches that asked nothing

    def count(self, results: list[Result], stats: ShardStats) -> list[Result]:
        """Count tokens, cache hits and failures of a batch's answers into its shard's stats; stop the shard if
        a request failed for reasons outside it (see the module's docstring).

        Tokens are counted for every result, cached or not: they measure the work the rows need (what
        ``synth plan`` projects from); ``llm_requests`` and ``llm_cache_hits`` say how much of it was paid now."""
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

    def output_schema(self) -> pa.Schema | None:
        """An empty shard's schema: the input's columns (``_input_schema``, set when the stage runs on a
        finished output) and ``ADDED``; None when either is unknown."""
        schema = getattr(self, "_input_schema", None)
        if schema is None or not self.ADDED:
            return None
        for name, typ in self.ADDED:
            schema = schema.append(pa.field(name, typ))
        return schema

    def apply_checks(self, batch: pa.Table, outputs: list[Output], reasons: list[str | None], stats: ShardStats,
                     lid: Identifier | None = None) -> tuple[pa.Table, list[int]]:
        """Give each output that has no reason yet the first of ``CHECKS`` it fails (LID's verdicts, by ``lid``,
        first), then drop the rows that have a reason, counted under it per language; the rest and their
        positions in ``batch``."""
        todo = [i for i, r in enumerate(reasons) if r is None]
        if lid is not None:
            for target in sorted({outputs[i].target for i in todo}):
                idx = [i for i in todo if outputs[i].target == target]
                verdicts = ck.language_verdicts([outputs[i].text for i in idx], target, lid, self.checks.min_lid_prob)
                for i, v in zip(idx, verdicts, strict=True):
                    outputs[i].verdict = v
        reasons = list(reasons)
        for i in todo:
            reasons[i] = first_failure(self.CHECKS, outputs[i], self.checks)
        return stats.drop_reasons(batch, reasons)
