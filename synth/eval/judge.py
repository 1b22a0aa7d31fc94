"""LLM judges: six facets scored 0-2, and pairwise preference counted only when both orders agree.

Both judges ask for JSON under a JSON schema (structured output: the hf and vLLM engines constrain decoding
with it, the OpenAI-compatible engine sends it as ``response_format``). A reply that still does not parse or
does not match the schema — typically cut off by ``max_tokens`` — is a *parse failure*, counted per language
and never turned into a score. Engine failures (timeouts, server errors) are counted apart.

Prompts: ``prompts/judge_facets.v2.toml`` and ``prompts/judge_pairwise.v2.toml``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from synth.lang import name as language_name
from synth.llm import Engine, Request, Result, Sampling
from synth.prompts import load_prompt

FACETS = ("language", "fluency", "helpfulness", "accuracy", "coherence", "harmlessness")
FACET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {f: {"type": "integer", "enum": [0, 1, 2]} for f in FACETS},
    "required": list(FACETS),
    "additionalProperties": False,
}
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["winner"],
    "additionalProperties": False,
}
PARSE_ERRORS = {"parse_error", "schema_mismatch", "empty_output", "regex_mismatch"}

def failure_kind(result: Result) -> str | None:
    """``"parse"`` for output that did not parse or match the schema, ``"engine"`` for other errors, else None."""
    if result.error is None:
        return None
    return "parse" if result.error.split(":")[0] in PARSE_ERRORS else "engine"


# ------------------------------------------------------------------------------------------------ facets


@dataclass
class FacetVerdict:
    id: str
    lang: str
    scores: dict[str, int] | None
    error: str | None
    raw: str | None


def judge_facets(engine: Engine, items: Sequence[dict[str, Any]], max_tokens: int = 128,
                 prompt: str = "judge_facets") -> list[FacetVerdict]:
    """Score each ``{"id", "lang", "prompt", "response"[, "reference"]}`` on the six facets (0-2)."""
    tpl = load_prompt(prompt)
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
    reqs = [Request(id=str(it["id"]), messages=tpl.render(language=language_name(it["lang"]), prompt=it["prompt"],
                                                          response=it["response"], reference=it.get("reference")),
                    sampling=sampling, json_schema=FACET_SCHEMA) for it in items]
    results = engine.generate(reqs) if reqs else []
    return [FacetVerdict(str(it["id"]), it["lang"], {f: int(r.parsed[f]) for f in FACETS} if r.ok else None,
                         r.error, r.text) for it, r in zip(items, results, strict=True)]


def summarize_facets(verdicts: Sequence[FacetVerdict]) -> dict[str, dict[str, float]]:
    """Per language: the mean of each facet (``judge_<facet>``), their mean (``judge_mean``), the number judged,
    parse failures and engine errors (counts and ``judge_parse_fail_rate``)."""
    by: dict[str, list[FacetVerdict]] = defaultdict(list)
    for v in verdicts:
        by[v.lang].append(v)
    out = {}
    for lang, vs in sorted(by.items()):
        ok = [v.scores for v in vs if v.scores is not None]
        parse = sum(1 for v in vs if v.error and v.error.split(":")[0] in PARSE_ERRORS)
        row: dict[str, float] = {"judge_n": len(vs), "judge_parse_failures": parse,
                                 "judge_errors": len(vs) - len(ok) - parse,
                                 "judge_parse_fail_rate": parse / len(vs)}
        if ok:
            for f in FACETS:
                row[f"judge_{f}"] = sum(s[f] for s in ok) / len(ok)
            row["judge_mean"] = sum(row[f"judge_{f}"] for f in FACETS) / len(FACETS)
        out[lang] = row
    return out


# ------------------------------------------------------------------------------------------------ pairwise


@dataclass
class PairVerdict:
    id: str
    lang: str
    first: str | None  # "model", "baseline" or "tie" with the model's answer shown as A
    second: str | None  # the same with the answers swapped
    outcome: str | None  # "win" / "loss" only when both orders agree, else "tie"; None if either failed
    errors: list[str] = field(default_factory=list)


def _side(result: Result, model_is_a: bool) -> str | None:
    if not result.ok:
        return None
    w = result.parsed["winner"]
    if w == "tie":
        return "tie"
    return "model" if (w == "A") == model_is_a else "baseline"


def judge_pairwise(engine: Engine, items: Sequence[dict[str, Any]], max_tokens: int = 32,
                   prompt: str = "judge_pairwise") -> list[PairVerdict]:
    """Compare ``response`` (the model's) with ``baseline`` for each ``{"id", "lang", "prompt", "response",
    "baseline"}``, once in each order. A win or a loss needs both orders to agree; anything else is a tie."""
    tpl = load_prompt(prompt)
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
    reqs = []
    for it in items:
        name = language_name(it["lang"])
        for order, (a, b) in (("ab", (it["response"], it["baseline"])), ("ba", (it["baseline"], it["response"]))):
            reqs.append(Request(id=f"{it['id']}:{order}", sampling=sampling, json_schema=PAIRWISE_SCHEMA,
                                messages=tpl.render(language=name, prompt=it["prompt"], response_a=a, response_b=b)))
    results = engine.generate(reqs) if reqs else []
    out = []
    for i, it in enumerate(items):
        r1, r2 = results[2 * i], results[2 * i + 1]
        first, second = _side(r1, True), _side(r2, False)
        if first is None or second is None:
            outcome = None
        elif first == second == "model":
            outcome = "win"
        elif first == second == "baseline":
            outcome = "loss"
        else:
            outcome = "tie"
        out.append(PairVerdict(str(it["id"]), it["lang"], first, second, outcome,
                               [e for e in (r1.error, r2.error) if e]))
    return out


def summarize_pairwise(verdicts: Sequence[PairVerdict]) -> dict[str, dict[str, float]]:
    """Per language: win/loss/tie rates over the pairs judged in both orders, ``pairwise_win_rate`` (wins plus
    half the ties), and the failures."""
    by: dict[str, list[PairVerdict]] = defaultdict(list)
    for v in verdicts:
        by[v.lang].append(v)
    out = {}
    for lang, vs in sorted(by.items()):
        done = [v.outcome for v in vs if v.outcome is not None]
        row: dict[str, float] = {"pairwise_n": len(vs), "pairwise_failures": len(vs) - len(done)}
        if done:
            w, lo, t = (done.count(k) for k in ("win", "loss", "tie"))
            row.update(pairwise_win=w / len(done), pairwise_loss=lo / len(done), pairwise_tie=t / len(done),
                       pairwise_win_rate=(w + 0.5 * t) / len(done))
        out[lang] = row
    return out
