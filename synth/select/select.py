"""Stage 4, select: keep the best-scored rows that are not too much alike. Cheap, global, re-runnable; never
calls an LLM.

Two steps, as in extract: ``decide`` reads the judge's ``quality`` and the ``embedding`` of every scored row and
decides once, globally, which rows are kept; the ``Mark`` stage then writes stage 4's selection with
three columns added to *every* row: ``selected`` (bool), ``cluster`` (int32, -1 when none) and
``select_reason`` (null when kept). Nothing is deleted, so a later selection with other settings sees all rows;
the stats count the rows not selected as marked (they are not dropped: they leave at stage 5, as
``not_selected``) under their reason, per language. Changing a threshold, the target or the method re-runs
only this step: the embeddings and judge scores are read, not recomputed.

Priority order: the rank score descending, ties broken by ``id`` ascending. The rank score is the judge's
expected score ``quality_expected`` (the mean of 1-5 under the judge's probabilities, DEITA-style; finer than the
integer, which most rows of a weak judge share) where the score stage computed it, the integer ``quality``
otherwise; ``rank_by="quality"`` ranks by the integer alone. Reasons, in the order they are
checked: ``quality_missing`` (null/NaN score: the judge's answer did not parse), ``quality_below_min``,
``embedding_missing`` (the row had no text to embed), then by method ``near_duplicate`` / ``too_similar`` /
``cluster_quota``, then ``lang_quota`` (per-language cap reached) and ``over_target`` (the target was reached
before this row's turn).

The settings and reasons: ``synth.select.settings``; the methods (greedy, dedup, kmeans, none) over arrays:
``synth.select.methods``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.fingerprint import fingerprint
from synth.gate import Gate
from synth.kernel import StageOutput
from synth.runner import run_stage
from synth.select.methods import select_arrays
from synth.select.relevance import AUTO, RELEVANCE, calibrated_threshold
from synth.select.settings import ALGORITHM, REASONS, SelectError, SelectSettings
from synth.stats import UNKNOWN_LANG, ShardStats

# --- reading the scored rows, and the stage that marks them ---------------------------------------------------


@dataclass
class Selection:
    """What ``decide`` found: the reason each row is not selected (kept rows are absent) and clusters."""

    reasons: dict[str, str]
    clusters: dict[str, int]
    rows: int
    selected: int
    info: dict[str, Any] = field(default_factory=dict)


def _schema(scored: StageOutput) -> pa.Schema | None:
    for path in scored.shards:
        schema = pq.read_schema(path)
        if len(schema):
            return schema
    return None


def decide(scored: StageOutput, s: SelectSettings) -> Selection:
    """Read ids, ``quality``, ``lang`` and ``embedding`` of every scored row and decide the selection."""
    schema = _schema(scored)
    if schema is None or scored.num_rows == 0:
        return Selection({}, {}, rows=0, selected=0, info={"eligible": 0})
    names = set(schema.names)
    if "id" not in names:
        raise SelectError(f"{scored.dir}: no 'id' column to mark rows by")
    if "quality" not in names:
        raise SelectError(f"{scored.dir}: no 'quality' column; run the LLM judge (synth score) before selecting")
    qtype = schema.field("quality").type
    if not (pa.types.is_floating(qtype) or pa.types.is_integer(qtype) or pa.types.is_null(qtype)):
        raise SelectError(f"{scored.dir}: 'quality' must be numeric, not {qtype}")
    needs_emb = s.method != "none"
    if needs_emb and "embedding" not in names:
        raise SelectError(f"{scored.dir}: no 'embedding' column; method {s.method!r} needs the embed step "
                          "(synth.select.Embed) before selecting, or use method 'none'")
    expected = s.rank_by == "expected" and "quality_expected" in names
    scored_relevance = RELEVANCE in names and isinstance(s.min_relevance, float)
    cols = (["id", "quality"] + (["quality_expected"] if expected else []) + (["lang"] if "lang" in names else [])
            + ([RELEVANCE] if scored_relevance else []))
    shards = [p for p, meta in zip(scored.shards, scored.manifest["shards"], strict=True) if meta["rows"]]
    table = pa.concat_tables([pq.read_table(p, columns=cols) for p in shards])
    n = table.num_rows
    ids = table.column("id")
    if ids.null_count:
        raise SelectError(f"{scored.dir}: {ids.null_count} rows have no id")
    tiebreak = np.empty(n, dtype=np.int64)
    tiebreak[pc.sort_indices(ids).to_numpy()] = np.arange(n)
    if pc.count_distinct(ids).as_py() != n:
        raise SelectError(f"{scored.dir}: ids are not unique; selection marks rows by id")
    quality = pc.cast(table.column("quality"), pa.float64()).to_numpy(zero_copy_only=False)
    quality = np.where(np.isfinite(quality), quality, np.nan)
    rank = (pc.cast(table.column("quality_expected"), pa.float64()).to_numpy(zero_copy_only=False)
            if expected else None)
    relevance = (pc.cast(table.column(RELEVANCE), pa.float64()).to_numpy(zero_copy_only=False)
                 if scored_relevance else None)
    if "lang" in names:
        enc = pc.fill_null(table.column("lang"), UNKNOWN_LANG).combine_chunks().dictionary_encode()
        lang, lang_names = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_pylist()
    else:
        lang, lang_names = np.zeros(n, dtype=np.int32), [UNKNOWN_LANG]
    emb = has = None
    if needs_emb:
        emb, has = _read_embeddings(scored.dir, shards, schema, n)
    codes, cluster, info = select_arrays(emb, quality, s, lang=lang, lang_names=lang_names, has_embedding=has,
                                         relevance=relevance, tiebreak=tiebreak, rank=rank, rows=n)
    del emb
    id_list = ids.to_pylist()
    reasons = {id_list[i]: REASONS[c - 1] for i, c in zip(np.flatnonzero(codes).tolist(),
                                                          codes[codes != 0].tolist(), strict=True)}
    clusters = {}
    if s.method == "kmeans":
        clusters = {id_list[i]: int(c) for i, c in enumerate(cluster.tolist()) if c >= 0}
    return Selection(reasons, clusters, rows=n, selected=n - len(reasons), info=info)


def _read_embeddings(where: Path, shards: list[Path], schema: pa.Schema, n: int) -> tuple[np.ndarray, np.ndarray]:
    etype = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(etype):
        raise SelectError(f"{where}: 'embedding' must be a fixed-size list of floats, not {etype}")
    d = etype.list_size
    emb = np.empty((n, d), dtype=np.float16 if etype.value_type == pa.float16() else np.float32)
    has = np.ones(n, dtype=bool)
    off = 0
    for path in shards:
        for chunk in pq.read_table(path, columns=["embedding"]).column(0).chunks:
            m = len(chunk)
            vals = chunk.values.slice(chunk.offset * d, m * d).to_numpy(zero_copy_only=False)
            emb[off:off + m] = vals.reshape(m, d)
            if chunk.null_count:
                has[off:off + m] = ~chunk.is_null().to_numpy(zero_copy_only=False)
            off += m
    return emb, has


@dataclass
class Mark(Gate):
    """Adds ``selected``, ``cluster`` and ``select_reason`` to every row; rows not selected stay in the output,
    counted as marked (not dropped) under their reason per language. The decision is computed in ``setup``
    (only when some shard must be written) unless one is given."""

    key = "04_select"
    version = "1"
    SETTINGS = SelectSettings
    marks = True
    decisions: str = ""  # fingerprint of the settings (the input's fingerprint is added by the runner)
    scored: StageOutput | None = field(default=None, metadata={"fingerprint": False})
    settings: SelectSettings | None = field(default=None, metadata={"fingerprint": False})
    selection: Selection | None = field(default=None, metadata={"fingerprint": False})

    @classmethod
    def from_settings(cls, values: dict[str, Any], source: StageOutput) -> Mark:
        return mark(source, SelectSettings(**values))

    def setup(self) -> None:
        if self.selection is None:
            if self.scored is None or self.settings is None:
                raise SelectError("Mark needs a selection, or the scored output and settings to decide one")
            self.selection = decide(self.scored, self.settings)

    def output_schema(self) -> pa.Schema | None:
        base = _schema(self.scored) if self.scored is not None else None
        if base is None:
            return None
        for name in MARK_COLUMNS.names:
            if name in base.names:
                base = base.remove(base.get_field_index(name))
        return pa.schema([*base, *MARK_COLUMNS])

    def decision(self) -> dict[str, str]:
        return self.selection.reasons

    def finish(self, batch: pa.Table, why: list[str | None], stats: ShardStats) -> pa.Table:
        sel = self.selection
        ids = batch.column("id").to_pylist()
        selected = [r is None for r in why]
        stats.count("selected", sum(selected))
        for name in MARK_COLUMNS.names:
            if name in batch.column_names:
                batch = batch.drop_columns([name])
        cluster = [sel.clusters.get(i, -1) for i in ids] if sel.clusters else [-1] * len(ids)
        return (batch.append_column(MARK_COLUMNS.field("selected"), pa.array(selected, pa.bool_()))
                .append_column(MARK_COLUMNS.field("cluster"), pa.array(cluster, pa.int32()))
                .append_column(MARK_COLUMNS.field("select_reason"), pa.array(why, pa.string())))


MARK_COLUMNS = pa.schema([("selected", pa.bool_()), ("cluster", pa.int32()), ("select_reason", pa.string())])


def mark(scored: StageOutput, settings: SelectSettings) -> Mark:
    """The stage that marks the rows of ``scored`` as ``settings`` select them (how the pipeline builds it).
    ``min_relevance="auto"`` becomes the threshold measured for the model that scored ``relevance`` (named in
    ``scored``'s manifest), or no check where that model was never measured."""
    if settings.min_relevance == AUTO:
        scorer = scored.manifest.get("params", {}).get(RELEVANCE) or None
        settings = replace(settings, min_relevance=calibrated_threshold(scorer))
    return Mark(decisions=fingerprint({"settings": asdict(settings), "algorithm": ALGORITHM}), scored=scored,
                settings=settings)


def select(scored: StageOutput, rundir: str | Path, settings: SelectSettings, progress: bool = True) -> StageOutput:
    """Mark the rows of a scored stage output (``quality`` + ``embedding``) into the run directory's selection
    folder. Same input and settings → the finished output is reused and nothing is recomputed."""
    return run_stage(mark(scored, settings), scored.as_source(), rundir, workers=1, progress=progress)
