"""Counts with named drop reasons, per stage and per language.

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
        gone = batch.filter(mask)
        for lang, n in count_langs(gone).items():
            self.drop(reason, lang, n)
        return batch.filter(pc.invert(mask))

    def count(self, name: str, n: int | float = 1) -> None:
        """A free counter (tokens, cache hits, bytes read…)."""
        self.counters[name] += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": dict(self.rows_in),
            "rows_out": dict(self.rows_out),
            "dropped": {lang: dict(r) for lang, r in self.dropped.items()},
            "counters": dict(self.counters),
            "examples": self.examples,
        }


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
    by_lang: dict[str, dict[str, Any]] = defaultdict(lambda: {"in": 0, "out": 0, "dropped": Counter()})
    counters: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for s in shard_stats:
        for lang, n in s.get("rows_in", {}).items():
            by_lang[lang]["in"] += n
        for lang, n in s.get("rows_out", {}).items():
            by_lang[lang]["out"] += n
        for lang, reasons in s.get("dropped", {}).items():
            by_lang[lang]["dropped"].update(reasons)
        counters.update(s.get("counters", {}))
        examples.extend(s.get("examples", []))
    langs = {
        lang: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"].most_common())}
        for lang, v in sorted(by_lang.items())
    }
    total_dropped: Counter[str] = Counter()
    for v in langs.values():
        total_dropped.update(v["dropped"])
    return {
        "rows_in": sum(v["in"] for v in langs.values()),
        "rows_out": sum(v["out"] for v in langs.values()),
        "dropped": dict(total_dropped.most_common()),
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
