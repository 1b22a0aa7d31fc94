"""Pick the translator, and the teacher, for a language by measurement before the big run.

``pick`` draws a sample of fragments as ``synth extract`` does, then runs each candidate translator through
stage 2 (native → English, with its checks) and through stage 5 with the round trip (that English back into the
language, scored by the fidelity columns and judged by the fidelity gate, then back into English), and each
candidate teacher through stage 3, the judge and the relevance score stage 4 selects on. It measures what the gates
measure (the share each keeps and why the rest left, round-trip similarity, LID of the output, chrF++ of the
native text against its round trip through English; the judge's scores and the share of pairs above the
calibrated relevance threshold), tokens per row and rows per second, and writes ``pick.toml``: the sections ``synth run
--config`` takes, with the choice and the reasons in comments. A language for which no candidate passes gets no
choice, and the file says why.

Every step is a stage run in ``DIR/candidates/<candidate>/``, fingerprinted like a run's: a rerun redoes nothing
that finished, and the model's requests are in the shared cache.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from statistics import median
from typing import Any

from synth.budget import tokens
from synth.config import LISTS, option, split_list
from synth.errors import SynthError
from synth.io import atomic_write_text
from synth.kernel import StageOutput, TableSource
from synth.lang import canonical
from synth.llm.stage import with_cache
from synth.runner import run_on, run_stage
from synth.select.embed import Embed
from synth.select.relevance import calibrated_threshold
from synth.stages.backtranslate import Backtranslate, FidelityThresholds, fidelity_reason
from synth.stages.extract import ExtractSettings, extract
from synth.stages.instruct import Instruct
from synth.stages.score import Score
from synth.stages.translate import Translate


class PickError(SynthError, ValueError):
    """A candidate that cannot be read, or a sample with no fragment."""


def translator_settings(candidate: str) -> dict[str, Any]:
    """The stage settings a candidate names: ``apertium``, ``llm`` (the run's model), ``llm:MODEL`` or
    ``seq2seq:MODEL`` (a directory or hub name)."""
    kind, _, model = candidate.partition(":")
    if kind == "apertium" and not model:
        return {"translator": "apertium"}
    if kind == "llm":
        return {"translator": "llm", **({"model": model} if model else {})}
    if kind == "seq2seq" and model:
        return {"translator": "seq2seq", "mt_model": model}
    raise PickError(f"translator candidate {candidate!r}: give apertium, llm, llm:MODEL or seq2seq:MODEL")


@dataclass
class PickSettings:
    """What ``synth pick`` takes (its options are made from these fields: ``synth.cli.settings``)."""

    lang: str | None = option(None, "The language to pick for (es, sw, swh…).")
    inputs: list[str] | None = option(None, "Corpora to draw the sample from (as `synth extract`). Repeatable.",
                                      flag="--input", alias="-i", many=True, whole=True)
    translators: list[str] = option(["llm"], "Candidates, comma-separated or repeated: apertium, llm (--model), "
                                    "llm:MODEL, seq2seq:MODEL.", **LISTS)
    models: list[str] = option([], "Teacher candidates for stage 3 (comma-separated); none: the teacher is not "
                               "picked.", **LISTS)
    judge: str | None = option(None, "The model that judges every teacher (default: stage 4's).")
    sample: int = option(200, "Fragments in the sample, drawn uniformly over the input as `synth extract "
                         "--sample uniform` draws.")
    seed: int = option(0, "Seed of the sample.")
    min_keep: float = option(0.5, "A candidate passes where each gate keeps at least this share of its rows.")
    min_quality: float = option(3.0, "A teacher passes where the judge's mean score reaches this.")
    min_len: int | None = option(None, "Shortest fragment (characters; as `synth extract`).")
    max_len: int | None = option(None, "Longest fragment.")
    engine: str | None = option(None, "The LLM candidates' engine: hf, vllm or openai (default: as `synth run`).")
    model: str | None = option(None, "The model of the plain 'llm' candidate (default: the run's).")
    cache: str | None = option("auto", "Request cache (sqlite path), 'none', or synth's shared one.")
    extract: dict[str, Any] = field(default_factory=dict)  # more of stage 1's settings, from a config's [pick]
    # The fidelity gate, as stage 5 applies it, except the name check: pick sends whole fragments, whose names a
    # good translator translates (United Nations → Naciones Unidas); how many kept theirs is in the scores.
    fidelity: FidelityThresholds = field(default_factory=lambda: FidelityThresholds(require_entities=False))

    def __post_init__(self) -> None:
        if not self.lang or not self.inputs:
            raise PickError("give --lang and --input (or lang and inputs in the config's [pick])")
        self.lang, self.inputs = canonical(self.lang), [str(p) for p in self.inputs]
        self.translators, self.models = split_list(self.translators) or [], split_list(self.models) or []
        if not self.translators:
            raise PickError("give at least one translator candidate (--translators apertium,llm,…)")
        self.translators = [f"llm:{self.model}" if c == "llm" and self.model else c for c in self.translators]
        for candidate in self.translators:
            translator_settings(candidate)  # a misspelt candidate fails before any model loads
        if isinstance(self.fidelity, dict):
            self.fidelity = FidelityThresholds(**self.fidelity)
        lengths = {k: v for k, v in (("min_len", self.min_len), ("max_len", self.max_len)) if v is not None}
        self.extract = {**self.extract, **lengths}

    def llm(self, model: str | None = None) -> dict[str, Any]:
        """The engine settings of an LLM stage of the pick."""
        out = with_cache({"cache": self.cache}) if self.cache != "none" else {"cache": None}
        return {**out, **({"engine": self.engine} if self.engine else {}), **({"model": model} if model else {})}


@dataclass
class Measured:
    """One candidate: what its gates kept and why the rest left, its quality numbers, its cost, and the verdict."""

    name: str
    role: str  # "translator" or "teacher"
    rows: int = 0  # fragments in
    kept: dict[str, float] = field(default_factory=dict)  # per gate: the share of its input it kept
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # per gate: reason -> rows
    scores: dict[str, float | None] = field(default_factory=dict)  # round trip, chrF++, LID, judge…
    tokens_per_row: float = 0.0
    rows_per_s: float | None = None  # the first complete run's (a rerun answered by the cache is not timed)
    error: str | None = None
    passed: bool = False
    why: str = ""

    @property
    def overall(self) -> float:
        """The share of the sample that came through every gate."""
        share = 1.0
        for k in self.kept.values():
            share *= k
        return share if self.kept and self.error is None else 0.0


@dataclass
class PickResult:
    out: Path
    lang: str
    translators: list[Measured]
    teachers: list[Measured]
    translator: Measured | None  # the choice, or None: no candidate passed
    teacher: Measured | None

    @property
    def toml(self) -> Path:
        return self.out / "pick.toml"


def slug(name: str) -> str:
    """A folder name for a candidate (``llm:/models/x`` → ``llm-models-x``)."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-") or "candidate"


