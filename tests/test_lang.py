"""synth.lang: canonical codes, English names, scripts, and the boundaries that normalise with them."""

import json
from pathlib import Path

import numpy as np
import pytest

from synth.errors import SynthError
from synth.lang import (
    ENGLISH,
    LanguageError,
    canonical,
    is_dense,
    known,
    name,
    no_space,
    script,
    script_matches,
    script_of,
    spellings,
    split_label,
    writes_without_spaces,
)
from synth.select.methods import select_arrays
from synth.select.settings import CODE, SelectError, SelectSettings, parse_lang_quota

EVAL = Path(__file__).resolve().parents[1] / "examples" / "lid_eval" / "udhr_paragraphs.jsonl"


def any_quality(**kw) -> SelectSettings:
    """Selection with no quality or relevance threshold: these tests are about ranking, diversity and quotas."""
    return SelectSettings(min_quality=None, min_relevance=None, **kw)


@pytest.mark.parametrize(
    "code, expected",
    [
        ("sw", "swh"), ("swa", "swh"), ("swh", "swh"), ("swh_Latn", "swh"), ("__label__sw", "swh"),
        ("__label__swh_Latn", "swh"), ("SW", "swh"), ("sw-KE", "swh"), ("swc", "swc"),
        ("yo", "yor"), ("zu", "zul"), ("en", "eng"), ("ar", "arb"), ("arb_Arab", "arb"), ("zh", "cmn"),
        ("zho_Hans", "cmn"), ("fa", "pes"), ("ms", "zsm"), ("ger", "deu"), ("tl", "tgl"), ("sh", "hbs"),
        ("mo", "ron"), ("no", "nob"), ("und", "und"), ("zxx", "zxx"),
    ],
)
def test_canonical(code, expected):
    assert canonical(code) == expected


@pytest.mark.parametrize("code", ["xx", "xyz", "english", "", "__label__", "sw1", "abcd"])
def test_canonical_rejects_unknown_codes_by_name(code):
    with pytest.raises(LanguageError, match=f"unknown language code {code!r}") as e:
        canonical(code)
    assert isinstance(e.value, SynthError) and isinstance(e.value, ValueError)  # the CLI prints it in one line


def test_english_is_canonical():
    assert ENGLISH == canonical("en") == canonical("eng_Latn") == "eng"


def test_split_label():
    assert split_label("__label__swh_Latn") == ("swh", "Latn")
    assert split_label("zh-Hans-CN") == ("zh", "Hans")
    assert split_label("pt_BR") == ("pt", None)


def test_spellings_most_specific_first():
    assert spellings("sw") == ["swh", "swa", "sw"]
    assert spellings("cmn") == ["cmn", "zho", "zh"]
    assert spellings("heb") == ["heb", "he", "iw"]  # current ISO 639-1 code before the deprecated one
    assert set(spellings("nob")) == {"nob", "nor", "nb", "no"}
    assert all(canonical(c) == "swc" for c in spellings("swc"))


def test_names_one_table_over_langcodes():
    # Common names where langcodes names the individual language ("Swahili (individual language)").
    assert name("sw") == name("swa") == name("swh_Latn") == "Swahili"
    assert name("arb") == "Arabic" and name("zh") == "Chinese (Mandarin, simplified)"
    assert name("tgl") == "Tagalog"  # langcodes would say Filipino (it maps tgl to fil)
    assert name("sh") == "Serbo-Croatian"  # langcodes would say Serbian (Latin)
    # langcodes' own names for everything else, including languages outside synth's script table.
    assert name("yo") == "Yoruba" and name("fra") == "French" and name(ENGLISH) == "English"
    assert name("gsw") == "Swiss German" and script("gsw") is None
    names = [name(c) for c in known()]
    assert len(set(names)) == len(names)  # every language synth knows has its own name


def test_unnamed_or_unknown_languages_raise():
    with pytest.raises(LanguageError, match="no English name known for language 'und'"):
        name("und")
    with pytest.raises(LanguageError, match="unknown language code 'klingon'"):
        name("klingon")


def test_scripts():
    assert script_of("Haki za binadamu ni za kila mtu.") == ("Latn", 1.0)
    assert script_of("Ẹ̀tọ́ ọmọnìyàn")[0] == "Latn"
    assert script_of("सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता प्राप्त है।")[0] == "Deva"
    assert script_of("የሰው ልጅ ሁሉ ሲወለድ ነጻና በክብርና በመብትም እኩልነት ያለው ነው።")[0] == "Ethi"
    assert script_of("يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.")[0] == "Arab"
    assert script_of("人人生而自由，在尊严和权利上一律平等。")[0] == "Hani"
    found, share = script_of("Привет, world! 123")
    assert found == "Cyrl" and share == pytest.approx(6 / 11)
    assert script_of("123 !!") == ("Zyyy", 0.0)
    assert script("sw") == "Latn" and script("amh") == "Ethi" and script("zh") == "Hans"
    assert script("kin") == "Latn" and script("tlh") is None
    assert script_matches("cmn", "Hani") and script_matches("hi", "Deva") and not script_matches("hin", "Latn")
    assert script_matches("tlh", "Latn")  # unknown script: nothing to contradict


def test_script_of_eval_set_matches_its_labels():
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    for r in rows:
        found, share = script_of(r["text"])
        assert found == {"Hans": "Hani"}.get(r["script"], r["script"]) and share > 0.9, r["text"][:40]
        assert script_matches(r["lang"], found)


def test_no_space_scripts_and_dense_languages():
    spaced = [c for c in known() if not writes_without_spaces(c)]
    assert {"cmn", "yue", "jpn", "tha", "lao", "khm", "mya"} <= set(known()) - set(spaced)
    assert {"kor", "swh", "amh", "hin", "eng"} <= set(spaced)  # Korean writes spaces between words
    assert is_dense("zh") and is_dense("kor") and not is_dense("tha") and not is_dense("swh")
    for ch in "中あアー한ไລខကꆈㄅ𠀀":  # CJK, kana (and the long-vowel mark), Thai, Lao, Khmer, Myanmar, Yi, Bopomofo
        assert no_space(ch) == (ch != "한"), ch
    assert not any(no_space(ch) for ch in "aŋßжاअ፡ 1")


def test_per_lang_quota_matches_rows_under_any_spelling():
    """``--per-lang-quota sw=2`` caps the rows that hold ``swh`` (it used to match nothing)."""
    quota = parse_lang_quota("sw=2,yo_Latn=1")
    settings = any_quality(method="none", per_lang_quota=quota)
    assert settings.per_lang_quota == {"swh": 2, "yor": 1}
    lang_names = ["swh", "yor", "hau"]
    lang = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    quality = np.array([5.0, 4.0, 3.0, 2.0, 5.0, 4.0, 5.0, 1.0])
    codes, _, info = select_arrays(None, quality, settings, lang=lang, lang_names=lang_names)
    assert codes.tolist() == [0, 0, CODE["lang_quota"], CODE["lang_quota"], 0, CODE["lang_quota"], 0, 0]
    assert info["selected"] == 5


def test_per_lang_quota_rejects_bad_and_clashing_codes():
    with pytest.raises(SelectError, match="--per-lang-quota: unknown language code 'xx'"):
        any_quality(per_lang_quota={"xx": 3})
    with pytest.raises(SelectError, match="swh two quotas"):
        any_quality(per_lang_quota={"sw": 3, "swh": 4})
    assert any_quality(per_lang_quota={"sw": 3, "swh": 3}).per_lang_quota == {"swh": 3}
