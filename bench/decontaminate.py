"""Decontamination (``synth.stages.decontaminate``): does it catch real leaks, and how fast is it.

**Leaks** (default; ``--leaks-only`` runs only this part, in seconds). Real text, not random words: the UDHR in 23
languages (``examples/lid_eval/udhr_paragraphs.jsonl``). Each language's paragraphs alternate between an
evaluation part and an other part; the evaluation items are the evaluation part's paragraphs of at least 2n
tokens (words, or characters in Chinese), written to a JSONL file the stage reads as it reads any evaluation
file. Fragments are built from the items with labelled kinds of leak, in the lengths extract gives (200-2000
characters, its default ``min_len``/``max_len``), and the stage itself (``Decontaminate.setup`` and ``decide``,
its default n-gram size and threshold unless ``--n``/``--threshold``) says which leave:

- positives (recall): ``exact`` the item alone; ``inside`` the item as one paragraph of a fragment of other
  text of the same language (at the start, middle or end); ``case_punct_space`` the item alone, its case
  changed, its punctuation removed or altered and its spaces turned into newlines, tabs or runs of spaces;
  ``half`` the first or the second half of the item inside other text; ``paraphrase_light`` the item alone
  with one token in every 8 (at a random place in each run of 8) swapped for a word of other text.
- negatives (false positives): ``near_miss`` other paragraphs of the same document, same topic and formulas,
  joined up to extract's 200 characters; ``near_miss_prefix`` the item's first n-1 tokens then other text;
  ``unrelated`` English prose from Python's own documentation (``pydoc_data``) against the same index.

"Other text" inside positives is the other part's paragraphs that share no n-gram with any item, so only the
planted leak can make a fragment leave.

**Throughput** (skipped with ``--leaks-only``). Synthetic text: words drawn from a Zipf-like vocabulary of 200k
words (as real text repeats its words), fragments of 20-80 words, evaluation items of 20-60 words. 1% of the
fragments are planted copies of an evaluation item (inside other words), and the bench checks that every
planted one, and nothing else, is found. It times the evaluation index (hashing every item's n-grams, sorted
unique uint64) and the check of the fragments, in batches of 10,000 as the stage gets them from the runner, on
one core. Peak RSS is the process's high-water mark.

    .venv/bin/python bench/decontaminate.py [--fragments 1000000] [--eval 100000] [--json [out.json]]
    .venv/bin/python bench/decontaminate.py --leaks-only [--items 200] [--json]

``--json`` alone prints ``{"recall": {kind: share}, "false_positive": {kind: share}, "n": {kind: count}}`` (and
``"throughput"`` unless ``--leaks-only``) instead of the table; ``--json PATH`` writes it there and prints both.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py is named like the standard library's select module: take this folder off the path first.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from synth.stages.decontaminate import CONTAMINATED, Decontaminate, EvalIndex  # noqa: E402

BATCH = 10_000
SOURCE = HERE.parent / "examples" / "lid_eval" / "udhr_paragraphs.jsonl"
MIN_LEN, MAX_LEN = 200, 2000  # extract's default fragment lengths (characters): what decontaminate gets
SWAP_EVERY = 8  # paraphrase_light: one token in every run of this many is swapped

# kind → (positive?, whether synth should catch it: a fragment leaves when {t} of its own n-grams are found)
KINDS = {
    "exact": (True, "yes"),
    "inside": (True, "while the item is >= {t} of the fragment's n-grams"),
    "case_punct_space": (True, "yes, unless removed punctuation glues words"),
    "half": (True, "only where the half is >= {t} of the fragment's n-grams"),
    "paraphrase_light": (True, "only where >= {t} of its n-grams survive"),
    "near_miss": (False, "no"),
    "near_miss_prefix": (False, "no (n-1 tokens shared)"),
    "unrelated": (False, "no"),
}


# ---------------------------------------------------------------------------------------------- leaks


@dataclass
class Case:
    kind: str
    lang: str
    text: str


def pieces(text: str, chars: bool) -> list[tuple[bool, str]]:
    """``text`` as runs of word characters (letters, digits, marks: synth's words) and of the rest, in order,
    joined back exactly by ``"".join``. With ``chars`` (a language written without spaces) every word
    character is a token of its own."""
    out: list[tuple[bool, str]] = []
    for ch in text:
        word = unicodedata.category(ch)[0] in "LNM"
        if out and out[-1][0] == word and not (word and chars and unicodedata.category(ch)[0] != "M"):
            out[-1] = (word, out[-1][1] + ch)
        else:
            out.append((word, ch))
    return out


def tokens(text: str, chars: bool) -> list[str]:
    return [s for w, s in pieces(text, chars) if w]


def head(text: str, k: int, chars: bool) -> str:
    """The text up to the end of its k-th token."""
    ps, seen = pieces(text, chars), 0
    for i, (w, _) in enumerate(ps):
        seen += w
        if seen == k:
            return "".join(s for _, s in ps[: i + 1])
    return text


def tail(text: str, k: int, chars: bool) -> str:
    """The text from the start of its (k+1)-th token."""
    ps, seen = pieces(text, chars), 0
    for i, (w, _) in enumerate(ps):
        if w:
            if seen == k:
                return "".join(s for _, s in ps[i:])
            seen += 1
    return ""


GLUE = set("’'‐-‑`´·")  # punctuation inside a word that "remove punctuation" deletes, gluing its two parts
ALTER = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "«": '"', "»": '"', "„": '"', "‐": "-",
                       ",": ";", ";": ",", ".": "!", "!": ".", "?": " ?", ":": " -", "¿": "", "¡": "",
                       "،": ",", "।": ".", "。": ".", "，": ",", "፡": " ", "።": "."})


def case_punct_space(text: str, chars: bool, remove: bool, rng: np.random.Generator) -> str:
    """Case changed, punctuation removed (``remove``) or altered, spaces turned into newlines, tabs, runs."""
    text = (str.upper, str.lower, str.title)[int(rng.integers(3))](text)
    ps = pieces(text, chars)
    out = []
    for i, (w, s) in enumerate(ps):
        if not w:
            between = 0 < i < len(ps) - 1
            if remove:
                if between and set(s) <= GLUE:
                    s = ""
                else:
                    s = "".join(c for c in s if not unicodedata.category(c).startswith("P"))
                    s = s if s or not between or chars else " "
            else:
                s = s.translate(ALTER)
            s = "".join(str(rng.choice([" ", "  ", "\n", " \n", "\t"])) if c == " " else c for c in s)
        out.append(s)
    return "\n" + "".join(out).strip() + "  "


def paraphrase(text: str, chars: bool, vocab: list[str], rng: np.random.Generator) -> str:
    """One token in every run of SWAP_EVERY, at a random place in the run, swapped for another word."""
    ps = pieces(text, chars)
    words = [i for i, (w, _) in enumerate(ps) if w]
    for start in range(0, len(words), SWAP_EVERY):
        i = words[start + int(rng.integers(min(SWAP_EVERY, len(words) - start)))]
        old = ps[i][1].lower()
        new = old
        while new.lower() == old:
            new = vocab[int(rng.integers(len(vocab)))]
        ps[i] = (True, new)
    return "".join(s for _, s in ps)


def embed(leak: str, filler: list[str], where: str, rng: np.random.Generator) -> str:
    """``leak`` as one paragraph of a fragment of 200-2000 characters of ``filler`` paragraphs, at ``where``."""
    target = int(rng.integers(MIN_LEN, MAX_LEN + 1))
    order = rng.permutation(len(filler)).tolist()
    chosen: list[str] = []
    while len(chosen) < (2 if where == "middle" else 1) or len(leak) + sum(len(f) + 2 for f in chosen) < target:
        chosen.append(filler[order[len(chosen) % len(order)]])
    at = {"start": 0, "middle": len(chosen) // 2, "end": len(chosen)}[where]
    return "\n\n".join([*chosen[:at], leak, *chosen[at:]])


def prose() -> list[str]:
    """English prose paragraphs of Python's own documentation (not code, not tables)."""
    from pydoc_data.topics import topics

    out = []
    for text in topics.values():
        for p in text.split("\n\n"):
            letters = sum(c.isalpha() for c in p) / max(1, len(p.replace(" ", "")))
            if not p.startswith((" ", "\t")) and len(p.split()) >= 15 and letters > 0.85:
                out.append(" ".join(p.split()))
    return out


def window(paras: list[str], start: int, target: int) -> str:
    """Paragraphs from ``start`` on (wrapping) until the text is at least ``target`` characters."""
    chosen = [paras[start % len(paras)]]
    while sum(len(p) + 2 for p in chosen) < target and len(chosen) < len(paras):
        chosen.append(paras[(start + len(chosen)) % len(paras)])
    return "\n\n".join(chosen)


def leak_cases(settings: Decontaminate, items_cap: int | None, seed: int,
               tmp: Path) -> tuple[Decontaminate, list[Case]]:
    """Writes the evaluation items to ``tmp`` (JSONL) and builds every case; the stage with ``settings`` that
    checks against those items, as a run's ``--decontaminate PATH`` would."""
    rng = np.random.default_rng(seed)
    docs: dict[str, list[str]] = {}
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        docs.setdefault(r["lang"], []).append(r["text"])
    items: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    for lang, paras in docs.items():
        n, chars, _ = settings.setting(lang)
        items[lang] = [p for p in paras[0::2] if len(tokens(p, chars)) >= 2 * n]
        other[lang] = paras[1::2]
    if items_cap is not None:  # round robin over the languages, so a small run still has every one
        ranked = sorted(((i, lang) for lang, its in items.items() for i in range(len(its))))[:items_cap]
        keep = {(lang, i) for i, lang in ranked}
        items = {lang: [p for i, p in enumerate(its) if (lang, i) in keep] for lang, its in items.items()}
    path = tmp / "eval.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for lang, its in items.items():
            for i, text in enumerate(its):
                f.write(json.dumps({"id": f"udhr-{lang}-{i}", "question": text}, ensure_ascii=False) + "\n")
    stage = replace(settings, paths=[str(path)])
    index = EvalIndex.from_files(stage.paths)  # to pick the other text that shares no n-gram with any item
    cases: list[Case] = []
    wheres = ("start", "middle", "end")
    for lang in sorted(items):
        n, chars, _ = stage.setting(lang)
        share = index.overlap(other[lang], n, chars).tolist()
        clean = [p for p, s in zip(other[lang], share, strict=True) if s == 0 and len(tokens(p, chars)) >= n]
        vocab = sorted({w for p in clean for w in tokens(p, chars)})
        for j, item in enumerate(items[lang]):
            k = len(tokens(item, chars))
            cases.append(Case("exact", lang, item))
            cases.append(Case("inside", lang, embed(item, clean, wheres[j % 3], rng)))
            cases.append(Case("case_punct_space", lang, case_punct_space(item, chars, j % 2 == 0, rng)))
            half = head(item, k // 2, chars) if j % 2 == 0 else tail(item, k // 2, chars)
            cases.append(Case("half", lang, embed(half, clean, wheres[(j // 2) % 3], rng)))
            cases.append(Case("paraphrase_light", lang, paraphrase(item, chars, vocab, rng)))
            nth = tokens(item, chars)[n - 1].lower()  # the continuation must not go on as the item does
            cont = next(c for c in (clean[int(i)] for i in rng.permutation(len(clean)))
                        if tokens(c, chars)[0].lower() != nth)
            sep = "" if chars else " "
            cases.append(Case("near_miss_prefix", lang, window([head(item, n - 1, chars) + sep + cont, *clean],
                                                               0, MIN_LEN)))
        for j in range(len(other[lang])):
            cases.append(Case("near_miss", lang, window(other[lang], j, MIN_LEN)))
    paras = prose()
    count = max(50, sum(len(its) for its in items.values()))
    starts = rng.choice(len(paras), min(count, len(paras)), replace=False)
    cases += [Case("unrelated", "eng", window(paras, int(s), int(rng.integers(MIN_LEN, MAX_LEN + 1))))
              for s in starts.tolist()]
    return stage, cases


def measure_leaks(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stage, cases = leak_cases(Decontaminate(n=args.n, threshold=args.threshold), args.items, args.seed,
                                  Path(tmp))
        stage.setup()  # the stage's own index of the evaluation file, and its own decision per row
        batch = pa.table({"id": [str(i) for i in range(len(cases))], "lang": [c.lang for c in cases],
                          "fragment": [c.text for c in cases]})
        reasons = stage.decide(batch)
    result: dict[str, dict[str, float | int]] = {"recall": {}, "false_positive": {}, "n": {}}
    for kind, (positive, _) in KINDS.items():
        hits = [r == CONTAMINATED for c, r in zip(cases, reasons, strict=True) if c.kind == kind]
        result["recall" if positive else "false_positive"][kind] = round(sum(hits) / max(1, len(hits)), 3)
        result["n"][kind] = len(hits)
    result["items"] = len({c.text for c in cases if c.kind == "exact"})
    result["languages"] = len({c.lang for c in cases if c.kind == "exact"})
    return result


def leak_table(result: dict, n: int, threshold: float) -> str:
    rows = [f"{result['items']} evaluation items in {result['languages']} languages; word {n}-grams "
            f"({Decontaminate.char_n}-character n-grams in Chinese), a fragment leaves at {threshold:.0%} of its "
            "n-grams found",
            "| kind | leak | synth expected to catch | n | caught | share |", "|---|---|---|---:|---:|---:|"]
    for kind, (positive, expected) in KINDS.items():
        share = result["recall" if positive else "false_positive"][kind]
        count = result["n"][kind]
        expected = expected.format(t=f"{threshold:.0%}")
        rows.append(f"| `{kind}` | {'positive' if positive else 'negative'} | {expected} | {count} | "
                    f"{round(share * count)} | {share:.3f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- throughput


def vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(n)])


def texts(count: int, lo: int, hi: int, vocab: np.ndarray, rng: np.random.Generator) -> list[str]:
    weights = 1 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    lengths = rng.integers(lo, hi + 1, count)
    words = vocab[rng.choice(len(vocab), lengths.sum(), p=weights)]
    bounds = np.r_[0, np.cumsum(lengths)]
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def measure_throughput(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    vocab = vocabulary(200_000, rng)
    items = texts(args.eval, 20, 60, vocab, rng)
    frags = texts(args.fragments, 20, 80, vocab, rng)
    planted = rng.choice(args.fragments, args.fragments // 100, replace=False)
    for i in planted.tolist():
        frags[i] = f"{frags[i][:80]} {items[int(rng.integers(args.eval))]} {frags[i][-80:]}"
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = EvalIndex(items)
    known = index.hashes(args.n, False)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = np.zeros(args.fragments, dtype=bool)
    for a in range(0, args.fragments, BATCH):
        found[a:a + BATCH] = index.overlap(frags[a:a + BATCH], args.n, False) >= args.threshold
    t_check = time.perf_counter() - t0
    want = np.zeros(args.fragments, dtype=bool)
    want[planted] = True
    return {
        "fragments": args.fragments, "eval_items": args.eval, "n": args.n, "threshold": args.threshold,
        "eval_ngrams": int(len(known)), "index_s": round(t_index, 1), "check_s": round(t_check, 1),
        "fragments_per_s": round(args.fragments / t_check), "planted": int(want.sum()),
        "found_planted": int((found & want).sum()), "false_positives": int((found & ~want).sum()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "data_generation_s": round(t_gen, 1), "load_average": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fragments", type=int, default=1_000_000, help="throughput: fragments")
    ap.add_argument("--eval", type=int, default=100_000, help="throughput: evaluation items")
    ap.add_argument("--leaks-only", action="store_true", help="measure the leaks, skip the throughput")
    ap.add_argument("--items", type=int, help="leaks: at most this many evaluation items (default: all)")
    ap.add_argument("--n", type=int, default=Decontaminate.n)
    ap.add_argument("--threshold", type=float, default=Decontaminate.threshold)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", nargs="?", const="-", help="print the results as JSON (or write them to JSON)")
    args = ap.parse_args()
    quiet = args.json == "-"
    leaks = measure_leaks(args)
    result = {k: leaks[k] for k in ("recall", "false_positive", "n")}
    if not quiet:
        print(leak_table(leaks, args.n, args.threshold), flush=True)
    if not args.leaks_only:
        result["throughput"] = measure_throughput(args)
        if not quiet:
            print(json.dumps(result["throughput"], indent=2))
    if quiet:
        print(json.dumps(result, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
