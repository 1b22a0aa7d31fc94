"""``synth audit``: synth's row checks on any instruction dataset, so a translated baseline or a third-party set is
filtered by the same gate as synth's own rows.

Input: JSONL, JSON or Parquet files (or a folder of them, or a synth ``final/``) whose rows are in one of the
forms trainers use: ``messages`` (role/content), sharegpt ``conversations`` (from/value), alpaca
(``instruction``, ``input``, ``output``) or flat (``instruction``, ``response``). The first user turn is the
instruction and the assistant turn after it the response. A row that is none of these, or a line that is not
JSON, stays in the audit as dropped, with the reason (``malformed_json``, ``no_pair``) and where it was.

The checks, in the order a row is judged (it is dropped under the first it fails): lengths, an instruction
that copies its response or echoes a prompt, an instruction that is not a user's request, the response's
language, the instruction's fidelity as stage 5 gates it (language and script, length ratio, numbers and names
of the English kept, round trip with ``--translator``), a response cut mid-sentence, the response's text
quality as stage 1 measures it (boilerplate, repetition…), and relevance (``off_topic``). English versions of
both sides (``instruction_en``, ``response_en``, as a synth export has them) feed relevance and fidelity; where a
row has none, ``translator`` makes them, else those checks are skipped for it (counted). ``judge`` adds the LLM
judge and ``min_quality``.

Steps are runner stages in the output folder, so an audit is resumable and a second one with other thresholds
recomputes nothing it need not: ``Audit`` (score and mark), the judge (stage 4's ``Score``), ``Keep`` (the rows
that pass). ``audit.parquet`` has every input row's ``id``, ``keep`` and ``reason`` with the scores; ``final/``
the kept rows in synth's final schema; ``report.html`` the drop reasons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth import checks as ck
from synth.checks import CheckSettings
from synth.errors import SynthError
from synth.extract import lid, quality
from synth.gate import Check, Gate
from synth.identity import identity
from synth.io import atomic_write_bytes
from synth.kernel import Stage, TableSource
from synth.lang import ENGLISH, canonical
from synth.llm.stage import LLMStage
from synth.runner import run_on, run_stage
from synth.select import relevance as rel
from synth.select.embed import load_model as load_embedder
from synth.select.embed import resolve_embedding_model
from synth.stages.backtranslate import FIDELITY_COLUMNS, FidelityThresholds, cosine, fidelity_reason, fidelity_scores
from synth.stats import ShardStats
from synth.translate import TranslatorSettings, backend_fields

MALFORMED_JSON = "malformed_json"
NO_PAIR = "no_pair"
RESPONSE_TOO_SHORT = "response_too_short"
RESPONSE_WRONG_LANGUAGE = "response_wrong_language"
QUALITY_MISSING = "quality_missing"
QUALITY_BELOW_MIN = "quality_below_min"
FILES = (".jsonl", ".json", ".parquet")
USER = ("user", "human")
ASSISTANT = ("assistant", "gpt", "model", "bot")

INPUT_COLUMNS = [("id", pa.string()), ("lang", pa.string()), ("instruction", pa.string()),
                 ("fragment", pa.string()), ("instruction_en", pa.string()), ("response_en", pa.string()),
                 ("source", pa.string()), ("source_id", pa.string()), ("input_error", pa.string())]
SCORE_COLUMNS = [*FIDELITY_COLUMNS[1:], ("english", pa.bool_()), ("response_lid_label", pa.string()),
                 ("response_lid_score", pa.float32()), ("response_quality", pa.string()),
                 ("response_truncated", pa.bool_()), ("copy_share", pa.float32()), ("relevance", pa.float32()),
                 ("reason", pa.string())]


class AuditError(SynthError, ValueError):
    """The input cannot be audited (no file, no readable row); the message says which file and why."""


# ---------------------------------------------------------------------------------------------- reading


def pair_of(record: Any) -> tuple[str, str] | None:
    """(instruction, response) of one record in any supported form, or None when it has no such pair."""
    if not isinstance(record, dict):
        return None
    turns = record.get("messages") or record.get("conversations")
    if isinstance(turns, list):
        said = [(str(t.get("role") or t.get("from") or "").lower(), t.get("content", t.get("value")))
                for t in turns if isinstance(t, dict)]
        first = next((i for i, (role, _) in enumerate(said) if role in USER), None)
        if first is None or first + 1 >= len(said) or said[first + 1][0] not in ASSISTANT:
            return None
        ask, answer = said[first][1], said[first + 1][1]
    elif "output" in record and "instruction" in record:  # alpaca: the input is part of the request
        ask = "\n\n".join(str(x) for x in (record.get("instruction"), record.get("input")) if x)
        answer = record.get("output")
    else:
        ask, answer = record.get("instruction", record.get("prompt")), record.get("response", record.get("completion"))
    if not isinstance(ask, str) or not isinstance(answer, str) or not ask.strip() or not answer.strip():
        return None
    return ask.strip(), answer.strip()


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise AuditError(f"{path}: no such file or folder")
    root = path / "data" if (path / "data").is_dir() else path  # a synth final/ keeps its rows in data/
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in FILES and not p.name.startswith("."))
    if not found:
        raise AuditError(f"{path}: no {', '.join(FILES)} file to audit")
    return found


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for each row of one file; a line that is not JSON gives (where, None)."""
    if path.suffix == ".parquet":
        try:
            f = pq.ParquetFile(path)
        except Exception as e:
            raise AuditError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e
        n = 0
        for batch in f.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                n += 1
                yield f"{path.name}:{n}", rec
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(1 << 16).lstrip()
        fh.seek(0)
        if path.suffix == ".json" and head.startswith("["):  # alpaca files are one JSON array
            try:
                rows = json.load(fh)
            except json.JSONDecodeError as e:
                raise AuditError(f"{path}: not valid JSON ({e})") from e
            for i, rec in enumerate(rows, 1):
                yield f"{path.name}:{i}", rec
            return
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{i}", json.loads(line)
            except json.JSONDecodeError:
                yield f"{path.name}:{i}", None


