"""Translation by the stage's own LLM: its engine, model and sampling, a prompt per direction, piece by piece.

Long texts are cut at paragraph or sentence boundaries into pieces of at most ``chunk_chars`` characters, the
pieces are asked in one batch and joined again; a text fails with the first failing piece's reason.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from synth import checks as ck
from synth.devices import Gpu, Placement
from synth.lang import ENGLISH
from synth.lang import name as language_name
from synth.llm import Request, Result, Sampling
from synth.llm.stage import LLMStage
from synth.prompts import get_prompt
from synth.stats import ShardStats
from synth.text import join_pieces, split_text
from synth.translate import FORWARD, ROUND_TRIP, Direction, Translation, copied, needs_translation

SETTINGS = frozenset({"engine", "model", "revision", "temperature", "repetition_penalty", "max_tokens",
                      "max_tokens_per_char", "chunk_chars"})
PROMPTS = frozenset({FORWARD.prompt, ROUND_TRIP.prompt})
Layout = list[tuple[list[str], int]]  # per text: the separators between its pieces, its first request's index
Plan = tuple[list[int], Layout]  # the texts sent (the others are copied), and how their answers join


class LLMTranslator:
    """Into English the prompt gets ``source_lang`` and each piece a token budget (``max_tokens_per_char``);
    from English it gets ``target_lang`` and ``max_tokens`` alone."""

    FIELDS = SETTINGS | PROMPTS
    STREAMS = True  # plan/collect: the stage's batches share one engine stream

    def __init__(self, stage: LLMStage, direction: Direction = FORWARD) -> None:
        self.stage = stage
        self.direction = direction

    @property
    def prompt_name(self) -> str:
        return getattr(self.stage, self.direction.prompt)

    def params(self) -> dict[str, Any]:
        """What the LLM stage puts in its fingerprint for the engine and model, and this direction's prompt."""
        # The stage's own settings and another backend's: what LLMStage.params adds (engine options…) stays.
        others = {f.name for f in fields(self.stage) if f.metadata.get("fingerprint", True)} - SETTINGS
        p = {k: v for k, v in LLMStage.params(self.stage).items() if k not in others}
        p[self.direction.prompt] = get_prompt(self.prompt_name).identity
        return p

    def placement(self) -> Placement:
        return LLMStage.placement(self.stage)

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return LLMStage.facts(self.stage, gpus)

    def setup(self) -> None:
        LLMStage.setup(self.stage)

    def close(self) -> None:
        LLMStage.teardown(self.stage)

    def translate(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                  stats: ShardStats) -> list[Translation]:
        requests, layout = self.requests(texts, src_langs, tgt_langs, ids)
        return self.join(layout, self.stage.ask(requests, stats) if requests else [])

    def requests(self, texts: list[str], src_langs: list[str], tgt_langs: list[str],
                 ids: list[str]) -> tuple[list[Request], Layout]:
        """One request per piece of each text, and the layout ``join`` puts the answers back together with."""
        stage = self.stage
        prompt = get_prompt(self.prompt_name)
        sampling = Sampling(max_tokens=stage.max_tokens, temperature=stage.temperature,
                            repetition_penalty=stage.repetition_penalty)
        requests: list[Request] = []
        layout: Layout = []  # per text: its separators and the index of its first request
        for text, src, tgt, rid in zip(texts, src_langs, tgt_langs, ids, strict=True):
            pieces, seps = split_text(text, stage.chunk_chars, len, merge=True)
            layout.append((seps, len(requests)))
            into_english = tgt == ENGLISH
            lang = {"source_lang": language_name(src)} if into_english else {"target_lang": language_name(tgt)}
            for k, piece in enumerate(pieces):
                budget = sampling if not into_english else replace(
                    sampling, max_tokens=min(sampling.max_tokens, 32 + int(stage.max_tokens_per_char * len(piece))))
                requests.append(Request(id=f"{rid}{self.direction.id_suffix}#{k}",
                                        messages=prompt.render(**lang, text=piece), sampling=budget))
        return requests, layout

    # ``translate_all`` in two halves, for a stage that streams: what to ask, then the translations from the answers.

    def plan(self, texts: list[str], src_langs: list[str], tgt_langs: list[str],
             ids: list[str]) -> tuple[list[Request], Plan]:
        """The requests for the texts not already in their target language (``needs_translation``)."""
        todo = needs_translation(src_langs, tgt_langs)
        requests, layout = self.requests([texts[i] for i in todo], [src_langs[i] for i in todo],
                                         [tgt_langs[i] for i in todo], [ids[i] for i in todo])
        return requests, (todo, layout)

    def collect(self, texts: list[str], plan: Plan, results: list[Result], stats: ShardStats,
                counted: bool = True) -> list[Translation]:
        """Each text's translation from ``plan``'s answers; the texts not sent are copied (``copied``)."""
        todo, layout = plan
        out = copied(texts, todo, stats, counted)
        for i, res in zip(todo, self.join(layout, results), strict=True):
            out[i] = res
        return out

    def join(self, layout: Layout, results: list[Result]) -> list[Translation]:
        """Each text from its pieces' answers; a text fails with its first failing piece's reason."""
        out: list[Translation] = []
        for seps, first in layout:
            parts, reason = [], None if seps else ck.EMPTY
            for r in results[first : first + len(seps)]:
                cleaned, problem = ck.result_problem(r.text, r.finish_reason, r.error, self.stage.checks)
                reason = reason or problem
                parts.append(cleaned)
            joined = join_pieces(parts, seps) if reason is None else ""
            if reason is None and len(seps) > 1:
                reason = ck.text_problem(joined, settings=self.stage.checks)
            out.append((joined, reason))
        return out
