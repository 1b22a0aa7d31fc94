"""A sqlite cache of finished requests, keyed by model and payload, so a restarted stage does not pay twice.

Finished results are stored, bad outputs (parse errors, truncation) included since asking again would give the
same answer; transient failures (timeouts, server errors) are not, so they are tried again next time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from synth.llm.base import Engine, Request, Result


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


class CachedEngine(Engine):
    """Wraps an engine: cache hits are answered at once, misses go to the engine in chunks and are stored."""

    def __init__(self, engine: Engine, cache: RequestCache, chunk: int = 256) -> None:
        self.engine = engine
        self.cache = cache
        self.chunk = chunk
        self.name = engine.name
        self.model_key = engine.model_key
        self.dtype = engine.dtype
        self.hits = 0
        self.misses = 0

    def generate(self, requests: list[Request]) -> list[Result]:
        keys = [r.cache_key(self.model_key) for r in requests]
        found = self.cache.get_many(list(set(keys)))
        results: list[Result | None] = [None] * len(requests)
        todo: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys, strict=True)):
            if key in found:
                results[i] = Result(**{**found[key], "id": req.id, "cached": True})
            else:
                todo.append(i)
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        # In chunks, stored as they finish: a crash loses at most one chunk of paid work.
        for start in range(0, len(todo), self.chunk):
            idx = todo[start : start + self.chunk]
            fresh = self.engine.generate([requests[i] for i in idx])
            self.cache.put_many([(keys[i], r) for i, r in zip(idx, fresh, strict=True)])
            for i, r in zip(idx, fresh, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.engine.close()
        self.cache.close()
