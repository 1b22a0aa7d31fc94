"""How often synth's row checks catch a bad pair, and how often they drop a good one (``bench/qc_set.py``'s
labelled pairs in English, Spanish, Catalan and Galician).

Every check runs on every row (``synth audit``'s stage, with the English intermediates the set carries), then:
- per kind of corruption, the share the whole chain catches, ``before`` (the checks synth had before this table
  existed: the instruct stage's checks and stage 5's fidelity gate, no judge threshold) and ``after`` (every
  check of today's chain: relevance, the response's language, truncation and text quality added), and the
  checks that catch it;
- per check, the share of good pairs it drops and of bad pairs it catches.

    .venv/bin/python bench/qc.py                              # offline models, every language
    .venv/bin/python bench/qc.py --langs en,es --json         # {"caught": {kind: share}, "false_drop": share}
    .venv/bin/python bench/qc.py --translator apertium        # + the instruction's round trip
    .venv/bin/python bench/qc.py --judge --judge-model PATH   # + the LLM judge (default the offline SmolLM2)
    .venv/bin/python bench/qc.py --embed-model PATH --calibrate   # the relevance threshold for that model

``--calibrate`` prints the highest relevance threshold that drops at most ``--max-false-drop`` of the good pairs
(all languages together), the line ``synth/data/relevance.toml`` takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py is named like the standard library's ``select``: take this folder off the path first.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(HERE))

# The checks synth applied before relevance, the response's checks and the judge's default existed.
BEFORE = ("instruction_too_short", "instruction_too_long", "copies_response", "not_user_voice", "wrong_language",
          "wrong_script", "length_ratio_low", "length_ratio_high", "numbers_lost", "entities_lost", "roundtrip_low")
JUDGE_BARS = (2.0, 3.0, 4.0)


def check_table(rows: list[dict[str, Any]], audit: Any) -> dict[str, list[bool]]:
    """Per check (stage 5's fidelity checks one by one), whether each row fails it, every check on every row."""
    from synth.audit import CHECKS
    from synth.stages.backtranslate import FIDELITY_CHECKS

    out: dict[str, list[bool]] = {}
    for check in CHECKS:
        if check.reason == "input_error":
            continue
        if check.reason == "fidelity":
            for fc in FIDELITY_CHECKS:
                out[fc.reason] = [fc.fails(r, audit.fidelity) for r in rows]
            continue
        out[check.reason] = [bool(check.fails(r, audit)) for r in rows]
    return out


def audited(rows: list[dict[str, Any]], settings: dict[str, Any], tmp: Path) -> tuple[list[dict[str, Any]], Any]:
    """The audit stage's columns for the labelled rows (kind and bad kept beside them)."""
    import pyarrow as pa

    from synth.audit import INPUT_COLUMNS, Audit
    from synth.kernel import TableSource
    from synth.runner import run_stage

    table = pa.table({name: pa.array([r.get(name if name != "fragment" else "response") if name not in
                                      ("source", "source_id", "input_error") else None for r in rows], typ)
                      for name, typ in INPUT_COLUMNS})
    stage = Audit(lang=rows[0]["lang"], **settings)
    out = run_stage(stage, TableSource(table), tmp, progress=False).read().to_pylist()
    by_id = {r["id"]: r for r in rows}
    for r in out:
        r["kind"], r["bad"] = by_id[r["id"]]["kind"], by_id[r["id"]]["bad"]
    return out, stage


def judged(rows: list[dict[str, Any]], engine: str | None, model: str, tmp: Path) -> dict[tuple[str, str], float]:
    """The judge's score of each distinct English pair (a pair judged once for every language that has it)."""
    import pyarrow as pa

    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.stages.score import Score

    pairs = sorted({(r["instruction_en"], r["response_en"]) for r in rows})
    table = pa.table({"id": [f"p{i}" for i in range(len(pairs))], "lang": ["eng"] * len(pairs),
                      "instruction_en": [a for a, _ in pairs], "response_en": [b for _, b in pairs]})
    out = run_stage(Score(**({"engine": engine} if engine else {}), model=model, cache=None), TableSource(table),
                    tmp, progress=False).read(columns=["id", "quality"]).to_pylist()
    score = {r["id"]: r["quality"] for r in out}
    return {pair: score[f"p{i}"] for i, pair in enumerate(pairs)}


def shares(flags: list[bool], rows: list[dict[str, Any]]) -> tuple[dict[str, float], float, float]:
    """Per kind the share flagged, the share of good rows flagged, the share of bad rows flagged."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for f, r in zip(flags, rows, strict=True):
        by_kind[r["kind"]].append(f)
    caught = {k: sum(v) / len(v) for k, v in by_kind.items() if k != "good"}
    good = by_kind.get("good", [])
    bad = [f for f, r in zip(flags, rows, strict=True) if r["bad"]]
    return caught, (sum(good) / len(good) if good else 0.0), (sum(bad) / len(bad) if bad else 0.0)


def chain(table: dict[str, list[bool]], names: tuple[str, ...] | list[str], n: int) -> list[bool]:
    return [any(table[c][i] for c in names if c in table) for i in range(n)]


def calibrate(rows: list[dict[str, Any]], max_false_drop: float) -> tuple[float, dict[str, float], float]:
    """The highest relevance threshold that drops at most ``max_false_drop`` of the good rows, with what it
    catches per kind."""
    good = sorted(r["relevance"] for r in rows if r["kind"] == "good" and r["relevance"] is not None)
    allowed = int(max_false_drop * len(good))  # good rows that may fall below the threshold
    threshold = round(good[allowed] - 0.005, 2) if good else 0.0  # just under the first good row that must stay
    flags = [r["relevance"] is not None and r["relevance"] < threshold for r in rows]
    caught, false_drop, _ = shares(flags, rows)
    return threshold, caught, false_drop


def main() -> None:
    from qc_set import KINDS, LANGS, build

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--translator", default=None, help="apertium (or llm/seq2seq): adds the round trip")
    ap.add_argument("--embed-model", default="default")
    ap.add_argument("--relevance-model", default=None, help="a cross-encoder or reranker")
    ap.add_argument("--min-relevance", default="auto")
    ap.add_argument("--judge", action="store_true", help="add the LLM judge (slow on a CPU)")
    ap.add_argument("--judge-model", default="smollm2")
    ap.add_argument("--engine", default=None)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--max-false-drop", type=float, default=0.02)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    settings: dict[str, Any] = {"embedder": args.embed_model, "relevance_model": args.relevance_model,
                                "min_relevance": args.min_relevance}
    if args.translator:
        settings["translator"] = args.translator
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stage = None
        for lang in args.langs.split(","):
            got, stage = audited(build(lang, seed=args.seed), settings, Path(tmp) / lang)
            rows += got
        table = check_table(rows, stage)
        if args.judge:
            scores = judged(rows, args.engine, args.judge_model, Path(tmp) / "judge")
            for r in rows:
                r["quality"] = scores[(r["instruction_en"], r["response_en"])]
            for bar in JUDGE_BARS:
                table[f"judge<{bar:g}"] = [r["quality"] is None or r["quality"] < bar for r in rows]
    seconds = time.perf_counter() - t0
    n = len(rows)
    columns = {"before": chain(table, BEFORE, n),
               "after": chain(table, [c for c in table if not c.startswith("judge<")], n)}
    if args.judge:
        columns["+judge<3"] = chain(table, [c for c in table if not c.startswith("judge<")] + ["judge<3"], n)
    measured = {name: shares(flags, rows) for name, flags in columns.items()}
    if args.json:
        caught, false_drop, _ = measured["after"]
        print(json.dumps({"caught": caught, "false_drop": false_drop,
                          **{name: {"caught": m[0], "false_drop": m[1]} for name, m in measured.items()
                             if name != "after"},
                          "checks": {c: dict(zip(("caught", "false_drop", "bad_caught"), shares(f, rows),
                                                 strict=True)) for c, f in table.items()}}, indent=1))
        return

    kinds = [k for k in KINDS if k != "good" and k in measured["after"][0]]
    print(f"\nbench/qc.py: {n} rows ({args.langs}), embedder {args.embed_model}, relevance threshold "
          f"{stage.min_relevance}, translator {args.translator or 'none'}, judge "
          f"{args.judge_model if args.judge else 'off'}; {seconds:.0f} s")
    head = "".join(f"{name:>9}" for name in columns)
    print(f"\n{'kind':<20} {'rows':>5}{head}  checks that catch it (share)")
    by_kind: dict[str, int] = defaultdict(int)
    for r in rows:
        by_kind[r["kind"]] += 1
    for kind in kinds:
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        catchers = sorted(((sum(table[c][i] for i in idx) / len(idx), c) for c in table), reverse=True)
        top = ", ".join(f"{c} {s:.0%}" for s, c in catchers[:3] if s > 0)
        cells = "".join(f"{m[0][kind]:>9.0%}" for m in measured.values())
        print(f"{kind:<20} {by_kind[kind]:>5}{cells}  {top}")
    print(f"{'good (dropped)':<20} {by_kind['good']:>5}" + "".join(f"{m[1]:>9.0%}" for m in measured.values()))
    print(f"{'all bad (caught)':<20} {n - by_kind['good']:>5}" + "".join(f"{m[2]:>9.0%}" for m in measured.values()))
    langs = sorted({r["lang"] for r in rows})
    if len(langs) > 1:
        print(f"\n{'language':<10} {'good dropped':>12} {'bad caught':>11}   (after)")
        for lang in langs:
            idx = [i for i, r in enumerate(rows) if r["lang"] == lang]
            _, fd, bad = shares([columns["after"][i] for i in idx], [rows[i] for i in idx])
            print(f"{lang:<10} {fd:>12.1%} {bad:>11.1%}")
    print(f"\n{'check':<24} {'good dropped':>12} {'bad caught':>11}")
    for c, flags in table.items():
        _, fd, bad = shares(flags, rows)
        if fd or bad:
            print(f"{c:<24} {fd:>12.1%} {bad:>11.1%}")
    if args.judge:
        q = [r["quality"] for r in rows if r["quality"] is not None]
        mean = sum(q) / len(q)
        spread = (sum((x - mean) ** 2 for x in q) / len(q)) ** 0.5
        top = max(set(q), key=q.count)
        print(f"\njudge: {len(q)} scores, {q.count(top) / len(q):.0%} of them {top:g}, spread {spread:.2f}")
    if args.calibrate:
        threshold, caught, fd = calibrate(rows, args.max_false_drop)
        print(f"\ncalibrated min_relevance {threshold} (good dropped {fd:.1%}); caught: "
              + ", ".join(f"{k} {v:.0%}" for k, v in caught.items() if v))
        from synth.identity import identity
        from synth.select.embed import resolve_embedding_model

        key = identity(args.relevance_model or resolve_embedding_model(args.embed_model))
        print(f'\n[models."{key}"]\nname = "{args.relevance_model or args.embed_model}"\nmin_relevance = {threshold}')


if __name__ == "__main__":
    main()
