"""Cost planner: measure yields, tokens and seconds per row on a small sample run, project them to a full run.

The sample's ``stats.json`` says, for each stage, what share of rows survived, how many prompt and completion
tokens each row cost and how long the stage took. Multiplying through gives, for ``--fragments N`` (or the
fragments needed for ``--target`` final rows), the rows and tokens of every stage; GPU-hours come from the
tokens and a GPU profile (prefill and decode tokens/s for a model size), CPU-hours of the stages without a model
(extract, embed, select, gates) from the sample's own seconds per row.

The selection is not a yield: with an absolute ``target`` in the sample's run.toml, the full run keeps that many
rows however many reach it (with ``keep``, or no target, the sample's share). The stage after it translates only
the selected rows.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synth.budget import GPU_HOURS
from synth.config import ConfigError

# Aggregate tokens/s of ONE GPU running vLLM with large batches (bf16 weights), per model size: (prefill, decode).
# ASSUMPTIONS, not measured here (no GPU was available): prefill from ~40-50% of dense bf16 FLOPs at 2·params
# FLOPs per token, decode from HBM bandwidth at a few hundred sequences per step. Measure your own with
# bench/llm.py and override them in the config's [plan.gpus] table (same shape) or with --prefill-tps/--decode-tps.
GPU_PROFILES: dict[str, dict[str, tuple[float, float]]] = {
    "H100": {"1b": (150_000, 40_000), "8b": (30_000, 10_000), "70b": (3_500, 1_200)},
    "H200": {"1b": (160_000, 50_000), "8b": (33_000, 14_000), "70b": (4_000, 2_000)},
    "A100": {"1b": (70_000, 20_000), "8b": (12_000, 4_500), "70b": (1_300, 500)},
    "L40S": {"1b": (50_000, 12_000), "8b": (9_000, 2_500)},
}
NOT_SELECTED = "not_selected"


@dataclass(frozen=True)
class Prices:
    """What the work costs, in one currency: a GPU-hour and a CPU-hour of your own machines, or a hosted API's
    price per million input and output tokens (less ``batch_discount``, a share: 0.5 for a batch API at half
    price). With token prices the stages that call a model are priced by their tokens (the API runs them, no GPU
    of yours); without, by their GPU-hours. ``[plan.prices]`` in a config holds the same keys."""

    gpu_hour: float = 0.0
    cpu_hour: float = 0.0
    input_per_million: float | None = None
    output_per_million: float | None = None
    batch_discount: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not 0 <= self.batch_discount < 1:
            raise ValueError(f"batch_discount is a share of the token price, 0 to 1, not {self.batch_discount}")
        if (self.input_per_million is None) != (self.output_per_million is None):
            raise ValueError("give both token prices (input and output per million), or neither")
        if min(self.gpu_hour, self.cpu_hour, self.input_per_million or 0, self.output_per_million or 0) < 0:
            raise ValueError("prices cannot be negative")

    @property
    def by_tokens(self) -> bool:
        return self.input_per_million is not None

    def stage_cost(self, stage: dict[str, Any]) -> float:
        """One projected stage's cost: its tokens at the API's prices, or its GPU-hours at yours; its CPU-hours."""
        cost = stage["cpu_hours"] * self.cpu_hour
        if self.by_tokens:
            tokens = (stage["prompt_tokens"] * self.input_per_million
                      + stage["completion_tokens"] * (self.output_per_million or 0.0)) / 1e6
            return cost + tokens * (1 - self.batch_discount)
        return cost + stage["gpu_hours"] * self.gpu_hour

    def describe(self) -> str:
        if self.by_tokens:
            off = f", {self.batch_discount:.0%} batch discount" if self.batch_discount else ""
            return (f"API tokens at {self.input_per_million:g} in / {self.output_per_million:g} out {self.currency} "
                    f"per million{off}; CPU-hour {self.cpu_hour:g}")
        return f"GPU-hour {self.gpu_hour:g} {self.currency}, CPU-hour {self.cpu_hour:g}"


def priced(p: dict[str, Any], prices: Prices) -> dict[str, Any]:
    """The plan with each stage's cost, the extraction's and the total (the plan's usage, priced apart: the
    same projection prices again without being recomputed)."""
    stages = [{**s, "cost": round(prices.stage_cost(s), 2)} for s in p["stages"]]
    extract = round(p["extract_cpu_hours"] * prices.cpu_hour, 2)
    return {**p, "stages": stages, "extract_cost": extract, "cost": round(extract + sum(s["cost"] for s in stages), 2),
            "prices": {**asdict(prices), "described": prices.describe()}}


def budget_cost(unit: str, section: dict[str, Any]) -> tuple[Callable[[dict[str, Any]], float], str]:
    """How a shard's or stage's stats become ``unit`` (GPU-hours, or a currency) for ``--max-budget``, as this
    planner reckons them, from run.toml's ``[plan]`` (``gpu``, ``model_size``, ``gpus``, ``prices``, or
    ``prefill_tps``/``decode_tps``): the tokens through the GPU profile, then a GPU-hour's price, or the tokens at a
    hosted API's prices. And how, in words."""
    gpu, size = section.get("gpu", "H100"), section.get("model_size", "8b")
    prefill, decode = gpu_profile(gpu, size, section.get("gpus"))
    prefill, decode = section.get("prefill_tps", prefill), section.get("decode_tps", decode)

    def split(stats: dict[str, Any]) -> tuple[float, float]:
        return (_counter(stats, "prompt_tokens") + _counter(stats, "mt_input_tokens"),
                _counter(stats, "completion_tokens") + _counter(stats, "mt_output_tokens"))

    def gpu_hours(stats: dict[str, Any]) -> float:
        given, made = split(stats)
        return (given / prefill + made / decode) / 3600

    profile = f"{gpu} {size} profile ({prefill:,.0f} prefill, {decode:,.0f} decode tokens/s)"
    if unit == GPU_HOURS:
        return gpu_hours, f"GPU-hours from the tokens through the {profile}"
    try:
        prices = Prices(**section.get("prices", {}))
    except TypeError as e:
        raise ConfigError(f"[plan.prices]: {e}") from None
    if prices.currency.upper() != unit:
        raise ConfigError(f"--max-budget is in {unit}, but [plan.prices] are in {prices.currency}")
    if prices.by_tokens:
        inp, out, off = prices.input_per_million, prices.output_per_million or 0.0, 1 - prices.batch_discount

        def api(stats: dict[str, Any]) -> float:
            given, made = split(stats)
            return (given * inp + made * out) / 1e6 * off

        return api, prices.describe()
    if prices.gpu_hour <= 0:
        raise ConfigError(f"--max-budget in {unit} needs prices: [plan.prices] gpu_hour (your GPUs), or "
                          "input_per_million and output_per_million (a hosted API), in run.toml")
    return (lambda stats: gpu_hours(stats) * prices.gpu_hour), f"GPU-hour {prices.gpu_hour:g} {unit}, {profile}"


