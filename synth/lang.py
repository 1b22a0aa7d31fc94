"""Languages: the one home of codes, English names and scripts.

Corpora, configs and models spell languages differently (``sw``, ``swa``, ``swh``, ``__label__sw``,
``swh_Latn``, ``zh-Hans-CN``). ``canonical`` turns each into one ISO 639-3 *individual* language code, so a
config that says ``sw`` matches rows and models that say ``swh``. Every boundary (CLI, config, quotas, mix,
train and eval inputs) calls it, so the ``lang`` column is canonical by contract. Scripts are ISO 15924 codes.
"""

from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_right
from functools import cache
from itertools import product

import langcodes

from synth.errors import SynthError

ENGLISH = "eng"
UNDETERMINED = "und"  # what LID says of blank text, and the language of rows that name none
# Undetermined, no linguistic content, multiple languages: not languages, kept as they are.
SPECIAL = frozenset({UNDETERMINED, "zxx", "mul"})


class LanguageError(SynthError, ValueError):
    """A language code synth cannot map to a language, or a language it cannot name."""


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

# The script each language synth knows is written in; these are also the languages whose names prompts and
# output checks recognise (``known``).
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
    "Hant": "yue lzh",
    "Jpan": "jpn",
    "Kore": "kor",
}
_SCRIPT_OF_LANG = {lang: script for script, langs in SCRIPTS.items() for lang in langs.split()}
# Writing systems that mix scripts: the dominant letters of such text are any of these.
SCRIPT_PARTS = {"Hans": {"Hani"}, "Hant": {"Hani"}, "Jpan": {"Hani", "Hira", "Kana"}, "Kore": {"Hang", "Hani"}}
# Writing systems that pack a word into one or two characters: far fewer characters than the same English.
DENSE_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Kore"})
# Scripts written without spaces between words: a character is the unit for n-grams and word counts.
NO_SPACE_SCRIPTS = frozenset({"Hani", "Hira", "Kana", "Bopo", "Thai", "Laoo", "Khmr", "Mymr", "Yiii"})
# The same scripts as code point blocks (sorted), for per-character tests and regex character classes.
NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x3005, 0x3007),  # 々 〆 〇
    (0x302A, 0x302D),  # ideographic tone marks
    (0x3040, 0x312F),  # Hiragana, Katakana, Bopomofo
    (0x3190, 0x31FF),  # Kanbun, Bopomofo extended, CJK strokes, Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi syllables and radicals
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x1AFF0, 0x1B16F),  # Kana extended-B, Kana supplement, Kana extended-A, small Kana extension
    (0x1D372, 0x1D376),  # ideographic tally marks
    (0x20000, 0x323AF),  # CJK extensions B-H
)
_NO_SPACE_STARTS = [a for a, _ in NO_SPACE_RANGES]

# English names where langcodes' own differs from the one prompts have always used (langcodes names the
# individual language, "Swahili (individual language)", "Standard Arabic"; prompts want the common name).
_NAMES = {
    "swh": "Swahili", "nya": "Chichewa", "lug": "Luganda", "zsm": "Malay", "tgl": "Tagalog", "ekk": "Estonian",
    "lvs": "Latvian", "run": "Kirundi", "azj": "Azerbaijani", "uzn": "Uzbek", "kmr": "Kurdish (Kurmanji)",
    "gaz": "Oromo", "plt": "Malagasy", "ilo": "Ilocano", "khk": "Mongolian", "arb": "Arabic",
    "apc": "Levantine Arabic", "pes": "Persian", "prs": "Dari", "pbt": "Pashto", "ckb": "Central Kurdish (Sorani)",
    "npi": "Nepali", "ben": "Bengali", "ydd": "Yiddish", "ory": "Odia", "div": "Dhivehi",
    "cmn": "Chinese (Mandarin, simplified)", "hbs": "Serbo-Croatian",
}

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


# ---------------------------------------------------------------------------------------------- codes


def split_label(label: str) -> tuple[str, str | None]:
    """``__label__swh_Latn`` -> ("swh", "Latn"); ``sw`` -> ("sw", None); ``zh-Hans-CN`` -> ("zh", "Hans")."""
    code = label.strip().removeprefix("__label__").replace("-", "_")
    lang, _, rest = code.partition("_")
    script = rest.split("_")[0] if rest else None
    if script is not None and not (len(script) == 4 and script.isalpha()):
        script = None  # a region (``pt_BR``), not a script
    return lang.lower(), script.title() if script else None


@cache
def canonical(code: str) -> str:
    """Any common spelling of a language -> its ISO 639-3 individual code (LanguageError if unknown).

    ISO 639-1 (``sw``), 639-2/B (``ger``), macrolanguages (``swa``, ``zho``), BCP 47 tags (``sw-KE``) and model
    labels (``__label__swh_Latn``) all work; ``und``, ``zxx`` and ``mul`` stay as they are.
    """
    lang, _ = split_label(code)
    if lang in SPECIAL:
        return lang
    if lang in MACRO:
        return MACRO[lang]
    if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha()) or not langcodes.tag_is_valid(lang):
        raise LanguageError(f"unknown language code {code!r}: expected ISO 639-1/639-3 like 'sw', 'swh', 'swh_Latn'")
    try:
        if len(lang) == 2:
            alpha3 = langcodes.Language.get(lang, normalize=False).to_alpha3()  # tl -> tgl, not CLDR's fil
        else:
            norm = langcodes.Language.get(lang)
            # 639-2/B codes (ger, chi) -> their T codes; other 3-letter codes stay as they are (swc, hbs, tgl).
            alpha3 = norm.to_alpha3() if norm.to_alpha3(variant="B") == lang else lang
    except LookupError as e:
        raise LanguageError(f"unknown language code {code!r}: {e}") from e
    return MACRO.get(alpha3, alpha3)