def read_pairs(path: str | Path, lang: str) -> pa.Table:
    """Every row of ``path`` as synth's row schema (``INPUT_COLUMNS``); rows that give no pair keep their place
    with ``input_error`` set. ``id``: the row's own, else where it was (file:line)."""
    lang = canonical(lang)
    cols: dict[str, list[Any]] = {name: [] for name, _ in INPUT_COLUMNS}
    seen: set[str] = set()
    for file in _files(Path(path)):
        for where, rec in _records(file):
            pair = pair_of(rec)
            own = rec.get("id") if isinstance(rec, dict) else None
            row_id = str(own) if own is not None and str(own) not in seen else where
            seen.add(row_id)
            en = rec if isinstance(rec, dict) else {}
            values = {"id": row_id, "lang": canonical(en["lang"]) if isinstance(en.get("lang"), str) else lang,
                      "instruction": pair[0] if pair else None, "fragment": pair[1] if pair else None,
                      "instruction_en": en.get("instruction_en") if pair else None,
                      "response_en": en.get("response_en") if pair else None, "source": file.name,
                      "source_id": where,
                      "input_error": None if pair else (MALFORMED_JSON if rec is None else NO_PAIR)}
            for k, v in values.items():
                cols[k].append(v)
    if not cols["id"]:
        raise AuditError(f"{path}: no rows")
    return pa.table({name: pa.array(cols[name], typ) for name, typ in INPUT_COLUMNS})


# ---------------------------------------------------------------------------------------------- checks


def _too_short(row: dict[str, Any], s: Audit) -> bool:
    text = row["instruction"]
    return len(text) < s.checks.min_instruction_chars or len(ck.tokens(text)) < s.checks.min_instruction_words


def _copies(row: dict[str, Any], s: Audit) -> bool:
    return any(m in row["instruction"] for m in ck.ECHO_MARKERS) or (row["copy_share"] or 0.0) > s.checks.max_copy_share


def _not_user(row: dict[str, Any], s: Audit) -> bool:
    return row["english"] and ck.is_not_user_voice(row["instruction_en"])


def _response_language(row: dict[str, Any], s: Audit) -> bool:
    return row["response_lid_label"] != row["lang"] or (row["response_lid_score"] or 0.0) < s.checks.min_lid_prob


def _fidelity(row: dict[str, Any], s: Audit) -> bool:
    return fidelity_reason(row, s.fidelity) is not None


def _off_topic(row: dict[str, Any], s: Audit) -> bool:
    return isinstance(s.min_relevance, float) and row["relevance"] is not None and row["relevance"] < s.min_relevance


