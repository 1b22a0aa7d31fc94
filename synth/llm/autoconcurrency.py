"""Concurrency "auto" for the OpenAI-compatible engine: find how many requests a vLLM server runs at once from its
``/metrics`` (the engine's module docstring says what it is for; this module holds the rule).

Starting at ``AUTO_START``, double while the server runs more than half of what the engine sends and its KV cache has
room; hold when twice the sequences would not fit; step back once when a doubling overshot (the server preempts, or
its cache fills ``KV_FULL``) or when the count it runs stops rising at half or below.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple, Protocol

AUTO_START = 32  # where it starts, and where it stays on a server without vLLM's metrics
AUTO_MAX = 4096
RUNNING = "vllm:num_requests_running"  # a vLLM server's gauge of the sequences it runs now
KV_USAGE = "vllm:kv_cache_usage_perc"  # ...and of the share of its KV cache in use (0-1)
PREEMPTED = "vllm:num_preemptions_total"  # ...and its count of sequences evicted, to be computed again later
KV_ROOM = 0.5  # doubles only while the KV cache is less than this full: twice as many sequences must fit
KV_FULL = 0.75  # a doubling that fills it this far (or makes the server preempt) overshot: step back
FLAT_PROBES = 3  # probes in a row that find the server's count no longer rising: it runs all it can...
FLAT_SECONDS = 6.0  # ...and for at least this long (a slow server admits a burst over seconds)


class ServerState(NamedTuple):
    """What a vLLM server's metrics say now; None for what they do not say (all None without readable metrics)."""

    running: float | None  # sequences it runs, summed over its engines
    kv: float | None  # share of KV cache in use, the fullest engine's
    preempted: float | None  # sequences preempted so far, summed


class Adaptive(Protocol):
    """The engine's side: what it sends now, where it stands, and how to change it."""

    concurrency: int
    running: int
    probe_seconds: float

    def _resize(self, sem: asyncio.Semaphore, n: int) -> None: ...
    def _adapted(self, what: str) -> None: ...
    def _metrics_url(self) -> str: ...
    async def _server_state(self, client: Any) -> ServerState: ...


async def server_state(client: Any, url: str, headers: dict[str, str]) -> ServerState:
    """Read the server's Prometheus text at ``url``; anything unreadable is as good as no metrics."""
    none = ServerState(None, None, None)
    try:
        resp = await client.get(url, headers=headers, timeout=10)
    except Exception:
        return none
    if resp.status_code != 200:
        return none
    gauges: dict[str, list[float]] = {RUNNING: [], KV_USAGE: [], PREEMPTED: []}
    try:
        for line in resp.text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in gauges:
                gauges[name].append(float(line.rsplit(" ", 1)[1]))
    except (IndexError, ValueError):  # not Prometheus text after all
        return none
    running, kv, preempted = gauges[RUNNING], gauges[KV_USAGE], gauges[PREEMPTED]
    if not running:
        return none
    return ServerState(sum(running), max(kv) if kv else None, sum(preempted) if preempted else None)


def overshot(now: ServerState, preempted_before: float | None) -> bool:
    """Whether the last doubling took more than the server holds: sequences preempted since (vLLM evicts and later
    recomputes them: work paid twice), or its KV cache nearly full."""
    rose = now.preempted is not None and preempted_before is not None and now.preempted > preempted_before
    return rose or (now.kv is not None and now.kv >= KV_FULL)


async def adapt(engine: Adaptive, client: Any, sem: asyncio.Semaphore) -> None:
    """Double ``engine.concurrency`` each time the server runs more than half of it (more than the step before
    allowed: it has room) while its KV cache is less than ``KV_ROOM`` full; at ``KV_ROOM`` or more, twice the
    sequences would not fit in it (vLLM would preempt and recompute them), so it stays and stops. A doubling after
    which the server preempts sequences or fills its KV cache ``KV_FULL`` overshot (the step before fitted; on a CPU
    server 128 at once ran at 93 % of the rate of 64): step back once and stop. When it runs at most half and that
    count stops rising for ``FLAT_PROBES`` probes in a row and ``FLAT_SECONDS``, whatever limits it (its sequence cap,
    KV cache or prefill budget) is reached: step back once and stop. A count still rising is a server admitting a
    burst (prefill takes a while on a CPU): wait. Stops at once on a server without vLLM's metrics. Probes only
    while the engine is the limit."""
    flat, last, rose = 0, -1.0, time.monotonic()
    preempted_before: float | None = None  # the server's preemption count when concurrency last doubled
    while engine.concurrency < AUTO_MAX:
        await asyncio.sleep(engine.probe_seconds)
        if engine.running < engine.concurrency:
            continue
        now = await engine._server_state(client)
        if now.running is None:
            engine._adapted(f"no vLLM metrics at {engine._metrics_url()}; concurrency stays {engine.concurrency}")
            return
        running = int(now.running)
        if engine.concurrency > AUTO_START and overshot(now, preempted_before):
            engine._resize(sem, engine.concurrency // 2)
            preempted = int((now.preempted or 0) - (preempted_before or 0))
            engine._adapted(f"the server runs {running} at once with its KV cache {now.kv or 0:.0%} full and "
                            f"{preempted} preempted; concurrency back to {engine.concurrency}")
            return
        if running > engine.concurrency / 2 and now.kv is not None and now.kv >= KV_ROOM:
            engine._adapted(f"the server runs {running} at once with its KV cache {now.kv:.0%} full; "
                            f"concurrency stays {engine.concurrency}")
            return
        if running > engine.concurrency / 2:
            preempted_before = now.preempted
            engine._resize(sem, min(AUTO_MAX, engine.concurrency * 2))
            engine._adapted(f"the server runs {running} at once; concurrency {engine.concurrency}")
            flat, last, rose = 0, -1.0, time.monotonic()
            continue
        flat = flat + 1 if now.running <= last else 0
        rose = rose if now.running <= last else time.monotonic()
        last = now.running
        if flat >= FLAT_PROBES and time.monotonic() - rose >= FLAT_SECONDS:
            if engine.concurrency > AUTO_START:
                engine._resize(sem, engine.concurrency // 2)
            engine._adapted(f"the server runs no more than {running} at once; concurrency {engine.concurrency}")
            return
