"""English + multilingual training mixtures with exact, seeded, evenly spread counts.

Shaham et al. 2024: a pinch of multilingual data (tens of examples) in an English tuning set transfers to many
languages. ``mix`` builds such a set: out of ``budget`` rows, ``n_multilingual`` (or ``share`` of the budget) are
spread evenly over the seen languages — ``n // k`` each, and the remainder one extra row to each of the first
``n % k`` languages in code order — and the rest are English. Languages held out as *unseen* get no training
rows; with ``n_val`` they (and the seen ones) get validation rows that never appear in training, for
``synth train --val`` and for seen/unseen evaluation.

Output (``out/``): ``train/part-00000.parquet`` (the mixture, shuffled), ``val/<lang>.parquet`` when ``n_val``,
and ``manifest.json`` with the exact counts, the split and the inputs. Same inputs and seed, same files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth.errors import SynthError
from synth.fingerprint import fingerprint
from synth.io import ShardWriter, atomic_write_text
from synth.lang import ENGLISH, UNDETERMINED, canonical
from synth.train.settings import MixSettings
from synth.train.sft import parquet_files

CORE = ("id", "lang", "messages", "instruction", "response")


class MixError(SynthError, ValueError):
    """A mixture that cannot be built as asked (too few rows, a bad split); the message says what to change."""


@dataclass
class MixReport:
    out: str
    train_path: str
    val_paths: dict[str, str]
    budget: int
    n_english: int
    n_multilingual: int
    per_lang: dict[str, int]  # training rows per language, English included
    seen: list[str]
    unseen: list[str]
    val_per_lang: dict[str, int]
    available: dict[str, int]
    seed: int
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read(paths: Sequence[Path]) -> pa.Table:
    tables = []
    for f in paths:
        names = pq.read_schema(f).names
        missing = {"lang", "messages"} - set(names)
        if missing:
            raise MixError(f"{f}: missing column(s) {sorted(missing)}; mix reads the export schema")
        t = pq.read_table(f, columns=[c for c in CORE if c in names])
        for c in CORE:
            if c not in t.column_names:
                t = t.append_column(c, pa.nulls(t.num_rows, pa.string()))
        tables.append(t.select(list(CORE)))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _by_lang(table: pa.Table) -> dict[str, pa.Table]:
    langs = table.column("lang").to_pylist()
    idx: dict[str, list[int]] = {}
    for i, code in enumerate(langs):
        idx.setdefault(canonical(code or UNDETERMINED), []).append(i)
    return {lang: table.take(pa.array(rows, pa.int64())) for lang, rows in sorted(idx.items())}


def even_split(n: int, langs: Sequence[str]) -> dict[str, int]:
    """``n`` rows over ``langs``: ``n // k`` each, one more for the first ``n % k`` in sorted order."""
    langs = sorted(langs)
    if not langs:
        if n:
            raise MixError(f"{n} multilingual rows asked for but no language to spread them over")
        return {}
    base, extra = divmod(n, len(langs))
    return {lang: base + (1 if i < extra else 0) for i, lang in enumerate(langs)}


