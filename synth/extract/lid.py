"""Language identification: the offline models, and what each is measured to get wrong.

Model labels (``__label__sw``, ``swh_Latn``, heliport's ``hbsbos``) are mapped to the canonical codes of
``synth.lang``, so a config that says ``sw`` matches a model that says ``swh_Latn``.

Models: fastText lid.176 (bundled, the default), heliport (GPLv3, opt-in extra), any fastText model with
lid.176 or GlotLID/OpenLID-style labels (a path, or ``glotlid``/``openlid`` once ``synth models get`` fetched
it), and two models that must agree (``heliport+lid176``). ``synth/data/lid_confusion.json``, measured by
``bench/lid_confusion.py`` on the UDHR in 500+ languages, holds each model's precision against every other
language, its recall and its confusions on held-out text, the same measured on a second part that ``auto``
chooses by (the most precise model that keeps at least 80% of the language), and each model's score threshold,
chosen on that second part; ``weakness`` quotes the held-out numbers and names the relatives a model mistakes
for the target.
"""

from __future__ import annotations

import json
import math
import unicodedata
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import langcodes

from synth.identity import identity as model_identity
from synth.lang import SPECIAL, UNDETERMINED, LanguageError, canonical, name, split_label

RECALL_MIN = 0.8  # auto: the most precise model among those that keep at least this share of the language
PRECISION_WARN = 0.95  # below this measured precision a run warns and names the confused languages
AGREE = "+"  # "heliport+lid176": a fragment is the language only where both models say so
PAIRS = ("lid176+heliport", "heliport+lid176")  # measured in the table, so auto can pick them

# Bare Wikipedia codes in lid.176 that mean something else as ISO 639-3.
WIKI_LABELS = {"als": "gsw", "bh": "bih", "eml": "egl"}


class Identifier(Protocol):
    name: str
    labels: set[str]

    def predict(self, texts: list[str], k: int = 1) -> list[tuple[str, float]]: ...

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]: ...

    def knows(self, lang: str) -> bool: ...


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Blanks(dict):
    """``str.translate`` table, filled lazily: punctuation and symbols -> space, everything else kept."""

    def __missing__(self, cp: int) -> int | str:
        out = " " if unicodedata.category(chr(cp))[0] in "PS" else cp
        self[cp] = out
        return out


_BLANKS = _Blanks()


def clean_for_fasttext(text: str) -> str:
    """One lowercased line with punctuation and symbols as spaces.

    fastText splits words on whitespace only, so Ethiopic word spaces (፡) glue a whole sentence into one
    unknown token and "haki," is a different word from "haki". Measured on the UDHR paragraphs this lifts
    lid.176 from 0.47 to 0.49 accuracy (Amharic 0.58 -> 1.00, Somali 0.23 -> 0.42, Swahili 0.85 -> 0.87).
    """
    return " ".join(text.lower().translate(_BLANKS).split())


def _only_k1(k: int) -> None:
    if k != 1:
        raise ValueError(f"predict gives the best language per text (k=1); use top_k(texts, {k}) for more")


class LanguageIdentifier:
    """A fastText LID model (lid.176 by default); labels are mapped to canonical codes."""

    def __init__(self, model_path: str | Path | None = None, clean: bool | None = None,
                 name: str | None = None) -> None:
        import fasttext

        from synth.models import lid176_path

        self.path = Path(model_path) if model_path is not None else lid176_path()
        self.name = name or ("lid176" if model_path is None else self.path.stem)
        # lid.176 does better on cleaned text (see clean_for_fasttext); other models get text as they were
        # trained on it, newlines aside, unless asked.
        self.clean = model_path is None if clean is None else clean
        if not self.path.exists():
            raise FileNotFoundError(f"fastText LID model {self.path} does not exist")
        self._model = fasttext.load_model(str(self.path))
        self._codes = {raw: self._canonical(raw) for raw in self._model.get_labels()}
        self.labels = set(self._codes.values()) - SPECIAL

    @staticmethod
    def _canonical(raw: str) -> str:
        lang, script = split_label(raw)
        if script is None and lang in WIKI_LABELS:
            lang = WIKI_LABELS[lang]
        try:
            return canonical(lang)
        except LanguageError:
            return lang  # a label outside ISO 639 (a custom model's own): kept so it can still be asked for

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely languages per text with fastText's probabilities; blank text is ``und``."""
        lines = [clean_for_fasttext(t) if self.clean else _one_line(t) for t in texts]
        out: list[list[tuple[str, float]]] = [[(UNDETERMINED, 0.0)] for _ in lines]
        todo = [i for i, line in enumerate(lines) if line]
        if todo:
            labels, probs = self._model.predict([lines[i] for i in todo], k=k)
            for i, ls, ps in zip(todo, labels, probs, strict=True):
                out[i] = [(self._codes[lab], min(float(p), 1.0)) for lab, p in zip(ls, ps, strict=True)]
        return out

    def predict(self, texts: list[str], k: int = 1) -> list[tuple[str, float]]:
        """Best language and its probability per text (fastText predicts per line: newlines become spaces)."""
        _only_k1(k)
        return [ranked[0] for ranked in self.top_k(texts, 1)]

    def knows(self, lang: str) -> bool:
        return canonical(lang) in self.labels


