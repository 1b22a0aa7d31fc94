"""A sqlite cache of finished requests, keyed by model and payload, so a restarted stage does not pay twice.

Finished results are stored, bad outputs (parse errors, truncation) included since asking again would give the
same answer; transient failures (timeouts, server errors) are not, so they are tried again next time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from synth.llm.base import Engine
from synth.llm.request import Request, Result
from synth.llm.stream import Counts, Feed, stream


class RequestCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, result FROM results WHERE key IN ({','.join('?' * len(chunk))})"
                out.update((k, json.loads(v)) for k, v in self._db.execute(q, chunk))
        return out

    def put_many(self, items: list[tuple[str, Result]]) -> None:
        rows = [(k, json.dumps(r.to_json(), ensure_ascii=False)) for k, r in items if not r.transient]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Lazy:
    """An engine not built yet: what names its answers (``model_key``, ``dtype``) and how to build it."""

    name: str
    model_key: str
    dtype: str
    build: Callable[[], Engine]


class CachedEngine(Engine):
    """Wraps an engine: cache hits are answered at once, misses stream to the engine (``synth.llm.stream``: a
    bounded in-flight window, identical requests sent once) and are stored as they finish.

    The engine may also be given as ``Lazy``: its key and a way to build it. It is then built on the first
    request the cache cannot answer, so a job the cache answers whole never loads the model. ``window``: the
    most requests at the engine at once (default: 4 × the engine's ``concurrency``)."""

    def __init__(self, engine: Engine | Lazy, cache: RequestCache, window: int | None = None) -> None:
        self._engine = engine if isinstance(engine, Engine) else None
        self._lazy = engine if isinstance(engine, Lazy) else None
        self.cache = cache
        self.window = window
        self.name, self.model_key, self.dtype = engine.name, engine.model_key, engine.dtype
        self.counts = Counts()

    @property
    def hits(self) -> int:
        """Requests answered without the engine: from the cache, or by an identical one in flight."""
        return self.counts.hits

    @property
    def misses(self) -> int:
        """Requests sent to the engine."""
        return self.counts.sent

    @property
    def engine(self) -> Engine:
        """The wrapped engine, built now if it was not yet."""
        if self._engine is None:
            self._engine = self._lazy.build()
            if self._engine.model_key != self.model_key:  # the key named the cache entries it must stay true to
                raise RuntimeError(f"{self.name} engine built as {self._engine.model_key}, keyed as {self.model_key}")
        return self._engine

    def generate(self, requests: list[Request]) -> list[Result]:
        return list(self.stream(requests))

    def stream(self, requests: Iterable[Request], window: int | None = None) -> Iterator[Result]:
        def feed() -> Feed:  # built on the first request the cache cannot answer
            return self.engine.feed()

        return stream(feed, requests, window or self.window, cache=self.cache, model_key=self.model_key,
                      counts=self.counts)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self.cache.close()