@dataclass
class StagePlan:
    stage: str
    yield_: float
    rows_in: int
    rows_out: int
    prompt_tokens_per_row: float
    completion_tokens_per_row: float
    prompt_tokens: int
    completion_tokens: int
    gpu_hours: float
    seconds_per_row: float  # measured on the sample's machine, per row the stage worked on
    cpu_hours: float  # seconds_per_row x rows, for the stages without a model (on the sample's machine)


def _counter(s: dict[str, Any], key: str) -> float:
    return float(s.get("counters", {}).get(key, 0))


def gpu_profile(gpu: str, model_size: str, profiles: dict[str, dict[str, Any]] | None = None) -> tuple[float, float]:
    """(prefill, decode) tokens/s of one ``gpu`` for a model of ``model_size``: the config's profiles over ours."""
    table = {g: dict(sizes) for g, sizes in GPU_PROFILES.items()}
    for g, sizes in (profiles or {}).items():
        table.setdefault(g, {}).update({k: tuple(v) for k, v in sizes.items()})
    try:
        prefill, decode = table[gpu][model_size.lower()]
    except KeyError:
        known = ", ".join(f"{g} ({'/'.join(s)})" for g, s in table.items())
        raise ValueError(f"no GPU profile for {gpu} with a {model_size} model: known are {known}; add one under "
                         "[plan.gpus] in the config or give --prefill-tps and --decode-tps") from None
    return float(prefill), float(decode)


def _select_target(sample: Path) -> int | None:
    """The absolute ``target`` the sample's run.toml gave the selection, if any."""
    path = sample / "run.toml"
    if not path.exists():
        return None
    cfg = tomllib.loads(path.read_text())
    target = cfg.get("target", cfg.get("select", {}).get("target"))
    return int(target) if target is not None else None