# The audit's check list, in the order a row is judged. Two lines name a reason found while scoring: the input's
# own error, the fidelity check that failed (stage 5's reasons) and the response's quality check (stage 1's).
CHECKS = (
    Check("input_error", lambda row, s: row["input_error"] is not None),
    Check(ck.TOO_SHORT, _too_short, "checks"),
    Check(ck.TOO_LONG, lambda row, s: len(row["instruction"]) > s.checks.max_instruction_chars, "checks"),
    Check(RESPONSE_TOO_SHORT, lambda row, s: len(row["fragment"]) < s.min_response_chars, "min_response_chars"),
    Check(ck.COPIES_RESPONSE, _copies, "checks"),
    Check(ck.NOT_USER_VOICE, _not_user),
    Check(RESPONSE_WRONG_LANGUAGE, _response_language, "checks"),
    Check("fidelity", _fidelity, "fidelity"),
    Check(ck.TRUNCATED_RESPONSE, lambda row, s: row["response_truncated"]),
    Check("response_quality", lambda row, s: row["response_quality"] is not None),
    Check(rel.OFF_TOPIC, _off_topic, "min_relevance"),
)


def audit_reason(row: dict[str, Any], s: Audit) -> str | None:
    """The reason of the first check ``row`` fails (the specific one where a line stands for several), or None."""
    for check in CHECKS:
        if check.fails(row, s):
            if check.reason == "input_error":
                return row["input_error"]
            if check.reason == "fidelity":
                return fidelity_reason(row, s.fidelity)
            if check.reason == "response_quality":
                return f"response_{row['response_quality']}"
            return check.reason
    return None


