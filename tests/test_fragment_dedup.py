from pathlib import Path

import numpy as np
import pytest

from synth.extract.dedup import EXACT, KEEP, NEAR, band_keys, exact_hash, find_duplicates, shingles
from synth.extract.fragment import fragment, normalize

SWAHILI = Path("examples/corpus/sw/udhr_swahili.txt").read_text(encoding="utf-8")


def test_normalize_makes_nfc_and_unifies_spacing():
    decomposed = "Kifungu cha 1.\r\n  Watu   wote\u0301 \r\n"
    out = normalize(decomposed)
    assert out == "Kifungu cha 1.\nWatu woté"
    assert normalize(out) == out


def test_windows_are_whole_paragraphs_within_bounds():
    text = normalize(SWAHILI)
    paras = [p for p in text.split("\n\n") if p]
    frags = fragment(text, min_len=200, max_len=2000)
    assert all(200 <= len(f) <= 2000 for f in frags[:-1])
    # no text lost or reordered: the windows rejoin to the paragraphs
    assert "\n\n".join(frags).split("\n\n") == paras


def test_long_paragraph_is_split_between_sentences():
    sents = [f"Sentensi namba {i} inaeleza jambo moja muhimu sana kwa watu wote." for i in range(40)]
    frags = fragment(" ".join(sents), min_len=100, max_len=400)
    assert all(len(f) <= 400 for f in frags)
    assert all(f.endswith(".") for f in frags)  # never cut inside a sentence when avoidable
    assert " ".join(frags) == " ".join(sents)


def test_run_on_text_is_cut_at_spaces_and_stays_fast():
    frags = fragment("neno " * 200_000, min_len=100, max_len=1000)
    assert all(len(f) <= 1000 for f in frags)
    assert all(not f.startswith(" ") and "neno" in f for f in frags)
    assert sum(f.count("neno") for f in frags) == 200_000


def test_token_lengths_use_the_given_measure():
    words = " ".join(f"w{i}" for i in range(500))
    frags = fragment(words, min_len=10, max_len=50, measure=lambda t: len(t.split()))
    assert all(len(f.split()) <= 50 for f in frags)
    assert " ".join(frags).split() == words.split()


def test_min_above_max_is_an_error():
    with pytest.raises(ValueError, match="min length"):
        fragment("x", min_len=10, max_len=5)


def _doc(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(f"neno{w}" for w in rng.integers(0, 5000, 120))


def test_exact_hash_ignores_case_punctuation_and_spacing():
    assert exact_hash("Haki ya Kuishi!") == exact_hash("haki  ya kuishi")
    assert exact_hash("haki ya kuishi") != exact_hash("haki ya kufa")


def test_planted_near_duplicates_are_found_keep_first():
    docs = [_doc(i) for i in range(50)]
    words = docs[3].split()
    words[60] = "tofauti"  # one word changed in 120
    docs.append(" ".join(words))
    docs.append(docs[10].upper() + "!")
    exact = np.array([exact_hash(d) for d in docs])
    out = find_duplicates(exact, band_keys(docs))
    assert out[50] == NEAR and out[51] == EXACT
    assert (out[:50] == KEEP).all()


def test_candidates_only_match_candidates():
    docs = [_doc(1), _doc(1), _doc(2)]
    exact = np.array([exact_hash(d) for d in docs])
    out = find_duplicates(exact, band_keys(docs), candidate=np.array([False, True, True]))
    assert list(out) == [KEEP, KEEP, KEEP]  # the rejected first copy does not knock out the second


def test_text_without_spaces_uses_character_shingles():
    zh = "人人生而自由在尊严和权利上一律平等他们赋有理性和良心并应以兄弟关系的精神相对待"
    assert len(shingles(zh, 5)) > 20