def mix(
    english: str | Path | Sequence[str | Path],
    multilingual: dict[str, str | Path | Sequence[str | Path]] | Sequence[str | Path] | str | Path,
    budget: int,
    out: str | Path,
    share: float | None = None,
    n_multilingual: int | None = None,
    langs: Sequence[str] | None = None,
    unseen: Sequence[str] | int | None = None,
    n_val: int = MixSettings.n_val,
    seed: int = MixSettings.seed,
) -> MixReport:
    """Write a mixture of ``budget`` rows: ``n_multilingual`` (or ``round(share * budget)``) spread evenly over the
    seen languages, the rest English.

    ``multilingual``: ``{lang: path(s)}`` or path(s) whose rows are grouped by their ``lang`` column.
    ``langs``: the languages to consider (default: all found, English excluded). ``unseen``: languages (or a
    number of them, drawn with ``seed``) held out of training. ``n_val``: validation rows per language (seen,
    unseen and English), disjoint from the training rows.
    """
    if budget < 0 or n_val < 0:
        raise MixError("budget and n_val must be >= 0")
    if (share is None) == (n_multilingual is None):
        raise MixError("give exactly one of share (a fraction of the budget) or n_multilingual (a row count)")
    if share is not None:
        if not 0.0 <= share <= 1.0:
            raise MixError(f"share must be in [0, 1], not {share}")
        n_multi = round(share * budget)
    else:
        n_multi = int(n_multilingual)
    if not 0 <= n_multi <= budget:
        raise MixError(f"n_multilingual ({n_multi}) must be between 0 and the budget ({budget})")
    out = Path(out)

    # --- read inputs
    eng_files = parquet_files(english)
    english_rows = _by_lang(_read(eng_files))
    eng = english_rows.pop(ENGLISH, None)
    if english_rows:
        raise MixError(f"the English input holds rows in {sorted(english_rows)}; pass English only (lang 'eng')")
    inputs: dict[str, list[str]] = {ENGLISH: [str(f) for f in eng_files]}
    pools: dict[str, pa.Table] = {}
    if isinstance(multilingual, dict):
        for code, paths in sorted(multilingual.items()):
            lang = canonical(code)
            files = parquet_files(paths)
            found = _by_lang(_read(files))
            other = sorted(set(found) - {lang})
            if other:
                raise MixError(f"input for {lang} ({files[0]}) holds rows in other languages {other}")
            if lang in found:
                pools[lang] = found[lang]
            inputs[lang] = [str(f) for f in files]
    else:
        files = parquet_files(multilingual)
        pools = _by_lang(_read(files))
        for lang in pools:
            inputs[lang] = [str(f) for f in files]
    pools.pop(ENGLISH, None)

    # --- languages and split
    wanted = sorted({canonical(x) for x in langs} - {ENGLISH}) if langs else sorted(pools)
    absent = [x for x in wanted if x not in pools]
    if absent:
        raise MixError(f"no rows for language(s) {absent} in the multilingual input (have {sorted(pools)})")
    rng = random.Random(seed)
    if isinstance(unseen, int):
        if not 0 <= unseen < len(wanted) or (unseen == len(wanted) and n_multi):
            raise MixError(f"cannot hold out {unseen} of {len(wanted)} languages and keep one to train on")
        held = sorted(rng.sample(wanted, unseen))
    else:
        held = sorted({canonical(x) for x in unseen or ()})
        bad = [x for x in held if x not in wanted]
        if bad:
            raise MixError(f"unseen language(s) {bad} are not among the languages mixed {wanted}")
    seen = [x for x in wanted if x not in held]
    per_lang = even_split(n_multi, seen)
    n_eng = budget - n_multi

    # --- check counts before sampling anything
    available = {ENGLISH: eng.num_rows if eng is not None else 0, **{x: pools[x].num_rows for x in wanted}}
    need = {ENGLISH: n_eng + n_val, **{x: per_lang.get(x, 0) + n_val for x in wanted}}
    short = [(x, available[x], need[x]) for x in need if available[x] < need[x]]
    if short:
        lines = "; ".join(f"{x} has {have} rows but needs {n}"
                          + (f" ({n - n_val} train + {n_val} val)" if n_val else "") for x, have, n in short)
        raise MixError(f"not enough rows: {lines}. Lower the budget, the share or n_val, or drop the language")

    # --- sample (seeded per language, so one language's pool does not change another's draw)
    np_rng = np.random.default_rng(seed)
    train_parts, val_parts = [], {}
    for lang in [ENGLISH, *wanted]:
        table = eng if lang == ENGLISH else pools[lang]
        n_train = n_eng if lang == ENGLISH else per_lang.get(lang, 0)
        order = np_rng.permutation(table.num_rows)
        if n_val:
            val_parts[lang] = table.take(pa.array(np.sort(order[:n_val])))
        if n_train:
            train_parts.append(table.take(pa.array(np.sort(order[n_val : n_val + n_train]))))
    mixture = pa.concat_tables(train_parts) if train_parts else _read(eng_files).slice(0, 0)
    mixture = mixture.take(pa.array(np_rng.permutation(mixture.num_rows), pa.int64()))

    fp = fingerprint({"inputs": inputs, "budget": budget, "n_multilingual": n_multi, "langs": wanted,
                      "unseen": held, "n_val": n_val, "seed": seed}, length=16)
    train_path = out / "train" / "part-00000.parquet"
    w = ShardWriter(train_path)
    w.write(mixture)
    w.commit({"stage": "mix", "fingerprint": fp})
    val_paths = {}
    for lang, table in val_parts.items():
        p = out / "val" / f"{lang}.parquet"
        w = ShardWriter(p)
        w.write(table)
        w.commit({"stage": "mix", "split": "val", "lang": lang, "fingerprint": fp})
        val_paths[lang] = str(p)

    counts = {ENGLISH: n_eng, **{x: per_lang.get(x, 0) for x in wanted}}
    report = MixReport(
        out=str(out), train_path=str(train_path), val_paths=val_paths, budget=budget, n_english=n_eng,
        n_multilingual=n_multi, per_lang=counts, seen=seen, unseen=held,
        val_per_lang={x: n_val for x in val_parts}, available=available, seed=seed, fingerprint=fp,
    )
    manifest = {**report.to_json(), "share": share, "inputs": inputs}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return report
