"""Parse failures and score spread of the stage-4 judge (``synth.stages.score.Score``) on real pairs.

The issue's bar: with structured output, under 1% of judgements unparseable (an unofficial Humpback
reproduction lost 45% to free text). Pairs: each English UDHR paragraph of the example corpus as the response,
with two generic instructions, so the judge sees good, partial and poor matches.

    .venv/bin/python bench/judge.py [--pairs 60] [--engine hf] [--model smollm2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py is named like the standard library's ``select``: take this folder off the path first.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

REPO = HERE.parent
sys.path.insert(0, str(REPO))

QUESTIONS = ["What does this article of the declaration say?", "Explain this right in simple words.",
             "List three rivers in Africa."]


def main() -> None:
    import pyarrow as pa

    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.stages.score import Score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--engine", default="hf")
    ap.add_argument("--model", default="smollm2")
    args = ap.parse_args()

    text = (REPO / "examples" / "corpus" / "noise" / "udhr_english.txt").read_text(encoding="utf-8")
    paras = [p.strip() for p in text.split("\n\n") if len(p) > 80]
    pairs = [(q, p) for p in paras for q in QUESTIONS][: args.pairs]
    table = pa.table({"id": [f"r{i}" for i in range(len(pairs))], "lang": ["eng"] * len(pairs),
                      "instruction_en": [q for q, _ in pairs], "response_en": [p for _, p in pairs]})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = run_stage(Score(engine=args.engine, model=args.model, cache=None), TableSource(table), tmp,
                        progress=False)
        seconds = time.perf_counter() - t0
        counters = out.stats()["counters"]
        quality = out.read().column("quality").to_pylist()
    failed = {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("judge_failed:")}
    n_failed = sum(failed.values())
    print(f"\njudge {args.engine}:{args.model} on {len(pairs)} pairs, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'judged':>8} {'failed':>8} {'failed %':>9} {'seconds':>8}  reasons")
    print(f"{counters.get('judged', 0):>8} {n_failed:>8} {100 * n_failed / len(pairs):>8.1f}% {seconds:>8.0f}  "
          f"{failed or '-'}")
    print("scores:", dict(sorted(Counter(q for q in quality if q is not None).items())))


if __name__ == "__main__":
    main()
