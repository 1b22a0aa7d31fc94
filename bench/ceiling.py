"""Can synth keep up with a GPU? synth's own ceiling as an LLM client (not a test; prints a table, ``--json``).

One H100 running an 8B model answers roughly 50-70 synth requests/s; synth, the client, should never be what
limits a run, so the goal is at least 5× that (350 requests/s) from one synth process. This bench takes the
GPU out: a stand-in OpenAI-compatible server on 127.0.0.1 (a free port, in a process of its own, so its CPU
time is not synth's) answers every ``/v1/chat/completions`` and ``/v1/completions`` at once with canned
English of realistic length (user-voice requests of 470-490 characters, about 120 tokens: the instruct
stage keeps instructions of up to 600 characters, so the rows are kept and written), with ``usage`` and
``finish_reason: "stop"``, over HTTP/1.1 keep-alive. Then the real instruct stage (``Instruct`` on the openai
engine at a fixed ``--concurrency``: rendering, the stream window, the answer checks with LID, zstd Parquet
shards of ``--shard-rows`` into a fresh run directory) runs end to end through ``run_stage`` over
``TableSource`` of ``--n`` distinct English fragments (``bench/stage_llm.fragments``). Rows: with
``cache=None``, and with the sqlite request cache (a fresh file each run, so every request is paid for and
stored). A plain async httpx client at the same concurrency (``--raw-n`` requests) is the reference.

Each measurement runs in a fresh subprocess (so CPU and peak memory are its own): wall seconds, requests/s,
CPU-seconds of the synth process (user + system, all threads, ``RUSAGE_SELF``) per 1,000 requests, its peak
RSS (``VmHWM``: imports, LID model and the input table included), and the server's CPU seconds over the same
time (``/proc/<pid>/stat``) with its share of one core ("server busy": near 100% would mean the stand-in, not
synth, is the limit). "synth cores" is CPU-seconds over wall seconds: the client is one process held by one
GIL, so below 1.0 other work on the machine took the core, and CPU-seconds per 1k requests is the steadier
number (1,000 / it is the requests/s one free core would give). Medians over ``--repeats``.

    .venv/bin/python bench/ceiling.py [--n 100000] [--shard-rows 10000] [--concurrency 64,256] [--repeats 1]
        [--cache none|sqlite|both] [--raw-n 20000] [--json out.json]

``--n 2000`` is a quick check. ``--serve`` runs the stand-in server alone (prints its base URL).
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/ceiling.py`, this folder comes first on sys.path, where a sibling (select.py) shadows the
# standard library's `select` that asyncio and subprocess import: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "canned-instruct-8b"  # the name the stand-in server reports at /v1/models
GPU_RATE = 70.0  # requests/s: one H100 running an 8B model answers roughly 50-70 synth requests/s
GOAL = 5 * GPU_RATE

# What the server answers, in turn: requests in a user's voice, as the instruct stage wants them (1-3 sentences,
# no assistant voice, no labels), long enough to stand for a real generation.
ANSWERS = [
    "Could you explain how the seasonal monsoon winds shape farming along the coast of East Africa, including "
    "when the long and short rains usually arrive, which crops families plant before each of them, and why a "
    "late or weak rainy season can push food prices up in the markets of towns far inland? Please also describe"
    " how fishing communities adjust their work when the winds change direction during the year, and which "
    "months are safest for small boats to go out to sea.",
    "Write a short article for a community newsletter about the history of the public library in a small town: "
    "how it started as a single room of donated books, who paid for the first real building, how it survived "
    "the years when the council wanted to close it, and what services it offers to children and older readers "
    "today. Keep the tone warm and practical, end with the opening hours and how to join, and add a paragraph "
    "on the volunteers who run the weekly reading club for children.",
    "Why do bridges built over wide rivers need expansion joints, and what happens to the steel and concrete "
    "parts of such a bridge between a cold winter night and a hot summer afternoon? Describe the main kinds of "
    "joints engineers use, explain how inspectors can tell that one of them is worn out, and say what repairs "
    "usually cost compared with replacing a whole span of the bridge after years of neglect, using a real "
    "example of a bridge that had to be closed if you know one.",
    "List the steps a family should follow to prepare for a long journey by train across the country with two "
    "young children, from buying the tickets and choosing seats to packing food, water, medicine and games, and"
    " explain what to do if a connection is missed at a station late in the evening. Include advice on keeping "
    "passports and tickets safe, on finding help from the railway staff when something goes wrong on the way, "
    "and on keeping the children calm and busy during long delays.",
    "Give me an overview of how bread is made in a traditional bakery, starting with the choice of flour and "
    "the preparation of the starter, through kneading, the first and second rise, shaping the loaves and baking"
    " them in a wood-fired oven, and explain how bakers judge by sight, sound and smell that a loaf is ready. "
    "Mention the mistakes beginners make most often and how each of them changes the crumb and the crust, and "
    "suggest one simple loaf that a beginner could try at home first.",
    "Describe a busy market in a coastal city in the early morning, when traders arrive with fish, fruit and "
    "spices, and explain how prices are agreed between buyers and sellers, why some stalls belong to the same "
    "families for generations, and how the market changes during the hottest hours of the day. I would like the"
    " description to help a visitor who has never been there know what to expect and how to behave, including "
    "how to bargain politely and which foods to taste first.",
    "What are the rights of a tenant whose landlord wants to raise the rent in the middle of a signed lease, "
    "and how should the tenant respond in writing? Explain which notices the landlord has to give, how long the"
    " tenant has to answer, where disputes of this kind are usually settled, and what evidence the tenant "
    "should keep, such as receipts, messages and photographs of the flat on the day of moving in, and say "
    "whether it is wise to keep paying the old rent while the dispute goes on.",
    "Explain in simple words how vaccines train the immune system to recognise a disease, why some vaccines "
    "need several doses or a booster years later, and how health workers keep them cold on the way to remote "
    "villages without a steady supply of electricity. Please also say why vaccinating most people in a "
    "community protects the babies and the sick who cannot receive the vaccine themselves, what the usual side "
    "effects are, and how long they tend to last in children and adults.",
]


def approx_tokens(text: str) -> int:
    """A rough token count of English text (about four characters a token), for the ``usage`` the server reports."""
    return max(1, round(len(text) / 4))


# ----------------------------------------------------------------------------------------- the stand-in server


def _responses() -> dict[bytes, list[tuple[bytes, bytes, int]]]:
    """Per endpoint, the parts of each canned response body around the id and the prompt token count."""
    out: dict[bytes, list[tuple[bytes, bytes, int]]] = {b"chat": [], b"text": []}
    for text in ANSWERS:
        content = json.dumps(text)
        n = approx_tokens(text)
        chat = ('","object":"chat.completion","created":1796601600,"model":"' + MODEL + '","choices":[{"index":0,'
                '"message":{"role":"assistant","content":' + content + '},"logprobs":null,"finish_reason":"stop"}],'
                '"usage":{"prompt_tokens":')
        comp = ('","object":"text_completion","created":1796601600,"model":"' + MODEL + '","choices":[{"index":0,'
                '"text":' + content + ',"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":')
        out[b"chat"].append((chat.encode(), b',"completion_tokens":', n))
        out[b"text"].append((comp.encode(), b',"completion_tokens":', n))
    return out


class _Http(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: Content-Length bodies, keep-alive, pipelining; no chunked uploads."""

    bodies = _responses()
    served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower() + b"\r\n"
            at = head.find(b"\ncontent-length:")
            length = int(head[at + 16:head.find(b"\r\n", at)]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                break
            body, line = buf[end + 4:end + 4 + length], head[:head.find(b"\r\n")]
            buf = buf[end + 4 + length:]
            close = b"\nconnection: close" in head or line.endswith(b"http/1.0")
            self.transport.write(self.respond(line, body, close))
            if close:
                self.transport.close()
                return
        self.buf = buf

    def respond(self, line: bytes, body: bytes, close: bool) -> bytes:
        parts = line.split(b" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        path = path.split(b"?", 1)[0].rstrip(b"/")
        if method == b"post" and path in (b"/v1/chat/completions", b"/v1/completions"):
            if not body.startswith(b"{"):
                return _reply(400, b'{"error":{"message":"expected a JSON body"}}', close)
            _Http.served += 1
            kind = b"chat" if path.endswith(b"chat/completions") else b"text"
            front, mid, done = self.bodies[kind][_Http.served % len(ANSWERS)]
            prompt = max(1, len(body) // 4)
            out = (b'{"id":"cmpl-%d' % _Http.served + front + b"%d" % prompt + mid
                   + b'%d,"total_tokens":%d}}' % (done, prompt + done))
            return _reply(200, out, close)
        if method == b"get" and path == b"/v1/models":
            return _reply(200, json.dumps({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 1796601600, "owned_by": "bench"}]}).encode(), close)
        if method == b"get" and path in (b"/health", b"/v1/health"):
            return _reply(200, b"{}", close)
        return _reply(404, b'{"error":{"message":"not found"}}', close)


def _reply(status: int, body: bytes, close: bool) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}[status]
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
            % (status, reason, len(body), b"close" if close else b"keep-alive")) + body


