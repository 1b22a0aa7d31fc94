"""Stage 1, extract: native fragments in one language from raw corpora.

Two steps, so that what is expensive is done once and what is a choice can be re-run alone:

1. ``Fragments`` (per input part, in parallel): read documents, normalise, cut into paragraph windows,
   identify the language with fastText, keep the target language, compute quality signals and dedup keys.
2. ``Decide`` (cheap, global): apply the LID and quality thresholds, drop exact and near duplicates across
   the whole corpus (keep-first), then sample the target number of fragments. Changing a threshold or the
   target re-runs only this step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synth.config import option
from synth.errors import SynthError
from synth.extract import dedup, lid, quality
from synth.extract.fragment import fragment, normalize
from synth.extract.inputs import InputPart, UnreadableInput, expand_inputs
from synth.extract.readers import plan_parts, read_part
from synth.fingerprint import fingerprint, stable_id
from synth.gate import Gate
from synth.identity import identity
from synth.kernel import Source, Stage, StageOutput, Task
from synth.lang import canonical, letters_fit, script_matches, script_of
from synth.runner import run_stage
from synth.stats import ShardStats

DOC_SCHEMA = pa.schema([("source", pa.string()), ("source_id", pa.string()), ("text", pa.string()),
                        ("error", pa.string()), ("where", pa.string())])


class ExtractError(SynthError, RuntimeError):
    """Extraction cannot go on (no readable input, unknown language…); the message says what and where."""


@dataclass
class ExtractSettings:
    """Everything ``synth extract`` can be told. Data-relevant fields go into the fingerprints."""

    lang: str
    fragments: int | None = None  # target number of fragments; None keeps all that pass
    sample: str = option("first", "'first' (stop once N are kept) or 'uniform' (N drawn over all the input).")
    seed: int = option(0, "Seed for uniform sampling.")
    min_len: int = option(200, "Minimum fragment length (characters, or tokens with --tokenizer).")
    max_len: int = option(2000, "Maximum fragment length.")
    tokenizer: str | None = option(None, "Measure lengths in tokens of this tokenizer (path or hub name).")
    lid_model: str = option("auto", "'auto' (the installed model measured most precise for --lang), 'lid176' "
                            "(bundled), 'heliport' (opt-in extra), 'heliport+lid176' (both must agree), "
                            "'glotlid'/'openlid' (after synth models get), or a fastText model path.")
    lid_threshold: float | None = option(None, "Minimum language-ID score (default: the model's own).")
    min_script_share: float = 0.5
    quality_config: str | None = option(None, "A quality.toml with per-language thresholds.")
    pii: bool = option(False, "Mask emails, phone numbers and IP addresses.")
    dedup: bool = option(True, "Exact and MinHash near-duplicate removal.")
    text_field: str = option("text", "Text field of JSONL/Parquet/datasets inputs.")
    id_field: str | None = option(None, "Field holding each record's own id (kept as source_id).")
    txt_mode: str = option("file", "'file' (one document per .txt) or 'paragraphs' (blank-line separated).")
    max_doc_bytes: int = 20 << 20

    def __post_init__(self) -> None:
        self.lang = canonical(self.lang)  # LanguageError (a SynthError) names a bad code
        if self.lid_model == "auto":
            self.lid_model = lid.choose_model(self.lang)
        if self.lid_threshold is None:
            self.lid_threshold = lid.default_threshold(self.lid_model)
        if self.sample not in ("first", "uniform"):
            raise ExtractError(f"--sample must be 'first' or 'uniform', not {self.sample!r}")
        if self.txt_mode not in ("file", "paragraphs"):
            raise ExtractError(f"--txt-mode must be 'file' or 'paragraphs', not {self.txt_mode!r}")
        if not 0 < self.min_len <= self.max_len:
            raise ExtractError(f"need 0 < min length ({self.min_len}) <= max length ({self.max_len})")


class CorpusSource(Source):
    """Raw files as tasks: one ``InputPart`` each. Bad items come out as rows with an ``error`` reason."""

    def __init__(self, parts: list[InputPart], settings: ExtractSettings, limit: int | None = None) -> None:
        self.parts = parts
        self.settings = settings
        self.limit = limit
        self._fp: str | None = None

    def prefix(self, k: int) -> CorpusSource:
        """The first ``k`` parts; same fingerprint, so shards done for a shorter prefix are reused."""
        src = CorpusSource(self.parts, self.settings, limit=k)
        src._fp = self.fingerprint()
        return src

    def tasks(self) -> list[Task]:
        parts = self.parts if self.limit is None else self.parts[: self.limit]
        return [Task(i, part.key(), part) for i, part in enumerate(parts)]

    def fingerprint(self) -> str:
        if self._fp is None:
            s = self.settings
            ids = {p: identity(p) for p in sorted({part.path for part in self.parts})}
            self._fp = fingerprint({
                "files": ids, "parts": [asdict(p) for p in self.parts], "text_field": s.text_field,
                "id_field": s.id_field, "txt_mode": s.txt_mode, "max_doc_bytes": s.max_doc_bytes,
            })
        return self._fp

    def read(self, task: Task, batch_size: int) -> Iterator[pa.Table]:
        s = self.settings
        rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []

        def on_error(reason: str, where: str) -> None:
            errors.append({"source": task.ref.path, "source_id": None, "text": None, "error": reason,
                           "where": where})

        try:
            for doc in read_part(task.ref, on_error, text_field=s.text_field, id_field=s.id_field,
                                 txt_mode=s.txt_mode, max_doc_bytes=s.max_doc_bytes):
                rows.append({"source": doc.source, "source_id": doc.source_id, "text": doc.text,
                             "error": None, "where": None})
                if len(rows) + len(errors) >= batch_size:
                    yield pa.Table.from_pylist(rows + errors, DOC_SCHEMA)
                    rows, errors = [], []
        except UnreadableInput as e:
            on_error("unreadable_file", str(e))
        if rows or errors:
            yield pa.Table.from_pylist(rows + errors, DOC_SCHEMA)


@dataclass
class Fragments(Stage):
    """Documents → target-language fragments with LID score, quality signals and dedup keys."""

    key = "01_fragments"
    version = "2"  # 2: the letter check on wrong_script (Arabic, Russian)
    lang: str = "swh"
    min_len: int = 200
    max_len: int = 2000
    tokenizer: str | None = None
    lid_model: str = "lid176"
    min_script_share: float = 0.5
    pii: bool = False
    minhash: dedup.MinHashSettings = field(default_factory=dedup.MinHashSettings)
    lid_path: str | None = field(default=None, metadata={"fingerprint": False})  # identity is in lid_model

    def setup(self) -> None:
        self._lid = lid.load_identifier(self.lid_path)
        self._measure = len
        if self.tokenizer:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.tokenizer)
            self._measure = lambda text: len(tok.encode(text, add_special_tokens=False))

    def output_schema(self) -> pa.Schema:
        return fragment_schema()

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        frags: list[dict[str, Any]] = []
        for doc in batch.to_pylist():
            if doc["error"] is not None:
                stats.drop(doc["error"], where=doc["where"])
                continue
            text = normalize(doc["text"])
            if not text:
                stats.drop("empty_document", where=f"{doc['source']}:{doc['source_id']}")
                continue
            stats.count("documents")
            stats.count("document_chars", len(text))
            for i, frag in enumerate(fragment(text, self.min_len, self.max_len, self._measure)):
                if self._measure(frag) < self.min_len:
                    stats.drop("fragment_too_short")
                    continue
                frags.append({"source": doc["source"], "source_id": doc["source_id"], "frag_index": i,
                              "fragment": frag})
        if not frags:
            return fragment_schema().empty_table()
        preds = self._lid.predict([f["fragment"] for f in frags])
        kept = []
        for f, (label, score) in zip(frags, preds, strict=True):
            if label != self.lang:
                stats.drop("other_language", label)
                continue
            script, share = script_of(f["fragment"])
            fits = script_matches(self.lang, script) and letters_fit(self.lang, f["fragment"])
            if not fits or share < self.min_script_share:
                stats.drop("wrong_script", label)
                continue
            if self.pii:
                f["fragment"], n = quality.mask_pii(f["fragment"])
                stats.count("pii_masked", n)
            f.update(id=stable_id(f["source"], f["source_id"], f["frag_index"]), lang=label,
                     lid_score=float(score), chars=len(f["fragment"]))
            kept.append(f)
        if not kept:
            return fragment_schema().empty_table()
        texts = [f["fragment"] for f in kept]
        base = pa.Table.from_pylist(kept, pa.schema([fragment_schema().field(n) for n in BASE_COLUMNS]))
        signals = quality.signals_table(texts)
        exact = pa.array([dedup.exact_hash(t) for t in texts], pa.int64())
        bands = dedup.band_keys(texts, self.minhash)
        minhash = pa.FixedSizeListArray.from_arrays(pa.array(bands.reshape(-1)), self.minhash.bands)
        table = base
        for name in signals.column_names:
            table = table.append_column(name, signals.column(name))
        table = table.append_column("dedup_exact", exact).append_column("minhash", minhash)
        return table.select(fragment_schema().names).cast(fragment_schema())


BASE_COLUMNS = ["id", "lang", "fragment", "lid_score", "source", "source_id", "frag_index", "chars"]


@cache
def fragment_schema() -> pa.Schema:
    """The columns of stage 1's fragments (made on first use: the quality signals are probed, which loads
    pyarrow's compute kernels, and ``synth --help`` imports this module)."""
    base = [("id", pa.string()), ("lang", pa.string()), ("fragment", pa.string()), ("lid_score", pa.float32()),
            ("source", pa.string()), ("source_id", pa.string()), ("frag_index", pa.int32()),
            ("chars", pa.int32())]
    signals = quality.signals_table(["schema probe text"]).schema
    extra = [("dedup_exact", pa.int64()),
             ("minhash", pa.list_(pa.int64(), dedup.MinHashSettings().bands))]
    return pa.schema([*base, *signals, *extra])