@cache
def _short_codes() -> dict[str, list[str]]:
    """Canonical code -> the two-letter codes ``canonical`` maps to it (``swh`` -> ``["sw"]``)."""
    out: dict[str, list[str]] = {}
    for a, b in product(string.ascii_lowercase, repeat=2):
        try:
            out.setdefault(canonical(a + b), []).append(a + b)
        except LanguageError:
            continue
    return out


def spellings(code: str) -> list[str]:
    """The codes that mean this language, most specific first: ``swh`` -> ``["swh", "swa", "sw"]``.

    Its canonical code, then the macrolanguage codes ``canonical`` maps to it, then ISO 639-1 codes (current
    before deprecated: ``heb`` -> ``he``, ``iw``). Models name languages any of these ways.
    """
    lang = canonical(code)
    macros = [macro for macro, individual in MACRO.items() if individual == lang and len(macro) == 3]
    return list(dict.fromkeys([lang, *macros, *_short_codes().get(lang, [])]))


def known() -> list[str]:
    """The languages synth has a script for (and so a place in checks that look for language names)."""
    return list(_SCRIPT_OF_LANG)


# ---------------------------------------------------------------------------------------------- names


@cache
def name(code: str) -> str:
    """The English name of a language for prompts and reports (``sw`` -> ``Swahili``); LanguageError if none.

    langcodes names every language once its ``language_data`` package is installed; ``_NAMES`` holds only
    the names it spells differently.
    """
    lang = canonical(code)
    if lang in _NAMES:
        return _NAMES[lang]
    try:
        found = langcodes.Language.get(lang).display_name()
    except (ImportError, LookupError) as e:
        raise LanguageError(f"no English name known for language {lang!r}: install language_data "
                            f"(pip install language_data), which langcodes uses to name every language") from e
    if found.lower().startswith("unknown"):
        raise LanguageError(f"no English name known for language {lang!r}")
    return found


# ---------------------------------------------------------------------------------------------- scripts


def script(code: str) -> str | None:
    """The ISO 15924 script a language is usually written in (None when synth does not know it)."""
    return _SCRIPT_OF_LANG.get(canonical(code))


def is_dense(code: str) -> bool:
    """Whether a language's text is far shorter in characters than the same text in English (CJK)."""
    return script(code) in DENSE_SCRIPTS


@cache
def writes_without_spaces(code: str) -> bool:
    """Whether a language's text has no spaces between words (Chinese, Japanese, Thai; not Korean)."""
    written = script(code)
    return written is not None and (written in NO_SPACE_SCRIPTS or SCRIPT_PARTS.get(written, {""}) <= NO_SPACE_SCRIPTS)


@cache
def char_script(ch: str) -> str | None:
    """The ISO 15924 script of one character, None for characters many scripts share (ʻ, ʼ), Zzzz if unlisted."""
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
        if ch.isalpha() and (found := char_script(ch)) is not None:
            counts[found] = counts.get(found, 0) + 1
    if not counts:
        return "Zyyy", 0.0
    best = max(counts, key=counts.__getitem__)
    return best, counts[best] / sum(counts.values())


def script_matches(code: str, found: str) -> bool:
    """Whether script ``found`` (from ``script_of``) fits language ``code``; True when its script is unknown."""
    expected = script(code)
    return expected is None or found == expected or found in SCRIPT_PARTS.get(expected, ())


# Letters a language never writes but relatives in its script do: text with them is a relative's. Measured
# with lid176 (bench/lid_confusion.py), which keeps Jawi Malay as Arabic and Nanai, Komi and Nenets as Russian:
# on held-out text Arabic precision 0.68 -> 1.00, Russian 0.18 -> 0.73, recall unchanged (heliport needs neither).
FOREIGN_LETTERS = {
    # Arabic-script letters of Persian, Urdu, Pashto, Uyghur and Malay (Jawi) that Standard Arabic never writes
    "arb": re.compile("[\u0672-\u06d3\u06fa-\u06ff\u0750-\u077f\u08a0-\u08ff]"),
    # Cyrillic letters outside the Russian alphabet (А-я, Ёё): Ukrainian, Serbian, Komi, Nenets, Kazakh...
    "rus": re.compile("[\u0400\u0402-\u040f\u0450\u0452-\u045f\u0460-\u052f\u1c80-\u1c8f\u2de0-\u2dff"
                      "\ua640-\ua69f]"),
}


def letters_fit(code: str, text: str, most: int = 1) -> bool:
    """Whether ``text`` has at most ``most`` letters that language ``code`` never writes (``FOREIGN_LETTERS``)."""
    foreign = FOREIGN_LETTERS.get(canonical(code))
    return foreign is None or len(foreign.findall(text)) <= most


def no_space(ch: str) -> bool:
    """Whether a character belongs to a script written without spaces (one character is one word)."""
    cp = ord(ch)
    i = bisect_right(_NO_SPACE_STARTS, cp) - 1
    return i >= 0 and cp <= NO_SPACE_RANGES[i][1]
