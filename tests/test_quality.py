import json
import random
import re
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pytest

from synth.extract.quality import (
    _WORD,
    CHECKS,
    DUP_NGRAMS,
    REASONS,
    SIGNALS,
    TOP_NGRAMS,
    QualityThresholds,
    failed_reasons,
    load_thresholds,
    mask_pii,
    quality_signals,
    signals_table,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UDHR = [json.loads(line) for line in (EXAMPLES / "lid_eval" / "udhr_paragraphs.jsonl").open(encoding="utf-8")]


def udhr(lang: str) -> list[str]:
    return [r["text"] for r in UDHR if r["lang"] == lang]


def reason(text: str, lang: str = "eng") -> str | None:
    return failed_reasons(signals_table([text]), load_thresholds(lang))[0].as_py()


GOOD = (
    "The village market opens at dawn, when farmers arrive with baskets of tomatoes, onions and green "
    "bananas.\nBy noon the traders have sold most of their produce and begin to walk home along the river, "
    "talking about the price of maize and the coming rains."
)


def test_swahili_udhr_paragraphs_pass_swahili_thresholds():
    text = (EXAMPLES / "corpus" / "sw" / "udhr_swahili.txt").read_text(encoding="utf-8")
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    table = signals_table(paras)
    long = [i for i, n in enumerate(table.column("q_words").to_pylist()) if n >= 15]
    assert len(long) >= 30
    reasons = failed_reasons(table.take(long), load_thresholds("swh")).to_pylist()
    passed = sum(r is None for r in reasons)
    assert passed / len(long) >= 0.9, [r for r in reasons if r]


def test_clean_paragraph_passes_and_scores_are_sane():
    s = quality_signals(GOOD)
    assert s["q_words"] == len(GOOD.split()) == 45
    assert 4 < s["q_mean_word_len"] < 6
    assert s["q_alpha_words_ratio"] == 1.0
    assert s["q_lines_end_punct_ratio"] == 1.0
    assert s["q_dup_line_ratio"] == s["q_top_2gram_ratio"] == s["q_dup_5gram_ratio"] == 0.0
    assert reason(GOOD) is None


REPEATED_LINE = "Buy the best shoes in town today at our friendly shop.\n" * 10
BULLETS = "\n".join(
    f"• {item} delivered to your door" for item in ("fresh bread", "goat milk", "honey jars", "dried fish")
)
TABLE = "Monthly rainfall by station\n" + "\n".join(
    f"{2000 + i} {1200 + 7 * i} {3400 + 11 * i} {5600 + 13 * i} {7800 + 17 * i}" for i in range(6)
)
COOKIES = (
    "This website uses cookies to give you the best experience on our pages.\n"
    "By continuing to browse you agree to our cookie policy and privacy policy.\n"
    "Copyright © 2024 Example Media. All rights reserved."
)
SPAM = (
    "cheap shoes best cheap shoes buy cheap shoes online cheap shoes sale discount cheap shoes "
    "cheap shoes for men cheap shoes for women cheap shoes near me"
)
TRUNCATED = "\n".join(
    f"Read the full story of the {w} festival and what the elders said about it on the last night..."
    for w in ("harvest", "fishing", "wedding", "rain")
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Too short to be a fragment.", "too_few_words"),
        (REPEATED_LINE, "dup_lines"),
        (BULLETS, "bullet_lines"),
        (TABLE, "digit_ratio"),
        (COOKIES, "boilerplate"),
        (SPAM, "top_2gram"),
        (TRUNCATED, "ellipsis_lines"),
        ("Supercalifragilisticexpialidocious antidisestablishmentarianism " * 8, "mean_word_len_high"),
    ],
)
def test_bad_texts_fail_with_the_expected_reason(text, expected):
    assert reason(text) == expected


def test_a_paragraph_that_opens_with_a_dash_is_not_a_list():
    para = "- " + GOOD.replace("\n", " ")
    assert quality_signals(para)["q_bullet_lines_ratio"] == 0.0
    assert quality_signals(BULLETS)["q_bullet_lines_ratio"] == 1.0


def test_amharic_words_are_separated_by_the_ethiopic_wordspace():
    text = udhr("amh")[0]
    assert " " not in text and "፡" in text
    expected = [w for w in re.split(r"[፡።\s]+", text) if w]
    s = quality_signals(text)
    assert s["q_words"] == len(expected) == 20
    assert 3 < s["q_mean_word_len"] < 5
    assert reason(text, "amh") is None


def test_chinese_counts_characters_and_needs_its_own_thresholds():
    text = next(t for t in udhr("cmn") if len(t) > 60)
    han = len(re.findall(r"[\u4e00-\u9fff]", text))
    s = quality_signals(text)
    assert s["q_words"] == han
    assert s["q_mean_word_len"] == 1.0
    assert reason(text, "cmn") is None
    assert reason(text, "eng") == "mean_word_len_low"  # why [cmn] exists


def test_words_keep_combining_marks_and_inner_apostrophes():
    hindi = udhr("hin")[0]
    assert _WORD.findall(hindi.lower()) == re.findall(r"[^\s,;:.।]+", hindi.lower())
    words = ["ng'ombe", "wa", "well-known", "COVID-19", "1948"]
    assert _WORD.findall(" ".join(words) + ".") == words
    assert _WORD.findall("日本語です") == ["日", "本", "語", "で", "す"]
    assert quality_signals("1948 1949 text words")["q_alpha_words_ratio"] == 0.5


def test_lines_ending_in_terminal_punctuation_across_scripts():
    lines = ["Hello there.", "人人生而自由。", "सभी मनुष्य स्वतंत्र हैं।", "ነጻ ነው።፡", "ነፃን ማዕሪን እዮም፡፡"]
    lines += ["«Bonjour !»", "no end"]
    assert quality_signals("\n".join(lines))["q_lines_end_punct_ratio"] == pytest.approx(6 / 7)


def direct_shares(words: list[str]) -> dict[str, float]:
    """The Gopher repetition shares computed the slow way, every n on its own, for comparison."""
    total = sum(map(len, words)) or 1
    out = {}
    for n in TOP_NGRAMS + DUP_NGRAMS:
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        top = max(counts.values(), default=0)
        if n in TOP_NGRAMS:
            best = max((sum(map(len, g)) for g, c in counts.items() if c == top), default=0)
            out[f"q_top_{n}gram_ratio"] = top * best / total if top > 1 else 0.0
        else:
            covered = [False] * len(words)
            for i, g in enumerate(grams):
                if counts[g] > 1:
                    covered[i : i + n] = [True] * n
            inside = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
            out[f"q_dup_{n}gram_ratio"] = inside / total
    return out


def test_repeated_ngram_shares_match_a_direct_computation():
    # quality_signals only looks at n-grams that extend a repeated (n-1)-gram; the result must not change
    texts = [SPAM, REPEATED_LINE, GOOD, "\n\n".join(udhr("yor")[:6]), "\n\n".join(udhr("eng")[:6])]
    texts += ["\n\n".join(udhr("cmn")[:6]), "a b a b a b c a b c d a b c d e " * 3]
    rng = random.Random(7)  # short texts over a tiny vocabulary: every kind of overlap and tie
    vocab = ["ab", "c", "dde", "f"]
    texts += [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for text in texts:
        s = quality_signals(text)
        for name, value in direct_shares(_WORD.findall(text.lower())).items():
            assert s[name] == pytest.approx(value), (name, text[:40])
    # a line repeated 10 times: all of it is inside repeated 10-grams, 9/10 of its 2-grams are one phrase
    assert quality_signals(REPEATED_LINE)["q_dup_10gram_ratio"] == 1.0


def test_signals_table_types():
    t = signals_table([GOOD, "", None])
    assert t.column_names == list(SIGNALS)
    assert t.schema.field("q_words").type == pa.int32()
    assert all(t.schema.field(c).type == pa.float32() for c in SIGNALS if c != "q_words")
    assert t.column("q_words").to_pylist() == [45, 0, 0]
    assert signals_table([]).num_rows == 0


def test_failed_reasons_reports_the_first_check_in_order():
    assert REASONS[:4] == ("too_few_words", "too_many_words", "mean_word_len_low", "mean_word_len_high")
    assert REASONS.index("dup_lines") < REASONS.index("top_2gram") < REASONS.index("dup_5gram")
    assert REASONS.index("dup_10gram") < REASONS.index("boilerplate") < REASONS.index("lines_end_punct")
    assert [f for f, _, _ in CHECKS] == [f.name for f in fields(QualityThresholds)]  # one check per field
    assert {column for _, column, _ in CHECKS} == set(SIGNALS)

    table = pa.table(
        {
            "q_words": pa.array([5, 50, 50, 50, None], pa.int32()),
            "q_dup_line_ratio": pa.array([0.9, 0.9, 0.0, 0.0, 0.9], pa.float32()),
            "q_boilerplate_lines_ratio": pa.array([1.0, 1.0, 1.0, 0.0, 0.0], pa.float32()),
        }
    )
    th = QualityThresholds(min_words=15, max_dup_line_ratio=0.3, max_boilerplate_lines_ratio=0.3)
    expected = ["too_few_words", "dup_lines", "boilerplate", None, "dup_lines"]
    assert failed_reasons(table, th).to_pylist() == expected
    assert failed_reasons(table, QualityThresholds()).to_pylist() == [None] * 5
    # a bound equal to the stored float32 value passes
    assert failed_reasons(table, QualityThresholds(max_dup_line_ratio=0.9)).to_pylist() == [None] * 5
    with pytest.raises(ValueError, match="q_digit_ratio"):
        failed_reasons(table, QualityThresholds(max_digit_ratio=0.2))


def test_bundled_thresholds_have_per_language_overrides():
    default = load_thresholds("eng")
    assert (default.min_words, default.max_words, default.max_top_2gram_ratio) == (15, 2000, 0.2)
    assert default.min_lines_end_punct_ratio is None
    assert load_thresholds("amh").min_mean_word_len < default.min_mean_word_len
    assert load_thresholds("zul").max_mean_word_len > default.max_mean_word_len
    cmn = load_thresholds("cmn")
    assert cmn.min_mean_word_len is None and cmn.min_words > default.min_words
    assert load_thresholds("cmn_Hans") == cmn
    assert load_thresholds("swh").max_dup_5gram_ratio == default.max_dup_5gram_ratio


def test_thresholds_file_override_and_errors(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[default]\nmin_words = 10\nmax_words = 100\n\n[yo]\nmin_words = 3\nmax_words = false\n")
    assert load_thresholds("yor", path) == QualityThresholds(min_words=3)  # [yo] is Yoruba under any spelling
    assert load_thresholds("yo_Latn", path) == QualityThresholds(min_words=3)
    assert load_thresholds("hau", path) == QualityThresholds(min_words=10, max_words=100)
    typo = tmp_path / "typo.toml"
    typo.write_text("[default]\nmin_words = 10\n\n[yoruba]\nmin_words = 3\n")
    with pytest.raises(ValueError, match=r"\[yoruba\] is neither \[default\] nor a language"):
        load_thresholds("yor", typo)

    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nmin_words = 10\n\n[swh]\nmax_wordz = 5\n")
    with pytest.raises(ValueError, match=r"max_wordz.*\[swh\]") as e:
        load_thresholds("swh", bad)
    assert str(bad) in str(e.value)
    bodies = ('[default]\nmin_words = "many"\n', "[default]\nmin_words = 2.5\n", "min_words = 3\n", "[x\n")
    for i, body in enumerate(bodies):
        bad = tmp_path / f"bad{i}.toml"
        bad.write_text(body)
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            load_thresholds("eng", bad)


def test_mask_pii_masks_emails_phones_and_ips():
    text = (
        "Write to jane.doe+news@mail.example.co.tz or call +255 712 345 678, the office on (022) 211 3456 "
        "or 0712-345-678. Server 192.168.1.10, gateway 2001:db8:85a3::8a2e:370:7334."
    )
    masked, n = mask_pii(text)
    assert masked == (
        "Write to <EMAIL> or call <PHONE>, the office on <PHONE> or <PHONE>. Server <IP>, gateway <IP>."
    )
    assert n == 6


def test_mask_pii_leaves_years_dates_and_article_numbers_alone():
    text = (
        "Adopted on 10 December 1948 by resolution 217 A (III). Article 25, articles 1-30, the years "
        "1948-1950 and 1914 1918, dated 10.12.1948 or 2023-05-17, 1 000 000 people, 3.14, version 1.2.3, "
        "at 12:30:45, Kifungu cha 23."
    )
    assert mask_pii(text) == (text, 0)