def timed(rundir: Path, make: Any) -> tuple[StageOutput, float]:
    """The stage output ``make`` returns, and the seconds its first complete run took (kept per fingerprint in
    ``seconds.json``: a rerun that finds the output done does not time the cache)."""
    start = time.perf_counter()
    out = make()
    path = rundir / "seconds.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    seconds = known.setdefault(out.fingerprint, round(time.perf_counter() - start, 3))
    atomic_write_text(path, json.dumps(known, indent=1))
    return out, seconds


def _tokens(*outputs: StageOutput) -> int:
    return sum(tokens(o.stats()) for o in outputs)


def _gate(m: Measured, gate: str, rows_in: int, rows_out: int, dropped: dict[str, int]) -> None:
    """Record what one gate kept, and why the rest left; a gate no row reached is not recorded (its verdict is
    the gate before it)."""
    if rows_in:
        m.kept[gate], m.dropped[gate] = rows_out / rows_in, dict(Counter(dropped).most_common())


def _stage_gate(m: Measured, gate: str, out: StageOutput) -> None:
    stats = out.stats()
    _gate(m, gate, stats["rows_in"], stats["rows_out"], stats["dropped"])


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def _chrf(hypotheses: list[str], references: list[str]) -> float | None:
    """chrF++ (sacrebleu, the eval extra) of the native text's round trip against the native text; None without
    sacrebleu or rows."""
    try:
        from synth.eval.metrics import chrf_pp
    except ImportError:
        return None
    return round(chrf_pp(hypotheses, references), 1) if hypotheses else None


