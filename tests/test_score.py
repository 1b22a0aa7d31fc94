"""Stage 4a, the LLM quality judge, with the real SmolLM2-135M-Instruct on the hf engine."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from synth.runner import TableSource, run_stage
from synth.stages.score import Score, expected_score

PAIRS = [
    ("How do plants make their own food?",
     "Plants make food by photosynthesis: chlorophyll captures sunlight, which turns water and carbon dioxide "
     "into sugar, and oxygen is released."),
    ("List three rivers in Africa.", "Click here to subscribe to our newsletter. All rights reserved."),
    ("What does article 26 of the declaration say about education?",
     "Everyone has the right to education. Education shall be free, at least in the elementary stages."),
    ("Explain why rest matters for workers.",
     "Everyone has the right to rest and leisure, including reasonable limitation of working hours."),
]


def _table() -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(PAIRS))], "lang": ["swh"] * len(PAIRS),
                     "instruction_en": [p[0] for p in PAIRS], "response_en": [p[1] for p in PAIRS]})


def test_expected_score_reads_the_step_that_wrote_the_score():
    steps = [{' "': -0.01, "1": -8.0},  # the space before the score: a '1' among its alternatives is not the score
             {"4": math.log(0.6), "5": math.log(0.3), "3": math.log(0.1)}]
    assert expected_score(steps) == pytest.approx(0.6 * 4 + 0.3 * 5 + 0.1 * 3)
    assert expected_score([{"a": -0.1}]) is None and expected_score(None) is None


@pytest.mark.slow
def test_every_judgement_parses_into_a_score(tmp_path):
    out = run_stage(Score(engine="hf", model="smollm2", cache=str(tmp_path / "c.sqlite")), TableSource(_table()),
                    tmp_path / "run", progress=False)
    t = out.read()
    assert t.num_rows == len(PAIRS)  # the judge never drops a row: selection decides
    stats = out.stats()["counters"]
    # Constrained decoding (the JSON schema) makes every answer parse, even from a 135M model: a failure is a bug.
    assert t.column("quality_error").to_pylist() == [None] * len(PAIRS)
    assert stats["judged"] == len(PAIRS) and not any(k.startswith("judge_failed:") for k in stats)
    quality, expected = t.column("quality").to_pylist(), t.column("quality_expected").to_pylist()
    assert all(q in (1, 2, 3, 4, 5) for q in quality)
    # the score histogram the degenerate-judge warning reads
    assert {k: v for k, v in stats.items() if k.startswith("score_")} == {
        f"score_{q:g}": quality.count(q) for q in set(quality)}
    assert all(isinstance(r, str) and r.strip() for r in t.column("quality_reason").to_pylist())
    # The expected score is read from the score token's log-probabilities: inside the scale, and it depends on
    # the pair judged (a judge that ignored its input would give one value for all four).
    assert all(1 <= e <= 5 for e in expected)
    assert len({round(e, 3) for e in expected}) > 1, expected
    assert stats["llm_requests"] == len(PAIRS) and stats["prompt_tokens"] > 0


@pytest.mark.slow
def test_truncated_judgements_are_parse_failures_not_scores(tmp_path):
    """A budget too small for the JSON: every answer is cut off, and each is counted, not guessed."""
    out = run_stage(Score(engine="hf", model="smollm2", max_tokens=3, cache=None), TableSource(_table()),
                    tmp_path / "run", progress=False)
    t = out.read()
    assert t.column("quality").null_count == len(PAIRS)
    errors = t.column("quality_error").to_pylist()
    assert all(e is not None for e in errors)
    counted = {k: v for k, v in out.stats()["counters"].items() if k.startswith("judge_failed:")}
    assert sum(counted.values()) == len(PAIRS)


def test_a_judge_that_cannot_tell_pairs_apart_is_named_with_what_to_do():
    from synth.stages.score import judge_warning

    warning = judge_warning({"judged": 60, "score_1": 59, "score_2": 1})
    assert warning is not None and "59 of 60 pairs 1" in warning and "--judge-model" in warning
    assert judge_warning({"score_4": 50, "score_5": 5}) is not None  # nine in ten on one score: no information
    assert judge_warning({"score_1": 30, "score_3": 10, "score_4": 12, "score_5": 8}) is None  # it discriminates
    assert judge_warning({"score_1": 5}) is None  # too few pairs to say


def test_the_judge_warning_reaches_console_report_and_card(tmp_path):
    """A run whose judge scored every pair 1: the console summary, report.html and the dataset card all warn."""
    import json

    from synth.export import ExportSettings, Summary, dataset_card, run_card
    from synth.report import console_summary, write_report

    stats = {"stages": {"04_score": {"rows_in": 12, "rows_out": 12, "dropped": {},
                                     "counters": {"judged": 12, "score_1": 12}}}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    console = " ".join(str(x) for x in console_summary(tmp_path))
    assert "judge cannot tell pairs apart" in console and "12 of 12 pairs 1" in console
    assert "judge cannot tell pairs apart" in write_report(tmp_path).read_text()
    card = dataset_card(Summary(), ExportSettings(), run_card(tmp_path))
    assert "**Warning (score):** the judge cannot tell pairs apart" in card
    stats["stages"]["04_score"]["counters"] = {"judged": 12, "score_1": 4, "score_3": 4, "score_5": 4}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert "judge cannot" not in " ".join(str(x) for x in console_summary(tmp_path))
