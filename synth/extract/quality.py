"""Gopher / FineWeb-2 style quality signals for text fragments, thresholds per language, PII masking.

Scoring and filtering are separate (as in NeMo Curator): ``quality_signals`` / ``signals_table`` turn text
into ``q_*`` numbers that are stored as Parquet columns, and ``failed_reasons`` applies a
``QualityThresholds`` to such a table. Thresholds can then be tuned on stored scores without re-scoring.

Words are found with one Unicode-aware regex, the same for every language:

* a word is a run of letters, digits and combining marks (so Devanagari vowel signs and viramas stay inside
  their word), joined across an inner apostrophe or hyphen (``ng'ombe``, ``well-known``). Punctuation and
  symbols separate words, which covers the Ethiopic wordspace ``፡`` (Amharic, Tigrinya) with no extra rule;
* in scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar) every character, with the
  combining marks that follow it, counts as one word. Without a segmenter this is the only count that does
  not depend on where a writer happened to put spaces. Word counts there are character counts (about 1.5-2x
  real Chinese words, about 4x Thai words) and mean word length is about 1, so ``quality.toml`` gives
  ``cmn``, ``jpn``, ``tha`` ... their own bounds.

Word length counts code points, so text should be NFC-normalised first (decomposed Yoruba or Vietnamese
would look longer). The less obvious definitions: ``q_symbol_ratio`` is ``#`` and ellipses per word,
``q_digit_ratio`` digits per non-space character, ``q_upper_ratio`` upper-case letters per word character,
line and paragraph signals ignore blank lines and compare lines lower-cased. The n-gram signals use the
lower-cased words; they are the Gopher character shares of the most frequent n-gram (n = 2..4; 0 unless it
occurs twice; on a tie the one with the most characters) and of the words covered by any n-gram that occurs
more than once (n = 5..10).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections import Counter
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.lang import NO_SPACE_RANGES, LanguageError, canonical

DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
TOP_NGRAMS = (2, 3, 4)

SIGNALS: tuple[str, ...] = (
    "q_words",
    "q_mean_word_len",
    "q_symbol_ratio",
    "q_digit_ratio",
    "q_alpha_words_ratio",
    "q_upper_ratio",
    "q_bullet_lines_ratio",
    "q_ellipsis_lines_ratio",
    "q_lines_end_punct_ratio",
    "q_boilerplate_lines_ratio",
    "q_dup_line_ratio",
    "q_dup_para_ratio",
    *(f"q_top_{n}gram_ratio" for n in TOP_NGRAMS),
    *(f"q_dup_{n}gram_ratio" for n in DUP_NGRAMS),
)

# --- character classes, built once from the Unicode database of this Python ----------------------------

# Scanning the Unicode database is limited to the BMP: a character class with many ranges above U+FFFF
# compiles to a linear list of ranges (10x slower). Above the BMP one range stands for each plane instead.
_ASTRAL_WORD = "\\U00010000-\\U0001efff"  # historic scripts, Adlam, math letters; not emoji (U+1F000...)


def _char_class(cps: list[int]) -> str:
    """A regex character class body for a sorted list of code points, as ranges."""
    parts: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\u{cps[i]:04x}" if i == j else f"\\u{cps[i]:04x}-\\u{cps[j]:04x}")
        i = j + 1
    return "".join(parts)


def _build_classes() -> tuple[str, str, str, str]:
    """(word chars, no-space letters, combining marks, uppercase letters) as class bodies."""
    nospace = bytearray(0x10000)
    for a, b in NO_SPACE_RANGES:
        if a < 0x10000:
            nospace[a : b + 1] = b"\x01" * (b + 1 - a)
    word: list[int] = []
    ns: list[int] = []
    marks: list[int] = []
    upper: list[int] = []
    category = unicodedata.category
    for cp in range(0x10000):
        cat = category(chr(cp))
        first = cat[0]
        if first == "M":
            marks.append(cp)
            if not nospace[cp]:
                word.append(cp)
        elif first in "LN":
            (ns if nospace[cp] else word).append(cp)
            if cat == "Lu" or cat == "Lt":
                upper.append(cp)
    big = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in NO_SPACE_RANGES if a >= 0x10000)
    return _char_class(word) + _ASTRAL_WORD, _char_class(ns) + big, _char_class(marks), _char_class(upper)


_W, _NS, _MARKS, _UP = _build_classes()
_WORD = re.compile(f"[{_NS}][{_MARKS}]*|[{_W}]+(?:['\u2019\\-\u2010\u2011][{_W}]+)*")
_LETTER = re.compile(r"[^\W\d_]")
_UPPER = re.compile(f"[{_UP}]")
_DIGIT = re.compile(r"\d")
_PARA_SPLIT = re.compile(r"\n[ \t\r\f\v]*\n\s*")

_BULLETS = tuple("-*+•‣⁃◦●○■□▪▫►▶▸➤➢→✓✔·")  # not – or —: they open lines of dialogue
_ELLIPSES = ("...", "…")
_TERMINAL = frozenset(".!?…。！？．｡।॥።፧۔؟܀߹။།។")
_CLOSERS = "\"'”’»›)]}」』〉》）】 "

# Lines that are site furniture rather than text. Specific phrases only: a recipe may talk about cookies and
# an article about privacy, so single words are not enough. Matched against lower-cased lines, and only when
# one of the trigger words occurs in the text at all (the regex alone costs more than all other signals).
_BOILERPLATE = re.compile(
    r"cookie (?:policy|policies|settings|preferences|consent|notice)|(?:use|uses|accept|allow|enable)s? "
    r"(?:all |of |our )?cookies|privacy (?:policy|notice|statement|settings)|terms (?:of|and) "
    r"(?:use|service|conditions)|terms & conditions|all rights reserved|click here|"
    r"(?:enable|requires?|turn on) javascript|javascript (?:is|must be) (?:disabled|enabled|required)|"
    r"skip to (?:main )?content|"
    r"(?:sign|log) (?:in|up) to|subscribe to (?:our|the) newsletter|share (?:this|on) (?:facebook|twitter)|"
    r"haki zote zimehifadhiwa|tous droits réservés|politique de confidentialité|alle rechte vorbehalten|"
    r"todos los derechos reservados|política de privacidad|todos os direitos reservados|"
    r"datenschutzerklärung|copyright ©|© ?(?:19|20)\d\d"
)
_BOILERPLATE_TRIGGERS = (
    "cookie", "privacy", "terms", "reserved", "click", "javascript", "skip", "sign", "log ", "subscribe",
    "share", "zimehifadhiwa", "réservés", "confidentialité", "vorbehalten", "derechos", "privacidad",
    "direitos", "datenschutz", "©",
)  # fmt: skip


def _ends_sentence(line: str) -> bool:
    """Whether a line ends in terminal punctuation, after closing quotes and brackets."""
    t = line.rstrip(_CLOSERS)
    # Ethiopic: a full stop may be written as two wordspaces (Tigrinya) or be followed by one (Amharic)
    return t[-1:] in _TERMINAL or t.endswith("፡፡") or (t.endswith("፡") and t[-2:-1] in _TERMINAL)


# --- signals --------------------------------------------------------------------------------------------


def _dup_fraction(items: list[str]) -> float:
    """Characters in repeated items (every occurrence after the first) over all characters."""
    total = sum(map(len, items))
    if total == 0 or len(set(items)) == len(items):
        return 0.0
    seen: set[str] = set()
    dup = 0
    for s in items:
        if s in seen:
            dup += len(s)
        else:
            seen.add(s)
    return dup / total


def _repetition(words: list[str], lens: list[int], out: dict[str, float]) -> None:
    """Set the top and duplicated n-gram shares, n = 2..10, in ``out``.

    An occurrence of a repeated n-gram starts with an occurrence of a repeated (n-1)-gram, so each n only
    looks at the positions where the (n-1)-gram repeats. In ordinary text these shrink fast, and the cost is
    about that of counting the 2-grams once.
    """
    for k in TOP_NGRAMS:
        out[f"q_top_{k}gram_ratio"] = 0.0
    for k in DUP_NGRAMS:
        out[f"q_dup_{k}gram_ratio"] = 0.0
    total, n = sum(lens), len(words)
    grams: list[tuple[str, ...]] = list(zip(words, words[1:], strict=False))
    starts: list[int] = list(range(len(grams)))
    prefix: list[int] = []
    for k in range(2, DUP_NGRAMS[-1] + 1):
        if k > 2:
            starts = [i for i in starts if i + k <= n]
            grams = [tuple(words[i : i + k]) for i in starts]
        counts = Counter(grams)
        if len(counts) == len(grams):
            return  # nothing repeats at this length, so nothing longer does either
        kept = [(i, g) for i, g in zip(starts, grams, strict=True) if counts[g] > 1]
        starts = [i for i, _ in kept]
        if k in TOP_NGRAMS:  # the most frequent n-gram; of several, the one with the most characters
            top = max(counts.values())
            chars = max(sum(map(len, g)) for _, g in kept if counts[g] == top)
            out[f"q_top_{k}gram_ratio"] = top * chars / total
        if k in DUP_NGRAMS:
            prefix = prefix or list(accumulate(lens, initial=0))
            covered = end = 0
            for i in starts:
                covered += prefix[i + k] - prefix[max(i, end)]
                end = i + k
            out[f"q_dup_{k}gram_ratio"] = covered / total


def quality_signals(text: str) -> dict[str, float]:
    """All ``q_*`` signals of one text (``q_words`` is an int); ratios over nothing are 0."""
    lower = text.lower()
    words = _WORD.findall(lower)
    n = len(words)
    lens = list(map(len, words))
    wchars = sum(lens)
    nonspace = sum(map(len, text.split()))

    alpha = 0
    for w in words:
        if w.isalpha() or (not w.isdecimal() and _LETTER.search(w)):
            alpha += 1

    lines = [s for s in (line.strip() for line in lower.splitlines()) if s]
    nl = len(lines) or 1
    paras = [p.strip() for p in _PARA_SPLIT.split(lower)] if "\n" in lower else [lower.strip()]
    boiler = 0
    if any(t in lower for t in _BOILERPLATE_TRIGGERS):
        boiler = sum(1 for s in lines if _BOILERPLATE.search(s))

    out: dict[str, float] = {
        "q_words": n,
        "q_mean_word_len": wchars / n if n else 0.0,
        "q_symbol_ratio": (text.count("#") + text.count("…") + text.count("...")) / n if n else 0.0,
        "q_digit_ratio": len(_DIGIT.findall(text)) / nonspace if nonspace else 0.0,
        "q_alpha_words_ratio": alpha / n if n else 0.0,
        "q_upper_ratio": len(_UPPER.findall(text)) / wchars if wchars else 0.0,
        # a list has two items at least: one paragraph that opens with a dash is not a list
        "q_bullet_lines_ratio": sum(1 for s in lines if s.startswith(_BULLETS)) / nl if nl > 1 else 0.0,
        "q_ellipsis_lines_ratio": sum(1 for s in lines if s.endswith(_ELLIPSES)) / nl,
        "q_lines_end_punct_ratio": sum(1 for s in lines if _ends_sentence(s)) / nl,
        "q_boilerplate_lines_ratio": boiler / nl,
        "q_dup_line_ratio": _dup_fraction(lines),
        "q_dup_para_ratio": _dup_fraction([p for p in paras if p]),
    }
    _repetition(words, lens, out)
    return out


def signals_table(texts: list[str]) -> pa.Table:
    """One row per text, one column per signal: float32, except ``q_words`` (int32). ``None`` counts as ""."""
    rows = [quality_signals(t or "") for t in texts]
    cols = {
        name: pa.array([r[name] for r in rows], pa.int32() if name == "q_words" else pa.float32())
        for name in SIGNALS
    }
    return pa.table(cols)


# --- thresholds -----------------------------------------------------------------------------------------


@dataclass
class QualityThresholds:
    """Bounds on the signals; ``None`` leaves a check out. Word counts for no-space scripts are characters."""

    min_words: int | None = None
    max_words: int | None = None
    min_mean_word_len: float | None = None
    max_mean_word_len: float | None = None
    max_symbol_ratio: float | None = None
    max_digit_ratio: float | None = None
    min_alpha_words_ratio: float | None = None
    max_bullet_lines_ratio: float | None = None
    max_ellipsis_lines_ratio: float | None = None
    max_dup_line_ratio: float | None = None
    max_dup_para_ratio: float | None = None
    max_top_2gram_ratio: float | None = None
    max_top_3gram_ratio: float | None = None
    max_top_4gram_ratio: float | None = None
    max_dup_5gram_ratio: float | None = None
    max_dup_6gram_ratio: float | None = None
    max_dup_7gram_ratio: float | None = None
    max_dup_8gram_ratio: float | None = None
    max_dup_9gram_ratio: float | None = None
    max_dup_10gram_ratio: float | None = None
    max_boilerplate_lines_ratio: float | None = None
    min_lines_end_punct_ratio: float | None = None
    max_upper_ratio: float | None = None


# (threshold field, signal column, reason). The order is the order checks are applied in: a row is reported
# with the first one it fails. Cheap, coarse checks (length, characters) come before repetition.
CHECKS: tuple[tuple[str, str, str], ...] = (
    ("min_words", "q_words", "too_few_words"),
    ("max_words", "q_words", "too_many_words"),
    ("min_mean_word_len", "q_mean_word_len", "mean_word_len_low"),
    ("max_mean_word_len", "q_mean_word_len", "mean_word_len_high"),
    ("max_symbol_ratio", "q_symbol_ratio", "symbol_ratio"),
    ("max_digit_ratio", "q_digit_ratio", "digit_ratio"),
    ("min_alpha_words_ratio", "q_alpha_words_ratio", "alpha_words_ratio"),
    ("max_bullet_lines_ratio", "q_bullet_lines_ratio", "bullet_lines"),
    ("max_ellipsis_lines_ratio", "q_ellipsis_lines_ratio", "ellipsis_lines"),
    ("max_dup_line_ratio", "q_dup_line_ratio", "dup_lines"),
    ("max_dup_para_ratio", "q_dup_para_ratio", "dup_paras"),
    *((f"max_top_{n}gram_ratio", f"q_top_{n}gram_ratio", f"top_{n}gram") for n in TOP_NGRAMS),
    *((f"max_dup_{n}gram_ratio", f"q_dup_{n}gram_ratio", f"dup_{n}gram") for n in DUP_NGRAMS),
    ("max_boilerplate_lines_ratio", "q_boilerplate_lines_ratio", "boilerplate"),
    ("min_lines_end_punct_ratio", "q_lines_end_punct_ratio", "lines_end_punct"),
    ("max_upper_ratio", "q_upper_ratio", "upper_ratio"),
)
REASONS: tuple[str, ...] = tuple(reason for _, _, reason in CHECKS)


def failed_reasons(signals: pa.Table, th: QualityThresholds) -> pa.Array:
    """Per row, the reason of the first check in ``CHECKS`` that fails, or null; null signals pass."""
    result: pa.Array | pa.ChunkedArray = pa.nulls(signals.num_rows, pa.string())
    for name, column, reason in reversed(CHECKS):  # reversed, so the earliest failing check is written last
        bound = getattr(th, name)
        if bound is None:
            continue
        if column not in signals.column_names:
            raise ValueError(f"threshold {name} is set but the signals table has no column {column}")
        col = signals.column(column)
        value = pa.scalar(bound, col.type) if pa.types.is_floating(col.type) else pa.scalar(bound)
        failed = (pc.less if name.startswith("min_") else pc.greater)(col, value)
        result = pc.if_else(pc.fill_null(failed, False), pa.scalar(reason), result)
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result


_COUNTS = ("min_words", "max_words")


def _bundled() -> Any:
    return resources.files("synth").joinpath("data", "quality.toml")


@lru_cache(maxsize=16)
def _read_config(path: str) -> dict[str, dict[str, Any]]:
    """Parse and check a thresholds file: every table's keys must be ``QualityThresholds`` fields, and every
    table but ``[default]`` names a language (any spelling; returned under its canonical code)."""
    source = _bundled() if path == "" else Path(path)
    label = "synth/data/quality.toml" if path == "" else path
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{label}: not valid TOML ({e})") from e
    known = {f.name for f in fields(QualityThresholds)}
    for table, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"{label}: top-level key {table!r} must be a table like [default] or [swh]")
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"{label}: unknown key {key!r} in [{table}]")
            if value is False:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{label}: [{table}] {key} must be a number or false (off), not {value!r}")
            if key in _COUNTS and not isinstance(value, int):
                raise ValueError(f"{label}: [{table}] {key} must be a whole number, not {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for table, values in data.items():
        try:
            code = table if table == "default" else canonical(table)
        except LanguageError as e:
            raise ValueError(f"{label}: [{table}] is neither [default] nor a language: {e}") from e
        if code in out:
            raise ValueError(f"{label}: two tables for language {code}")
        out[code] = values
    return out


def load_thresholds(lang: str, path: str | Path | None = None) -> QualityThresholds:
    """The ``[default]`` table with the ``[lang]`` table over it (``false`` there turns a check off).

    ``lang`` is any spelling ``synth.lang.canonical`` knows (``sw``, ``swh_Latn``). ``path``
    replaces the bundled ``synth/data/quality.toml``. A file is parsed once per process and path.
    """
    data = _read_config("" if path is None else str(path))
    values = dict(data.get("default", {}))
    values.update(data.get(canonical(lang), {}))
    return QualityThresholds(
        **{k: None if v is False else v if k in _COUNTS else float(v) for k, v in values.items()}
    )


# --- PII --------------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")
_H = r"[0-9a-f]{1,4}"
_IPV6 = re.compile(
    rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}(?::{_H}){{1,6}}|(?:{_H}:){{1,7}}:|::(?:{_H}:){{0,6}}{_H})"
    r"(?![\w:])",
    re.IGNORECASE,
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){1,6}(?!\d)")
_PHONE_LOCAL = re.compile(
    r"(?<![\w+.,/\-])(?:\(\d{2,5}\) ?|\d{2,5}[ .\-])\d{2,4}(?:[ .\-]\d{2,4}){0,3}(?![.,/\-]?\d)"
)
_NOT_PHONE = re.compile(
    r"\d{1,2}([./\-])\d{1,2}\1\d{2,4}"  # a date 10.12.1948
    r"|\d{4}([./\-])\d{1,2}\2\d{1,2}"  # an ISO date
    r"|(?:1[5-9]|20)\d\d(?:[ \-–]+(?:1[5-9]|20)\d\d)+"  # a range or a list of years
    r"|[1-9]\d{0,2}(?:([ .])\d{3})(?:\3\d{3})*"  # thousands 1 000 000 (a phone number starts with 0 instead)
)


def mask_pii(text: str) -> tuple[str, int]:
    """Emails → ``<EMAIL>``, IP addresses → ``<IP>``, phone numbers → ``<PHONE>``; returns (text, count).

    Phone numbers are ``+`` and 7-15 digits, or 7-15 digits in groups with separators (spaces, dots,
    dashes, a bracketed area code). Dates, year ranges and thousands groups are left alone, and so are years
    and other numbers without separators: masking them would damage far more text than it protects.
    """
    n = 0

    def phone(m: re.Match[str]) -> str:
        nonlocal n
        s = m.group()
        digits = sum(c.isdigit() for c in s)
        if not 7 <= digits <= 15 or (s[0] != "+" and _NOT_PHONE.fullmatch(s)):
            return s
        n += 1
        return "<PHONE>"

    if "@" in text:
        text, k = _EMAIL.subn("<EMAIL>", text)
        n += k
    if ":" in text:
        text, k = _IPV6.subn("<IP>", text)
        n += k
    if not _DIGIT.search(text):
        return text, n
    text, k = _IPV4.subn("<IP>", text)
    n += k
    text = _PHONE_INTL.sub(phone, text)
    text = _PHONE_LOCAL.sub(phone, text)
    return text, n


if __name__ == "__main__":  # timing: python -m synth.extract.quality [jsonl with "lang" and "text"]
    # On the 2-core AMD EPYC dev box: 2,000 UDHR paragraphs (169 chars on average) 0.20 ms per 1,000 chars
    # (~34 us a call); 2,000 ~1,000-char fragments (6 paragraphs of one language) 0.19 ms per 1,000 chars.
    import json
    import sys
    import time
    from itertools import groupby

    src = sys.argv[1] if len(sys.argv) > 1 else "examples/lid_eval/udhr_paragraphs.jsonl"
    with open(src, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    paras = [r["text"] for r in rows]
    frags = []
    for _, group in groupby(rows, key=lambda r: r["lang"]):
        texts = [r["text"] for r in group]
        frags += ["\n\n".join(texts[i : i + 6]) for i in range(0, len(texts) - 5, 6)]
    for name, texts in (("paragraphs", paras), ("fragments", frags)):
        texts = (texts * (2000 // len(texts) + 1))[:2000]
        chars = sum(map(len, texts))
        t0 = time.perf_counter()
        for t in texts:
            quality_signals(t)
        dt = time.perf_counter() - t0
        per_k = dt / chars * 1e6
        print(f"2000 {name}, {chars / 2000:.0f} chars each: {dt * 1e3:.0f} ms, {per_k:.3f} ms/1,000 chars")
