"""The base of every stage that calls an LLM: its engine settings, the engine service it holds
(``synth.llm.service``: the engine, the request cache, token and cache counters), and the output checks.

Stages say what to ask (``build``, or ``requests`` in ``process``) and what to do with the answers; the engine
layer does batching, retries and caching. Each stage declares its output checks in ``CHECKS`` (``gate.Check``:
reason, function, setting); ``apply_checks`` runs them in order on every answer that is not already broken and
drops the rows that fail, counted under the first failing check per language. A new check is one function and
one line; the check reasons are part of the fingerprint, so adding or removing one recomputes the stage's
output. A request that fails for reasons outside it stops the shard (``synth.llm.service``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from synth import checks as ck
from synth.checks import CheckSettings, LanguageVerdict
from synth.config import key_values, option
from synth.devices import Gpu, Placement
from synth.extract.lid import Identifier
from synth.gate import Check, first_failure
from synth.kernel import Stage
from synth.llm.base import Engine
from synth.llm.factory import ENGINE_HELP, MODEL_HELP, default_engine
from synth.llm.request import Request, Result
from synth.llm.service import EngineService
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


@dataclass
class LLMStage(Stage):
    """Fields shared by LLM stages. ``engine_options`` and ``cache`` do not change the rows.

    ``CHECKS`` are run by ``apply_checks`` with the stage's ``checks`` settings (a ``CheckSettings`` field of
    the stages that have checks); ``ADDED`` are the columns the stage appends to its input's."""

    CHECKS: ClassVar[tuple[Check, ...]] = ()  # their reasons are in the fingerprint (Stage.fingerprint)
    ADDED: ClassVar[tuple[tuple[str, pa.DataType], ...]] = ()

    engine: str = option(help=ENGINE_HELP, factory=default_engine)
    model: str = option("smollm2", MODEL_HELP)
    revision: str | None = None
    engine_options: dict[str, Any] = option({}, "Engine setting KEY=VALUE (repeatable), e.g. dtype=bfloat16.",
                                            flag="--engine-opt", parse=key_values, many=True, fingerprint=False)
    cache: str | None = option(None, "Request cache: a sqlite path, 'none', or by default synth's shared cache.",
                               fingerprint=False)
    # Engine copies on this machine, each in a process of its own with its own GPUs (synth.devices.assign).
    replicas: int | str = option("auto", "Engine copies on this machine, a process each with its own GPUs: 'auto' "
                                 "(one per visible GPU, or per tensor-parallel group) or a number.", also=("run",),
                                 fingerprint=False)
    gpus: str | None = option(None, "The GPUs the engine copies may use, e.g. 0,1,2,3 (default: the visible ones).",
                              also=("run",), fingerprint=False)

    def engine_service(self) -> EngineService:
        """The engine this stage holds, made from its fields at first use (``setup`` or a translator's), and
        handed to its translator: one loaded model per stage."""
        if self.__dict__.get("_engine") is None:
            self._engine = EngineService.of(self)
        return self._engine

    def use_engine(self, engine: Engine) -> None:
        """Run on an engine that is already loaded (a test's or a benchmark's); the stage never closes it."""
        self._engine = EngineService.of(self, engine)

    def params(self) -> dict[str, Any]:
        # Engine options are left out of the fingerprint (batch sizes, threads, GPU memory do not change rows),
        # except those that do; the model by its identity, the precision resolved where the copies run.
        return {**super().params(), **EngineService.of(self).params(self.named_facts())}

    def placement(self) -> Placement | None:
        return EngineService.of(self).placement()

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return EngineService.of(self).facts(gpus)

    def setup(self) -> None:
        self.engine_service().open()

    def ask(self, requests: list[Request], stats: ShardStats) -> list[Result]:
        """The answers to ``requests``, counted into the shard's stats (``EngineService.ask``)."""
        return self.engine_service().ask(requests, stats)

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
        """Every batch's requests through one engine stream (``EngineService.streamed``); stages without
        ``build`` run ``process`` batch by batch."""
        if not self.streams():
            yield from super().process_stream(batches)
            return
        for table, _ in self.engine_service().streamed(batches, self.build, self.finish):
            yield table

    def teardown(self) -> None:
        engine = self.__dict__.get("_engine")
        if engine is not None:
            engine.close()
            if engine.llm is None:  # closed (a handed-in engine stays, for the stage's next run)
                self._engine = None

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