def measure_translator(candidate: str, sample: StageOutput, out: Path, settings: PickSettings,
                       progress: bool) -> Measured:
    """Stage 2 over the sample, then stage 5 with the round trip over its English, and the fidelity gate."""
    m = Measured(candidate, "translator", rows=sample.num_rows)
    rundir = out / "candidates" / slug(candidate)
    try:
        stage_settings = {**translator_settings(candidate), "lang": settings.lang}
        if stage_settings["translator"] == "llm":
            stage_settings.update(settings.llm(stage_settings.get("model")))
        english, s2 = timed(rundir, lambda: run_on(Translate(**stage_settings), sample, rundir, progress))
        _stage_gate(m, "translate", english)
        table = english.read()
        table = table.append_column("instruction_en", table.column("response_en"))  # English back into the language
        # Whole fragments, not instructions, go back: the LLM gets stage 2's token budget, not stage 5's.
        back = Backtranslate(**stage_settings, roundtrip=True, max_tokens=Translate.max_tokens)
        back._input_schema = table.schema
        scored, s5 = timed(rundir, lambda: run_stage(back, TableSource(table), rundir, progress=progress))
    except SynthError as e:
        m.error, m.why = str(e), f"failed: {e}"
        return m
    rows = scored.read().to_pylist()
    reasons = [fidelity_reason(r, settings.fidelity) for r in rows]
    _stage_gate(m, "backtranslate", scored)
    _gate(m, "fidelity", len(rows), reasons.count(None), Counter(r for r in reasons if r is not None))
    sims = [r["bt_roundtrip_sim"] for r in rows if r["bt_roundtrip_sim"] is not None]
    m.scores = {"roundtrip_sim": round(median(sims), 3) if sims else None,
                "lid": round(median(r["bt_lid_score"] for r in rows), 3) if rows else None,
                "chrf": _chrf([r["instruction"] for r in rows], [r["fragment"] for r in rows]),
                "names_kept": _share([r["bt_entities_ok"] for r in rows if r["bt_entities_ok"] is not None])}
    m.tokens_per_row = round(_tokens(english, scored) / max(1, m.rows), 1)
    m.rows_per_s = round(m.rows / (s2 + s5), 2) if s2 + s5 > 0 else None
    return m


def measure_teacher(model: str, english: StageOutput, out: Path, settings: PickSettings, progress: bool) -> Measured:
    """Stage 3 over the chosen translator's English, then the judge (the same one for every teacher)."""
    m = Measured(model, "teacher", rows=english.num_rows)
    rundir = out / "candidates" / f"teacher-{slug(model)}"
    try:
        written, s3 = timed(rundir, lambda: run_on(Instruct(**settings.llm(model)), english, rundir, progress))
        judged = run_on(Score(**settings.llm(settings.judge)), written, rundir, progress)
        embedded = run_on(Embed(), judged, rundir, progress)  # the relevance selection reads (calibrated cosine)
    except SynthError as e:
        m.error, m.why = str(e), f"failed: {e}"
        return m
    _stage_gate(m, "instruct", written)
    _stage_gate(m, "score", judged)
    quality = [q for q in judged.read(columns=["quality"]).column("quality").to_pylist() if q is not None]
    relevance = [r for r in embedded.read(columns=["relevance"]).column("relevance").to_pylist() if r is not None]
    bar = calibrated_threshold(Embed().relevance_identity())
    m.scores = {"judge_mean": round(sum(quality) / len(quality), 2) if quality else None,
                "judge_ge_min": _share([q >= settings.min_quality for q in quality]),
                "relevance": round(median(relevance), 3) if relevance else None,
                "relevant": _share([r >= bar for r in relevance]) if bar is not None else None}
    m.tokens_per_row = round(_tokens(written) / max(1, m.rows), 1)
    m.rows_per_s = round(m.rows / s3, 2) if s3 > 0 else None
    return m


def _reasons(dropped: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in list(dropped.items())[:n]) or "none dropped"


