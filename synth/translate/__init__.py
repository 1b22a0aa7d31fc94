"""Translators: one protocol for every way a stage turns text into another language.

Stage 2 (into English) and stage 5 (into the target language, and back for the round trip) name a backend with
their ``translator`` setting; ``backend(name)`` finds it in ``BACKENDS``. The stage holds one translator, made
from its settings (the stage, read as a settings object), the ``Direction``s it translates in (which of the
stage's settings hold each direction's prompt or model) and the stage's engine service (``synth.llm.service``),
which only an LLM backend opens. The translator answers for its part of the stage's fingerprint (``params``: its
models and prompts by identity) and for where its copies run (``placement``, ``facts``); its ``FIELDS`` are the
stage settings only it reads, out of the fingerprint while another backend is in use.

Every backend streams the same way: ``plan`` a batch's requests, ``collect`` its translations from their answers.
A batch backend (seq2seq, Apertium) plans none and translates in ``collect`` (``BatchTranslator.run``), so a
stage never asks which kind it holds. A new backend is a module here that subclasses ``BatchTranslator`` (copy
``apertium.py``), its settings in ``TranslatorSettings``, and a line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar

from synth.config import option
from synth.devices import Gpu, Placement
from synth.errors import SynthError
from synth.lang import canonical
from synth.llm.request import Request, Result
from synth.llm.service import EngineService
from synth.stats import ShardStats

Translation = tuple[str, str | None]  # (cleaned translation, the reason it failed or None)

BACKENDS = {
    "llm": "synth.translate.llm:LLMTranslator",
    "seq2seq": "synth.translate.seq2seq:Seq2SeqBackend",
    "apertium": "synth.translate.apertium:ApertiumTranslator",
}


class TranslateError(SynthError, ValueError):
    """Settings that cannot work (an unknown translator, seq2seq without a model…)."""


@dataclass(frozen=True)
class Direction:
    """Which of a stage's settings one direction of translation reads."""

    prompt: str = "prompt"  # LLM: the setting that names the prompt
    mt_model: str = "mt_model"  # seq2seq: the setting that names the model (unset: ``mt_model``)
    id_suffix: str = ""  # LLM: added to request ids, so the round trip of a row is told apart from its forward


FORWARD = Direction()
ROUND_TRIP = Direction(prompt="roundtrip_prompt", mt_model="roundtrip_mt_model", id_suffix=":back")


Plan = tuple[list[int], Any]  # the texts sent (the others are copied), and what the backend joins their answers by


class Translator:
    """The protocol, and its shared half: which texts need translating (``needs_translation``) and copying the
    others. A backend writes ``requests`` and ``answers`` (an LLM: one request per piece, joined again), or
    ``run`` (``BatchTranslator``); it gives per text ``(cleaned text, reason or None)``, the reason being one of
    the shared output checks (``synth.checks``) or the engine's own."""

    FIELDS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Any, directions: tuple[Direction, ...] = (FORWARD,),
                 engine: EngineService | None = None) -> None:
        self.settings = settings
        self.directions = directions
        self.engine = engine

    def params(self, facts: dict[str, Any]) -> dict[str, Any]:
        """This backend's part of the fingerprint for its directions (``facts``: where the stage's copies run)."""
        return {}

    def placement(self) -> Placement | None:
        """The copies the stage runs for this translator (``synth.kernel.Stage.placement``); None: no model."""
        return None

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        """What names its output on a copy that sees ``gpus`` (``synth.kernel.Stage.facts``)."""
        return {}

    def setup(self) -> None:
        """Load what translating needs (once per copy)."""

    def close(self) -> None:
        """Free what ``setup`` loaded."""

    def requests(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                 direction: Direction) -> tuple[list[Request], Any]:
        """The requests for ``texts`` (all to translate), and what ``answers`` joins their answers by."""
        raise NotImplementedError

    def answers(self, texts: list[str], layout: Any, results: list[Result], stats: ShardStats) -> list[Translation]:
        """Each of ``texts``' translation, from ``requests``' layout and the answers to its requests."""
        raise NotImplementedError

    def plan(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
             direction: Direction = FORWARD) -> tuple[list[Request], Plan]:
        """The requests for the texts not already in their target language (``needs_translation``)."""
        todo = needs_translation(src_langs, tgt_langs)
        requests, layout = self.requests([texts[i] for i in todo], [src_langs[i] for i in todo],
                                         [tgt_langs[i] for i in todo], [ids[i] for i in todo], direction)
        return requests, (todo, layout)

    def collect(self, texts: list[str], plan: Plan, results: list[Result], stats: ShardStats,
                counted: bool = True) -> list[Translation]:
        """Each text's translation from ``plan``'s answers; the texts not sent are copied (``copied``)."""
        todo, layout = plan
        out = copied(texts, todo, stats, counted)
        if todo:
            for i, res in zip(todo, self.answers([texts[i] for i in todo], layout, results, stats), strict=True):
                out[i] = res
        return out

    def translate(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                  stats: ShardStats, direction: Direction = FORWARD, counted: bool = True) -> list[Translation]:
        """``plan``, the engine's answers, ``collect``: for a caller that translates one batch at a time."""
        requests, plan = self.plan(texts, src_langs, tgt_langs, ids, direction)
        results = self.engine.ask(requests, stats) if requests else []
        return self.collect(texts, plan, results, stats, counted)


