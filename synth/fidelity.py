"""What a translation must keep of its source: its numbers and its names (stage 5's fidelity checks, and
``synth audit``'s). Pure functions over strings; Apertium's and an LLM's exonyms (Misisipi, Nápoles) count as kept.
"""

from __future__ import annotations

import os
import re
import unicodedata
from difflib import SequenceMatcher

_NUMBER = re.compile(r"\d+(?:[.,]\d+|[\u00a0\u202f ]\d{3}(?!\d))*")


def _ascii_digits(text: str) -> str:
    """Digits of any script (Arabic-Indic, Devanagari…) as ASCII, so ٣ matches 3."""
    return "".join(str(unicodedata.digit(ch)) if ch.isdigit() and not ch.isascii() else ch for ch in text)


def numbers(text: str) -> list[str]:
    """The numbers in ``text`` as digit strings; separators are dropped so 1,000 = 1.000 = 1 000 = 1000."""
    return [re.sub(r"\D", "", m) for m in _NUMBER.findall(_ascii_digits(text))]


def numbers_kept(source: str, translation: str) -> bool:
    """Every number of the source appears in the translation (as often as in the source)."""
    have = numbers(translation)
    for num in numbers(source):
        if num in have:
            have.remove(num)
        else:
            return False
    return True


# Capitalised English words that are not names, and words that are usually translated (days, months).
_NOT_NAMES_TEXT = (
    "I I'm I've I'd I'll Mr Mrs Ms Dr OK Please Can Could Would Should What Which Who Whom Whose Why How When Where"
    " Is Are Do Does Did Write Explain Describe List Give Tell Summarize Summarise Provide Make Create Compare"
    " Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July"
    " August September October November December English"
)
_NOT_NAMES = set(_NOT_NAMES_TEXT.split())
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'“(]\s*)$")


def entities(text: str) -> list[str]:
    """Name-like words of an English text that a translation should carry over unchanged.

    A heuristic: acronyms and words with inner capitals or digits anywhere (``UN``, ``iPhone``, ``COVID-19``),
    and single capitalised words that do not start a sentence (``Kenya``, ``Nairobi``). Runs of capitalised
    words (``Universal Declaration of Human Rights``, ``United Nations``) are left out: titles and
    organisations are usually translated. Sentence-initial names are missed, and a capitalised common word
    mid-sentence counts as a name.
    """
    words = list(re.finditer(r"[^\W\d_][\w'-]*", text))
    found = []
    for i, m in enumerate(words):
        word = m.group().strip("'-")
        if len(word) < 2 or word in _NOT_NAMES:
            continue
        if word.isupper() or any(c.isupper() for c in word[1:]) or any(c.isdigit() for c in word):
            found.append(word)
            continue
        if not word[0].isupper() or _SENTENCE_START.search(text[: m.start()]):
            continue
        if not (_neighbour_capital(words, i, -1) or _neighbour_capital(words, i, 1)):
            found.append(word)
    return found


_CONNECTORS = {"of", "the", "and", "for", "de", "du", "da", "van", "von", "al", "bin"}


def _neighbour_capital(words: list[re.Match], i: int, step: int) -> bool:
    """Whether word ``i`` is in a run of capitalised words (connectors such as "of" may sit between them);
    a neighbour that starts a sentence or is a capitalised common word ("Explain Kenya's…") does not count."""
    j = i + step
    while 0 <= j < len(words) and words[j].group() in _CONNECTORS:
        j += step
    if not 0 <= j < len(words):
        return False
    other = words[j].group()
    if not other[0].isupper() or other in _NOT_NAMES or _SENTENCE_START.search(words[j].string[: words[j].start()]):
        return False
    lo, hi = (words[j], words[i]) if step < 0 else (words[i], words[j])
    return re.search(r"[^\w\s]", lo.string[lo.end() : hi.start()]) is None


def entities_kept(source: str, translation: str) -> bool:
    """Every name-like word of the English source survives in the translation: as a part of a word
    (case-insensitive, so Swahili ``Wakenya`` keeps ``Kenya``), accents aside (``Africa``, ``África``), or as the
    language's own spelling of it (``Naples``, ``Nápoles``; ``Danube``, ``Danubio``: ``same_name``)."""
    low = _fold(translation)
    words = [w for w in re.findall(r"[^\W\d_]{3,}", low)]
    return all(_fold(e) in low or any(same_name(_fold(e), w) for w in words) for e in entities(source))


def _fold(text: str) -> str:
    """Lower case without accents: ``Nápoles`` → ``napoles``."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def same_name(name: str, word: str) -> bool:
    """Whether ``word`` may be a language's spelling of ``name`` (both folded): a common start of 4 letters or
    more covering most of the name, or a close match (difflib ratio 0.7: Mississippi/Misisipi, Yangtze/Iangtsé).
    Measured on bench/qc.py: Apertium's exonyms kept, a name replaced by a pronoun still caught."""
    if len(name) < 4:
        return False
    common = len(os.path.commonprefix([name, word]))
    return (common >= 4 and common >= 0.6 * len(name)) or SequenceMatcher(None, name, word).ratio() >= 0.7
