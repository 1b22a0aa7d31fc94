"""Stage 3, instruct: the English translation of a fragment → ``instruction_en``, the request it answers.

Reverse instruction (as in Humpback, MURI): the model reads the answer and writes the user's request. The kind
of request varies: with ``task_types="row"`` (default) each row gets a type picked from its id among the types
that fit the text (``list`` only for list-like text), so a dataset gets a fixed, reproducible mix; with
``task_types="model"`` the model picks one and answers in JSON ``{"task_type", "instruction"}`` through
structured output.

Checks (``synth.checks``): engine errors, truncation, emptiness, refusals, chatter, repetition,
English (LID), length bounds, and copying (an instruction that repeats the response is not a request).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from synth import checks as ck
from synth.checks import CheckSettings
from synth.config import option
from synth.extract import lid
from synth.gate import Check
from synth.lang import ENGLISH
from synth.llm import Request, Result, Sampling
from synth.llm.stage import LANGUAGE_CHECK, LLMStage, Output
from synth.prompts import get_prompt
from synth.stats import ShardStats

# Kinds of request a whole text can answer, with the hint the prompt gives. A request to summarise or rewrite
# a pasted text is not among them: the response is the native text itself, never a transformation of input.
TASK_TYPES = {
    "question": "a direct question that the text answers in full",
    "explanation": "a request to explain a topic or an idea (for example starting with \"Explain\" or \"Why\")",
    "writing": "a request to write a text (a paragraph, a short article, a passage) on the topic, saying what "
               "it should cover",
    "overview": "a request for an overview of a topic (about the topic itself, not about a text the user pastes)",
    "description": "a request to describe something the text describes",
    "list": "a request to list the points, steps or items that the text lists",
}
_LIST_LINE = re.compile(r"^\s*(?:[-*•·]|\d+[.)]|[a-z][.)]|\([a-z0-9]+\))\s+", re.MULTILINE)


def too_short(o: Output, s: CheckSettings) -> bool:
    """Under ``min_instruction_chars`` characters or ``min_instruction_words`` words."""
    return len(o.text) < s.min_instruction_chars or len(ck.tokens(o.text)) < s.min_instruction_words


def too_long(o: Output, s: CheckSettings) -> bool:
    return len(o.text) > s.max_instruction_chars


def copies_response(o: Output, s: CheckSettings) -> bool:
    """The prompt's answer markers echoed, or more than ``max_copy_share`` of the response copied."""
    return any(m in o.text for m in ck.ECHO_MARKERS) or ck.copy_share(o.text, o.source) > s.max_copy_share


def eligible_types(text: str) -> list[str]:
    """The task types that fit a response: ``list`` only when it has at least three list-like lines."""
    kinds = [k for k in TASK_TYPES if k != "list"]
    if len(_LIST_LINE.findall(text)) >= 3:
        kinds.append("list")
    return kinds


def pick_task_type(row_id: str, text: str, seed: int = 0) -> str:
    """A task type for a row, fixed by its id (and the seed) among the types that fit its text."""
    kinds = eligible_types(text)
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).digest(), "little")
    return kinds[h % len(kinds)]


def task_schema() -> dict[str, Any]:
    """JSON schema of the model-chosen mode."""
    return {
        "type": "object",
        "properties": {"task_type": {"type": "string", "enum": list(TASK_TYPES)},
                       "instruction": {"type": "string", "minLength": 1}},
        "required": ["task_type", "instruction"],
        "additionalProperties": False,
    }


@dataclass
class Instruct(LLMStage):
    """``response_en`` → ``instruction_en``, ``task_type`` and ``instruction_en_lid`` (LID's P(English))."""

    key = "03_instruct"
    version = "1"
    CHECKS = (
        Check(ck.TOO_SHORT, too_short, "min_instruction_chars"),
        Check(ck.TOO_LONG, too_long, "max_instruction_chars"),
        Check(ck.COPIES_RESPONSE, copies_response, "max_copy_share"),
        Check(ck.NOT_USER_VOICE, lambda o, s: ck.is_not_user_voice(o.text)),
        LANGUAGE_CHECK,
    )
    ADDED = (("instruction_en", pa.string()), ("task_type", pa.string()), ("instruction_en_lid", pa.float32()))
    prompt: str = "reverse_instruction"
    task_types: str = option("row", "'row' (varied, picked from the row's id) or 'model' (the model picks, in its "
                             "JSON output).")
    seed: int = 0  # for the row-picked task types
    max_tokens: int = option(160, "Max new tokens per request.")
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    checks: CheckSettings = field(default_factory=CheckSettings)
    lid_model: str = "auto"

    def __post_init__(self) -> None:
        self.checks = ck.as_check_settings(self.checks)
        if self.task_types not in ("row", "model"):
            raise ValueError(f"task_types must be 'row' or 'model', not {self.task_types!r}")
        self.lid_model = lid.resolve(self.lid_model, ENGLISH)

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["prompt"] = get_prompt(self.prompt).identity
        p["lid_model"] = lid.identity(self.lid_model)
        p["task_type_set"] = list(TASK_TYPES)
        p["checks"] = asdict(self.checks)
        return p

    def setup(self) -> None:
        super().setup()
        if getattr(self, "_lid", None) is None:
            self._lid = lid.load_identifier(self.lid_model)

    def requests(self, ids: list[str], responses: list[str]) -> tuple[list[Request], list[str | None]]:
        """One request per row and the task type asked for (None in model mode: the model says)."""
        prompt = get_prompt(self.prompt)
        sampling = Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                            repetition_penalty=self.repetition_penalty)
        reqs, kinds = [], []
        for rid, text in zip(ids, responses, strict=True):
            if self.task_types == "model":
                kind, hint, schema = "auto", ", ".join(TASK_TYPES), task_schema()
                kinds.append(None)
            else:
                kind = pick_task_type(rid, text, self.seed)
                hint, schema = TASK_TYPES[kind], None
                kinds.append(kind)
            reqs.append(Request(id=rid, messages=prompt.render(response=text, task_type=kind, task_hint=hint),
                                sampling=sampling, json_schema=schema))
        return reqs, kinds

    def build(self, batch: pa.Table) -> tuple[list[Request], list[str | None]]:
        return self.requests(batch.column("id").to_pylist(), batch.column("response_en").to_pylist())

    def finish(self, batch: pa.Table, kinds: list[str | None], results: list[Result], stats: ShardStats) -> pa.Table:
        responses = batch.column("response_en").to_pylist()
        reasons: list[str | None] = []
        outputs: list[Output] = []
        for i, r in enumerate(results):
            text = r.text
            if self.task_types == "model" and r.ok and r.finish_reason != "length":
                text, kinds[i] = r.parsed["instruction"], r.parsed["task_type"]
            cleaned, reason = ck.result_problem(text, r.finish_reason, r.error, self.checks)
            reasons.append(reason)
            outputs.append(Output(cleaned, responses[i], ENGLISH, ENGLISH))
        batch, kept = self.apply_checks(batch, outputs, reasons, stats, lid=self._lid)
        for i in kept:
            stats.count(f"task_type_{kinds[i]}")
        return (batch.append_column("instruction_en", pa.array([outputs[i].text for i in kept], pa.string()))
                .append_column("task_type", pa.array([kinds[i] for i in kept], pa.string()))
                .append_column("instruction_en_lid", pa.array([outputs[i].verdict.prob for i in kept], pa.float32())))
