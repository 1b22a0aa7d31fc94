"""Stage 2, translate: the native fragment → ``response_en``, by an LLM or a seq2seq MT model.

The fragment itself is never replaced: it is the response of the final pair; the English translation is what
the instruction writer (stage 3) reads. Long fragments are cut at paragraph or sentence boundaries, translated
piece by piece in batches and joined. Each translation goes through the shared checks
(``synth.stages.checks``): engine errors, truncation, emptiness, refusals, chatter, repetition, and the
language of the result (LID must say English). A row that fails leaves under that reason.

Changing a check threshold re-runs the stage, but with the request cache on, the model is not asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.errors import SynthError
from synth.extract import lid
from synth.extract.lid import normalize_lang
from synth.fingerprint import file_digest
from synth.llm import Request, Sampling
from synth.llm.identity import model_identity
from synth.mt import Seq2SeqTranslator, join_pieces, language_name, split_text
from synth.prompts import get_prompt
from synth.runner import Stage, StageOutput, run_stage
from synth.stages import checks as ck
from synth.stages.checks import CheckSettings
from synth.stages.llm_stage import LLMStage
from synth.stats import ShardStats

TRANSLATORS = ("llm", "seq2seq")
ENGLISH = "eng"
ADDED = [("response_en", pa.string()), ("response_en_lid", pa.float32())]


class TranslateError(SynthError, ValueError):
    """Settings that cannot work (an unknown translator, seq2seq without a model…)."""


def lid_identity(spec: str) -> str:
    """What names a LID model in a fingerprint: its name, or the digest of a model file."""
    if spec in ("lid176", "heliport"):
        return spec
    if not Path(spec).is_file():
        raise TranslateError(f"LID model {spec!r} is neither 'auto', 'lid176', 'heliport' nor a fastText model file")
    return f"fasttext:{file_digest(spec)}"


def resolve_lid(spec: str, lang: str) -> str:
    """``auto`` → the installed LID model measured best on ``lang`` (as stage 1 chooses)."""
    return lid.choose_model(lang) if spec == "auto" else spec


@dataclass
class TranslatorMixin:
    """Settings shared by the stages that translate (2, and 5): LLM through the engine layer, or seq2seq MT."""

    translator: str = "llm"  # "llm": the engine and model above; "seq2seq": mt_model through transformers
    mt_model: str | None = None  # local directory or hub name (facebook/nllb-200-distilled-600M, …)
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

    def _check_translator(self) -> None:
        if self.translator not in TRANSLATORS:
            raise TranslateError(f"translator must be one of {', '.join(TRANSLATORS)}, not {self.translator!r}")
        if self.translator == "seq2seq" and not self.mt_model:
            raise TranslateError("translator 'seq2seq' needs mt_model (a directory or a hub name such as "
                                 "facebook/nllb-200-distilled-600M)")

    def _translator_params(self, p: dict[str, Any], prompt_names: list[str]) -> dict[str, Any]:
        """Fingerprint params: the LLM's identity and prompts, or the MT model's identity, not both."""
        mt_keys = [k for k in p if k.startswith("mt_")]
        if self.translator == "seq2seq":
            for k in ("engine", "model", "revision", "temperature", "repetition_penalty", "max_tokens",
                      "max_tokens_per_char", "chunk_chars", *prompt_names):
                p.pop(k, None)
            p["mt_model"] = model_identity(self.mt_model, self.mt_revision)
            p.pop("mt_revision", None)
        else:
            for k in mt_keys:
                p.pop(k, None)
        return p

    def _load_mt(self, model: str | None = None) -> Seq2SeqTranslator:
        return Seq2SeqTranslator(model or self.mt_model, revision=self.mt_revision, family=self.mt_family,
                                 num_beams=self.mt_num_beams, max_input_tokens=self.mt_max_input_tokens,
                                 max_new_tokens=self.mt_max_new_tokens, **self.mt_options)


def llm_translate(stage: LLMStage, texts: list[str], src_langs: list[str], ids: list[str], prompt_name: str,
                  sampling: Sampling, chunk_chars: int, settings: CheckSettings,
                  stats: ShardStats, lang_var: str = "source_lang",
                  tokens_per_char: float | None = None) -> list[tuple[str, str | None]]:
    """Translate with the stage's LLM, piece by piece; per text ``(cleaned translation, reason or None)``.

    Used by stage 2 (native → English) and by the round trip of stage 5. A text fails with the first failing
    piece's reason.
    """
    prompt = get_prompt(prompt_name)
    requests: list[Request] = []
    layout: list[tuple[list[str], int]] = []  # per text: its separators and the index of its first request
    for text, lang, rid in zip(texts, src_langs, ids, strict=True):
        pieces, seps = split_text(text, chunk_chars, len, merge=True)
        layout.append((seps, len(requests)))
        name = language_name(lang)
        for k, piece in enumerate(pieces):
            budget = sampling if tokens_per_char is None else replace(
                sampling, max_tokens=min(sampling.max_tokens, 32 + int(tokens_per_char * len(piece))))
            requests.append(Request(id=f"{rid}#{k}", messages=prompt.render(**{lang_var: name, "text": piece}),
                                    sampling=budget))
    results = stage.ask(requests, stats) if requests else []
    out: list[tuple[str, str | None]] = []
    for seps, first in layout:
        parts, reason = [], None if seps else ck.EMPTY
        for r in results[first : first + len(seps)]:
            cleaned, problem = ck.result_problem(r.text, r.finish_reason, r.error, settings)
            reason = reason or problem
            parts.append(cleaned)
        joined = join_pieces(parts, seps) if reason is None else ""
        if reason is None and len(seps) > 1:
            reason = ck.text_problem(joined, settings=settings)
        out.append((joined, reason))
    return out


def copy_same_language(texts: list[str], src_langs: list[str], tgt_langs: list[str], stats: ShardStats,
                       translate: Callable[[list[int]], list[tuple[str, str | None]]]) -> list[tuple[str, str | None]]:
    """Texts already in the target language are copied (counted as ``copied_same_language``), not sent to a
    model: English data needs no English translation. ``translate(idx)`` translates the others."""
    same = [normalize_lang(s) == normalize_lang(t) for s, t in zip(src_langs, tgt_langs, strict=True)]
    out: list[tuple[str, str | None]] = [(t, None) for t in texts]
    todo = [i for i, s in enumerate(same) if not s]
    if len(todo) < len(texts):
        stats.count("copied_same_language", len(texts) - len(todo))
    if todo:
        for i, res in zip(todo, translate(todo), strict=True):
            out[i] = res
    return out


def mt_translate(mt: Seq2SeqTranslator, texts: list[str], src_langs: list[str], tgt_langs: list[str],
                 settings: CheckSettings, stats: ShardStats) -> list[tuple[str, str | None]]:
    """Translate with a seq2seq model, grouped by direction; per text ``(cleaned translation, reason or None)``."""
    out: list[tuple[str, str | None]] = [("", ck.EMPTY)] * len(texts)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (s, t) in enumerate(zip(src_langs, tgt_langs, strict=True)):
        groups.setdefault((s, t), []).append(i)
    for (src, tgt), idx in groups.items():
        for i, res in zip(idx, mt.translate([texts[i] for i in idx], src, tgt), strict=True):
            stats.count("mt_input_tokens", res.input_tokens)
            stats.count("mt_output_tokens", res.output_tokens)
            out[i] = ck.result_problem(res.text, res.finish_reason, None, settings)
    return out


def input_schema(output: StageOutput) -> pa.Schema | None:
    """The column schema of a finished stage's shards (the first shard that has columns)."""
    for path in output.shards:
        schema = pq.read_schema(path)
        if len(schema):
            return schema.remove_metadata()
    return None


