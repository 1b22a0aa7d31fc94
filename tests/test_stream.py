"""The bounded in-flight window (synth.llm.stream) on a real model (SmolLM2 through transformers): what reaches
the engine, the order results come back in, the window bound, the cache written as answers finish."""

from __future__ import annotations

import pytest

from synth.llm import CachedEngine, Request, RequestCache, Result, Sampling
from synth.llm.base import Engine
from synth.llm.stream import Counts, Feed, stream

pytestmark = pytest.mark.requires("smollm2")


def ask(rid: str, text: str) -> Request:
    return Request(rid, messages=[{"role": "user", "content": text}], sampling=Sampling(max_tokens=4))


class CountingFeed:
    """A real engine's feed that records what was submitted and the most requests at it at once."""

    def __init__(self, feed: Feed) -> None:
        self.feed, self.window = feed, feed.window
        self.submitted: list[Request] = []
        self.at_engine = self.max_at_engine = 0

    def submit(self, items: list[tuple[int, Request]]) -> list[tuple[int, Result]]:
        self.submitted += [r for _, r in items]
        self.at_engine += len(items)
        self.max_at_engine = max(self.max_at_engine, self.at_engine)
        out = self.feed.submit(items)
        self.at_engine -= len(out)
        return out

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        out = self.feed.poll(timeout)
        self.at_engine -= len(out)
        return out


class Counted(Engine):
    """An engine whose feed is a ``CountingFeed`` around the wrapped engine's own."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.name, self.model_key, self.dtype = engine, engine.name, engine.model_key, engine.dtype
        self.feeds: list[CountingFeed] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        return self.engine.generate(requests)

    def feed(self) -> CountingFeed:
        self.feeds.append(CountingFeed(self.engine.feed()))
        return self.feeds[-1]


@pytest.fixture(scope="module")
def hf():
    from synth.llm.hf import HFEngine

    with HFEngine("smollm2", batch_size=4) as engine:
        yield engine


TEXTS = ["Say yes.", "Say no.", "Name a colour.", "Name a fruit.", "Count to three.", "Say hello.", "Name a city."]


def test_window_bound_and_order(hf):
    counted = Counted(hf)
    reqs = [ask(f"q{i}", t) for i, t in enumerate(TEXTS)]
    counts = Counts()
    results = list(stream(counted.feed, iter(reqs), window=3, counts=counts))  # a lazy iterator, read as it goes
    assert [r.id for r in results] == [r.id for r in reqs]
    assert all(r.ok and r.text for r in results), [r.error for r in results]
    (feed,) = counted.feeds
    assert feed.max_at_engine == counts.max_in_flight == 3  # full, and never over the window
    assert feed.at_engine == 0 and len(feed.submitted) == counts.sent == len(reqs)
    # In order and the same as one plain wave: the window changes when requests run, not what comes back.
    assert [r.text for r in results] == [r.text for r in hf.generate(reqs)]


def test_identical_requests_sent_once_and_cached_as_they_finish(hf, tmp_path):
    counted = Counted(hf)
    cached = CachedEngine(counted, RequestCache(tmp_path / "c.sqlite"), window=2)
    # Seven rows, three distinct payloads: the copies are answered from the one in flight (or the cache).
    texts = ["Say yes.", "Say no.", "Say yes.", "Say yes.", "Name a city.", "Say no.", "Say yes."]
    reqs = [ask(f"r{i}", t) for i, t in enumerate(texts)]
    results = cached.generate(reqs)
    assert [r.id for r in results] == [r.id for r in reqs]
    assert sorted(r.messages[0]["content"] for r in counted.feeds[0].submitted) == sorted(set(texts))
    assert (cached.misses, cached.hits) == (3, 4)
    by_text = {}
    for t, r in zip(texts, results, strict=True):
        assert by_text.setdefault(t, r.text) == r.text  # every copy got its original's answer
    assert [r.cached for r in results] == [False, False, True, True, False, True, True]
    assert len(cached.cache) == 3  # every fresh answer was stored
    again = CachedEngine(counted, RequestCache(tmp_path / "c.sqlite")).generate(reqs)
    assert len(counted.feeds) == 1 and [r.text for r in again] == [r.text for r in results]  # no engine this time
    cached.close()
