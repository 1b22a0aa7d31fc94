"""Cost planner: measure yields and tokens per row on a small sample run, project them to a full run.

The sample's ``stats.json`` says, for each stage, what share of rows survived and how many prompt and
completion tokens each row cost. Multiplying through gives, for ``--fragments N`` (or the fragments needed
for ``--target`` final rows), the rows and tokens of every stage and the GPU-hours at a given throughput.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The stages in pipeline order after extraction; the rows a stage receives are what the previous one kept.
ORDER = ["02_translate", "03_instruct", "04_score", "04_select", "05_backtranslate", "05_fidelity"]


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


def _per_row(s: dict[str, Any], key: str) -> float:
    return s.get("counters", {}).get(key, 0) / s["rows_in"] if s.get("rows_in") else 0.0


def plan(sample_rundir: str | Path, fragments: int | None = None, target: int | None = None,
         prefill_tps: float = 20_000.0, decode_tps: float = 2_000.0) -> dict[str, Any]:
    """Project a full run from a sample run. Throughputs are tokens/s of one GPU (prompt and generated)."""
    stats = json.loads((Path(sample_rundir) / "stats.json").read_text())["stages"]
    missing = [k for k in ("01_extract", *ORDER[:2]) if k not in stats]
    if missing:
        raise ValueError(f"the sample run lacks {', '.join(missing)}: run `synth run` on a small sample first")
    stages = [k for k in ORDER if k in stats]
    yields = {k: (stats[k]["rows_out"] / stats[k]["rows_in"] if stats[k]["rows_in"] else 0.0) for k in stages}
    overall = 1.0
    for k in stages:
        overall *= yields[k]
    if fragments is None:
        if target is None:
            raise ValueError("give fragments or target")
        if overall == 0:
            raise ValueError("no row of the sample reached the end: the yield is 0, nothing can be projected")
        fragments = int(target / overall + 0.999)
    rows, out = fragments, []
    for k in stages:
        s = stats[k]
        # LLM tokens, or a seq2seq MT model's input and output tokens (its encoder reads, its decoder writes)
        p = _per_row(s, "prompt_tokens") + _per_row(s, "mt_input_tokens")
        c = _per_row(s, "completion_tokens") + _per_row(s, "mt_output_tokens")
        kept = int(round(rows * yields[k]))
        hours = (rows * p / prefill_tps + rows * c / decode_tps) / 3600
        out.append(StagePlan(k, round(yields[k], 4), rows, kept, round(p, 1), round(c, 1), int(rows * p),
                             int(rows * c), round(hours, 3)))
        rows = kept
    ext = stats["01_extract"]
    frag = stats.get("01_fragments", {})
    docs = frag.get("counters", {}).get("documents", 0)
    return {
        "sample": str(sample_rundir),
        "fragments": fragments,
        "final_rows": rows,
        "overall_yield": round(overall, 4),
        "fragments_per_document": round(frag.get("rows_out", 0) / docs, 3) if docs else None,
        "extract_yield": round(ext["rows_out"] / ext["rows_in"], 4) if ext["rows_in"] else None,
        "documents_needed": int(fragments / (frag["rows_out"] / docs) / (ext["rows_out"] / ext["rows_in"]))
        if docs and frag.get("rows_out") and ext["rows_out"] else None,
        "throughput": {"prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps},
        "stages": [asdict(p) for p in out],
        "gpu_hours": round(sum(p.gpu_hours for p in out), 2),
        "tokens": sum(p.prompt_tokens + p.completion_tokens for p in out),
    }
