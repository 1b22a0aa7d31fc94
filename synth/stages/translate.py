"""Stage 2, translate: the native fragment → ``response_en``, by a translator (``synth.translate``: an LLM or a
seq2seq MT model).

The fragment itself is never replaced: it is the response of the final pair; the English translation is what
the instruction writer (stage 3) reads. Long fragments are cut at paragraph or sentence boundaries, translated
piece by piece in batches and joined. Each translation goes through the shared output checks
(``synth.checks``: engine errors, truncation, emptiness, refusals, chatter, repetition) and then the
stage's own ``CHECKS`` (commentary, length ratio, the language of the result: LID must say English). A row that
fails leaves under that reason.

Changing a check threshold re-runs the stage, but with the request cache on, the model is not asked again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from synth import checks as ck
from synth.checks import CheckSettings
from synth.config import option
from synth.extract import lid
from synth.gate import Check
from synth.lang import ENGLISH
from synth.llm import Request, Result
from synth.llm.stage import LANGUAGE_CHECK, LLMStage, Output
from synth.stats import ShardStats
from synth.translate import FORWARD, Plan, TranslatorSettings


def _ratio(o: Output) -> float:
    return len(o.text) / max(1, len(o.source))


def ratio_low(o: Output, s: CheckSettings) -> bool:
    """Far shorter than the source (a summary): below ``min_translation_ratio`` (×3 for CJK sources)."""
    return _ratio(o) < ck.translation_ratio_bounds(o.lang, s)[0]


def ratio_high(o: Output, s: CheckSettings) -> bool:
    """Far longer than the source (a ramble): above ``max_translation_ratio`` (×3 for CJK sources)."""
    return _ratio(o) > ck.translation_ratio_bounds(o.lang, s)[1]


@dataclass
class Translate(TranslatorSettings, LLMStage):
    """Native ``fragment`` → ``response_en`` (plus ``response_en_lid``, LID's probability that it is English)."""

    key = "02_translate"
    version = "1"
    CHECKS = (
        Check(ck.COMMENTARY, lambda o, s: ck.is_commentary(o.text)),
        Check(ck.RATIO_LOW, ratio_low, "min_translation_ratio"),
        Check(ck.RATIO_HIGH, ratio_high, "max_translation_ratio"),
        LANGUAGE_CHECK,
    )
    ADDED = (("response_en", pa.string()), ("response_en_lid", pa.float32()))
    prompt: str = "translate_to_en"  # a name, name.vN, or a .toml file (see get_prompt)
    max_tokens: int = option(1024, "Max new tokens per request.")
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    chunk_chars: int = 1500  # LLM: longer fragments are translated in pieces of whole paragraphs or sentences
    checks: CheckSettings = field(default_factory=CheckSettings)
    lid_model: str = "auto"  # for the English check; "auto" as in stage 1 (lid.choose_model)

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        self.translator_for()  # settings that cannot work fail here, not at the first shard
        self.lid_model = lid.resolve(self.lid_model, ENGLISH)

    def params(self) -> dict[str, Any]:
        p = self.translation_params(FORWARD)
        p["lid_model"] = lid.identity(self.lid_model)
        p["checks"] = asdict(self.checks)  # readable in the manifest (the fingerprint is the same)
        return p

    def setup(self) -> None:
        if self.__dict__.get("_translator") is None:
            self._translator = self.translator_for()
            self._translator.setup()
        if self.__dict__.get("_lid") is None:
            self._lid = lid.load_identifier(self.lid_model)

    def teardown(self) -> None:
        translator, self._translator = self.__dict__.get("_translator"), None
        if translator is not None:
            translator.close()

    def build(self, batch: pa.Table) -> tuple[list[Request], Plan]:
        """The translator's requests for the rows not already in English (none for a batch backend)."""
        texts, langs, ids = (batch.column(c).to_pylist() for c in ("fragment", "lang", "id"))
        return self._translator.plan(texts, langs, [ENGLISH] * len(langs), ids)

    def finish(self, batch: pa.Table, context: Plan, results: list[Result], stats: ShardStats) -> pa.Table:
        """The rows whose translation passed the checks, with ``response_en`` and its LID probability."""
        texts, langs = batch.column("fragment").to_pylist(), batch.column("lang").to_pylist()
        done = self._translator.collect(texts, context, results, stats)
        outputs = [Output(en, src, lang, ENGLISH) for (en, _), src, lang in zip(done, texts, langs, strict=True)]
        batch, kept = self.apply_checks(batch, outputs, [r for _, r in done], stats, lid=self._lid)
        return (batch.append_column("response_en", pa.array([outputs[i].text for i in kept], pa.string()))
                .append_column("response_en_lid", pa.array([outputs[i].verdict.prob for i in kept], pa.float32())))