def plan(sample_rundir: str | Path, fragments: int | None = None, target: int | None = None,
         prefill_tps: float | None = None, decode_tps: float | None = None, gpu: str = "H100",
         model_size: str = "8b", profiles: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Project a full run from a sample run: ``fragments`` through the pipeline, or the fragments it takes to end
    with ``target`` final rows. GPU throughput: ``prefill_tps``/``decode_tps`` if given, else the profile of
    ``gpu`` and ``model_size`` (``profiles``: the config's, over ``GPU_PROFILES``)."""
    from synth.pipeline import PIPELINE

    sample = Path(sample_rundir)
    stats = json.loads((sample / "stats.json").read_text())["stages"]
    assumed = prefill_tps is None or decode_tps is None
    if assumed:
        p_tps, d_tps = gpu_profile(gpu, model_size, profiles)
        prefill_tps, decode_tps = prefill_tps or p_tps, decode_tps or d_tps
    # Documents come into the stage that reads the raw corpora; the stage that takes `fragments` keeps the N a
    # run asks for; every stage after it is projected, each receiving what the one before it kept.
    source = next(s.key for s in PIPELINE if s.reads is None)
    extract = next(i for i, s in enumerate(PIPELINE.specs) if "fragments" in s.top)
    extract_key = PIPELINE.specs[extract].key
    select_key = next((s.key for s in PIPELINE if "target" in s.top), None)
    projected = [s for s in PIPELINE.specs[extract + 1:] if s.key in stats]
    missing = [k for k in (extract_key, *(s.key for s in PIPELINE.specs[extract + 1:] if s.uses_model))
               if k not in stats]
    if missing:
        raise ValueError(f"the sample run lacks {', '.join(missing)}: run `synth run` on a small sample first")
    select_target = _select_target(sample)

    def project(n: int) -> list[StagePlan]:
        rows, out, selected = n, [], None
        for spec in projected:
            s = stats[spec.key]
            # The rows the stage works on: after the selection, only the selected ones (the rest leave unread).
            skipped = s.get("dropped", {}).get(NOT_SELECTED, 0)
            worked = s["rows_in"] - skipped
            eligible = min(rows, selected) if selected is not None else rows
            selected = None
            if spec.key == select_key:
                share = _counter(s, "selected") / s["rows_in"] if s["rows_in"] else 0.0
                selected = (min(rows, select_target) if select_target is not None
                            else int(round(rows * min(1.0, share))))
                kept_share = s["rows_out"] / s["rows_in"] if s["rows_in"] else 0.0
            else:
                kept_share = s["rows_out"] / worked if worked else 0.0
            # LLM tokens, or a seq2seq MT model's input and output tokens (its encoder reads, its decoder writes)
            p = (_counter(s, "prompt_tokens") + _counter(s, "mt_input_tokens")) / worked if worked else 0.0
            c = (_counter(s, "completion_tokens") + _counter(s, "mt_output_tokens")) / worked if worked else 0.0
            per_row = s.get("seconds", 0.0) / worked if worked else 0.0
            kept = int(round(eligible * kept_share))
            gpu_h = (eligible * p / prefill_tps + eligible * c / decode_tps) / 3600
            cpu_h = 0.0 if (p or c) else eligible * per_row / 3600
            out.append(StagePlan(spec.key, round(kept / rows, 4) if rows else 0.0, rows, kept, round(p, 1),
                                 round(c, 1), int(eligible * p), int(eligible * c), round(gpu_h, 3),
                                 round(per_row, 6), round(cpu_h, 3)))
            rows = kept
        return out

    if fragments is None:
        if target is None:
            raise ValueError("give fragments or target")
        fragments = _fragments_for(project, target, select_target)
    out = project(fragments)
    ext, frag = stats[extract_key], stats.get(source, {})
    docs = _counter(frag, "documents")
    extract_yield = ext["rows_out"] / ext["rows_in"] if ext["rows_in"] else None
    per_doc = frag.get("rows_out", 0) / docs if docs else None
    documents = int(fragments / per_doc / extract_yield) if per_doc and extract_yield else None
    # Extraction: reading and splitting documents, then deciding on the fragments, at the sample's pace.
    extract_hours = 0.0
    if documents:
        extract_hours = (documents * frag.get("seconds", 0.0) / docs
                         + documents * per_doc * ext.get("seconds", 0.0) / ext["rows_in"]) / 3600
    final_rows = out[-1].rows_out if out else fragments
    return {
        "sample": str(sample_rundir),
        "fragments": fragments,
        "final_rows": final_rows,
        "overall_yield": round(final_rows / fragments, 4) if fragments else 0.0,
        "select_target": select_target,
        "fragments_per_document": round(per_doc, 3) if per_doc else None,
        "extract_yield": round(extract_yield, 4) if extract_yield is not None else None,
        "documents_needed": documents,
        "throughput": {"prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps,
                       "gpu": gpu if assumed else None, "model_size": model_size if assumed else None,
                       "source": "profile (assumed unless set in the config)" if assumed else "given"},
        "stages": [asdict(p) for p in out],
        "gpu_hours": round(sum(p.gpu_hours for p in out), 2),
        "cpu_hours": round(extract_hours + sum(p.cpu_hours for p in out), 2),
        "extract_cpu_hours": round(extract_hours, 3),
        "tokens": sum(p.prompt_tokens + p.completion_tokens for p in out),
    }


def _fragments_for(project: Any, target: int, select_target: int | None) -> int:
    """The fewest fragments whose projection ends with at least ``target`` rows (the projection only grows with
    the fragments, but not linearly when the selection keeps an absolute number)."""
    def final(n: int) -> int:
        stages = project(n)
        return stages[-1].rows_out if stages else n

    hi = max(1, target)
    while final(hi) < target:
        if hi > 10**13:
            cap = f" the selection keeps at most {select_target:,} rows (run.toml's target);" if select_target else ""
            raise ValueError(f"no number of fragments ends with {target:,} rows:{cap} the sample's yield is "
                             f"{final(10**6) / 10**6:.4f}")
        hi *= 2
    lo = hi // 2
    while lo < hi:
        mid = (lo + hi) // 2
        if final(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi
