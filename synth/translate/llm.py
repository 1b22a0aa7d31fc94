"""Translation by an LLM: the stage's engine service (its engine, model and request cache), the stage's sampling,
a prompt per direction, piece by piece.

Long texts are cut at paragraph or sentence boundaries into pieces of at most ``chunk_chars`` characters, the
pieces are asked as requests of their own and joined again; a text fails with the first failing piece's reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from synth import checks as ck
from synth.devices import Gpu, Placement
from synth.lang import ENGLISH
from synth.lang import name as language_name
from synth.llm import Request, Result, Sampling
from synth.prompts import get_prompt
from synth.stats import ShardStats
from synth.text import join_pieces, split_text
from synth.translate import FORWARD, ROUND_TRIP, Direction, Translation, Translator

SAMPLING = ("temperature", "repetition_penalty", "max_tokens", "max_tokens_per_char", "chunk_chars")
SETTINGS = frozenset({"engine", "model", "revision", *SAMPLING})
PROMPTS = frozenset({FORWARD.prompt, ROUND_TRIP.prompt})
Layout = list[tuple[list[str], int]]  # per text: the separators between its pieces, its first request's index


class LLMTranslator(Translator):
    """Into English the prompt gets ``source_lang`` and each piece a token budget (``max_tokens_per_char``);
    from English it gets ``target_lang`` and ``max_tokens`` alone."""

    FIELDS = SETTINGS | PROMPTS

    def params(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The engine's part (model by identity, precision…), the sampling, and each direction's prompt."""
        p = {**self.engine.params(facts), **{k: getattr(self.settings, k) for k in SAMPLING}}
        for d in self.directions:
            p[d.prompt] = get_prompt(getattr(self.settings, d.prompt)).identity
        return p

    def placement(self) -> Placement:
        return self.engine.placement()

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return self.engine.facts(gpus)

    def setup(self) -> None:
        self.engine.open()

    def close(self) -> None:
        self.engine.close()

    def requests(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                 direction: Direction) -> tuple[list[Request], Layout]:
        """One request per piece of each text, and the layout ``answers`` puts the answers back together with."""
        s = self.settings
        prompt = get_prompt(getattr(s, direction.prompt))
        sampling = Sampling(max_tokens=s.max_tokens, temperature=s.temperature,
                            repetition_penalty=s.repetition_penalty)
        requests: list[Request] = []
        layout: Layout = []  # per text: its separators and the index of its first request
        for text, src, tgt, rid in zip(texts, src_langs, tgt_langs, ids, strict=True):
            pieces, seps = split_text(text, s.chunk_chars, len, merge=True)
            layout.append((seps, len(requests)))
            into_english = tgt == ENGLISH
            lang = {"source_lang": language_name(src)} if into_english else {"target_lang": language_name(tgt)}
            for k, piece in enumerate(pieces):
                budget = sampling if not into_english else replace(
                    sampling, max_tokens=min(sampling.max_tokens, 32 + int(s.max_tokens_per_char * len(piece))))
                requests.append(Request(id=f"{rid}{direction.id_suffix}#{k}",
                                        messages=prompt.render(**lang, text=piece), sampling=budget))
        return requests, layout

    def answers(self, texts: list[str], layout: Layout, results: list[Result],
                stats: ShardStats) -> list[Translation]:
        """Each text from its pieces' answers; a text fails with its first failing piece's reason."""
        out: list[Translation] = []
        for seps, first in layout:
            parts, reason = [], None if seps else ck.EMPTY
            for r in results[first : first + len(seps)]:
                cleaned, problem = ck.result_problem(r.text, r.finish_reason, r.error, self.settings.checks)
                reason = reason or problem
                parts.append(cleaned)
            joined = join_pieces(parts, seps) if reason is None else ""
            if reason is None and len(seps) > 1:
                reason = ck.text_problem(joined, settings=self.settings.checks)
            out.append((joined, reason))
        return out
