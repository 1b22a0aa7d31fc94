"""Paragraphs, sentences and pieces that fit a length: the text splitting that extract and translation share.

Extract cuts documents into paragraph windows (``synth.extract.fragment``); translation cuts a fragment into
pieces a model takes in one request (``split_text``). Both keep paragraphs whole when they fit, else cut
between sentences, and only then inside a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n+")
# Sentence ends: Latin and CJK marks, Devanagari danda, Ethiopic full stop, Arabic question mark.
SENTENCE_END = re.compile(r"(?<=[.!?…。！？।॥።؟])[\"'”’»)\]]*\s+")

# Looser ends for sentence-level LID: also ; and :, line breaks, and CJK marks with no space after them.
CLAUSE_END = re.compile(r"(?<=[.!?;:。！？；।॥።፧፨؟۔])\s+|\n+|(?<=[。！？])")

Measure = Callable[[str], int]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def sentences(paragraph: str) -> list[str]:
    return [s for s in SENTENCE_END.split(paragraph) if s]


def clauses(text: str) -> list[str]:
    """Sentence-like units for telling languages apart sentence by sentence, cut more eagerly than ``sentences``
    (which keeps a fragment's sentences whole): at end punctuation of several scripts, ; and :, line breaks."""
    return [s.strip() for s in CLAUSE_END.split(text) if s and s.strip()]


def pack(units: list[str], max_len: int, measure: Measure = len) -> list[str]:
    """``units`` joined with spaces, greedily, into pieces of at most ``max_len`` (a unit over it stands alone)."""
    out: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and measure(candidate) > max_len:
            out.append(current)
            current = unit
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def cut_between_words(sentence: str, max_len: int, measure: Measure = len) -> list[str]:
    """A sentence over ``max_len`` cut between words; a word over it stays whole (a model truncates it)."""
    return pack(sentence.split(" "), max_len, measure)


def cut_anywhere(sentence: str, max_len: int, measure: Measure = len) -> list[str]:
    """A sentence over ``max_len`` cut at the last space that fits, else anywhere: every piece fits.

    Works with offsets, never re-slicing the remainder, so a 20 MB run-on line stays linear.
    """
    out: list[str] = []
    start, n = 0, len(sentence)
    while start < n:
        # Longest prefix that fits, by bisection (measure may count tokens; a token is < 16 characters).
        lo, hi = 1, min(n - start, max_len * 16)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if measure(sentence[start : start + mid]) <= max_len else (lo, mid - 1)
        end = start + lo
        if end < n:
            space = sentence.rfind(" ", start, end + 1)
            end = space if space > start + lo // 2 else end
        piece = sentence[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


def split_paragraph(paragraph: str, max_len: int, measure: Measure = len,
                    cut: Callable[[str, int, Measure], list[str]] = cut_anywhere) -> list[str]:
    """A paragraph as pieces of at most ``max_len``: itself, or groups of whole sentences, or ``cut`` sentences."""
    if measure(paragraph) <= max_len:
        return [paragraph]
    parts = [part for sent in sentences(paragraph)
             for part in ([sent] if measure(sent) <= max_len else cut(sent, max_len, measure))]
    return pack(parts, max_len, measure)


def split_text(text: str, max_len: int, measure: Measure = len,
               merge: bool = False) -> tuple[list[str], list[str]]:
    """Pieces of ``text`` that each fit in ``max_len`` (as measured), and the separator before each.

    Paragraphs stay whole when they fit, else they are cut between sentences, and a sentence over the limit
    between words (a single word over it stays whole: the translator truncates it and says so). ``merge``
    packs consecutive whole paragraphs into one piece while they fit (fewer, longer requests: what an LLM
    prefers; MT models prefer sentences).
    ``"".join(sep + piece)`` rebuilds the text with normalised spacing.
    """
    pieces: list[str] = []
    seps: list[str] = []
    whole: list[bool] = []
    for para in paragraphs(text):
        chunks = split_paragraph(para, max_len, measure, cut_between_words)
        for i, chunk in enumerate(chunks):
            first = i == 0
            if (merge and first and len(chunks) == 1 and pieces and whole[-1]
                    and measure(pieces[-1] + "\n\n" + chunk) <= max_len):
                pieces[-1] += "\n\n" + chunk
                continue
            seps.append("" if not pieces else ("\n\n" if first else " "))
            pieces.append(chunk)
            whole.append(len(chunks) == 1)
    return pieces, seps


def join_pieces(pieces: list[str], seps: list[str]) -> str:
    return "".join(sep + piece for sep, piece in zip(seps, pieces, strict=True))
