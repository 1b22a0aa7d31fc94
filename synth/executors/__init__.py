"""Executors run a stage's missing shards: ``local`` (processes on this machine) or ``ray`` (a Ray cluster).

``EXECUTORS`` names each one's class; a new executor is a module beside these (``base.Executor``'s methods) and
one line there. ``make_executor`` builds one by name; ``using`` makes one the executor of every stage a run starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from synth.executors.base import Executor, ExecutorError

EXECUTORS = {
    "local": "synth.executors.local:LocalExecutor",
    "ray": "synth.executors.ray:RayExecutor",  # imported when asked for: Ray is an extra
}


def make_executor(name: str | None = "local", ray_address: str | None = None, **options: Any) -> Executor:
    """``local`` or ``ray`` (``ray_address``: None starts a local Ray instance, ``auto`` joins this machine's
    cluster, ``host:port`` a given one; ``options`` go to ``synth.executors.ray.RayExecutor``)."""
    name = (name or "local").lower()
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}: one of {', '.join(EXECUTORS)}")
    if name == "local" and ray_address:
        raise ExecutorError("--ray-address needs --executor ray")
    module, _, cls = EXECUTORS[name].partition(":")
    made = getattr(importlib.import_module(module), cls)
    return made(address=ray_address, **options) if name == "ray" else made(**options)


_CURRENT: ContextVar[Executor | None] = ContextVar("synth_executor", default=None)


def current() -> Executor:
    """The executor of the run in progress (``using``), else the local one."""
    ex = _CURRENT.get()
    return make_executor("local") if ex is None else ex


@contextmanager
def using(executor: Executor | None) -> Iterator[Executor]:
    """Run every stage started inside (by a stage's driver too, like extract's two steps) on ``executor``."""
    if executor is None:
        yield current()
        return
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


__all__ = ["EXECUTORS", "Executor", "ExecutorError", "current", "make_executor", "using"]