class BatchTranslator(Translator):
    """A backend that translates a batch at a time in the stage's own process: it plans no requests, and
    ``collect`` translates (``run``)."""

    def requests(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                 direction: Direction) -> tuple[list[Request], Any]:
        return [], (src_langs, tgt_langs, direction)

    def answers(self, texts: list[str], layout: Any, results: list[Result], stats: ShardStats) -> list[Translation]:
        src_langs, tgt_langs, direction = layout
        return self.run(texts, src_langs, tgt_langs, direction, stats)

    def run(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], direction: Direction,
            stats: ShardStats) -> list[Translation]:
        """Translate every text (none is in its target language already)."""
        raise NotImplementedError


def backend(name: str) -> type[Translator]:
    """The translator class called ``name`` (a key of ``BACKENDS``)."""
    if name not in BACKENDS:
        raise TranslateError(f"translator must be one of {', '.join(BACKENDS)}, not {name!r}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


@cache
def backend_fields() -> frozenset[str]:
    """The stage settings that belong to some backend."""
    return frozenset().union(*(backend(name).FIELDS for name in BACKENDS))


@dataclass
class TranslatorSettings:
    """Settings of the stages that translate (2, and 5), besides the LLM's own (engine, model, prompt…)."""

    translator: str = option("llm", "'llm' (the engine and model; the stages' default), 'seq2seq' (--mt-model) or "
                             "'apertium' (Debian's rule-based MT: apt-get install apertium apertium-eng-spa). synth "
                             "audit translates only with one given.", also=("run", "audit"), show_default=False)
    mt_model: str | None = option(None, "Seq2seq MT model: directory or hub name (NLLB, M2M100, MADLAD…).",
                                  also=("run", "audit"))
    mt_revision: str | None = None
    mt_family: str | None = None  # nllb, m2m100, madlad, marian (None: detected from the model)
    mt_num_beams: int = 1
    mt_max_input_tokens: int = 200  # MT pieces: paragraphs or sentence groups up to this many tokens
    mt_max_new_tokens: int | None = None  # per piece; None: twice the input plus 16
    mt_options: dict[str, Any] = field(default_factory=dict, metadata={"fingerprint": False})  # device, batch_size
    # LLM, into English: a piece's token budget is min(max_tokens, 32 + this × its characters). A translation is
    # about as long as its source, so a model stuck in a loop is stopped early (and dropped as truncated) instead
    # of generating max_tokens of repetition, which is most of the time a weak model costs. Not applied into the
    # target language, whose text may take several tokens a character in an English-centred tokenizer.
    max_tokens_per_char: float = 0.6
    # The run's target language (``synth run`` gives it): a backend that names what it has installed names only
    # what this language uses (Apertium: its pair with English). Rows carry their own language either way.
    lang: str | None = field(default=None, metadata={"fingerprint": False})

    def translator_for(self, *directions: Direction) -> Translator:
        """The backend named by ``translator``, for ``directions`` (default: forward alone), on the stage's
        engine service (cheap: models load in its ``setup``). The stage is an ``LLMStage``, as every stage that
        translates is: an LLM backend needs its engine."""
        return backend(self.translator)(self, directions or (FORWARD,), self.engine_service())

    def placement(self) -> Placement | None:
        """The stage's copies, as its translator needs them: the LLM's engine copies, a seq2seq model per GPU,
        none for Apertium (which overrides LLMStage's: a stage that translates otherwise holds no LLM)."""
        return self.translator_for().placement()

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return self.translator_for().facts(gpus)

    def translation_params(self, *directions: Direction) -> dict[str, Any]:
        """Fingerprint params: the stage's own settings, and those of its translator for ``directions``; never
        the settings of a backend that is not in use."""
        p = {f.name: getattr(self, f.name) for f in fields(self)
             if f.metadata.get("fingerprint", True) and f.name not in backend_fields()}
        p.update(self.translator_for(*directions).params(self.named_facts()))
        return p


def needs_translation(src_langs: list[str], tgt_langs: list[str]) -> list[int]:
    """The texts not already in their target language: the others are copied, not sent to a model (English
    data needs no English translation)."""
    return [i for i, (s, t) in enumerate(zip(src_langs, tgt_langs, strict=True)) if canonical(s) != canonical(t)]


def copied(texts: list[str], todo: list[int], stats: ShardStats, counted: bool = True) -> list[Translation]:
    """Every text as its own translation, those outside ``todo`` counted as ``copied_same_language`` (unless
    ``counted`` is off: a round trip copies the rows its forward pass counted)."""
    if counted and len(todo) < len(texts):
        stats.count("copied_same_language", len(texts) - len(todo))
    return [(t, None) for t in texts]
