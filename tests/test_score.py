"""Stage 4a, the LLM quality judge, with the real SmolLM2-135M-Instruct on the hf engine."""

from __future__ import annotations

import json
import math
import re

import pyarrow as pa
import pytest
from llm_server import Call, FaultProxy, Reply, chat_completion

from synth.kernel import TableSource
from synth.prompts import FENCE
from synth.runner import run_stage
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
@pytest.mark.requires("smollm2")
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
@pytest.mark.requires("smollm2")
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

    from synth.export import ExportSettings, Summary, dataset_card
    from synth.report import console_summary, run_card, write_report

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


# ------------------------------------------------------------------------ a judge whose scores the test controls

GOOD, BAD = 0, 1  # PAIRS[0] answers its instruction; PAIRS[1] is boilerplate that answers nothing
SCORE_P = 0.8  # the probability the stand-in judge gives its own score; the rest goes to the next digit inward


def _overlap(instruction: str, response: str) -> list[str]:
    """The instruction's words of four letters or more that the response uses."""
    said = set(re.findall(r"[a-z]+", response.lower()))
    return [w for w in dict.fromkeys(re.findall(r"[a-z]+", instruction.lower())) if len(w) >= 4 and w in said]


def _overlap_score(instruction: str, response: str) -> int:
    return 1 + min(4, len(_overlap(instruction, response)))


def _fenced(text: str) -> list[str]:
    """What sits between each pair of fence lines of a rendered prompt, in order."""
    return re.findall(rf"^{re.escape(FENCE[0])}\n(.*?)\n{re.escape(FENCE[1])}$", text, re.DOTALL | re.MULTILINE)


def _keyword_judge(call: Call) -> Reply:
    """An OpenAI-compatible judge that reads the pair from the prompt the stage really sent (its two fenced
    parts) and scores it by word overlap, with top-5 log-probabilities for the score token as vLLM gives them.
    The first request it receives it answers half a second late, so the answers come back out of order."""
    body = call.json()
    instruction, response = _fenced(body["messages"][-1]["content"])
    score, words = _overlap_score(instruction, response), _overlap(instruction, response)
    text = json.dumps({"score": score, "reason": "shares " + (", ".join(words) or "nothing")})
    answer = chat_completion(text, prompt_tokens=50, completion_tokens=12)
    other = score - 1 if score > 3 else score + 1
    head, tail = text.split(str(score), 1)
    steps = [(head, {head: -0.01}), (str(score), {str(score): math.log(SCORE_P), str(other): math.log(1 - SCORE_P)}),
             (tail, {tail: -0.01})]
    answer["choices"][0]["logprobs"] = {"content": [
        {"token": tok, "logprob": top[tok], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}
        for tok, top in steps]}
    return Reply(body=answer, delay=0.5 if call.seq == 1 else 0.0)  # the first request asked is answered last


def test_a_judge_that_ranks_a_good_pair_above_a_bad_one_orders_the_quality_column(tmp_path):
    """The judge is a stand-in server (tests/llm_server.py's FaultProxy) reached through the real openai engine:
    it scores each pair from the prompt the stage sent, by word overlap (SmolLM2-135M cannot discriminate: bench
    says it scores ~92 % of pairs 1). What is tested is everything after the judge: the JSON is parsed, each score
    and reason lands on its own row though requests are answered in any order, the expected score is read from
    the score token's log-probabilities, and the good pair outranks the boilerplate one in ``quality``."""
    with FaultProxy(behaviour=_keyword_judge) as proxy:
        stage = Score(engine="openai", model="judge", cache=None,
                      engine_options={"base_url": proxy.base_url, "dtype": "float32", "max_retries": 0})
        out = run_stage(stage, TableSource(_table()), tmp_path / "run", progress=False)
        assert len(proxy.calls) == len(PAIRS) and proxy.by_status == {200: len(PAIRS)}
        asked = [json.loads(c.body) for c in proxy.calls]
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in asked)  # what the stage asks for
    t = out.read()
    assert t.column("id").to_pylist() == [f"r{i}" for i in range(len(PAIRS))]
    quality, expected = t.column("quality").to_pylist(), t.column("quality_expected").to_pylist()
    want = [_overlap_score(q, a) for q, a in PAIRS]
    assert want == [4, 1, 2, 2]  # the rule itself, on these pairs: the good one high, the boilerplate lowest
    assert quality == want and quality[GOOD] > quality[BAD]
    # 0.8 on the score and 0.2 on the next digit inward: 4 -> 3.8, 1 -> 1.2, 2 -> 2.2
    assert expected == pytest.approx([SCORE_P * s + (1 - SCORE_P) * (s - 1 if s > 3 else s + 1) for s in want])
    assert expected[GOOD] > expected[BAD]
    reasons = t.column("quality_reason").to_pylist()
    assert reasons == ["shares " + (", ".join(_overlap(q, a)) or "nothing") for q, a in PAIRS]
    assert reasons[BAD] == "shares nothing" and "plants" in reasons[GOOD]
    assert t.column("quality_error").null_count == len(PAIRS)
    counters = out.stats()["counters"]
    assert counters["judged"] == len(PAIRS) and counters["prompt_tokens"] == 50 * len(PAIRS)
    assert {k: v for k, v in counters.items() if k.startswith("score_")} == {"score_4": 1, "score_1": 1,
                                                                             "score_2": 2}