@dataclass
class Decide(Gate):
    """Applies the global decisions (thresholds, dedup, sampling) computed over all fragments by ``decide``."""

    key = "01_extract"
    version = "1"
    SETTINGS = ExtractSettings  # what [extract] holds: the driver (synth.pipeline) decides, then runs this
    decisions: str = ""  # fingerprint of the decision settings and the number of parts they cover
    reasons: dict[str, str] = field(default_factory=dict, metadata={"fingerprint": False})

    def decision(self) -> dict[str, str]:
        return self.reasons

    def finish(self, batch: pa.Table, reasons: list[str | None], stats: ShardStats) -> pa.Table:
        return batch.drop_columns(["minhash"])

    def output_schema(self) -> pa.Schema:
        return fragment_schema().remove(fragment_schema().get_field_index("minhash"))


def decide(fragments: StageOutput, s: ExtractSettings) -> dict[str, str]:
    """The reason each fragment leaves at step 2 (id → reason); kept ones are absent. Order: LID score,
    quality, duplicates (among fragments that passed so far), sampling."""
    table = fragments.read(columns=["id", "lid_score", "dedup_exact", "minhash", *quality.SIGNALS])
    n = table.num_rows
    if n == 0:
        return {}
    th = quality.load_thresholds(s.lang, s.quality_config)
    reason: list[str | None] = quality.failed_reasons(table.select(list(quality.SIGNALS)), th).to_pylist()
    for i, low in enumerate(table.column("lid_score").to_numpy() < s.lid_threshold):
        if low:
            reason[i] = "lid_score_low"
    if s.dedup:
        candidate = np.array([r is None for r in reason])
        bands = np.asarray(table.column("minhash").combine_chunks().flatten()).reshape(n, -1)
        dup = dedup.find_duplicates(table.column("dedup_exact").to_numpy(), bands, candidate)
        for i in np.flatnonzero(dup):
            reason[i] = dedup.REASONS[int(dup[i])]
    kept = [i for i, r in enumerate(reason) if r is None]
    ids = table.column("id").to_pylist()
    if s.fragments is not None and len(kept) > s.fragments:
        if s.sample == "first":
            leave, why = kept[s.fragments:], "over_target"
        else:  # the N kept fragments with the smallest seeded hash: uniform, and independent of order
            rank = np.array([int.from_bytes(hashlib.blake2b(f"{s.seed}:{ids[i]}".encode(), digest_size=8)
                                            .digest(), "little") for i in kept], dtype=np.uint64)
            leave, why = [kept[j] for j in np.argsort(rank, kind="stable")[s.fragments:]], "not_sampled"
        for i in leave:
            reason[i] = why
    return {ids[i]: r for i, r in enumerate(reason) if r is not None}


