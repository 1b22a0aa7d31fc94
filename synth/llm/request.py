"""What is asked of an engine and what comes back: ``Request``, ``Result`` and their ``Sampling``, the options that
name an engine's answers, and the parsing every engine shares.

A failure of one request is a ``Result`` with ``error`` set to a short reason, never an exception that kills the
batch: the stage then counts it as a drop with that reason.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from synth.fingerprint import digest, plain_value
from synth.redact import redact

# Failures that say nothing about the request itself: never cached, retried on the next run. 401/403/404 are
# the setup's fault (a wrong key, model name or URL), not the request's: fixed, the same request must go out again.
TRANSIENT = {"timeout", "connection_error", "http_429", "http_500", "http_502", "http_503", "http_504",
             "engine_error", "server_error", "http_401", "http_403", "http_404"}


# Engine options that change what comes back, besides the model, its revision and its dtype (named apart):
# the server, the context window (what fails as too long), quantization, the KV-cache precision, the tokenizer,
# vLLM's batch-invariant kernels.
# ONE list for both names of an engine's answers: the request-cache key (each engine's ``key``, through
# ``options_key``) and the stage fingerprint (``LLMStage.params``), so the two never disagree (an fp8 run must
# not be served answers cached from a bf16 one). Options not here (batch sizes, threads, memory) change speed.
OUTPUT_OPTIONS = ("base_url", "max_model_len", "max_input_tokens", "quantization", "kv_cache_dtype", "tokenizer",
                  "tokenizer_mode", "hf_overrides", "batch_invariant")


def output_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``OUTPUT_OPTIONS`` that are set, by name, with any credential in them redacted (a switch
    given as False is not set: ``batch_invariant=false`` names the same answers as no option)."""
    return {k: redact(options[k]) for k in sorted(options)
            if k in OUTPUT_OPTIONS and options[k] is not None and options[k] is not False}


def options_key(options: dict[str, Any]) -> str:
    """The part of an engine's cache key that ``OUTPUT_OPTIONS`` make: ``:name=value`` for each one set."""
    return "".join(f":{k}={json.dumps(v, sort_keys=True) if not isinstance(v, str) else v}"
                   for k, v in output_options(options).items())


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; the same names as vLLM's ``SamplingParams`` where they overlap."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # top-k log-probabilities per generated token


@dataclass
class Request:
    """One generation: chat ``messages`` or a raw ``prompt``, with optional structured-output constraints."""

    id: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.id}: give exactly one of messages or prompt")

    def payload(self) -> dict[str, Any]:
        """Everything that decides the output, for the cache key (the id is not part of it)."""
        return {"messages": self.messages, "prompt": self.prompt, "sampling": asdict(self.sampling),
                "json_schema": self.json_schema, "regex": self.regex}

    def cache_key(self, model_key: str) -> str:
        """``fingerprint({"model": model_key, **payload()}, length=32)``, computed without walking the chat
        messages value by value (plain strings already: the JSON is the same, and so is the key), with each
        sampling's part made once: a stream keys every request (bench/ceiling.py)."""
        plain = {"model": model_key, "messages": self.messages, "prompt": self.prompt,
                 "sampling": _plain_sampling(self.sampling),
                 "json_schema": plain_value(self.json_schema) if self.json_schema is not None else None,
                 "regex": self.regex}
        if self.messages is not None and not all(type(m) is dict and all(type(k) is str and type(v) is str
                                                                          for k, v in m.items())
                                                 for m in self.messages):
            plain["messages"] = plain_value(self.messages)  # anything but plain strings: the general walk
        return digest(plain, length=32)


@lru_cache(maxsize=1024)
def _plain_sampling(sampling: Sampling) -> dict[str, Any]:
    return plain_value(asdict(sampling))


@dataclass
class Result:
    """What came back for one request. ``error`` is a short reason (``timeout``, ``http_503``, ``parse_error``…)."""

    id: str
    text: str | None = None
    parsed: Any = None
    finish_reason: str | None = None  # "stop", "length", or "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    error: str | None = None
    logprobs: list[dict[str, float]] | None = None  # per generated token: {token: logprob} of the top-k
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def transient(self) -> bool:
        """A failure worth trying again later (server down, overloaded, slow); not a bad output."""
        return self.error is not None and self.error.split(":")[0] in TRANSIENT

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def failed(cls, request: Request, reason: str, latency: float = 0.0) -> Result:
        return cls(id=request.id, finish_reason="error", error=reason, latency=latency)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json(text: str | None, schema: dict[str, Any] | None = None) -> tuple[Any, str | None]:
    """Parse a JSON object out of model text: whole text, a fenced block, or the first balanced ``{...}``.

    Returns ``(value, None)`` or ``(None, reason)``. With a schema, the value is validated (jsonschema).
    """
    if not text or not text.strip():
        return None, "empty_output"
    candidates = [text.strip(), *_FENCE.findall(text)]
    start = text.find("{")
    if start >= 0:
        depth, in_str, esc = 0, False, False
        for i, ch in enumerate(text[start:], start):
            if in_str:
                esc = not esc and ch == "\\"
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start : i + 1])
                    break
    for cand in candidates:
        try:
            value = json.loads(cand)
        except json.JSONDecodeError:
            continue
        if schema is not None:
            import jsonschema

            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError:
                return None, "schema_mismatch"
        return value, None
    return None, "parse_error"


def finish(request: Request, text: str | None, finish_reason: str | None, t0: float, **kw: Any) -> Result:
    """Build a Result, parsing structured output when the request asked for it."""
    result = Result(id=request.id, text=text, finish_reason=finish_reason, latency=time.perf_counter() - t0, **kw)
    if request.json_schema is not None:
        result.parsed, reason = parse_json(text, request.json_schema)
        if reason is not None:
            result.error = reason
    elif request.regex is not None and (text is None or (re.fullmatch(request.regex, text) is None
                                                          and re.fullmatch(request.regex, text.strip()) is None)):
        result.error = "regex_mismatch"
    return result