def serve() -> None:
    """Run the stand-in server on a free loopback port until SIGTERM; print its base URL first."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        flavour = "uvloop"
    except ImportError:
        loop = asyncio.new_event_loop()
        flavour = "asyncio"
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(_Http, "127.0.0.1", 0, backlog=4096))
    port = server.sockets[0].getsockname()[1]
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    print(f"http://127.0.0.1:{port}/v1 {flavour}", flush=True)
    loop.run_forever()
    server.close()


class Server:
    """The stand-in server in a subprocess, with its CPU time read from /proc while it runs."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split() if self.proc.stdout else []
        if not line:
            raise RuntimeError("the stand-in server did not start")
        self.base_url, self.loop = line[0], line[1]

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def model(self) -> str:
        import httpx

        return httpx.get(self.base_url + "/models", timeout=10).json()["data"][0]["id"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------------------- one measurement


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)  # none with the local executor's one process; counted if any
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def measure_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """The instruct stage over ``spec["n"]`` fragments against the server; what it cost this process."""
    from bench.stage_llm import fragments
    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.stages.instruct import Instruct

    rows = fragments(spec["n"], seed=spec.get("seed", 0))
    with tempfile.TemporaryDirectory(prefix="synth-ceiling-") as d:
        cache = str(Path(d) / "cache" / "requests.sqlite") if spec["cache"] == "sqlite" else None
        stage = Instruct(engine="openai", model=spec["model"], cache=cache,
                         engine_options={"base_url": spec["base_url"], "api_key_env": "",
                                         "concurrency": spec["concurrency"]})
        profiler = None
        if spec.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, t0 = _cpu_self(), time.perf_counter()
        out = run_stage(stage, TableSource(rows, spec["shard_rows"]), Path(d) / "run", progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_self() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])
        stats = out.stats()
        counters = stats.get("counters", {})
        shards = list(out.shards)
        result = {"requests": counters.get("llm_requests", 0), "cache_hits": counters.get("llm_cache_hits", 0),
                  "completion_tokens": counters.get("completion_tokens", 0), "rows_in": rows.num_rows,
                  "rows_out": out.manifest["rows"], "shards": len(shards),
                  "parquet_mb": round(sum(p.stat().st_size for p in shards) / 1e6, 2),
                  "dropped": stats.get("dropped", {}),
                  "cache_mb": round(Path(cache).stat().st_size / 1e6, 1) if cache else None}
    return {**result, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb()}


