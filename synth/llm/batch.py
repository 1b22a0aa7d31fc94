"""Batch generation from a JSONL file of requests: what ``synth generate`` runs."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.config import ConfigError, key_values, option
from synth.io import atomic_write_text
from synth.llm.base import Engine
from synth.llm.cache import CachedEngine
from synth.llm.factory import ENGINE_HELP, MODEL_HELP
from synth.llm.request import Request, Sampling
from synth.progress import console


@dataclass
class GenerateSettings:
    """What ``synth generate`` takes (its options are made from these fields: ``synth.cli.settings``)."""

    input: str | None = option(None, "JSONL: one request per line (prompt or messages).", flag="--input",
                               alias="-i")
    engine: str | None = option(None, ENGINE_HELP)
    model: str = option("smollm2", MODEL_HELP)
    max_tokens: int = option(256, "Default max new tokens (a line's own value wins).")
    temperature: float = option(0.0, "Default temperature.")
    base_url: str | None = option(None, "openai engine: the server, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = option("OPENAI_API_KEY", "openai engine: environment variable with the key.")
    engine_options: dict[str, Any] | None = option(None, "Engine setting KEY=VALUE (repeatable), e.g. "
                                                   "batch_size=16.", flag="--engine-opt", parse=key_values,
                                                   many=True, whole=True)
    cache: str | None = option(None, "Request cache (sqlite); default in synth's cache folder.")
    no_cache: bool = option(False, "Do not read or write the request cache.", flag="--no-cache")

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("give --input, a JSONL file of requests (or input = ... in the config's [generate])")


SAMPLING_KEYS = {"max_tokens", "temperature", "top_p", "seed", "stop", "repetition_penalty", "logprobs"}


@dataclass
class BatchReport:
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    bad_lines: list[str] = field(default_factory=list)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_requests(path: Path, defaults: Sampling) -> tuple[list[Request], list[str]]:
    """One request per line (``prompt`` or ``messages``, optional ``id`` and sampling keys); bad lines are
    returned as ``path:line: reason`` and skipped."""
    requests, bad = [], []
    with open(path, encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                sampling = {k: obj[k] for k in SAMPLING_KEYS if k in obj}
                if "stop" in sampling:
                    sampling["stop"] = tuple([sampling["stop"]] if isinstance(sampling["stop"], str)
                                             else sampling["stop"])
                requests.append(Request(
                    id=str(obj.get("id", f"L{n}")), messages=obj.get("messages"), prompt=obj.get("prompt"),
                    sampling=Sampling(**{**defaults.__dict__, **sampling}), json_schema=obj.get("json_schema"),
                    regex=obj.get("regex")))
            except (ValueError, TypeError) as e:
                bad.append(f"{path}:{n}: {e}")
    return requests, bad


def generate_file(engine: Engine, inp: Path, out: Path, defaults: Sampling, progress: bool = True) -> BatchReport:
    """Generate for every request in ``inp`` and write one result per line to ``out`` (atomically)."""
    from rich.progress import Progress

    requests, bad = read_requests(inp, defaults)
    report = BatchReport(requests=len(requests), bad_lines=bad)
    hits_before = engine.hits if isinstance(engine, CachedEngine) else 0
    lines: list[str] = []
    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("generate", total=len(requests))
        for res in engine.stream(requests):  # a bounded window kept full, not waves (synth.llm.stream)
            report.ok += res.ok
            if res.error:
                report.errors[res.error] += 1
            report.cache_hits += res.cached
            report.prompt_tokens += 0 if res.cached else res.prompt_tokens
            report.completion_tokens += 0 if res.cached else res.completion_tokens
            record: dict[str, Any] = {**res.to_json(), "cached": res.cached}
            lines.append(json.dumps(record, ensure_ascii=False))
            bar.advance(task)
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    if isinstance(engine, CachedEngine):  # the engine counts over its lifetime, the report over this file
        assert report.cache_hits == engine.hits - hits_before
    return report
