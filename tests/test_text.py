"""synth.text: the paragraph and sentence splitting that extract (fragments) and translation (pieces) share."""

from synth.extract.fragment import fragment
from synth.text import (
    clauses,
    cut_anywhere,
    cut_between_words,
    join_pieces,
    paragraphs,
    sentences,
    split_paragraph,
    split_text,
)


def test_paragraphs_and_sentences():
    assert paragraphs("  One.\n \n\nTwo a.\nTwo b.\n\n\n") == ["One.", "Two a.\nTwo b."]
    assert sentences("He said yes. Then left! Did he? 你好。 再见") == ["He said yes.", "Then left!", "Did he?",
                                                                   "你好。", "再见"]
    assert sentences("No end here") == ["No end here"]


def test_clauses_cut_more_eagerly_than_sentences():
    assert clauses("पहला वाक्य। दूसरा वाक्य।") == ["पहला वाक्य।", "दूसरा वाक्य।"]
    assert clauses("第一句。第二句。") == ["第一句。", "第二句。"]
    assert clauses("ሰላም ነው። ደህና ነህ?") == ["ሰላም ነው።", "ደህና ነህ?"]
    assert clauses("one; two\nthree") == ["one;", "two", "three"]
    assert sentences("one; two\nthree") == ["one; two\nthree"]


def test_oversized_sentences_are_cut_two_ways():
    long = "one two three four five six seven eight nine ten eleven twelve"
    assert cut_between_words(long, 20) == ["one two three four", "five six seven eight", "nine ten eleven", "twelve"]
    assert cut_between_words("a " + "x" * 30, 10) == ["a", "x" * 30]  # a word over the limit stays whole
    assert cut_anywhere("a " + "x" * 30, 10) == ["a " + "x" * 8, "x" * 10, "x" * 10, "xx"]  # every piece fits
    assert cut_anywhere("aaaaaa bbbbbbbbbbbb", 10) == ["aaaaaa", "bbbbbbbbb", "bbb"]  # at a space when one fits
    para = "Short one. " + long + "."
    assert split_paragraph(para, 20, cut=cut_between_words) == ["Short one.", "one two three four",
                                                                 "five six seven eight", "nine ten eleven", "twelve."]
    assert split_paragraph("Fits.", 20) == ["Fits."]


def test_split_and_join_keep_paragraphs_and_sentences():
    text = "Para one. Still one.\n\nPara two has a first sentence. And a second one. And a third one here."
    pieces, seps = split_text(text, 40)
    assert pieces[0] == "Para one. Still one."
    assert seps[0] == "" and seps[1] == "\n\n" and " " in seps[2:]
    assert all(len(p) <= 40 for p in pieces)
    assert join_pieces(pieces, seps) == text
    merged, mseps = split_text("A b.\n\nC d.\n\nE f.", 12, merge=True)
    assert merged == ["A b.\n\nC d.", "E f."] and join_pieces(merged, mseps) == "A b.\n\nC d.\n\nE f."
    assert split_text("", 10) == ([], [])
    long = "one two three four five six seven eight nine ten eleven twelve"
    assert split_text(long, 20)[0] == ["one two three four", "five six seven eight", "nine ten eleven", "twelve"]


def test_fragments_and_translation_pieces_cut_paragraphs_alike():
    text = "Alpha beta gamma. Delta epsilon.\n\nZeta eta theta iota kappa. Lambda mu nu xi omicron pi."
    pieces, _ = split_text(text, 30)
    assert fragment(text, min_len=1, max_len=30) == pieces