def extend_schema(schema: pa.Schema | None, added: list[tuple[str, pa.DataType]]) -> pa.Schema | None:
    """The schema a stage writes for an empty shard: its input's columns plus the ones it adds."""
    if schema is None:
        return None
    for name, typ in added:
        schema = schema.append(pa.field(name, typ))
    return schema


def run_on(stage: Stage, source: StageOutput, rundir: str | Path, progress: bool) -> StageOutput:
    """Run a stage of this family over a finished output, one process (the engine batches)."""
    stage._input_schema = input_schema(source)
    return run_stage(stage, source.as_source(), rundir, workers=1, progress=progress)


def drop_reasons(batch: pa.Table, reasons: list[str | None], stats: ShardStats) -> tuple[pa.Table, list[int]]:
    """Drop the rows that have a reason, counted under it per language; the rest and their positions."""
    why = pa.array(reasons, pa.string())
    for reason in sorted({r for r in reasons if r is not None}):
        hit = pc.fill_null(pc.equal(why, reason), False)
        batch = stats.drop_mask(batch, hit, reason)
        why = why.filter(pc.invert(hit))
    return batch, [i for i, r in enumerate(reasons) if r is None]


@dataclass
class Translate(TranslatorMixin, LLMStage):
    """Native ``fragment`` → ``response_en`` (plus ``response_en_lid``, LID's probability that it is English)."""

    name = "translate"
    step = 2
    version = "1"
    prompt: str = "translate_to_en"  # a name, name.vN, or a .toml file (see get_prompt)
    max_tokens: int = 1024
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    chunk_chars: int = 1500  # LLM: longer fragments are translated in pieces of whole paragraphs or sentences
    checks: CheckSettings = field(default_factory=CheckSettings)
    lid_model: str = "auto"  # for the English check; "auto" as in stage 1 (lid.choose_model)

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        self._check_translator()
        self.lid_model = resolve_lid(self.lid_model, ENGLISH)

    def params(self) -> dict[str, Any]:
        p = super().params() if self.translator == "llm" else Stage.params(self)
        p["lid_model"] = lid_identity(self.lid_model)
        p["checks"] = asdict(self.checks)  # readable in the manifest (the fingerprint is the same)
        if self.translator == "llm":
            p["prompt"] = get_prompt(self.prompt).identity
        return self._translator_params(p, ["prompt"])

    def setup(self) -> None:
        if self.translator == "llm":
            super().setup()
        elif getattr(self, "_mt", None) is None:
            self._mt = self._load_mt()
        if getattr(self, "_lid", None) is None:
            self._lid = lid.load_identifier(self.lid_model)

    def output_schema(self) -> pa.Schema | None:
        return extend_schema(getattr(self, "_input_schema", None), ADDED)

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                        repetition_penalty=self.repetition_penalty)

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        texts = batch.column("fragment").to_pylist()
        langs = batch.column("lang").to_pylist()
        ids = batch.column("id").to_pylist()

        def run(idx: list[int]) -> list[tuple[str, str | None]]:
            sub_texts, sub_langs = [texts[i] for i in idx], [langs[i] for i in idx]
            if self.translator == "llm":
                return llm_translate(self, sub_texts, sub_langs, [ids[i] for i in idx], self.prompt, self.sampling(),
                                     self.chunk_chars, self.checks, stats, tokens_per_char=self.max_tokens_per_char)
            return mt_translate(self._mt, sub_texts, sub_langs, [ENGLISH] * len(idx), self.checks, stats)

        done = copy_same_language(texts, langs, [ENGLISH] * len(texts), stats, run)
        reasons = [r for _, r in done]
        english = [t for t, _ in done]
        for i, (src, en, lang) in enumerate(zip(texts, english, langs, strict=True)):
            if reasons[i] is None and ck.is_commentary(en):
                reasons[i] = ck.COMMENTARY
            elif reasons[i] is None:
                lo, hi = ck.translation_ratio_bounds(lang, self.checks)
                ratio = len(en) / max(1, len(src))
                reasons[i] = ck.RATIO_LOW if ratio < lo else ck.RATIO_HIGH if ratio > hi else None
        probs = [0.0] * len(texts)
        todo = [i for i, r in enumerate(reasons) if r is None]
        for i, v in zip(todo, ck.language_verdicts([english[i] for i in todo], ENGLISH, self._lid,
                                                      self.checks.min_lid_prob), strict=True):
            probs[i] = v.prob
            if not v.ok:
                reasons[i] = ck.WRONG_LANGUAGE
        batch, kept = drop_reasons(batch, reasons, stats)
        return (batch.append_column("response_en", pa.array([english[i] for i in kept], pa.string()))
                .append_column("response_en_lid", pa.array([probs[i] for i in kept], pa.float32())))


def default_cache() -> str:
    """The request cache ``synth generate`` uses too: a rerun, in any run directory, does not pay twice."""
    from synth.models import cache_dir

    return str(cache_dir() / "llm" / "requests.sqlite")


def _with_cache(settings: dict[str, Any]) -> dict[str, Any]:
    if settings.get("cache", "auto") == "auto":
        settings["cache"] = default_cache()
    return settings


def translate(rundir: str | Path, progress: bool = True, **settings: Any) -> StageOutput:
    """Run stage 2 on the run's current ``01_extract`` and return ``02_translate``.

    ``settings`` are ``Translate``'s fields (engine, model, translator, mt_model, max_tokens, checks…);
    ``cache="auto"`` (the default) uses synth's shared request cache, ``cache=None`` none.
    """
    source = StageOutput.current(rundir, "01_extract")
    return run_on(Translate(**_with_cache(settings)), source, rundir, progress)
