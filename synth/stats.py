"""Counts with named drop reasons, per stage and per language.

A row that leaves a stage is a drop, counted under its reason and language: ``drop`` for one count,
``drop_mask`` and ``drop_reasons`` for the rows of a batch (every drop goes through ``drop``). A row that stays
but is marked (not selected by stage 4, which keeps every row with a ``selected`` column) is not a drop: it is
counted under ``marked``, so ``rows_in = rows_out + dropped`` holds for every stage.

A stage records drops and counters on a ``ShardStats`` while it works on one shard; the runner stores them in
the shard's own Parquet metadata (so data and counts are committed by the same rename) and merges all shards
of a stage into ``RUNDIR/stats.json``. Merging is a sum over shards, so a resumed run reports what an
uninterrupted one would.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.io import atomic_write_text

UNKNOWN_LANG = "und"
MAX_EXAMPLES = 50  # bad items logged with their location, per shard


class ShardStats:
    """What happened to the rows of one shard."""

    def __init__(self) -> None:
        self.rows_in: Counter[str] = Counter()
        self.rows_out: Counter[str] = Counter()
        self.dropped: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.marked: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.counters: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    def drop(self, reason: str, lang: str | None = None, n: int = 1, where: str | None = None) -> None:
        """Count ``n`` rows (or documents) dropped for ``reason``; ``where`` (file:line) goes to the error log."""
        if n <= 0:
            return
        self.dropped[lang or UNKNOWN_LANG][reason] += n
        if where is not None and len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"reason": reason, "lang": lang or UNKNOWN_LANG, "where": where})

    def drop_mask(self, batch: pa.Table, mask: pa.Array | list[bool], reason: str) -> pa.Table:
        """Drop the rows of ``batch`` where ``mask`` is true, counted per language; return the rest."""
        mask = pa.array(mask, pa.bool_()) if not isinstance(mask, (pa.Array, pa.ChunkedArray)) else mask
        mask = pc.fill_null(mask, False)
        for lang, n in count_langs(batch.filter(mask)).items():
            self.drop(reason, lang, n)
        return batch.filter(pc.invert(mask))

    def drop_reasons(self, batch: pa.Table, reasons: list[str | None]) -> tuple[pa.Table, list[int]]:
        """Drop the rows that have a reason, counted under it per language; the rest, and their positions."""
        for (lang, reason), n in sorted(_tally(batch, reasons).items()):
            self.drop(reason, lang, n)
        kept = [i for i, r in enumerate(reasons) if r is None]
        return batch.take(pa.array(kept, pa.int64())), kept

    def mark_reasons(self, batch: pa.Table, reasons: list[str | None]) -> None:
        """Count the rows that have a reason under ``marked``, per language: they stay in the output."""
        for (lang, reason), n in _tally(batch, reasons).items():
            self.marked[lang][reason] += n

    def count(self, name: str, n: int | float = 1) -> None:
        """A free counter (tokens, cache hits, bytes read…)."""
        self.counters[name] += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": dict(self.rows_in),
            "rows_out": dict(self.rows_out),
            "dropped": {lang: dict(r) for lang, r in self.dropped.items()},
            "marked": {lang: dict(r) for lang, r in self.marked.items()},
            "counters": dict(self.counters),
            "examples": self.examples,
        }


def _tally(batch: pa.Table, reasons: list[str | None]) -> Counter[tuple[str, str]]:
    """Rows per (language, reason), for the rows that have a reason."""
    if len(reasons) != batch.num_rows:
        raise ValueError(f"{len(reasons)} reasons for {batch.num_rows} rows")
    langs = batch.column("lang").to_pylist() if "lang" in batch.column_names else [None] * len(reasons)
    return Counter((lang or UNKNOWN_LANG, r) for lang, r in zip(langs, reasons, strict=True) if r is not None)


def count_langs(table: pa.Table) -> Counter[str]:
    """Rows per value of the ``lang`` column (all ``und`` if the table has none)."""
    if table.num_rows == 0:
        return Counter()
    if "lang" not in table.column_names:
        return Counter({UNKNOWN_LANG: table.num_rows})
    vc = pc.value_counts(table.column("lang").combine_chunks())
    return Counter({(v["values"].as_py() or UNKNOWN_LANG): v["counts"].as_py() for v in vc})


def merge_shards(shard_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum shard stats into one stage summary with per-language rows in/out and drop reasons."""
    by_lang: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"in": 0, "out": 0, "dropped": Counter(), "marked": Counter()})
    counters: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for s in shard_stats:
        for lang, n in s.get("rows_in", {}).items():
            by_lang[lang]["in"] += n
        for lang, n in s.get("rows_out", {}).items():
            by_lang[lang]["out"] += n
        for kind in ("dropped", "marked"):
            for lang, reasons in s.get(kind, {}).items():
                by_lang[lang][kind].update(reasons)
        counters.update(s.get("counters", {}))
        examples.extend(s.get("examples", []))
    langs = {
        lang: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"].most_common()),
               "marked": dict(v["marked"].most_common())}
        for lang, v in sorted(by_lang.items())
    }
    total = {kind: Counter() for kind in ("dropped", "marked")}
    for v in langs.values():
        for kind, counts in total.items():
            counts.update(v[kind])
    return {
        "rows_in": sum(v["in"] for v in langs.values()),
        "rows_out": sum(v["out"] for v in langs.values()),
        "dropped": dict(total["dropped"].most_common()),
        "marked": dict(total["marked"].most_common()),
        "by_lang": langs,
        "counters": dict(sorted(counters.items())),
        "examples": examples[: MAX_EXAMPLES * 4],
    }


def update_run_stats(rundir: Path, stage_key: str, summary: dict[str, Any]) -> Path:
    """Replace one stage's entry in ``RUNDIR/stats.json`` (atomically)."""
    path = Path(rundir) / "stats.json"
    data: dict[str, Any] = {"stages": {}}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {"stages": {}}  # a damaged summary is rebuilt from the shards, which hold the truth
    data.setdefault("stages", {})[stage_key] = summary  # insertion order: the order stages first ran
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def kept_label(rows_in: int, rows_out: int) -> str:
    """The funnel's "kept %" of a stage; a stage that splits its input (documents into fragments) gives more rows
    than it got: that is a ratio of units, not a share kept."""
    if not rows_in:
        return "-"
    if rows_out > rows_in:
        return f"split ×{rows_out / rows_in:.1f}"
    return f"{100 * rows_out / rows_in:.1f}"

