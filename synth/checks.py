"""Output checks shared by the LLM and MT stages: pure functions over strings, each with a named drop reason.

A model's answer goes through ``clean_output`` (code fences, quotes, labels such as ``Translation:``, a
removable chatty preamble or closing remark) and then ``text_problem`` (empty, refusal, only chatter, endless
repetition). The tests behind stage-specific checks (the output language, an instruction that copies its
response, length bounds) live here too, so every stage speaks the same reasons; each stage's ``CHECKS`` list
says which it applies, in what order (``synth.gate.Check``):

==========================  =========================================================================
reason                      meaning
==========================  =========================================================================
``empty_output``            nothing left after cleaning
``truncated``               the model stopped at ``max_tokens`` (finish reason ``length``)
``chatty_preamble``         the output is only chatter ("Sure, here is the translation:"), or starts
                            with chatter that cannot be cut off cleanly
``refusal``                 "I'm sorry, but…", "As an AI…"
``repetition``              a looping output: many repeated n-grams, or a tail that repeats itself
``wrong_language``          LID says the output is not in the language asked for
``copies_response``         the instruction repeats much of the response it should ask for
``instruction_too_short``   below the minimum length
``instruction_too_long``    above the maximum length
``not_user_voice``          the "instruction" speaks as the assistant ("How can I help you today?"),
                            narrates ("The user requested…", "The text describes…") or talks about the
                            prompt itself ("Write a response in JSON format…") instead of asking
``length_ratio_low/high``   a translation far shorter or longer than its source (a summary, a ramble)
``commentary``              a "translation" that talks about the text ("The Swahili sentence means…",
                            "…is translated into English as…") instead of translating it
``truncated_response``      a response that stops mid-sentence (``looks_truncated``; ``synth audit``)
==========================  =========================================================================

Engine failures keep the engine's own reason (``timeout``, ``parse_error``, ``context_length``…).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from synth.lang import is_dense, known
from synth.lang import name as language_name
from synth.prompts import FENCE
from synth.text import paragraphs

EMPTY = "empty_output"
TRUNCATED = "truncated"
CHATTY = "chatty_preamble"
REFUSAL = "refusal"
REPETITION = "repetition"
WRONG_LANGUAGE = "wrong_language"
COPIES_RESPONSE = "copies_response"
TOO_SHORT = "instruction_too_short"
TOO_LONG = "instruction_too_long"
NOT_USER_VOICE = "not_user_voice"
COMMENTARY = "commentary"
RATIO_LOW = "length_ratio_low"
RATIO_HIGH = "length_ratio_high"
TRUNCATED_RESPONSE = "truncated_response"
# What may end a complete text: sentence ends, closing quotes and brackets, and the colon or semicolon of a list.
_COMPLETE_END = set(".!?…。！？؟।॥።፧\"'”’»)]}*:;")
MIN_CUT_WORDS = 6  # a last line shorter than this (a heading, a list item, a signature) is not judged
# The markers around the answer in prompts/reverse_instruction: an instruction that has them echoes the prompt.
ECHO_MARKERS = FENCE


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the output checks; they go into the fingerprint of the stage that applies them."""

    max_repeated_ngrams: float = 0.4  # share of word 3-grams that repeat an earlier one
    min_tail_repeat_tokens: int = 16  # a tail that loops over at least this many tokens…
    min_tail_repeats: int = 4  # …in at least this many copies of the same period
    min_lid_prob: float = 0.5  # probability of the expected language (top-1 must be that language too)
    min_translation_ratio: float = 0.3  # characters of the English translation per character of the source
    max_translation_ratio: float = 3.0  # (×3 for Chinese, Japanese, Korean sources)
    max_copy_share: float = 0.5  # word 4-gram overlap with the response, either way (see copy_share)
    min_instruction_chars: int = 15
    max_instruction_chars: int = 600
    min_instruction_words: int = 3


