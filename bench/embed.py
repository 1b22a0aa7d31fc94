"""Embedding throughput of the embed stage per backend on this machine (not a test; prints a table).

Backends: torch in one process with all CPU threads; torch in one copy per core (the stage's ``workers``: the
executor's processes, one thread each, the model loaded in each); and, when a GPU is visible, torch on the GPU
in half precision with large batches (the stage's default there). Sentences are instruction-like English of
varied length. The one-process rows time ``Embed.process`` after a warm-up (the model loaded); the copies row
times the whole stage (``run_stage``: process start and model load included), and beside it the one-process
stage the same way, so that pair compares like with like.

    .venv/bin/python bench/embed.py [--n 1024] [--only cpu|gpu] [--json out.json]
    .venv/bin/python bench/embed.py --relevance [--n 512]   # what the relevance column costs the stage

``--relevance`` times the stage on pairs (an instruction and a 300-700-character response, as stage 4 gets them)
with ``relevance`` off and on, warmed, 3 alternating rounds, medians: the responses are encoded once more.
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/embed.py`, this folder comes first on sys.path, where a sibling (select.py) shadows the
# standard library's `select` that multiprocessing imports: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = ["the history of a river town", "how bread is baked", "why the sky is blue", "a market at dawn",
          "the rules of a children's game", "saving water at home", "a letter to a neighbour", "planting maize"]


def sentences(n: int) -> list[str]:
    return [f"Explain {TOPICS[i % len(TOPICS)]} to a student, step by step." + " Give examples." * (i % 5)
            for i in range(n)]


def run(label: str, n: int, **options) -> dict:
    import pyarrow as pa

    from synth.select.embed import Embed
    from synth.stats import ShardStats

    stage = Embed(**options)
    stage.setup()
    texts = sentences(n)
    batch = pa.table({"id": [str(i) for i in range(n)], "instruction_en": texts})
    try:
        stage.process(batch.slice(0, min(64, n)), ShardStats())  # warm-up: first-call costs, worker start
        t0 = time.perf_counter()
        stage.process(batch, ShardStats())
        seconds = time.perf_counter() - t0
    finally:
        stage.teardown()
    return {"backend": label, "sentences": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1)}


def run_whole(label: str, n: int, **options) -> dict:
    """The whole stage through the runner (its copies are processes of the local executor), after a warm-up run
    (file cache, imports): process start and model load are inside the time."""
    import tempfile

    import pyarrow as pa

    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.select.embed import Embed

    batch = pa.table({"id": [str(i) for i in range(n)], "lang": ["en"] * n, "instruction_en": sentences(n)})
    source = TableSource(batch, rows_per_shard=max(1, n // 8))
    times = []
    for _ in range(2):  # the first is the warm-up
        with tempfile.TemporaryDirectory(prefix="bench-embed-") as d:
            t0 = time.perf_counter()
            run_stage(Embed(**options), source, d, progress=False)
            times.append(time.perf_counter() - t0)
    return {"backend": label, "sentences": n, "seconds": round(times[-1], 2), "per_s": round(n / times[-1], 1)}


def relevance_cost(n: int, rounds: int = 3) -> None:
    import statistics

    import pyarrow as pa

    from synth.select.embed import Embed
    from synth.stats import ShardStats

    answer = ("A river carries water from its source in the hills to the sea, and the towns along it grew up "
              "around fords, mills and markets. ")
    responses = [answer * (2 + i % 4) for i in range(n)]
    batch = pa.table({"id": [str(i) for i in range(n)], "instruction_en": sentences(n), "response_en": responses})
    stages = {on: Embed(device="cpu", workers=1, relevance=on) for on in (False, True)}
    for stage in stages.values():
        stage.setup()
        stage.process(batch.slice(0, 64), ShardStats())  # warm-up
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for on, stage in stages.items():
            t0, c0 = time.perf_counter(), time.process_time()
            stage.process(batch, ShardStats())
            wall[on].append(time.perf_counter() - t0)
            cpu[on].append(time.process_time() - c0)
    print(f"\nembed stage on {n} pairs, {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f}, "
          f"medians of {rounds} alternating rounds")
    print(f"{'relevance':10} {'wall s':>7} {'CPU s':>7} {'pairs/s':>9}")
    for on in (False, True):
        w, c = statistics.median(wall[on]), statistics.median(cpu[on])
        print(f"{'on' if on else 'off':10} {w:7.2f} {c:7.2f} {n / w:9.1f}")
    print(f"relevance on: {statistics.median(wall[True]) / statistics.median(wall[False]):.2f}x the wall time, "
          f"{statistics.median(cpu[True]) / statistics.median(cpu[False]):.2f}x the CPU time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--only", choices=["cpu", "gpu"], help="only the CPU rows, or only the GPU row")
    ap.add_argument("--relevance", action="store_true", help="the cost of the relevance column (CPU)")
    args = ap.parse_args()
    if args.relevance:
        relevance_cost(args.n)
        return
    from synth.devices import visible_gpus

    cores = os.cpu_count() or 1
    rows = []
    if args.only != "gpu" or not visible_gpus():
        rows.append(run(f"torch cpu, 1 process x {cores} threads", args.n, device="cpu", workers=1))
    if cores > 1 and args.only is None:
        rows.append(run_whole("whole stage: 1 copy", args.n, device="cpu", workers=1))
        rows.append(run_whole(f"whole stage: {cores} copies x 1 thread", args.n, device="cpu", workers=cores))
    if visible_gpus() and args.only != "cpu":
        rows.append(run("torch cuda fp16, batch 512", args.n, device="auto", workers=1))
    load = os.getloadavg()[0]
    print(f"\nembedding (all-MiniLM-L6-v2), {args.n} sentences, {cores} CPUs, 1-min load {load:.2f}\n")
    print(f"{'backend':42} {'s':>7} {'sentences/s':>12}")
    for r in rows:
        print(f"{r['backend']:42} {r['seconds']:7.2f} {r['per_s']:12.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cpus": cores, "load": load}, indent=2))


if __name__ == "__main__":  # the executor's copies are processes that import this file again
    main()
