"""Language identification: one code system, two offline models, and what each is measured to get wrong.

Corpora, configs and LID models all spell languages differently (``sw``, ``swa``, ``swh``, ``__label__sw``,
``swh_Latn``). Everything here is turned into one canonical ISO 639-3 *individual* language code, so a
config that says ``sw`` matches a model that says ``swh_Latn``. Scripts use ISO 15924 codes.

Models: fastText lid.176 (bundled, the default), any fastText model with lid.176 or GlotLID/OpenLID-style
labels, and heliport (GPLv3, opt-in extra). ``weakness`` reads per-language recall measured by
``bench/lid_accuracy.py`` so a run can warn before it trusts a weak model for a language.
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

SPECIAL = {"und", "zxx", "mul"}  # undetermined, no linguistic content, multiple: kept as they are
RECALL_WARN = 0.9

# Macrolanguage (or retired/odd) code -> the individual language that text under that code almost always is.
MACRO = {
    "swa": "swh",  # Swahili -> Kiswahili (not Congo Swahili, swc)
    "ara": "arb",  # Arabic -> Standard Arabic
    "zho": "cmn",  # Chinese -> Mandarin
    "fas": "pes",  # Persian -> Iranian Persian
    "msa": "zsm",  # Malay -> Standard Malay
    "nep": "npi",
    "est": "ekk",
    "lav": "lvs",
    "aze": "azj",  # Azerbaijani -> North Azerbaijani (Latin)
    "uzb": "uzn",
    "kur": "kmr",  # Kurdish -> Kurmanji (Sorani is ckb)
    "pus": "pbt",
    "orm": "gaz",
    "mlg": "plt",
    "sqi": "als",
    "mon": "khk",
    "yid": "ydd",
    "ori": "ory",
    "nor": "nob",
    "kom": "kpv",
    "grn": "gug",
    "aka": "twi",
    "kau": "knc",
    "lah": "pnb",
    "chm": "mhr",
    "kok": "gom",
    "bik": "bcl",
    "din": "dik",
    "sh": "hbs",  # Serbo-Croatian; langcodes would call it Serbian
    "mo": "ron",
    "mol": "ron",
    "eml": "egl",  # retired Emilian-Romagnol -> Emilian
}

# Bare Wikipedia codes in lid.176 that mean something else as ISO 639-3.
WIKI_LABELS = {"als": "gsw", "bh": "bih", "eml": "egl"}

SCRIPTS = {
    "Latn": (
        "eng fra deu spa por ita nld swh yor zul xho nya hau ibo kin sna lin som lug tur vie ind zsm tgl pol"
        " ces slk ron hun fin swe dan nob nno isl ekk lvs lit hrv bos slv cat eus glg afr tsn sot nso ssw tso"
        " wol fuv twi ewe run mlt cym gle gla bre azj uzn kmr gaz plt tuk jav sun ceb ilo war epo lat"
    ),
    "Cyrl": "rus ukr bel bul mkd srp kaz kir tat bak chv tgk khk sah",
    "Arab": "arb arz ary apc acm pes prs urd pbt snd uig ckb azb",
    "Deva": "hin mar npi mai bho san awa new",
    "Beng": "ben asm",
    "Ethi": "amh tir tig",
    "Hebr": "heb ydd",
    "Grek": "ell",
    "Armn": "hye",
    "Geor": "kat",
    "Guru": "pan",
    "Gujr": "guj",
    "Orya": "ory",
    "Taml": "tam",
    "Telu": "tel",
    "Knda": "kan",
    "Mlym": "mal",
    "Sinh": "sin",
    "Thai": "tha",
    "Laoo": "lao",
    "Mymr": "mya",
    "Khmr": "khm",
    "Tibt": "bod",
    "Thaa": "div",
    "Hans": "cmn wuu",
    "Hant": "yue",
    "Jpan": "jpn",
    "Kore": "kor",
}
EXPECTED_SCRIPT = {lang: script for script, langs in SCRIPTS.items() for lang in langs.split()}
# Writing systems that mix scripts: the dominant letters of such text are any of these.
SCRIPT_PARTS = {"Hans": {"Hani"}, "Hant": {"Hani"}, "Jpan": {"Hani", "Hira", "Kana"}, "Kore": {"Hang", "Hani"}}

# First word of a Unicode character name -> ISO 15924. Unlisted scripts count as Zzzz.
NAME_SCRIPT = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARMENIAN": "Armn", "HEBREW": "Hebr", "ARABIC": "Arab",
    "SYRIAC": "Syrc", "THAANA": "Thaa", "NKO": "Nkoo", "DEVANAGARI": "Deva", "BENGALI": "Beng",
    "GURMUKHI": "Guru", "GUJARATI": "Gujr", "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu",
    "KANNADA": "Knda", "MALAYALAM": "Mlym", "SINHALA": "Sinh", "THAI": "Thai", "LAO": "Laoo", "TIBETAN": "Tibt",
    "MYANMAR": "Mymr", "GEORGIAN": "Geor", "HANGUL": "Hang", "ETHIOPIC": "Ethi", "CHEROKEE": "Cher",
    "CANADIAN": "Cans", "KHMER": "Khmr", "MONGOLIAN": "Mong", "TIFINAGH": "Tfng", "HIRAGANA": "Hira",
    "KATAKANA": "Kana", "CJK": "Hani", "KANGXI": "Hani", "IDEOGRAPHIC": "Hani", "BOPOMOFO": "Bopo", "YI": "Yiii",
    "VAI": "Vaii", "ADLAM": "Adlm", "JAVANESE": "Java", "BALINESE": "Bali", "COPTIC": "Copt",
    "GLAGOLITIC": "Glag", "OL": "Olck",
}


def split_label(label: str) -> tuple[str, str | None]:
    """``__label__swh_Latn`` -> ("swh", "Latn"); ``sw`` -> ("sw", None); ``zh-Hans-CN`` -> ("zh", "Hans")."""
    code = label.strip().removeprefix("__label__").replace("-", "_")
    lang, _, rest = code.partition("_")
    script = rest.split("_")[0] if rest else None
    if script is not None and not (len(script) == 4 and script.isalpha()):
        script = None  # a region (``pt_BR``), not a script
    return lang.lower(), script.title() if script else None


@cache
def normalize_lang(code: str) -> str:
    """Any common spelling of a language -> its canonical ISO 639-3 individual code (ValueError if unknown)."""
    lang, _ = split_label(code)
    if lang in SPECIAL:
        return lang
    if lang in MACRO:
        return MACRO[lang]
    if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha()) or not langcodes.tag_is_valid(lang):
        raise ValueError(f"unknown language code {code!r}: expected ISO 639-1/639-3 like 'sw', 'swh', 'swh_Latn'")
    try:
        if len(lang) == 2:
            alpha3 = langcodes.Language.get(lang, normalize=False).to_alpha3()  # tl -> tgl, not CLDR's fil
        else:
            norm = langcodes.Language.get(lang)
            # 639-2/B codes (ger, chi) -> their T codes; other 3-letter codes stay as they are (swc, hbs, tgl).
            alpha3 = norm.to_alpha3() if norm.to_alpha3(variant="B") == lang else lang
    except LookupError as e:
        raise ValueError(f"unknown language code {code!r}: {e}") from e
    return MACRO.get(alpha3, alpha3)


def expected_script(lang: str) -> str | None:
    """The ISO 15924 script a language is usually written in (None when it is not in the small table)."""
    return EXPECTED_SCRIPT.get(normalize_lang(lang))


@cache
def _char_script(ch: str) -> str | None:
    if ch < "\u0250":
        return "Latn"  # ASCII, Latin-1, Latin Extended-A/B
    words = unicodedata.name(ch, "").split()
    if not words or words[:2] == ["MODIFIER", "LETTER"]:
        return None  # ʻ ʼ and friends are shared by many scripts
    if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
        words = words[1:]
    return NAME_SCRIPT.get(words[0], "Zzzz")


def script_of(text: str) -> tuple[str, float]:
    """Dominant script of the letters in ``text`` and the share of letters in it (("Zyyy", 0.0) if none)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha() and (script := _char_script(ch)) is not None:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "Zyyy", 0.0
    script = max(counts, key=counts.__getitem__)
    return script, counts[script] / sum(counts.values())


