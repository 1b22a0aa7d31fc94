"""Executors run a stage's missing shards: ``local`` (processes on this machine) or ``ray`` (a Ray cluster)."""

from synth.executors.base import EXECUTORS, Executor, ExecutorError, current, make_executor, using

__all__ = ["EXECUTORS", "Executor", "ExecutorError", "current", "make_executor", "using"]
