"""A labelled set of instruction/response pairs, good and corrupted, in English, Spanish, Catalan and Galician.

What: ``bench/qc.py`` runs synth's quality checks over this set and measures, per kind of corruption, the share
of corrupted pairs they catch, and the share of good pairs they drop. Every row is what synth would hold after
backtranslation: ``instruction`` and ``response`` in the target language, ``instruction_en`` and
``response_en`` the English intermediates, ``kind`` the corruption (``good`` for none) and ``bad`` whether
there is one.

How it is built: 48 English pairs, hand-written for this set (``bench/qc_data/pairs_en.jsonl``: 8 topics of 6
pairs on related subjects, so that a swap within a topic is hard to see), each with ``asks_missing``, a request
on the same subject that the response plainly does not answer, ``number`` (whether the instruction has a digit)
and ``name`` (a proper name in the instruction). Spanish, Catalan and Galician texts are the Apertium
translations of the English ones (modes eng-spa, eng-cat, en-gl), made as synth's Apertium translator makes them
(``synth.translate.apertium.translate_batch``: ``apertium -u``, so unknown words carry no ``*``; stray ``#`` and
``@`` marks are dropped too) and cached in ``bench/qc_data/cache_<lang>.json`` keyed by the English text, so a
second build needs no Apertium and gives the same rows. Every pair gives one ``good`` row; each corruption is
applied to a random subset of about 16 pairs drawn from ``seed`` (the same subset in every language where the
kind applies to the same pairs):

- ``swap_same_topic`` / ``swap_unrelated``: the instruction of another pair of the same / another topic;
- ``wrong_language``: the instruction in another language (English rows get the Spanish one, the others the
  English one), ``instruction_en`` unchanged;
- ``number_changed``, ``name_dropped``, ``noun_mistranslated`` (not in English, ``instruction_en`` unchanged):
  the target instruction with one number changed (1948 -> 1984, 3 -> 5), with its proper name replaced by a
  pronoun, or with a content noun replaced by an unrelated noun of the language (as when Apertium made the
  Spanish "Article 5" into "Prenda 5", a garment); only pairs whose translated instruction has a number / a
  name / a noun found after a determiner;
- ``truncated_response``: both responses cut at a word boundary 40-70 % in, mid-sentence, no final punctuation;
- ``copies_response``: the instruction is the response's first sentence or two, in both languages;
- ``boilerplate``: the response (both languages) is web boilerplate: cookie notices, menus, copyright lines;
- ``asks_missing``: the instruction (both languages) is the pair's ``asks_missing``.

Limits: the non-English texts are machine translations of English, not native text, and carry Apertium's own
errors (Catalan "Explain" sometimes comes out as "Compta", "count"), which the ``good`` rows keep: a check that
flags those flags a real translation problem, not a false alarm, but it counts as a dropped good pair here. The
corruptions are synthetic and one at a time; real failures are subtler and mixed. 48 pairs give shares in steps
of about 6 % per kind (1 of 16), so differences of a pair or two are noise.

Usage::

    .venv/bin/python bench/qc_set.py                       # counts and two example rows per language
    .venv/bin/python bench/qc_set.py --lang gl --kind name_dropped --examples 5
    .venv/bin/python bench/qc_set.py --jsonl /tmp/qc_set.jsonl   # every row of every language

From Python (``bench/`` on ``sys.path``): ``from qc_set import build; rows = build("es", seed=0)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# bench/select.py is named like the standard library's select module, which subprocess needs: with this folder
# on sys.path (first, when run as a script), take it off while the standard library and synth are imported; an
# importer (bench/qc.py) gets its path back.
_IMPORTER_PATH = sys.path[:]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import selectors  # noqa: E402, F401  (imports the standard library's select, not bench/select.py)
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from functools import cache  # noqa: E402
from typing import Any  # noqa: E402

from synth.lang import canonical  # noqa: E402

if __name__ != "__main__":
    sys.path[:] = _IMPORTER_PATH

DATA = HERE / "qc_data"
PAIRS = DATA / "pairs_en.jsonl"
KINDS = ("good", "swap_same_topic", "swap_unrelated", "wrong_language", "number_changed", "name_dropped",
         "noun_mistranslated", "truncated_response", "copies_response", "boilerplate", "asks_missing")
LANGS = ("en", "es", "ca", "gl")
TRANSLATION_KINDS = ("number_changed", "name_dropped", "noun_mistranslated")  # instruction vs instruction_en
PER_KIND = 16

BOILERPLATE = (
    "We use cookies to improve your experience on our website and to show you relevant advertising. By "
    "continuing to browse, you agree to our use of cookies. You can change your cookie settings at any time. "
    "Accept all cookies. Manage preferences.",
    "Home | About us | News | Products | Services | Careers | Contact | Privacy policy | Terms of use | Sitemap",
    "Copyright 2024 Northgate Media Group. All rights reserved. No part of this website may be reproduced, "
    "stored or transmitted in any form without the prior written permission of the publisher.",
    "Subscribe to our newsletter and get the latest news, special offers and updates delivered straight to your "
    "inbox. Enter your email address and click Sign up. You can unsubscribe at any time.",
    "Page not found. The page you are looking for may have been moved, renamed or deleted. Return to the home "
    "page or use the search box above to find what you need.",
    "Share this article: Facebook, Twitter, WhatsApp, Email, Print. Related articles. Most read this week. "
    "Leave a comment. Your email address will not be published. Required fields are marked.",
    "Log in or register to continue reading. Forgot your password? Create a free account to save your "
    "favourite articles and receive personalised recommendations every week.",
    "This website works best with JavaScript enabled. Please turn on JavaScript in your browser settings and "
    "reload the page. Follow us on social media for the latest updates and offers.",
)

# Concrete nouns with nothing to do with the topics, for noun_mistranslated.
NOUNS = {
    "es": ("paraguas", "zanahoria", "tornillo", "bufanda", "ladrillo", "cepillo", "almohada", "calcetín",
           "mariposa", "cuchara", "escoba", "toalla"),
    "ca": ("paraigua", "pastanaga", "cargol", "bufanda", "maó", "raspall", "coixí", "mitjó", "papallona",
           "cullera", "escombra", "tovallola"),
    "gl": ("paraugas", "cenoria", "parafuso", "bufanda", "ladrillo", "cepillo", "almofada", "calcetín",
           "bolboreta", "culler", "vasoira", "toalla"),
}
# Words after which a noun is likely (articles, contractions, possessives, demonstratives), lower case.
DETERMINERS = {
    "es": {"el", "la", "los", "las", "un", "una", "unos", "unas", "del", "al", "su", "sus", "este", "esta",
           "estos", "estas", "cada"},
    "ca": {"el", "la", "els", "les", "l", "un", "una", "uns", "unes", "del", "dels", "al", "als", "pel", "pels",
           "seu", "seva", "seus", "seves", "aquest", "aquesta", "aquests", "aquestes", "cada"},
    "gl": {"o", "a", "os", "as", "un", "unha", "uns", "unhas", "do", "da", "dos", "das", "no", "na", "nos",
           "nas", "ao", "á", "aos", "ás", "polo", "pola", "polos", "polas", "seu", "súa", "seus", "súas", "este",
           "esta", "cada"},
}
# Words that follow a determiner but are no noun (adjectives, quantifiers): skipped on the way to the noun.
NOT_NOUNS = {
    "es": {"otro", "otra", "otros", "otras", "mismo", "misma", "primer", "primera", "primeros", "primeras",
           "principal", "principales", "mayor", "mayores", "mejor", "mejores", "gran", "grandes", "más", "cuatro",
           "tres", "cinco", "siete", "dos", "siguiente", "clásica", "clásico", "moderno", "modernos",
           "mayoría", "cuál", "cuáles"},
    "ca": {"altre", "altra", "altres", "mateix", "mateixa", "primer", "primera", "primers", "primeres",
           "principal", "principals", "major", "majors", "millor", "millors", "gran", "grans", "més", "quatre",
           "tres", "cinc", "set", "dos", "dues", "següent", "clàssica", "clàssic", "moderns", "majoria"},
    "gl": {"outro", "outra", "outros", "outras", "mesmo", "mesma", "primeiro", "primeira", "primeiros",
           "primeiras", "principal", "principais", "maior", "maiores", "mellor", "mellores", "gran", "grandes",
           "máis", "catro", "tres", "cinco", "sete", "dous", "dúas", "seguinte", "clásica", "clásico",
           "modernos", "maioría", "cervas"},  # cervas (hinds): Apertium's Galician for the verb "does"
}
PRONOUN = {"es": "eso", "ca": "això", "gl": "iso"}
# A word before a dropped name → what stands before the pronoun ("del Danubio" → "de eso"); absent: kept as is.
BEFORE_NAME = {
    "es": {"el": "", "la": "", "los": "", "las": "", "del": "de ", "al": "a "},
    "ca": {"el": "", "la": "", "els": "", "les": "", "l'": "", "del": "d'", "dels": "d'", "de": "d'",
           "d'": "d'", "al": "a ", "als": "a ", "pel": "per ", "pels": "per "},
    "gl": {"o": "", "a": "", "os": "", "as": "", "do": "d", "da": "d", "dos": "d", "das": "d", "de": "d",
           "no": "n", "na": "n", "nos": "n", "nas": "n", "en": "n", "ao": "a ", "á": "a ", "aos": "a ",
           "ás": "a ", "polo": "por ", "pola": "por "},
}
MARKS = re.compile(r"(?<![\w*#@])[*#@](?=\w)")  # Apertium's unknown-word (*), generation (#), transfer (@) marks
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'¿¡(]?[A-ZÁÉÍÓÚÀÈÒÇÑ0-9])")
WORD = re.compile(r"\w+")


# --- source data and translations ----------------------------------------------------------------------------

@cache
def pairs() -> tuple[dict[str, Any], ...]:
    """The English source pairs, in file order."""
    with PAIRS.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def source_texts() -> list[str]:
    """Every English text the set translates: instructions, responses, asks_missing, names, boilerplate."""
    texts: list[str] = []
    for p in pairs():
        texts += [p["instruction"], p["response"], p["asks_missing"]] + ([p["name"]] if p["name"] else [])
    return list(dict.fromkeys(texts + list(BOILERPLATE)))


def clean(text: str) -> str:
    """An Apertium output without unknown-word marks (synth runs ``apertium -u``, which leaves out ``*``; a
    ``#`` or ``@`` can still come through)."""
    return MARKS.sub("", text).strip()


@cache
def translations(lang: str) -> dict[str, str]:
    """English text → its Apertium translation into ``lang`` (es, ca, gl), for every text of the set; from
    ``qc_data/cache_<lang>.json``, with Apertium run once over whatever the cache lacks."""
    path = DATA / f"cache_{lang}.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    known: dict[str, str] = stored.get("translations", {})
    texts = source_texts()
    missing = [t for t in texts if t not in known]
    if not missing and set(known) == set(texts):
        return known
    versions = stored.get("apertium", {})
    if missing:
        from synth.translate import apertium

        mode = apertium.mode_for("eng", lang)
        done = apertium.translate_batch(mode, missing)  # one process for all of them
        known = {**known, **{t: clean(d) for t, d in zip(missing, done, strict=True)}}
        versions = apertium.pair_versions(lang)
    keep = {t: known[t] for t in sorted(texts)}  # texts no longer in the set are dropped: the file stays small
    body = json.dumps({"apertium": versions, "translations": keep}, ensure_ascii=False, indent=1)
    fd, tmp = tempfile.mkstemp(dir=DATA, prefix=f".cache_{lang}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return keep


# --- corruptions -----------------------------------------------------------------------------------------------

def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def lead(text: str, k: int) -> str:
    """The first ``k`` sentences of ``text``."""
    return " ".join(sentences(text)[:k])


def truncate(text: str, share: float) -> str:
    """``text`` cut at the first word boundary from ``share`` of its length on that is inside a sentence, with
    no punctuation at the end."""
    spaces = [m.start() for m in re.finditer(r"\s+", text) if m.start() >= int(len(text) * share)]
    for cut in spaces:
        head = text[:cut].rstrip()
        if head and head[-1] not in ".!?;:," and len(head) <= 0.75 * len(text):
            return head
    head = text[:spaces[0] if spaces else int(len(text) * share)]  # no better cut: drop punctuation at least
    return head.rstrip(" .!?;:,")


def changed_number(digits: str) -> str:
    """Another plausible number: a year with its last two digits swapped (1948 → 1984), a small count moved
    by two (3 → 5), others with digits swapped or plus one."""
    n = int(digits)
    if len(digits) == 4 and 1000 <= n <= 2099:
        other = digits[:2] + digits[3] + digits[2]
        if other == digits or int(other) > 2025:
            other = str(n - 10)
        return other
    if len(digits) == 1:
        return str(n + 2 if n < 8 else n - 2)
    other = digits[:-2] + digits[-1] + digits[-2]
    return other if other != digits and other[0] != "0" else str(n + 1)


def change_number(text: str, text_en: str) -> tuple[str, str] | None:
    """``text`` with one number changed, preferring one that also stands in ``text_en``; None if none."""
    runs = list(re.finditer(r"\d+", text))
    if not runs:
        return None
    in_en = set(re.findall(r"\d+", text_en))
    m = next((r for r in runs if r.group() in in_en), runs[0])
    new = changed_number(m.group())
    return text[:m.start()] + new + text[m.end():], f"{m.group()} -> {new}"


def name_span(text: str, names: list[str]) -> tuple[int, int] | None:
    """Where one of ``names`` (the name translated, then in English) stands in ``text``; failing an exact
    match (Apertium translates a name differently in context), the stretch from the first to the last word
    of a name, if it is not much longer than the name."""
    for name in names:
        m = re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text, re.IGNORECASE)
        if m:
            return m.span()
    words = {w.lower() for n in names for w in WORD.findall(n) if len(w) > 2 or w.isdigit()}
    hits = [m for m in WORD.finditer(text) if m.group().lower() in words]
    if hits and hits[-1].end() - hits[0].start() <= max(len(n) for n in names) + 12:
        return hits[0].start(), hits[-1].end()
    return None


def drop_name(text: str, names: list[str], lang: str) -> tuple[str, str] | None:
    """``text`` with the name (and the article or contraction before it) replaced by a pronoun."""
    span = name_span(text, names)
    if span is None:
        return None
    start, end = span
    pronoun = PRONOUN[lang]
    before = re.search(r"(?:(?<!\w)(\w+)\s+|(?<!\w)(\w')\s*)$", text[:start])
    if before:
        prefix = BEFORE_NAME[lang].get((before.group(1) or before.group(2)).lower())
        if prefix is not None:
            start, pronoun = before.start(), prefix + pronoun
    if lang == "ca" and re.search(r"(?<!\w)de\s+$", text[:start]):  # "de això" → "d'això"
        start, pronoun = re.search(r"(?<!\w)de\s+$", text[:start]).start(), "d'" + pronoun
    if not text[:start].strip() or text[:start].rstrip().endswith(("¿", "¡")):
        pronoun = pronoun[0].upper() + pronoun[1:]
    return text[:start] + pronoun + text[end:], f"{text[span[0]:span[1]]!r} -> {pronoun!r}"


def key_noun(text: str, lang: str, avoid: set[str]) -> re.Match[str] | None:
    """The longest word after a determiner (past adjectives and numerals) that looks like a common noun:
    letters only, four or more, not capitalised inside the sentence, not half of a compound with a hyphen, not
    part of the pair's name (``avoid``, lower case). Longest, because Apertium's short slips (Catalan "tren" for
    the verb "train") are no key nouns."""
    words = list(WORD.finditer(text))
    found: list[re.Match[str]] = []
    for i, w in enumerate(words[:-1]):
        if w.group().lower() not in DETERMINERS[lang]:
            continue
        for nxt in words[i + 1:i + 4]:
            word, low = nxt.group(), nxt.group().lower()
            if low in NOT_NOUNS[lang] or low.isdigit():
                continue
            inside = text[:nxt.start()].strip(" ¿¡\"'")
            if (word.isalpha() and len(word) >= 4 and low not in avoid and low not in DETERMINERS[lang]
                    and (word[0].islower() or not inside) and "-" not in text[nxt.start() - 1:nxt.end() + 1]):
                found.append(nxt)
            break
    return max(found, key=lambda m: len(m.group()), default=None)


def mistranslate_noun(text: str, lang: str, avoid: set[str], rng: random.Random) -> tuple[str, str] | None:
    """``text`` with its key noun replaced by an unrelated noun of ``lang``."""
    m = key_noun(text, lang, avoid)
    if m is None:
        return None
    new = rng.choice([n for n in NOUNS[lang] if n != m.group().lower()])
    if m.group()[0].isupper():
        new = new[0].upper() + new[1:]
    return text[:m.start()] + new + text[m.end():], f"{m.group()} -> {new}"


# --- the set ---------------------------------------------------------------------------------------------------

def short_code(lang: str) -> str:
    """``en``, ``es``, ``ca`` or ``gl`` for any spelling of those languages (``spa``, ``es-ES``…)."""
    code = canonical(lang)
    for short in LANGS:
        if canonical(short) == code:
            return short
    raise ValueError(f"qc_set has no {lang!r}: it is built for {', '.join(LANGS)}")


def build(lang: str, seed: int = 0) -> list[dict[str, Any]]:
    """The labelled rows of ``lang`` (en, es, ca, gl, or another spelling of them): one ``good`` row per source
    pair, then each corruption on a subset of about 16 pairs drawn from ``seed``. Keys: id, lang (synth's code,
    ``spa``), kind, bad, topic, instruction, response, instruction_en, response_en, pair (the source pair's
    index) and note (what was changed)."""
    short = short_code(lang)
    code = canonical(short)
    src = pairs()
    tr = (lambda t: t) if short == "en" else translations(short).__getitem__
    es = translations("es") if short == "en" else None
    rows: list[dict[str, Any]] = []

    def row(kind: str, i: int, instruction: str, instruction_en: str, response: str, response_en: str,
            note: str = "") -> None:
        rows.append({"id": f"{short}-{kind}-{i}", "lang": code, "kind": kind, "bad": kind != "good",
                     "topic": src[i]["topic"], "instruction": instruction, "response": response,
                     "instruction_en": instruction_en, "response_en": response_en, "pair": i, "note": note})

    for i, p in enumerate(src):
        row("good", i, tr(p["instruction"]), p["instruction"], tr(p["response"]), p["response"])

    for kind in KINDS[1:]:
        if short == "en" and kind in TRANSLATION_KINDS:
            continue
        order = random.Random(f"qc_set-{seed}-{kind}").sample(range(len(src)), len(src))
        made = 0
        for i in order:
            if made == PER_KIND:
                break
            rng = random.Random(f"qc_set-{seed}-{kind}-{i}")
            if corrupt(kind, i, short, tr, es, rng, row):
                made += 1
    rows.sort(key=lambda r: (KINDS.index(r["kind"]), r["pair"]))
    return rows


def corrupt(kind: str, i: int, lang: str, tr: Any, es: dict[str, str] | None, rng: random.Random,
            row: Any) -> bool:
    """Add the ``kind`` row of pair ``i``; False where the pair does not lend itself to it."""
    src = pairs()
    p = src[i]
    ins, ins_en, res, res_en = tr(p["instruction"]), p["instruction"], tr(p["response"]), p["response"]
    if kind in ("swap_same_topic", "swap_unrelated"):
        same = kind == "swap_same_topic"
        j = rng.choice([j for j, q in enumerate(src) if j != i and (q["topic"] == p["topic"]) == same])
        row(kind, i, tr(src[j]["instruction"]), src[j]["instruction"], res, res_en, f"instruction of pair {j}")
    elif kind == "wrong_language":
        other = es[ins_en] if es is not None else ins_en
        row(kind, i, other, ins_en, res, res_en, f"instruction in {'Spanish' if es is not None else 'English'}")
    elif kind == "number_changed":
        done = change_number(ins, ins_en) if p["number"] else None
        if done is None:
            return False
        row(kind, i, done[0], ins_en, res, res_en, done[1])
    elif kind == "name_dropped":
        done = drop_name(ins, [tr(p["name"]), p["name"]], lang) if p["name"] else None
        if done is None:
            return False
        row(kind, i, done[0], ins_en, res, res_en, done[1])
    elif kind == "noun_mistranslated":
        avoid = {w.lower() for n in ([tr(p["name"]), p["name"]] if p["name"] else []) for w in WORD.findall(n)}
        done = mistranslate_noun(ins, lang, avoid, rng)
        if done is None:
            return False
        row(kind, i, done[0], ins_en, res, res_en, done[1])
    elif kind == "truncated_response":
        share = rng.uniform(0.4, 0.7)
        row(kind, i, ins, ins_en, truncate(res, share), truncate(res_en, share), f"cut at {share:.0%}")
    elif kind == "copies_response":
        k = rng.choice((1, 2)) if len(sentences(res_en)[0]) < 150 else 1
        row(kind, i, lead(res, k), lead(res_en, k), res, res_en, f"first {k} sentence(s) of the response")
    elif kind == "boilerplate":
        b = rng.randrange(len(BOILERPLATE))
        row(kind, i, ins, ins_en, tr(BOILERPLATE[b]), BOILERPLATE[b], f"boilerplate {b}")
    elif kind == "asks_missing":
        row(kind, i, tr(p["asks_missing"]), p["asks_missing"], res, res_en)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return True


# --- command line ----------------------------------------------------------------------------------------------

def _short(text: str, n: int = 240) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _tail(text: str, n: int = 160) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", action="append", choices=LANGS, help="a language (repeatable; default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=2, help="example rows to print per language")
    ap.add_argument("--kind", choices=KINDS, help="draw the examples from this kind only")
    ap.add_argument("--jsonl", type=Path, help="write every row of the languages built to this file")
    args = ap.parse_args()
    out = args.jsonl.open("w", encoding="utf-8") if args.jsonl else None
    for lang in args.lang or LANGS:
        t0 = time.perf_counter()
        rows = build(lang, args.seed)
        took = time.perf_counter() - t0
        counts = Counter(r["kind"] for r in rows)
        print(f"== {lang} ({rows[0]['lang']}): {len(rows)} rows, {sum(r['bad'] for r in rows)} bad, "
              f"built in {took:.2f} s")
        print("   " + "  ".join(f"{k} {counts[k]}" for k in KINDS if counts[k]))
        pool = [r for r in rows if (r["kind"] == args.kind if args.kind else r["bad"])]
        rng = random.Random(f"examples-{args.seed}-{lang}")
        for r in rng.sample(pool, min(args.examples, len(pool))):
            print(f"-- {r['id']} ({r['topic']}){': ' + r['note'] if r['note'] else ''}")
            print(f"   instruction:    {_short(r['instruction'])}")
            if lang != "en" or r["instruction"] != r["instruction_en"]:
                print(f"   instruction_en: {_short(r['instruction_en'])}")
            show = _tail if r["kind"] == "truncated_response" else _short  # where it was cut
            print(f"   response:       {show(r['response'])}")
            if lang != "en":
                print(f"   response_en:    {show(r['response_en'])}")
        print()
        if out:
            for r in rows:
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
    if out:
        out.close()
        print(f"rows written to {args.jsonl}")


if __name__ == "__main__":
    main()
