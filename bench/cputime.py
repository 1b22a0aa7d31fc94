"""CPU seconds spent by this process and every process below it (vLLM's engine core and server, worker pools, a
local Ray instance) during a block, beside its wall time: on a machine shared with other work, wall time stretches
with the load and CPU time much less.

    with TreeCPU() as cpu:
        work()
    cpu.seconds, cpu.own_seconds

Each process's user + system time is sampled every ``interval`` seconds (psutil); a process alive when the block
starts counts only what it spends after that. A process that ends between two samples loses at most one interval;
one that ends and is waited for by this process is counted through ``RUSAGE_CHILDREN`` instead when that is more.
``own_seconds`` is this process alone (``time.process_time``).
"""

from __future__ import annotations

import resource
import threading
import time


def _children_rusage() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class TreeCPU:
    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.seconds = 0.0
        self.own_seconds = 0.0
        self._base: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[tuple[int, float], float]:
        import psutil

        me = psutil.Process()
        out = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    out[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:
                continue
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._sample())

    def __enter__(self) -> TreeCPU:
        self._base = self._sample()
        self._last = dict(self._base)
        self._own0 = time.process_time()
        self._children0 = _children_rusage()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())
        sampled = sum(v - self._base.get(k, 0.0) for k, v in self._last.items())
        ended = [k for k in self._last if k not in self._sample()]
        waited = _children_rusage() - self._children0  # children that ended and were waited for during the block
        seen_ended = sum(self._last[k] - self._base.get(k, 0.0) for k in ended)
        self.seconds = sampled + max(0.0, waited - seen_ended)
        self.own_seconds = time.process_time() - self._own0