def judge(m: Measured, settings: PickSettings) -> Measured:
    """Pass or fail, and why: every gate must keep ``min_keep`` of its input (a teacher's judge mean must reach
    ``min_quality`` too)."""
    if m.error is not None:
        return m
    low = [f"{gate} kept {share:.0%} < {settings.min_keep:.0%} ({_reasons(m.dropped.get(gate, {}))})"
           for gate, share in m.kept.items() if share < settings.min_keep]
    mean = m.scores.get("judge_mean")
    if m.role == "teacher" and (mean is None or mean < settings.min_quality):
        low.append(f"judge mean {mean if mean is not None else '–'} < {settings.min_quality:g}")
    m.passed = not low
    m.why = f"kept {m.overall:.0%} of the sample through every gate" if m.passed else "; ".join(low)
    return m


def best(candidates: list[Measured]) -> Measured | None:
    """The passing candidate that keeps the most rows; ties by its first score, then speed."""
    passing = [c for c in candidates if c.passed]

    def key(c: Measured) -> tuple[float, float, float]:
        return round(c.overall, 2), next(iter(c.scores.values()), None) or 0.0, c.rows_per_s or 0.0

    return max(passing, key=key) if passing else None


def pick(out: str | Path, settings: PickSettings, progress: bool = True) -> PickResult:
    """Measure every candidate on one sample and write ``pick.toml`` and ``pick.json`` in ``out``."""
    out = Path(out)
    extract_settings = ExtractSettings(**{"lang": settings.lang, "fragments": settings.sample, "sample": "uniform",
                                          "seed": settings.seed, **settings.extract})
    sample = extract(settings.inputs, out / "sample", extract_settings, progress=progress)
    if sample.num_rows == 0:
        raise PickError(f"no {settings.lang} fragment in {', '.join(settings.inputs)}: nothing to measure on "
                        f"(see {out / 'sample' / 'stats.json'})")
    translators = [judge(measure_translator(c, sample, out, settings, progress), settings)
                   for c in settings.translators]
    chosen = best(translators)
    teachers: list[Measured] = []
    ran = [c for c in translators if c.error is None]
    if settings.models and not ran:  # no English to write instructions for: the teachers say why
        teachers = [Measured(m, "teacher", error="no translator candidate ran", why="failed: no translator "
                             "candidate produced English to write instructions for") for m in settings.models]
    elif settings.models:
        source = chosen or max(ran, key=lambda c: c.overall)
        english = StageOutput.current(out / "candidates" / slug(source.name), Translate.key)
        teachers = [judge(measure_teacher(m, english, out, settings, progress), settings) for m in settings.models]
    result = PickResult(out, settings.lang, translators, teachers, chosen, best(teachers))
    atomic_write_text(out / "pick.json", json.dumps({"lang": settings.lang, "sample": sample.num_rows,
                                                      "translators": [asdict(t) for t in translators],
                                                      "teachers": [asdict(t) for t in teachers]}, indent=1))
    atomic_write_text(result.toml, pick_toml(result, settings, sample.num_rows))
    return result


def _line(m: Measured, chosen: Measured | None) -> str:
    mark = "  <- chosen" if m is chosen else ""
    if m.error is not None:
        return f"#   {m.name}: {m.why}"
    numbers = [f"{k} {v}" for k, v in m.scores.items() if v is not None]
    return f"#   {m.name}: " + "; ".join([m.why, *numbers, f"{m.tokens_per_row:g} tokens/row"]) + mark


def pick_toml(result: PickResult, settings: PickSettings, n: int) -> str:
    """The sections ``synth run --config`` takes, the measurements in comments."""
    import tomli_w

    lines = [f"# synth pick, {date.today()}: {result.lang}, {n} fragments of {', '.join(settings.inputs)}",
             f"# A candidate passes where each gate keeps at least {settings.min_keep:.0%} of its rows.",
             "# translators:", *(_line(m, result.translator) for m in result.translators)]
    sections: dict[str, dict[str, Any]] = {}
    if result.translator is None:
        lines.append(f"# No translator passed for {result.lang}: none is written; see the reasons above.")
    else:
        chosen = translator_settings(result.translator.name)
        sections["translate"] = sections["backtranslate"] = chosen
    if result.teachers:
        lines += ["# teachers (stage 3, judged by " + (settings.judge or "stage 4's model") + "):",
                  *(_line(m, result.teacher) for m in result.teachers)]
        if result.teacher is None:
            lines.append(f"# No teacher passed for {result.lang}: none is written.")
        else:
            sections["instruct"] = {"model": result.teacher.name}
    return "\n".join(lines) + "\n\n" + tomli_w.dumps(sections)