def measure_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain async httpx client POSTing the stage's own request bodies, ``concurrency`` at once: the reference."""
    import httpx

    from bench.stage_llm import fragments
    from synth.llm.openai import OpenAIEngine
    from synth.stages.instruct import Instruct

    rows = fragments(spec["n"], seed=spec.get("seed", 0))
    stage = Instruct(engine="openai", model=spec["model"], cache=None)
    requests, _ = stage.requests(rows.column("id").to_pylist(), rows.column("response_en").to_pylist())
    engine = OpenAIEngine(spec["model"], base_url=spec["base_url"], api_key_env="")
    bodies = [engine.payload(r)[1] for r in requests]
    url, c = spec["base_url"] + "/chat/completions", spec["concurrency"]

    async def go() -> int:
        sem = asyncio.Semaphore(c)
        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            async def one(body: dict[str, Any]) -> int:
                async with sem:
                    r = await client.post(url, json=body)
                    r.raise_for_status()
                    return len(r.json()["choices"][0]["message"]["content"])
            return len([x for x in await asyncio.gather(*(one(b) for b in bodies)) if x])

    cpu0, t0 = _cpu_self(), time.perf_counter()
    done = asyncio.run(go())
    wall, cpu = time.perf_counter() - t0, _cpu_self() - cpu0
    return {"requests": done, "cache_hits": 0, "rows_in": rows.num_rows, "rows_out": None, "wall_s": wall,
            "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb()}


def run_child(spec: dict[str, Any], server: Server) -> dict[str, Any]:
    """One measurement in a fresh interpreter, with the server's CPU time over it."""
    s0 = server.cpu()
    proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True, text=True)
    s1 = server.cpu()
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec['label']!r} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "server_cpu_s": s1 - s0}


# ----------------------------------------------------------------------------------------- report