class HeliportIdentifier:
    """heliport (HeLI-OTS in Rust, 220 languages, GPLv3): stronger than lid.176 for several African languages.

    heliport gives no probability; the score is the two-way posterior of its best language against the
    runner-up, ``1 / (1 + 10**-margin)`` of its log10 score margin (0.5: a tie, ->1: clear). Below heliport's
    own per-language confidence thresholds the language is ``und``. Batches run on all cores (rayon); set
    ``RAYON_NUM_THREADS`` when several worker processes share a machine.
    """

    name = "heliport"

    def __init__(self) -> None:
        try:
            import heliport
        except ImportError as e:
            raise ImportError(
                "heliport is not installed; it is an optional extra (GPLv3): pip install 'synth[heliport]'"
            ) from e
        self._model = heliport.Identifier()
        self._codes: dict[str, str] = {}
        self.labels = {self._canonical(raw) for raw in self._model.get_confidence_all()} - SPECIAL

    def _canonical(self, raw: str) -> str:
        """heliport labels are ISO 639-3, some extended with a variety: ``hbsbos`` -> bos, ``msaind`` -> ind."""
        if raw not in self._codes:
            code = raw
            if len(raw) > 3:
                suffix = raw[3:]
                code = suffix if len(suffix) == 3 and langcodes.tag_is_valid(suffix) else raw[:3]
            try:
                self._codes[raw] = canonical(code)
            except LanguageError:
                self._codes[raw] = code
        return self._codes[raw]

    @staticmethod
    def _posterior(margin: float) -> float:
        return 1.0 / (1.0 + math.pow(10.0, -min(margin, 50.0)))

    def predict(self, texts: list[str], k: int = 1) -> list[tuple[str, float]]:
        """Best language per text with heliport's confidence thresholds applied (``und`` below them)."""
        _only_k1(k)
        lines = [_one_line(t) for t in texts]
        results = self._model.par_identify_with_score(lines) if len(lines) > 1 else [
            self._model.identify_with_score(line) for line in lines
        ]
        return [
            (self._canonical(raw), self._posterior(score)) if line else (UNDETERMINED, 0.0)
            for line, (raw, score) in zip(lines, results, strict=True)
        ]

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` best languages per text, scored as a softmax of heliport's log10 scores (no thresholds)."""
        out = []
        for text in texts:
            line = _one_line(text)
            if not line:
                out.append([(UNDETERMINED, 0.0)])
                continue
            ranked = self._model.identify_topk_with_score(line, max(k, 2))  # raw scores: lower is better
            weights = [math.pow(10.0, ranked[0][1] - raw) for _, raw in ranked]
            total = sum(weights)
            out.append([(self._canonical(lab), w / total) for (lab, _), w in zip(ranked, weights, strict=True)][:k])
        return out

    def knows(self, lang: str) -> bool:
        return canonical(lang) in self.labels


class AgreementIdentifier:
    """Models that must agree: the first decides and scores, the others must name the same language.

    Where they disagree the label is ``und`` (extract counts the fragment as ``other_language``). The language
    set is what every model knows. ``top_k`` is the first model's ranking, led by ``und`` where the others'
    best label differs.
    """

    def __init__(self, models: list[Identifier]) -> None:
        self.models = models
        self.name = AGREE.join(m.name for m in models)
        self.labels = set.intersection(*(set(m.labels) for m in models))

    def predict(self, texts: list[str], k: int = 1) -> list[tuple[str, float]]:
        _only_k1(k)
        first, *others = [m.predict(texts) for m in self.models]
        return [(label, score) if all(o[i][0] == label for o in others) else (UNDETERMINED, 0.0)
                for i, (label, score) in enumerate(first)]

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        first, *others = [m.top_k(texts, k if i == 0 else 1) for i, m in enumerate(self.models)]
        return [ranked if all(o[i][0][0] == ranked[0][0] for o in others) else [(UNDETERMINED, 0.0), *ranked][:k]
                for i, ranked in enumerate(first)]

    def knows(self, lang: str) -> bool:
        return canonical(lang) in self.labels


def load_identifier(spec: str | Path | None = None) -> Identifier:
    """None or ``lid176``: bundled fastText lid.176; ``heliport``; ``glotlid``/``openlid`` (fetched by
    ``synth models get``); ``a+b``: models that must agree; anything else: a fastText model path."""
    from synth.models import LID_DOWNLOADS, lid_model_path

    if spec is None or str(spec).lower() == "lid176":
        return LanguageIdentifier()
    spec = str(spec)
    if spec.lower() == "heliport":
        return HeliportIdentifier()
    if AGREE in spec:
        return AgreementIdentifier([load_identifier(part) for part in spec.split(AGREE)])
    if spec.lower() in LID_DOWNLOADS:
        return LanguageIdentifier(lid_model_path(spec.lower()), name=spec.lower())
    if Path(spec).exists():
        return LanguageIdentifier(spec)
    raise ValueError(f"unknown LID model {spec!r}: use 'lid176', 'heliport', 'heliport+lid176', 'glotlid', "
                     "'openlid' or the path of a fastText model")


# Models synth knows by name; their score thresholds are chosen by bench/lid_confusion.py on part B of the UDHR
# text (the best mean F1 over a model's languages: lid176 0.5; heliport 0.85, whose margin-based score is near 0.5
# for close calls) and read from the table, so the threshold a run uses is the one the table was measured at.
BUILTIN = ("lid176", "heliport")


def default_threshold(spec: str) -> float:
    """The score cut-off of a model (a pair: its first model's, which scores it); 0.5 for a fastText file."""
    return confusion_table()["thresholds"].get(spec.split(AGREE)[0], 0.5)


@cache
def confusion_table() -> dict[str, Any]:
    """Per model and language: precision, recall and confusions on held-out UDHR fragments (``models``: part C),
    the precision and recall ``auto`` chooses by (``choice``: part B) and the thresholds chosen on part B
    (``bench/lid_confusion.py``)."""
    return json.loads(files("synth").joinpath("data/lid_confusion.json").read_text(encoding="utf-8"))


@cache
def _labels() -> dict[str, frozenset[str]]:
    return {model: frozenset(labels) for model, labels in confusion_table()["labels"].items()}


def measured(model: str, lang: str, part: str = "models") -> dict[str, Any] | None:
    """The table's row for ``model`` (a name or ``lid.identity``) on ``lang``: held-out numbers (``models``, what
    warnings quote) or those models are chosen by (``choice``); None when it was not measured."""
    return confusion_table()[part].get(model, {}).get(canonical(lang))


def heliport_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("heliport") is not None


def installed_models() -> list[str]:
    """The measured offline models ``auto`` can use, the preferred first on a tie (bundled, small, Apache)."""
    return ["lid176", *(["heliport", *PAIRS] if heliport_installed() else [])]


def choose_from(models: dict[str, dict], labels: dict[str, Any], lang: str, candidates: list[str]) -> str:
    """The candidate with the best measured precision among those with recall >= ``RECALL_MIN`` on ``lang``;
    if none gets there, the best recall; if none was measured, the first that knows the language."""

    def rank(i: int) -> tuple:
        entry = models.get(candidates[i], {}).get(lang)
        if entry is None:
            return (0 if lang in labels.get(candidates[i], ()) else -1, 0.0, 0.0, -i)
        p, r = entry["precision"] or 0.0, entry["recall"] or 0.0
        return (2, p, r, -i) if r >= RECALL_MIN else (1, r, p, -i)

    return candidates[max(range(len(candidates)), key=rank)]


def choose_model(lang: str) -> str:
    """For ``auto``: the installed model ``choose_from`` picks for ``lang`` from the table's ``choice`` (part B:
    text apart from the held-out numbers that warnings then quote).

    heliport is GPLv3, so it is never installed by synth itself; once a user installs the extra it (or heliport
    and lid176 agreeing) is used where it measured more precise.
    """
    return choose_from(confusion_table()["choice"], _labels(), canonical(lang), installed_models())


def resolve(spec: str, lang: str) -> str:
    """``auto`` → the model ``choose_model`` picks for ``lang``; a name or a path unchanged."""
    return choose_model(lang) if spec == "auto" else spec


def language_name(code: str) -> str:
    """``Swati (ssw)``: how a warning names a language, by its English name and code."""
    try:
        return f"{name(code)} ({code})"
    except LanguageError:
        return code


def weakness(lang: str, model: str) -> str | None:
    """What a run should say before it trusts ``model`` (a name or ``lid.identity``) for ``lang``: the model
    lacks the language, keeps less than ``RECALL_MIN`` of it, or keeps other languages as it (measured
    precision below ``PRECISION_WARN``; the warning names them with the share of their text it keeps). None
    when it measured well, or was not measured at all (a fastText file nobody ran the bench on).
    """
    lang = canonical(lang)
    labels = _labels()
    if model not in labels:
        return None
    target = language_name(lang)
    entry = measured(model, lang)
    if lang not in labels[model]:
        problem = f"does not know {target}: its text gets other labels"
    elif entry is None:
        return None  # known, but the UDHR has too little of it to measure
    else:
        issues = []
        if (entry["recall"] or 0.0) < RECALL_MIN:
            issues.append(f"recognises only {entry['recall'] or 0.0:.0%} of {target} text")
        if entry["precision"] is not None and entry["precision"] < PRECISION_WARN:
            others = ", ".join(f"{language_name(c)}: {f'{rate:.0%}' if rate >= 0.01 else '<1%'}"
                               for c, rate in entry["confused_with"])
            issues.append(f"has a measured precision of {entry['precision']:.2f} for {target}: it keeps text in "
                          f"other languages as {name(lang)} (share of their fragments kept: {others})")
        if not issues:
            return None
        problem = " and ".join(issues)
    n = len(confusion_table()["languages"])
    return (f"LID model {model} {problem} (measured on held-out UDHR text in {n} languages)."
            f"{_way_out(lang, model)}")


def _way_out(lang: str, model: str) -> str:
    """The advice that ends a warning: a better model, or a more precise one that keeps less, where it is at
    least as good on part B (``choice``) and better on the held-out part, whose numbers it quotes; GlotLID or
    OpenLID where no offline model reached ``PRECISION_WARN`` at ``RECALL_MIN`` on the held-out part."""

    def pr(m: str, part: str = "models") -> tuple[float, float]:
        entry = measured(m, lang, part) or {}
        return entry.get("precision") or 0.0, entry.get("recall") or 0.0

    def better(m: str, part: str, strict: bool) -> bool:
        (p, r), (mp, mr) = pr(m, part), pr(model, part)
        return r >= RECALL_MIN and (mr < RECALL_MIN or p > mp or (not strict and p == mp))

    def sharper(m: str, part: str, strict: bool) -> bool:
        (p, r), mp = pr(m, part), pr(model, part)[0]
        return r > 0 and (p > mp or (not strict and p == mp))

    others = [m for m in ("lid176", "heliport", *PAIRS) if m != model]
    out = ""
    good = [m for m in others if better(m, "choice", False) and better(m, "models", True)]
    sharp = [m for m in others if sharper(m, "choice", False) and sharper(m, "models", True)]
    if good or sharp:
        best = max(good or sharp, key=lambda m: (pr(m, "choice"), pr(m)))
        p, r = pr(best)
        how = "" if best in installed_models() else ", after pip install 'synth[heliport]'"
        out = (f" {best} measured precision {p:.2f} at recall {r:.2f} (--lid-model {best}{how})."
               if good else f" {best} is more precise ({p:.2f}) but keeps only {r:.0%} (--lid-model {best}{how}).")
    if not any(p >= PRECISION_WARN and r >= RECALL_MIN for p, r in map(pr, [model, *others])):
        out += (f" No offline model here reaches precision {PRECISION_WARN} at recall {RECALL_MIN} for it: pass "
                "GlotLID or OpenLID (`synth models get glotlid`, then --lid-model glotlid) or another fastText "
                "model by path.")
    return out


def identity(spec: str) -> str:
    """What names a LID model in a fingerprint: ``lid176``, ``heliport``, a pair ``a+b``, or a fastText file's
    identity (``glotlid``/``openlid`` resolve to their downloaded file)."""
    from synth.models import LID_DOWNLOADS, lid_model_path

    if spec in BUILTIN:
        return spec
    if AGREE in spec:
        return AGREE.join(identity(part) for part in spec.split(AGREE))
    if spec.lower() in LID_DOWNLOADS:
        spec = str(lid_model_path(spec.lower()))
    if not Path(spec).is_file():
        raise ValueError(f"LID model {spec!r} is neither 'auto', 'lid176', 'heliport', a pair like "
                         "'heliport+lid176' nor a fastText model file")
    return f"fasttext:{model_identity(spec)}"