@dataclass
class Audit(TranslatorSettings, LLMStage):
    """Scores every row and gives each its reason (``reason``: null when it passes); no row leaves here."""

    key = "01_audit"
    version = "1"
    translator: str | None = None  # None: rows without English versions skip relevance and fidelity
    prompt: str = "translate_to_en"  # the LLM translator's prompt (into English)
    checks: CheckSettings = field(default_factory=CheckSettings)
    fidelity: FidelityThresholds = field(default_factory=FidelityThresholds)
    min_response_chars: int = 20
    quality_config: str | None = None  # stage 1's per-language thresholds (default: the bundled quality.toml)
    lid_model: str = "auto"
    embedder: str = "default"
    relevance_model: str | None = None  # a cross-encoder or reranker; default: the embedder's cosine
    min_relevance: float | str | None = rel.AUTO
    embed_device: str | None = field(default=None, metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        if isinstance(self.fidelity, dict):
            self.fidelity = FidelityThresholds(**self.fidelity)
        self.min_relevance = rel.parse_min_relevance(self.min_relevance)
        if self.min_relevance == rel.AUTO:
            self.min_relevance = rel.calibrated_threshold(self.relevance_identity())
        if self.translator is not None:
            self.translator_for()  # settings that cannot work fail here

    def relevance_identity(self) -> str:
        return identity(self.relevance_model or resolve_embedding_model(self.embedder))

    def params(self) -> dict[str, Any]:
        if self.translator is not None:
            p = self.translation_params()
        else:  # no model: none of the LLM's or the translators' settings name the rows
            llm = {f.name for f in fields(LLMStage)} | backend_fields() | {"prompt", "max_tokens_per_char"}
            p = {k: v for k, v in Stage.params(self).items() if k not in llm}
        lid_model = {"auto": lid.installed_models()} if self.lid_model == "auto" else lid.identity(self.lid_model)
        p.update(checks=asdict(self.checks), fidelity=asdict(self.fidelity), relevance=self.relevance_identity(),
                 lid_model=lid_model)
        p.pop("embedder", None)
        p.pop("relevance_model", None)
        return p

    def placement(self) -> Any:
        return self.translator_for().placement() if self.translator is not None else None

    def facts(self, gpus: list) -> dict[str, Any]:
        return self.translator_for().facts(gpus) if self.translator is not None else {}

    def setup(self) -> None:
        if self.translator is not None and getattr(self, "_translator", None) is None:
            self._translator = self.translator_for()
            self._translator.setup()
        if getattr(self, "_embedder", None) is None:
            self._embedder = load_embedder(self.embedder, self.embed_device or "cpu")
            self._judge = (rel.load_cross_encoder(self.relevance_model, self.embed_device or "cpu")
                           if self.relevance_model else None)
            self._lids: dict[str, Any] = {}

    def teardown(self) -> None:
        if getattr(self, "_translator", None) is not None:
            self._translator.close()
        self._translator = None

    def _identifier(self, lang: str) -> Any:
        name = lid.resolve(self.lid_model, lang)
        if name not in self._lids:
            self._lids[name] = lid.load_identifier(name)
        return self._lids[name]

    def output_schema(self) -> pa.Schema | None:
        return None

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        rows = batch.to_pylist()
        ok = [i for i, r in enumerate(rows) if r["input_error"] is None]
        for r in rows:
            r.update({name: None for name, _ in SCORE_COLUMNS})
        self._english([rows[i] for i in ok], stats)
        self._languages([rows[i] for i in ok])
        self._fidelity([rows[i] for i in ok], stats)
        self._relevance([rows[i] for i in ok], stats)
        for r in (rows[i] for i in ok):
            r["copy_share"] = max(ck.copy_share(r["instruction"], r["fragment"]),
                                  ck.copy_share(r["instruction_en"], r["response_en"]) if r["english"] else 0.0)
            r["response_truncated"] = ck.looks_truncated(r["fragment"])
        reasons = [audit_reason(r, self) for r in rows]
        for r, reason in zip(rows, reasons, strict=True):
            r["reason"] = reason
        stats.mark_reasons(batch, reasons)
        schema = pa.schema([*INPUT_COLUMNS, *SCORE_COLUMNS])
        return pa.Table.from_pylist(rows, schema=schema)

    def _english(self, rows: list[dict[str, Any]], stats: ShardStats) -> None:
        """English versions of both sides: English rows are their own; missing ones by the translator."""
        for side, en in (("instruction", "instruction_en"), ("fragment", "response_en")):
            todo = [r for r in rows if not r[en] and (r["lang"] == ENGLISH or self.translator is None)]
            for r in todo:
                r[en] = r[side] if r["lang"] == ENGLISH else None
            todo = [r for r in rows if not r[en]]
            if todo and self.translator is not None:
                done = self._translator.translate([r[side] for r in todo], [r["lang"] for r in todo],
                                                  [ENGLISH] * len(todo), [f"{r['id']}:{en}" for r in todo], stats)
                for r, (text, reason) in zip(todo, done, strict=True):
                    r[en] = text if reason is None else None
                    if reason is not None:
                        stats.count(f"translation_failed_{reason}")
        for r in rows:
            r["english"] = bool(r["instruction_en"] and r["response_en"])
        stats.count("no_english", sum(not r["english"] for r in rows))

    def _languages(self, rows: list[dict[str, Any]]) -> None:
        """LID of both sides, stage 1's text quality of the response."""
        for lang in sorted({r["lang"] for r in rows}):
            mine = [r for r in rows if r["lang"] == lang]
            for side, label, score in (("instruction", "bt_lid_label", "bt_lid_score"),
                                       ("fragment", "response_lid_label", "response_lid_score")):
                verdicts = ck.language_verdicts([r[side] for r in mine], lang, self._identifier(lang), 0.0)
                for r, v in zip(mine, verdicts, strict=True):
                    r[label], r[score] = v.label, v.prob
            failed = quality.failed_reasons(quality.signals_table([r["fragment"] for r in mine]),
                                            quality.load_thresholds(lang, self.quality_config)).to_pylist()
            for r, reason in zip(mine, failed, strict=True):
                r["response_quality"] = reason

    def _fidelity(self, rows: list[dict[str, Any]], stats: ShardStats) -> None:
        """Stage 5's fidelity columns of the instruction against its English; the round trip by the translator."""
        for r in rows:
            r["bt_length_ratio"] = 1.0  # nothing to compare where there is no English of the instruction
            if r["instruction_en"] and r["lang"] != ENGLISH:
                r.update(fidelity_scores(r["instruction_en"], r["instruction"], r["lang"]))
            else:
                r["bt_script_ok"] = fidelity_scores(r["instruction"], r["instruction"], r["lang"])["bt_script_ok"]
        trip = [r for r in rows if r["lang"] != ENGLISH and r["instruction_en"]]
        if self.translator is None or not trip:
            return
        back = self._translator.translate([r["instruction"] for r in trip], [r["lang"] for r in trip],
                                          [ENGLISH] * len(trip), [f"{r['id']}:back" for r in trip], stats,
                                          counted=False)
        done = [(r, text) for r, (text, reason) in zip(trip, back, strict=True) if reason is None]
        for r, _ in zip(trip, back, strict=True):
            r["bt_roundtrip_sim"] = 0.0  # a failed round trip keeps nothing of the meaning
        if done:
            a = self._embedder.encode([r["instruction_en"] for r, _ in done], convert_to_numpy=True)
            b = self._embedder.encode([text for _, text in done], convert_to_numpy=True)
            for (r, text), sim in zip(done, cosine(a, b).tolist(), strict=True):
                r["bt_roundtrip"], r["bt_roundtrip_sim"] = text, sim

    def _relevance(self, rows: list[dict[str, Any]], stats: ShardStats) -> None:
        scored = [r for r in rows if r["english"]]
        if not scored:
            return
        asks, answers = [r["instruction_en"] for r in scored], [r["response_en"] for r in scored]
        found = (rel.cross_encoder_scores(self._judge, asks, answers) if self._judge is not None
                 else rel.bi_encoder_scores(self._embedder, asks, answers))
        for r, v in zip(scored, found.tolist(), strict=True):
            r["relevance"] = v
        stats.count("relevance_scored", len(scored))


def final_reason(row: dict[str, Any], min_quality: float | None, judged: bool) -> str | None:
    """The audit's reason, else the judge's: no score, or a score below ``min_quality``."""
    if row.get("reason") is not None or not judged:
        return row.get("reason")
    if row.get("quality") is None:
        return QUALITY_MISSING
    return QUALITY_BELOW_MIN if min_quality is not None and row["quality"] < min_quality else None


@dataclass
class Keep(Gate):
    """The rows that pass every check (and the judge): the others leave, counted under their reason."""

    key = "06_keep"
    version = "1"
    min_quality: float | None = 3.0
    judged: bool = False

    def decide(self, batch: pa.Table) -> list[str | None]:
        cols = [c for c in ("reason", "quality") if c in batch.column_names]
        return [final_reason(r, self.min_quality, self.judged) for r in batch.select(cols).to_pylist()]


@dataclass
class AuditResult:
    table: Path  # audit.parquet
    final: Path  # final/
    report: Path  # report.html
    rows: int
    kept: int
    reasons: dict[str, int]


def audit(input: str | Path, out: str | Path, lang: str, settings: dict[str, Any] | None = None,
          judge: dict[str, Any] | None = None, min_quality: float | None = 3.0,
          progress: bool = True) -> AuditResult:
    """Audit the pairs in ``input`` into ``out``: ``settings`` for ``Audit`` (translator, thresholds, models),
    ``judge`` (the ``Score`` stage's settings: engine, model…) to judge the pairs too, ``min_quality`` its bar."""
    from synth.export import ExportSettings, export
    from synth.report import run_card, write_report
    from synth.stages.score import Score

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = read_pairs(input, lang)
    stage = Audit(**{"lang": canonical(lang), **(settings or {})})
    checked = run_stage(stage, TableSource(table), out, progress=progress)
    scored = run_on(Score(**judge), checked, out, progress) if judge is not None else checked
    kept = run_on(Keep(min_quality=min_quality, judged=judge is not None), scored, out, progress)
    columns = ["id", "source_id", "lang", "reason", *(["quality"] if judge is not None else []),
               *(name for name, _ in SCORE_COLUMNS if name != "reason")]
    rows = scored.read(columns=columns)
    reasons = [final_reason(r, min_quality, judge is not None) for r in rows.select(["reason", *(
        ["quality"] if judge is not None else [])]).to_pylist()]
    rows = rows.drop_columns(["reason"])
    rows = rows.add_column(1, "keep", pa.array([r is None for r in reasons], pa.bool_()))
    rows = rows.add_column(2, "reason", pa.array(reasons, pa.string()))
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink)
    atomic_write_bytes(out / "audit.parquet", sink.getvalue().to_pybytes())
    final = export(kept, out, ExportSettings(name=f"audit of {Path(input).name}"), card=run_card(out))
    report = write_report(out, final, title=f"synth audit: {Path(input).name}")
    counts: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return AuditResult(out / "audit.parquet", final, report, len(reasons), reasons.count(None),
                       dict(sorted(counts.items(), key=lambda kv: -kv[1])))