def summarise(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "peak_rss_mb", "server_cpu_s")}
    first = runs[0]
    requests = first["requests"]
    return {"row": label, "requests": requests, "cache_hits": first.get("cache_hits", 0),
            "rows_out": first.get("rows_out"), "wall_s": round(med["wall_s"], 2),
            "req_per_s": round(requests / med["wall_s"], 1),
            "synth_cpu_s": round(med["cpu_s"], 2),
            "cpu_s_per_1k": round(med["cpu_s"] / max(1, requests) * 1000, 3),
            "synth_cores": round(med["cpu_s"] / med["wall_s"], 2),
            "peak_rss_mb": round(med["peak_rss_mb"], 1), "server_cpu_s": round(med["server_cpu_s"], 2),
            "server_busy": round(med["server_cpu_s"] / med["wall_s"], 2),
            "vs_gpu": round(requests / med["wall_s"] / GPU_RATE, 1),
            **{k: first[k] for k in ("completion_tokens", "shards", "parquet_mb", "dropped", "cache_mb") if k in first},
            "all_wall_s": [round(r["wall_s"], 2) for r in runs], "repeats": len(runs)}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| row | requests | wall s | req/s | synth CPU s | CPU s / 1k req | synth cores | peak RSS MB "
            "| server CPU s | server busy | rows out | × 70 req/s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        out = "-" if r["rows_out"] is None else f"{r['rows_out']:,}"
        lines.append(f"| {r['row']} | {r['requests']:,} | {r['wall_s']:.1f} | {r['req_per_s']:,.0f} | "
                     f"{r['synth_cpu_s']:.1f} | {r['cpu_s_per_1k']:.2f} | {r['synth_cores']:.2f} | "
                     f"{r['peak_rss_mb']:,.0f} | {r['server_cpu_s']:.1f} | {r['server_busy']:.0%} | {out} | "
                     f"{r['vs_gpu']:.1f}× |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="fragments, one request each")
    ap.add_argument("--shard-rows", type=int, default=10_000, help="rows per input (and output) shard")
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[256],
                    help="the openai engine's fixed concurrency; several (64,256) make one row each")
    ap.add_argument("--repeats", type=int, default=1, help="runs per row (medians when > 1)")
    ap.add_argument("--cache", choices=["none", "sqlite", "both"], default="both",
                    help="the stage without a request cache, with a fresh sqlite one, or both rows")
    ap.add_argument("--raw-n", type=int, default=20_000, help="requests of the plain httpx reference (0: none)")
    ap.add_argument("--profile", help="cProfile the first cache=None run's main thread into this file")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    if args.measure:
        spec = json.loads(args.measure)
        print(json.dumps(measure_raw(spec) if spec["kind"] == "raw" else measure_stage(spec)))
        return

    load0, t_start = os.getloadavg(), time.time()
    print(f"{os.cpu_count()} CPUs; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start",
          file=sys.stderr)
    server = Server()
    model = server.model()
    print(f"stand-in server at {server.base_url} ({server.loop}), model {model}", file=sys.stderr)
    caches = ["none", "sqlite"] if args.cache == "both" else [args.cache]
    plan: list[dict[str, Any]] = []
    for c in args.concurrency:
        if args.raw_n > 0:
            plan.append({"kind": "raw", "label": f"plain httpx client, c={c} (reference)", "n": args.raw_n,
                         "concurrency": c})
        for cache in caches:
            plan.append({"kind": "stage", "label": f"synth instruct stage, c={c}, cache={cache}", "n": args.n,
                         "concurrency": c, "cache": cache})
    if args.profile:
        first = next(p for p in plan if p["kind"] == "stage")
        first["profile"] = str(Path(args.profile).resolve())
    results: list[dict[str, Any]] = []
    try:
        for spec in plan:
            spec.update(model=model, base_url=server.base_url, shard_rows=args.shard_rows)
            runs = []
            for i in range(args.repeats):
                if i and "profile" in spec:
                    del spec["profile"]
                runs.append(run_child(spec, server))
                r = runs[-1]
                print(f"{spec['label']}: {r['requests']:,} requests in {r['wall_s']:.1f}s "
                      f"({r['requests'] / r['wall_s']:,.0f}/s), {r['cpu_s']:.1f} CPU-s, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            results.append(summarise(spec["label"], runs))
    finally:
        server.stop()
    load1 = os.getloadavg()
    best = max((r for r in results if r["row"].startswith("synth")), key=lambda r: r["req_per_s"], default=None)
    print(f"\nsynth's ceiling as an LLM client: instruct stage, {args.n:,} fragments, shards of {args.shard_rows:,}, "
          f"median of {args.repeats}, {os.cpu_count()} CPUs, {time.time() - t_start:.0f}s; "
          f"1-min load {load0[0]:.2f} before, {load1[0]:.2f} after\n")
    print(table(results))
    if best is not None:
        print(f"\none H100 running an 8B model answers roughly 50-70 synth requests/s; the goal is ≥ 5× that "
              f"({GOAL:.0f} req/s). Best synth row: {best['req_per_s']:,.0f} req/s = {best['vs_gpu']:.1f}× 70 req/s "
              f"({'meets' if best['req_per_s'] >= GOAL else 'misses'} the goal)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": results, "gpu_rate": GPU_RATE, "goal": GOAL,
            "best_vs_gpu": best["vs_gpu"] if best else None,
            "machine": {"cpus": os.cpu_count(), "load_before": load0, "load_after": load1},
            "server": {"loop": server.loop, "answer_chars": [len(a) for a in ANSWERS]},
            "args": {k: v for k, v in vars(args).items() if k not in ("serve", "measure")}}, indent=2))


if __name__ == "__main__":
    main()