def script_matches(lang: str, script: str) -> bool:
    """Whether ``script`` (from ``script_of``) fits ``lang``; True when the language's script is unknown."""
    expected = expected_script(lang)
    return expected is None or script == expected or script in SCRIPT_PARTS.get(expected, ())


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

    def __init__(self, model_path: str | Path | None = None, clean: bool | None = None) -> None:
        import fasttext

        from synth.models import lid176_path

        self.path = Path(model_path) if model_path is not None else lid176_path()
        self.name = "lid176" if model_path is None else self.path.stem
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
            return normalize_lang(lang)
        except ValueError:
            return lang  # a label outside ISO 639 (a custom model's own): kept so it can still be asked for

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely languages per text with fastText's probabilities; blank text is ``und``."""
        lines = [clean_for_fasttext(t) if self.clean else _one_line(t) for t in texts]
        out: list[list[tuple[str, float]]] = [[("und", 0.0)] for _ in lines]
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
        return normalize_lang(lang) in self.labels


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
                self._codes[raw] = normalize_lang(code)
            except ValueError:
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
            (self._canonical(raw), self._posterior(score)) if line else ("und", 0.0)
            for line, (raw, score) in zip(lines, results, strict=True)
        ]

    def top_k(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` best languages per text, scored as a softmax of heliport's log10 scores (no thresholds)."""
        out = []
        for text in texts:
            line = _one_line(text)
            if not line:
                out.append([("und", 0.0)])
                continue
            ranked = self._model.identify_topk_with_score(line, max(k, 2))  # raw scores: lower is better
            weights = [math.pow(10.0, ranked[0][1] - raw) for _, raw in ranked]
            total = sum(weights)
            out.append([(self._canonical(lab), w / total) for (lab, _), w in zip(ranked, weights, strict=True)][:k])
        return out

    def knows(self, lang: str) -> bool:
        return normalize_lang(lang) in self.labels


def load_identifier(spec: str | Path | None = None) -> Identifier:
    """None or ``lid176``: bundled fastText lid.176; ``heliport``: heliport; anything else: a fastText model path."""
    if spec is None or str(spec).lower() == "lid176":
        return LanguageIdentifier()
    if str(spec).lower() == "heliport":
        return HeliportIdentifier()
    if Path(spec).exists():
        return LanguageIdentifier(spec)
    raise ValueError(f"unknown LID model {spec!r}: use 'lid176', 'heliport' or the path of a fastText model")


@cache
def accuracy_table() -> dict[str, Any]:
    """Per-language recall/precision of each model, measured by ``bench/lid_accuracy.py --write``."""
    return json.loads(files("synth").joinpath("data/lid_accuracy.json").read_text(encoding="utf-8"))


def weakness(lang: str, model_name: str) -> str | None:
    """A warning when ``model_name`` lacks ``lang`` or was measured below 0.9 recall on it, else None.

    Names heliport as the stronger offline choice when it measured better. Models that were not measured
    (a custom fastText path) give None: there is nothing to say about them.
    """
    lang = normalize_lang(lang)
    table = accuracy_table()
    if model_name not in table["labels"]:
        return None

    def recall(model: str) -> float | None:
        if model not in table["labels"]:
            return None
        if lang not in table["labels"][model]:
            return 0.0
        entry = table["models"].get(model, {}).get(lang)
        return entry["recall"] if entry else None  # None: known but not measured

    mine = recall(model_name)
    if mine is None or mine >= RECALL_WARN:
        return None
    if lang in table["labels"][model_name]:
        n = table["models"][model_name][lang]["n"]
        problem = f"LID model {model_name} recognises only {mine:.0%} of {lang} text (n={n} UDHR paragraphs)"
    else:
        problem = f"LID model {model_name} does not know language {lang}; its text gets other labels"
    other = recall("heliport") if model_name != "heliport" else None
    if other is not None and other > mine:
        problem += f"; heliport measured {other:.0%}: pip install 'synth[heliport]' and use LID model 'heliport'"
    elif not any(lang in labels for labels in table["labels"].values()):
        measured = " nor ".join(table["labels"])
        problem += f"; neither {measured} knows it: pass a fastText model that does (GlotLID, OpenLID) as a path"
    return problem


# Score cut-offs that gave precision >= 0.95 on held-out-ish paragraphs (bench/lid_accuracy.py): heliport's
# margin-based score is near 0.5 for close calls, so it needs a higher cut than a fastText probability.
DEFAULT_THRESHOLD = {"lid176": 0.5, "heliport": 0.9}


def heliport_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("heliport") is not None


def choose_model(lang: str) -> str:
    """For ``auto``: the installed offline model with the best measured F1 on ``lang`` (lid176 on a tie).

    heliport is GPLv3, so it is never installed by synth itself; once a user installs the extra it is used
    where it measured better.
    """
    lang = normalize_lang(lang)
    models = accuracy_table()["models"]

    def f1(model: str) -> float:
        entry = models.get(model, {}).get(lang) or {}
        p, r = entry.get("precision") or 0.0, entry.get("recall") or 0.0
        return 2 * p * r / (p + r) if p + r else 0.0

    candidates = ["lid176", *(["heliport"] if heliport_installed() else [])]
    return max(candidates, key=lambda m: (f1(m), m == "lid176"))
