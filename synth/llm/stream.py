"""A bounded in-flight window that keeps an engine's queue full: requests go in as others finish, never in waves.

An engine that can take requests one at a time and hand back whichever finished first offers a ``Feed``
(``submit`` and ``poll``); ``stream`` keeps at most ``window`` distinct requests at it, refills as answers come
back, and yields results in the caller's order. With a request cache, hits are answered without the engine,
fresh answers are stored as they finish (a crash loses only what was still generating), and identical
requests in flight are sent once: the later ones get a copy of the first one's answer, marked ``cached``
(nothing was paid for them). Engines without a feed of their own get ``synth.llm.base.WaveFeed``: ``generate``
over what was submitted, i.e. waves of at most ``window`` requests, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from synth.llm.request import Request, Result

# Fresh answers are written to the cache in groups (one sqlite commit each), at the latest this long after the
# first of a group finished, so an engine that stalls or dies leaves its finished work stored.
FLUSH_SECONDS = 0.2
FLUSH_ROWS = 256
LOOKUP_ROWS = 256  # requests looked up in the cache at once before the engine (and its window) exists


class Feed(Protocol):
    """An engine's continuous face: ``submit`` queues requests under tags, ``poll`` returns finished ones.
    ``window``: how many requests to keep at it (a few times what it works on at once)."""

    window: int

    def submit(self, items: list[tuple[int, Request]]) -> list[tuple[int, Result]]:
        """Queue requests; those refused at once (too long, a bad schema) come back as failed results."""

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        """Results that finished, waiting up to ``timeout`` seconds for the first; every submitted tag comes
        back exactly once (an engine failure is a failed, transient result, never an exception)."""


class Store(Protocol):
    """Where finished answers are kept by key (``synth.llm.cache.RequestCache``)."""

    def get_many(self, keys: list[str]) -> dict[str, dict]: ...

    def put_many(self, items: list[tuple[str, Result]]) -> None: ...


@dataclass
class Counts:
    """What a stream did: answered from the cache (``hits``, duplicates in flight included), sent (``sent``),
    and the most distinct requests at the engine at once (``max_in_flight``: never above the window)."""

    hits: int = 0
    sent: int = 0
    max_in_flight: int = 0


@dataclass
class _Pending:
    request: Request
    followers: list[tuple[int, Request]] = field(default_factory=list)  # identical requests waiting on this one


def stream(feed: Callable[[], Feed], requests: Iterable[Request], window: int | None = None, *,
           cache: Store | None = None, model_key: str = "", counts: Counts | None = None) -> Iterator[Result]:
    """Results for ``requests`` in their order, with at most ``window`` (default: the feed's) distinct requests at
    the engine at once.

    ``feed`` is called on the first request the cache cannot answer (a job the cache answers whole never builds
    the engine). ``requests`` is read lazily, a window at a time, so it may be a generator over many shards."""
    limit = max(1, int(window)) if window else LOOKUP_ROWS
    counts = counts if counts is not None else Counts()
    source = iter(requests)
    the_feed: Feed | None = None
    ready: dict[int, Result] = {}  # finished, waiting for the ones before them
    inflight: dict[str, _Pending] = {}  # by cache key: one request per distinct payload, waiting or at the engine
    keys: dict[int, str] = {}  # tag -> cache key of a request in ``inflight``
    waiting: list[tuple[int, Request]] = []  # in ``inflight`` but not yet at the engine (the window is full)
    unstored: dict[str, Result] = {}  # finished, not yet in the cache: what answers a copy read meanwhile
    last_flush = time.monotonic()
    n = done = at_engine = 0
    exhausted = False

    def flush() -> None:
        nonlocal last_flush
        if cache is not None and unstored:
            cache.put_many(list(unstored.items()))
        unstored.clear()
        last_flush = time.monotonic()

    def finished(tag: int, result: Result) -> None:
        nonlocal at_engine
        at_engine -= 1
        key = keys.pop(tag)
        pending = inflight.pop(key)
        ready[tag] = result
        unstored[key] = result
        for ftag, freq in pending.followers:
            ready[ftag] = replace(result, id=freq.id, cached=True, latency=0.0)

    try:
        while True:
            # Read requests until the window is full, answering hits and duplicates on the way.
            while not exhausted and len(inflight) < limit:
                batch: list[tuple[int, Request]] = []
                for req in source:
                    batch.append((n, req))
                    n += 1
                    if len(batch) >= limit - len(inflight):
                        break
                else:
                    exhausted = True
                tags_keys = [(tag, req, req.cache_key(model_key)) for tag, req in batch]
                found = cache.get_many(list({k for _, _, k in tags_keys})) if cache is not None and batch else {}
                for tag, req, key in tags_keys:
                    if key in found:
                        ready[tag] = Result(**{**found[key], "id": req.id, "cached": True})
                        counts.hits += 1
                    elif key in unstored and not unstored[key].transient:
                        ready[tag] = replace(unstored[key], id=req.id, cached=True, latency=0.0)
                        counts.hits += 1
                    elif key in inflight:
                        inflight[key].followers.append((tag, req))
                        counts.hits += 1
                    else:
                        inflight[key] = _Pending(req)
                        keys[tag] = key
                        waiting.append((tag, req))
            # Send what the window has room for (a feed's own window may grow as it learns the engine).
            if waiting and the_feed is None:
                the_feed = feed()
            if the_feed is not None and not window:
                limit = max(1, the_feed.window)
            if waiting:
                room = max(0, limit - at_engine)
                if room:
                    go, waiting[:room] = waiting[:room], []
                    at_engine += len(go)
                    counts.sent += len(go)
                    counts.max_in_flight = max(counts.max_in_flight, at_engine)
                    for tag, res in the_feed.submit(go):
                        finished(tag, res)
            # Hand back, in order, what is ready.
            while done in ready:
                yield ready.pop(done)
                done += 1
            if exhausted and done == n:
                break
            if at_engine:
                assert the_feed is not None
                for tag, res in the_feed.poll(FLUSH_SECONDS):
                    finished(tag, res)
            if unstored and (len(unstored) >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_SECONDS):
                flush()
    finally:  # answers already paid for are stored, however the stream ends (a crash, a consumer that stops)
        flush()
