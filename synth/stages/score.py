"""Stage 4a, score: an LLM judge rates each English (instruction, response) pair on a 5-point rubric.

Scoring costs GPU time, so nothing is thrown away here: every row keeps its judge output (score, reason, raw
text, and the expected score from the score token's log-probabilities where the engine gives them). A row
whose judgement failed keeps ``quality`` null and the failure in ``quality_error``; thresholds are applied
later by the cheap, re-runnable selection step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from synth.config import option
from synth.llm import Request, Result, Sampling
from synth.llm.stage import LLMStage
from synth.prompts import get_prompt
from synth.stats import ShardStats

SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                   "reason": {"type": "string", "maxLength": 300}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}
# A judge whose scores carry almost no information: at least MAX_ONE_SCORE of the pairs on one score, or a standard
# deviation under MIN_SPREAD points. On bench/qc.py's English pairs (a third of them good) SmolLM2-135M scores 92 %
# of them 1 and drops good and bad pairs alike at any bar (92 % and 93 %); a judge that knew the labels would
# spread 1.8 points, and one whose scores stay within half a point moves no row across the bar of 3 that it should.
# On fewer than MIN_JUDGED pairs nothing is said.
MAX_ONE_SCORE = 0.9
MIN_SPREAD = 0.5
MIN_JUDGED = 8
SCORE_COLUMNS = [("quality", pa.float32()), ("quality_expected", pa.float32()), ("quality_reason", pa.string()),
                 ("quality_raw", pa.string()), ("quality_error", pa.string())]


def expected_score(logprobs: list[dict[str, float]] | None) -> float | None:
    """Probability-weighted mean over the digits 1–5 at the step where the model wrote the score (DEITA-style):
    the first step whose most likely token is a digit (a digit among the alternatives of an earlier step, such
    as the space before the score, is not the score)."""
    for step in logprobs or []:
        if not step or max(step, key=step.get).strip() not in {"1", "2", "3", "4", "5"}:
            continue
        digits = {k.strip(): v for k, v in step.items() if k.strip() in {"1", "2", "3", "4", "5"}}
        if digits:
            m = max(digits.values())
            weights = {int(d): math.exp(v - m) for d, v in digits.items() if v > -math.inf}
            total = sum(weights.values())
            return sum(d * w for d, w in weights.items()) / total if total else None
    return None


@dataclass
class Score(LLMStage):
    """Adds quality, quality_expected, quality_reason, quality_raw and quality_error to every row."""

    key = "04_score"
    version = "1"
    model: str = option(LLMStage.model, "The judge's model (default: run.toml's top-level model, or synth run's "
                        "--model).", wide="--judge-model", also=("run", "audit"))
    prompt: str = "judge_quality"  # a name (its highest version), name.vN, or a .toml file of your own
    max_tokens: int = 96
    logprobs: int = option(5, "Top-k logprobs per token, for the expected score (0: off).")

    def params(self) -> dict[str, Any]:
        return {**super().params(), "prompt": get_prompt(self.prompt).identity}

    def build(self, batch: pa.Table) -> tuple[list[Request], None]:
        missing = {"instruction_en", "response_en"} - set(batch.column_names)
        if missing:
            raise ValueError(f"score needs the columns {sorted(missing)} (run translate and instruct first)")
        prompt = get_prompt(self.prompt)
        sampling = Sampling(max_tokens=self.max_tokens, temperature=0.0, logprobs=self.logprobs or None)
        rows = batch.select(["id", "instruction_en", "response_en"]).to_pylist()
        return [Request(id=r["id"], messages=prompt.render(instruction=r["instruction_en"], response=r["response_en"]),
                        sampling=sampling, json_schema=SCHEMA) for r in rows], None

    def finish(self, batch: pa.Table, context: None, results: list[Result], stats: ShardStats) -> pa.Table:
        cols: dict[str, list] = {name: [] for name, _ in SCORE_COLUMNS}
        for res in results:
            self._record(res, cols, stats)
        for name, typ in SCORE_COLUMNS:
            batch = batch.append_column(pa.field(name, typ), pa.array(cols[name], typ))
        return batch

    @staticmethod
    def _record(res: Result, cols: dict[str, list], stats: ShardStats) -> None:
        score = res.parsed.get("score") if res.ok and isinstance(res.parsed, dict) else None
        error = res.error or (None if score is not None else "parse_error")
        if error:
            stats.count(f"judge_failed:{error}")
        else:
            stats.count("judged")
            stats.count(f"score_{round(float(score))}")
        cols["quality"].append(float(score) if score is not None else None)
        cols["quality_expected"].append(expected_score(res.logprobs) if score is not None else None)
        cols["quality_reason"].append(res.parsed.get("reason") if score is not None else None)
        cols["quality_raw"].append(res.text)
        cols["quality_error"].append(error)


def judge_warning(counters: dict[str, Any]) -> str | None:
    """What to tell the user when the judge did not discriminate (from its stage's counters ``score_N``), or
    None. Its scores then decide which rows ``min_quality`` keeps by noise: all, or none."""
    counts = {int(k.split("_", 1)[1]): int(v) for k, v in counters.items()
              if k.startswith("score_") and k.split("_", 1)[1].isdigit()}
    n = sum(counts.values())
    if n < MIN_JUDGED:
        return None
    top, top_n = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    mean = sum(k * v for k, v in counts.items()) / n
    spread = math.sqrt(sum(v * (k - mean) ** 2 for k, v in counts.items()) / n)
    if top_n / n < MAX_ONE_SCORE and spread >= MIN_SPREAD:
        return None
    return (f"the judge cannot tell pairs apart: it scored {top_n:,} of {n:,} pairs {top} (spread {spread:.2f} "
            f"points), so the quality threshold (min_quality) keeps rows by chance. Judge with a stronger model "
            f"(--judge-model, or [score] model in --config) and measure it first with bench/qc.py --judge-model; "
            f"or set --min-quality 0 and rely on the relevance and fidelity checks.")