def as_check_settings(value: CheckSettings | dict[str, Any]) -> CheckSettings:
    """``checks`` as a config file gives it (a table) or as Python does (``CheckSettings``)."""
    if isinstance(value, CheckSettings):
        return value
    known = set(CheckSettings.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"checks: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return CheckSettings(**value)


# ---------------------------------------------------------------------------------------------- cleaning

_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n?(.*?)\n?```\s*$", re.DOTALL)
_QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”", "„": "“", "«": "»", "»": "«", "‘": "’", "「": "」", "`": "`"}
# A label the model puts before its answer: "Translation:", "English translation:", "Instruction:", "**Request**:".
_LABEL = re.compile(
    r"^\s*[*_#>\s]*(?:(?:the|an?|my|your)\s+)?(?:[A-Za-z]+\s+){0,2}"
    r"(?:translation|translated\s+text|instruction|request|user(?:'s)?\s+request|prompt|question|answer|output"
    r"|text)\s*[*_]*\s*(?:\([^)\n]{0,40}\)\s*)?[:：]\s*[*_]*\s*",
    re.IGNORECASE,
)


def _language_names() -> list[str]:
    """The English names of the languages synth knows, as prompts spell them."""
    return [language_name(code) for code in known()]


@cache
def _language_label() -> re.Pattern[str]:
    """A language name as a label ("Swahili:", "**English**:"): the prompts end in "<language>:"."""
    names = sorted({n.split(" (")[0] for n in _language_names()} | {"Kiswahili", "Chinese"}, key=len, reverse=True)
    return re.compile(r"^\s*[*_#>\s]*(?:" + "|".join(re.escape(n) for n in names) + r")\s*[*_]*\s*[:：]\s*[*_]*\s*",
                      re.IGNORECASE)


# Chatty openers. When one ends in a colon or a line break the answer after it is kept.
_CHATTER_START = re.compile(
    r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|great|alright|here\s+is|here's|here\s+are|below\s+is"
    r"|the\s+following\s+is|i\s+(?:have|'ve)\s+translated|i\s+will|i'll|let\s+me|as\s+requested"
    r"|this\s+(?:translates|means)\b|in\s+english\s*[,:]"
    r"|(?:a|one|the)\s+(?:good|possible|suitable|better|natural)\s+(?:question|request|instruction|translation)\b"
    r"|the\s+(?:following\s+)?(?:sentence|text|phrase|passage|paragraph)\s+(?:in\s+\w+\s+)?"
    r"(?:is|means|says|reads|translates)\b)\b",
    re.IGNORECASE,
)
_CHATTER_WORDS = re.compile(
    r"\b(?:translat\w*|instruction|request|version|text|answer|question|prompt|rewrit\w*|below|following|here)\b",
    re.IGNORECASE,
)
# Remarks after the answer: "Note: …", "I hope this helps", or a labelled section after a blank line
# ("Explanation:", "Pronunciation:", "Translation:") that explains instead of answering.
_CLOSING = re.compile(
    r"(?:\n+\s*(?:\(?\s*note\s*:|i\s+hope\s+this|let\s+me\s+know|please\s+note|this\s+translation\b|"
    r"feel\s+free|if\s+you\s+(?:need|have|want)|i\s+(?:have\s+)?(?:made|changed|corrected|kept|used|translated)\b"
    r"|here\s+are\s+the\s+changes)"
    r"|\n\s*\n\s*[*_]*(?:explanation|pronunciation|pronounced|notes?|translation|literal\s+translation|meaning"
    r"|breakdown|alternatively)[*_]*\s*[:：])"
    r".*$",
    re.IGNORECASE | re.DOTALL,
)


def _strip_quotes(text: str) -> str:
    for _ in range(2):
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
            inner = text[1:-1].strip()
            if text[0] not in inner:  # "a" and "b" is not one quoted string
                text = inner
    return text


def strip_preamble(text: str) -> tuple[str, bool]:
    """Cut a chatty opener ("Sure! Here is the translation:") when the answer follows a colon or a line break.

    Returns ``(rest, True)`` when an opener was found. ``rest`` is empty when the whole text is chatter or the
    opener cannot be separated from the answer (the caller drops it as ``chatty_preamble``).
    """
    if not _CHATTER_START.match(text):
        return text, False
    # The opener runs to the first colon or line break within the first 200 characters.
    m = re.search(r"[:：]\s*|\n\s*", text[:200])
    if m is None:
        return "", True
    head, rest = text[: m.start()], text[m.end():]
    if not _CHATTER_WORDS.search(head) and not re.match(r"^\s*(?:sure|certainly|of course|okay|ok)\b[!.,]*\s*$",
                                                        head, re.IGNORECASE):
        return "", True  # "Here is what I think" with a colon later: not a label we can trust to cut
    return rest.strip(), True


def clean_output(text: str | None) -> tuple[str, bool]:
    """Model text → the answer alone, and whether a chatty preamble was cut off.

    Strips code fences, a chatty opener that ends in a colon or a line break, labels ("Translation:"),
    closing remarks ("Note: …", "I hope this helps") and quotes around the whole answer.
    """
    if not text:
        return "", False
    out = unicodedata.normalize("NFC", text).replace("\r\n", "\n").strip()
    m = _FENCE.match(out)
    if m:
        out = m.group(1).strip()
    out, chatty = strip_preamble(out)
    if chatty and not out:
        return "", True
    for _ in range(2):  # "Sure! Translation: …" or a label inside a fence
        m = _FENCE.match(out)
        if m:
            out = m.group(1).strip()
        for pattern in (_LABEL, _language_label()):
            label = pattern.match(out)
            if label and label.end() < len(out):
                out = out[label.end():].strip()
    out = _CLOSING.sub("", out).strip()
    return _strip_quotes(out), chatty


# ---------------------------------------------------------------------------------------------- text checks

_REFUSAL = re.compile(
    r"^\W*(?:as\s+an\s+ai\b|as\s+a\s+(?:large\s+)?language\s+model\b|i\s*(?:'m|am)\s+(?:sorry|afraid)\b"
    r"|i\s+apologi[sz]e\b|sorry,\s+(?:but\s+)?i\b"
    r"|i\s+(?:cannot|can't|can\s+not|won't|will\s+not|am\s+unable\s+to|'m\s+unable\s+to|am\s+not\s+able\s+to|"
    r"'m\s+not\s+able\s+to)\s+(?:translate|help|assist|provide|fulfil+|comply|complete|do\s+that|create|write|"
    r"generate|answer|respond))",
    re.IGNORECASE,
)
_ANYWHERE_REFUSAL = re.compile(r"\bas\s+an\s+ai(?:\s+language)?\s+(?:model|assistant)\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """A refusal or an AI disclaimer: "I'm sorry, but…", "I cannot translate…", "As an AI language model…"."""
    return bool(_REFUSAL.match(text) or _ANYWHERE_REFUSAL.search(text[:300]))


_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-cased words; for text written without spaces (Chinese, Japanese, Thai) single characters."""
    words = _WORD.findall(text.lower())
    if words and len(text) / len(words) > 12:  # very long "words": a script without word spaces
        return [ch for ch in text.lower() if ch.isalnum()]
    return words


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word ``n``-grams that repeat an earlier one (0: none, →1: one phrase over and over)."""
    grams = ngrams(tokens(text), n)
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def tail_repeats(text: str, max_period: int = 8) -> tuple[int, int]:
    """The longest looping tail: ``(copies, tokens covered)`` of the best period of 1..``max_period`` words.

    "… kuwa kuwa kuwa kuwa" gives (4, 4); a sentence repeated three times at the end gives (3, 3 × its length).
    """
    toks = tokens(text)
    best = (1, 0)
    for p in range(1, max_period + 1):
        if len(toks) < 2 * p:
            break
        unit, copies, end = toks[-p:], 1, len(toks) - p
        while end - p >= 0 and toks[end - p : end] == unit:
            copies += 1
            end -= p
        if copies > 1 and copies * p > best[1]:
            best = (copies, copies * p)
    return best


def is_repetitive(text: str, settings: CheckSettings = CheckSettings()) -> bool:
    """Endless repetition: too many repeated 3-grams overall, or a tail that loops."""
    if repeated_ngram_share(text) > settings.max_repeated_ngrams:
        return True
    copies, covered = tail_repeats(text)
    return copies >= settings.min_tail_repeats and covered >= settings.min_tail_repeat_tokens


@cache
def _commentary() -> re.Pattern[str]:
    names = "|".join(sorted({re.escape(n.split(" (")[0].lower()) for n in _language_names()}, key=len,
                            reverse=True))
    return re.compile(
        r"\b(?:translat\w*\s+(?:(?:it|this|the\s+\w+)\s+)?(?:in)?to\s+(?:" + names + r")"
        r"|(?:" + names + r")\s+translation\s+(?:of|is|would)"
        r"|the\s+(?:original|source|given|above|following|" + names + r")\s+(?:text|sentence|phrase|passage|word)s?"
        r"\s+(?:is|are|means?|says?|reads?|was|contains?|refers?|uses?|translates?)"
        r"|in\s+the\s+original\s+(?:text|sentence))\b",
        re.IGNORECASE,
    )


def is_commentary(text: str) -> bool:
    """The output talks about the text or its translation instead of being the translation."""
    return _commentary().search(text) is not None


def text_problem(text: str, chatty: bool = False, settings: CheckSettings = CheckSettings()) -> str | None:
    """The reason a cleaned model output is unusable, or None. ``chatty``: ``clean_output`` cut an opener."""
    if not text.strip():
        return CHATTY if chatty else EMPTY
    if is_refusal(text):
        return REFUSAL
    if _CHATTER_START.match(text) and _CHATTER_WORDS.search(text[:120]) and len(tokens(text)) < 25:
        return CHATTY  # "Here is the translation of the text you gave me." and nothing else
    if is_repetitive(text, settings):
        return REPETITION
    return None


def result_problem(text: str | None, finish_reason: str | None, error: str | None,
                   settings: CheckSettings = CheckSettings()) -> tuple[str, str | None]:
    """Check one generation: ``(cleaned text, reason or None)``. Engine errors keep the engine's reason."""
    cleaned, chatty = clean_output(text)
    if finish_reason == "length":  # before the error: cut-off JSON fails to parse because it was cut off
        return cleaned, TRUNCATED
    if error is not None:
        return "", error
    return cleaned, text_problem(cleaned, chatty, settings)


# ---------------------------------------------------------------------------------------------- language


@dataclass(frozen=True)
class LanguageVerdict:
    label: str  # the most likely language (ISO 639-3)
    prob: float  # the probability of the expected language (0 when it is not among the top 3)
    ok: bool


def language_verdicts(texts: list[str], lang: str, identifier, min_prob: float,
                      min_paragraph_words: int = 8) -> list[LanguageVerdict]:
    """Whether each text is in ``lang``: the identifier's top language must be ``lang`` with at least
    ``min_prob`` over the whole text, and be ``lang`` for every paragraph of ``min_paragraph_words`` words or
    more (so a copied source paragraph followed by English commentary is caught). Uses ``top_k`` (no
    per-model confidence cut), so short texts still get a probability."""
    if not texts:
        return []
    paras = [[p for p in paragraphs(t) if len(p.split()) >= min_paragraph_words] for t in texts]
    paras = [ps if len(ps) > 1 else [] for ps in paras]  # one paragraph: the whole-text verdict says it all
    flat = [p for ps in paras for p in ps]
    para_labels = iter([ranked[0][0] for ranked in identifier.top_k(flat, 1)] if flat else [])
    out = []
    for ranked, ps in zip(identifier.top_k(texts, 3), paras, strict=True):
        prob = next((p for label, p in ranked if label == lang), 0.0)
        mixed = any([next(para_labels) != lang for _ in ps])  # a list: consume every paragraph's label
        out.append(LanguageVerdict(ranked[0][0], float(prob), ranked[0][0] == lang and prob >= min_prob and not mixed))
    return out


def translation_ratio_bounds(source_lang: str, settings: CheckSettings) -> tuple[float, float]:
    """Allowed characters of English per character of source: wider for scripts that pack a word into one or
    two characters (Chinese, Japanese, Korean)."""
    scale = 3.0 if is_dense(source_lang) else 1.0
    return settings.min_translation_ratio * scale, settings.max_translation_ratio * scale


# ---------------------------------------------------------------------------------------------- instructions


def copy_share(instruction: str, response: str, n: int = 4) -> float:
    """How much the instruction copies the response, 0..1: the larger of the share of the instruction's word
    ``n``-grams found in the response and the share of the response's ``n``-grams found in the instruction (an
    instruction that pastes the whole response and adds a line is a copy too).

    Short instructions (under ``n`` words) count by words instead, ignoring short words.
    """
    it, rt = tokens(instruction), tokens(response)
    if not it or not rt:
        return 0.0
    if len(it) < n:
        content = [w for w in it if len(w) > 3]
        return sum(w in set(rt) for w in content) / len(content) if content else 0.0
    grams, have = ngrams(it, n), set(ngrams(rt, n))
    forward = sum(g in have for g in grams) / len(grams)
    mine = set(grams)
    theirs = ngrams(rt, n)
    backward = sum(g in mine for g in theirs) / len(theirs) if theirs else 0.0
    return max(forward, backward)


_ASSISTANT = re.compile(
    r"\b(?:how\s+(?:can|may)\s+i\s+(?:help|assist)|what\s+can\s+i\s+(?:help|do\s+for)|i'?m\s+(?:ready|here)\s+to"
    r"\s+(?:help|assist)|i\s+am\s+(?:ready|here)\s+to\s+(?:help|assist)|i'?d\s+be\s+(?:happy|glad)\s+to"
    r"|(?:please\s+)?(?:go\s+ahead\s+and\s+)?(?:ask|provide|share)\s+(?:me\s+)?your\s+(?:question|request|text)"
    r"|as\s+your\s+assistant)\b"
    r"|^\W*(?:what\s+an?\s+|that'?s\s+an?\s+)?(?:great|wonderful|good|excellent|interesting|fascinating|awesome)"
    r"\s+question\b",
    re.IGNORECASE,
)
_NARRATION = re.compile(
    r"^\W*(?:the\s+request\s+(?:is|was)|the\s+(?:text|answer|passage|article)\s+(?:describes|discusses|explains|"
    r"says|is\s+about|talks|asks|suggests)|this\s+(?:text|answer|passage)\s+(?:describes|discusses|explains|is))\b"
    r"|\bthe\s+user(?:'s)?\s+(?:request(?:ed|s)?|ask(?:ed|s)?|want(?:ed|s)?|is\s+asking|would\s+like)\b"
    # The prompt's own machinery: JSON output, task types, "the requested/specified …".
    r"|\bjson\b|\btask[\s_]types?\b|\bthe\s+(?:requested|specified)\s+(?:text|data|task|format|template|"
    r"instructions?|type)\b",
    re.IGNORECASE,
)


def is_not_user_voice(instruction: str) -> bool:
    """The model answered as the assistant ("I'm ready to assist. What can I help you with?") or described
    the request ("The user requested…", "The text describes…") instead of writing it."""
    return _ASSISTANT.search(instruction) is not None or _NARRATION.search(instruction) is not None


def looks_truncated(text: str) -> bool:
    """A text cut off mid-sentence: its last line is a sentence of ``MIN_CUT_WORDS`` words or more that ends in a
    letter, a digit or a comma, with no full stop, question mark, closing quote or bracket. Headings, list items
    and signatures (short last lines) are never judged, nor text with no spaces between words (Chinese, Thai)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].strip()
    if len(last.split()) < MIN_CUT_WORDS:
        return False
    return last[-1] not in _COMPLETE_END and (last[-1].isalnum() or last[-1] in ",-–—")
