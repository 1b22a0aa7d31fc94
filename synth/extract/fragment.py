"""Paragraph-aware fragmenting: windows of whole paragraphs between a minimum and maximum length.

A fragment becomes the *response* of a training pair, so it should read as a whole: windows are built from
whole paragraphs, a paragraph longer than the maximum is split between sentences, and only a sentence longer
than the maximum is cut (at a space when there is one).
"""

from __future__ import annotations

import re
import unicodedata

from synth.text import Measure, paragraphs, split_paragraph

SPACES = re.compile(r"[ \t\r\f\v]+")


def normalize(text: str) -> str:
    """NFC, unified newlines, trimmed trailing spaces: equal text gets equal bytes and equal ids."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()


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
        for piece in split_paragraph(para, max_len, measure):
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