def _kept(reasons: dict[str, str], fragments: StageOutput) -> int:
    return fragments.num_rows - len(reasons)


def extract(
    inputs: list[str],
    rundir: str | Path,
    settings: ExtractSettings,
    workers: int = 1,
    progress: bool = True,
) -> StageOutput:
    """Run stage 1 and return the decided fragments. With ``sample="first"`` reading stops once enough are kept."""
    try:
        files = expand_inputs(inputs)
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from e
    if not files:
        raise ExtractError(f"no input files found in {', '.join(inputs)}")
    parts = plan_parts(files, txt_mode=settings.txt_mode)
    source = CorpusSource(parts, settings)
    lid_path = None if settings.lid_model == "lid176" else settings.lid_model
    stage = Fragments(lang=settings.lang, min_len=settings.min_len, max_len=settings.max_len,
                      tokenizer=settings.tokenizer, lid_model=lid.identity(settings.lid_model),
                      min_script_share=settings.min_script_share, pii=settings.pii, lid_path=lid_path)
    warn = lid.weakness(settings.lang, stage.lid_model)
    if warn:
        from synth.progress import console

        console.print(f"warning: {warn}", style="yellow", markup=False)

    k = len(parts)
    if settings.fragments is not None and settings.sample == "first":
        k = min(len(parts), max(2 * workers, 4))
    while True:
        frags = run_stage(stage, source.prefix(k), rundir, workers=workers, progress=progress)
        reasons = decide(frags, settings)
        if k >= len(parts) or _kept(reasons, frags) >= (settings.fragments or 0):
            break
        k = min(len(parts), 2 * k)
    _check_readable(frags)
    decision_fp = fingerprint({k_: v for k_, v in asdict(settings).items()
                               if k_ not in ("text_field", "id_field", "txt_mode", "max_doc_bytes")} | {"parts": k})
    return run_stage(Decide(decisions=decision_fp, reasons=reasons), frags.as_source(), rundir, workers=1,
                     progress=progress)


def _check_readable(frags: StageOutput) -> None:
    """Stop with a clear message when not one input part could be read."""
    stats = frags.stats()
    if stats["rows_out"] == 0 and stats["dropped"].get("unreadable_file", 0) >= len(frags.shards):
        where = "; ".join(e["where"] for e in stats["examples"] if e["reason"] == "unreadable_file")
        raise ExtractError(f"no input could be read: {where}")
