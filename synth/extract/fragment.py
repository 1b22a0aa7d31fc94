"""Paragraph-aware fragmenting: windows of whole paragraphs between a minimum and maximum length.

A fragment becomes the *response* of a training pair, so it should read as a whole: windows are built from
whole paragraphs, a paragraph longer than the maximum is split between sentences, and only a sentence longer
than the maximum is cut (at a space when there is one).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n+")
# Sentence ends: Latin and CJK marks, Devanagari danda, Ethiopic full stop, Arabic question mark.
SENTENCE_END = re.compile(r"(?<=[.!?…。！？।॥።؟])[\"'”’»)\]]*\s+")
SPACES = re.compile(r"[ \t\r\f\v]+")

Measure = Callable[[str], int]


def normalize(text: str) -> str:
    """NFC, unified newlines, trimmed trailing spaces: equal text gets equal bytes and equal ids."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def sentences(paragraph: str) -> list[str]:
    return [s for s in SENTENCE_END.split(paragraph) if s]


def _hard_cut(sentence: str, max_len: int, measure: Measure) -> list[str]:
    """Last resort for a sentence over the maximum: cut at the last space that fits, else anywhere.

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


def _pieces(paragraph: str, max_len: int, measure: Measure) -> list[str]:
    """A paragraph as pieces that each fit: itself, or groups of whole sentences, or cut sentences."""
    if measure(paragraph) <= max_len:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sent in sentences(paragraph):
        parts = [sent] if measure(sent) <= max_len else _hard_cut(sent, max_len, measure)
        for part in parts:
            candidate = f"{current} {part}" if current else part
            if measure(candidate) <= max_len:
                current = candidate
            else:
                if current:
                    pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def fragment(text: str, min_len: int = 200, max_len: int = 2000, measure: Measure = len) -> list[str]:
    """Split normalised ``text`` into windows of whole paragraphs, each at most ``max_len`` long.

    Windows shorter than ``min_len`` are returned too (the caller counts and drops them), so no text vanishes
    silently. A short last window joins the previous one when both fit together.
    """
    if min_len > max_len:
        raise ValueError(f"min length {min_len} is above max length {max_len}")
    windows: list[str] = []
    current: list[str] = []
    for para in paragraphs(text):
        for piece in _pieces(para, max_len, measure):
            joined = "\n\n".join([*current, piece])
            if current and measure(joined) > max_len:
                windows.append("\n\n".join(current))
                current = [piece]
            else:
                current.append(piece)
            if measure("\n\n".join(current)) >= min_len:
                windows.append("\n\n".join(current))
                current = []
    if current:
        tail = "\n\n".join(current)
        if windows and measure(tail) < min_len and measure(windows[-1] + "\n\n" + tail) <= max_len:
            windows[-1] = windows[-1] + "\n\n" + tail
        else:
            windows.append(tail)
    return windows
