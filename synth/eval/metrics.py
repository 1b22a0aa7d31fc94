"""Metric wrappers: ROUGE with a tokenizer for every script, chrF++ and (sp)BLEU, response-language checks.

Each wrapper calls the library that defines the metric (rouge-score, sacrebleu) and only adds what the library
lacks for multilingual text:

* ROUGE: rouge-score's default tokenizer keeps ``[a-z0-9]`` only, so Hindi, Amharic or Chinese summaries score
  0. ``ScriptTokenizer`` keeps letters, combining marks and digits of any script, lowercases, applies NFKC, and
  splits scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar) into characters. No stemming.
* spBLEU: sacrebleu's ``flores200``/``flores101`` tokenizers need a SentencePiece model that sacrebleu
  *downloads* on first use (to ``$SACREBLEU/models``, default ``~/.sacrebleu/models``). ``bleu_tokenizer`` uses
  one only when its file is already there (copy it in on machines without network); otherwise BLEU falls back
  to sacrebleu's ``intl`` tokenizer (``zh`` for Chinese, ``char`` for Japanese, Thai, Lao, Khmer, Myanmar), and
  the result says so. Fallback BLEU is *not* spBLEU and is not comparable with published spBLEU numbers.
* Response language: the generation's language by LID (the model ``choose_model`` picks for the prompt's
  language), and code-switching by sentence-level LID.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from synth.lang import SPECIAL, UNDETERMINED, no_space, script, writes_without_spaces
from synth.text import clauses

# ------------------------------------------------------------------------------------------------ tokenising

class ScriptTokenizer:
    """A rouge-score tokenizer (``tokenize(text) -> list[str]``) that works for every script.

    Tokens are maximal runs of letters, combining marks and digits (so Devanagari vowel signs and viramas stay
    inside their word), after NFKC and lowercasing; characters of space-less scripts are single tokens (a mark
    after one attaches to it).
    """

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word: list[str] = []
        last_single = False
        for ch in unicodedata.normalize("NFKC", text).lower():
            kind = unicodedata.category(ch)[0]
            if kind == "M":
                if word:
                    word.append(ch)
                elif last_single and tokens:
                    tokens[-1] += ch
                continue
            if kind in "LN":
                if no_space(ch):
                    if word:
                        tokens.append("".join(word))
                        word = []
                    tokens.append(ch)
                    last_single = True
                else:
                    word.append(ch)
                    last_single = False
                continue
            if word:
                tokens.append("".join(word))
                word = []
            last_single = False
        if word:
            tokens.append("".join(word))
        return tokens


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: Sequence[str], references: Sequence[str], types: Sequence[str] = ROUGE_TYPES,
          tokenizer: Any = None) -> dict[str, float]:
    """Mean ROUGE F1 (x100) over the pairs, computed by rouge-score with ``ScriptTokenizer`` (or ``tokenizer``)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {t: float("nan") for t in types}
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=False, tokenizer=tokenizer or ScriptTokenizer())
    totals = dict.fromkeys(types, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # rouge-score takes (target, prediction)
        for t in types:
            totals[t] += scores[t].fmeasure
    return {t: 100.0 * totals[t] / len(predictions) for t in types}


# ------------------------------------------------------------------------------------------------ translation


def chrf_pp(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF++ (sacrebleu ``CHRF(word_order=2)``), one reference per hypothesis."""
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2).corpus_score(list(hypotheses), [list(references)]).score


SPM_KEYS = ("flores200", "flores101")


def spm_model_path(key: str) -> str:
    """Where sacrebleu looks for (and would download) the SentencePiece model of tokenizer ``key``."""
    from sacrebleu.tokenizers.tokenizer_spm import SPM_MODELS
    from sacrebleu.utils import SACREBLEU_DIR

    return os.path.join(SACREBLEU_DIR, "models", os.path.basename(SPM_MODELS[key]["url"]))


def bleu_tokenizer(tgt_lang: str | None = None, prefer: Sequence[str] = SPM_KEYS) -> tuple[str, bool]:
    """``(sacrebleu tokenize name, is_spbleu)``: a FLORES SentencePiece tokenizer whose model file is already
    on disk (never downloaded), else a per-language fallback (``zh``, ``char`` or ``intl``)."""
    for key in prefer:
        if os.path.exists(spm_model_path(key)):
            return key, True
    if tgt_lang is not None and script(tgt_lang) in ("Hans", "Hant"):
        return "zh", False
    if tgt_lang is not None and writes_without_spaces(tgt_lang):
        return "char", False
    return "intl", False


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str | None = None,
         tgt_lang: str | None = None) -> tuple[float, str]:
    """Corpus BLEU with sacrebleu; ``tokenize=None`` picks spBLEU where possible (see ``bleu_tokenizer``).

    Returns ``(score, tokenizer name)``.
    """
    from sacrebleu.metrics import BLEU

    tok = tokenize or bleu_tokenizer(tgt_lang)[0]
    score = BLEU(tokenize=tok).corpus_score(list(hypotheses), [list(references)]).score
    return score, tok


# ------------------------------------------------------------------------------------------------ language

MIN_SENTENCE_LETTERS = 20  # shorter sentences are too short for reliable LID and are not used for code-switching
SENTENCE_LID_THRESHOLD = 0.5


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


@dataclass
class LangCheck:
    predicted: str  # LID of the whole generation ("und" when empty)
    score: float
    correct: bool  # predicted == the prompt's language
    sentence_langs: list[str]  # confident labels of the sentences long enough to identify
    code_switch: bool  # >= 2 different languages among those sentences


def check_language(text: str, lang: str, identify: Callable[[list[str]], list[tuple[str, float]]],
                   min_letters: int = MIN_SENTENCE_LETTERS,
                   threshold: float = SENTENCE_LID_THRESHOLD) -> LangCheck:
    """Is ``text`` in ``lang``, and does it switch language between sentences?

    ``identify`` is an LID ``predict`` (canonical codes). A generation code-switches when its sentences with at
    least ``min_letters`` letters, identified with probability >= ``threshold``, carry two or more languages.
    """
    if not text or not text.strip():
        return LangCheck(UNDETERMINED, 0.0, False, [], False)
    (pred, score), = identify([text])
    sentences = [s for s in clauses(text) if _letters(s) >= min_letters]
    labels = [lab for lab, p in identify(sentences) if p >= threshold and lab not in SPECIAL] if sentences else []
    return LangCheck(pred, score, pred == lang, labels, len(set(labels)) >= 2)
