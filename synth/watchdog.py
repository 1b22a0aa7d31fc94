"""No orphans: whatever a synth process dies of (an OOM killer's SIGKILL, a CI timeout, ``kill -9``), the
processes it started die with it. A process killed so runs no cleanup; two lines hold instead, both Linux only.

1. The kernel, with no gap. A child asks, as it starts, to be SIGKILLed the moment its parent dies
   (``die_with_parent``: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; a child whose parent died before it asked kills
   itself at once, so none slips through while it starts):

   - the local executor's processes (its worker pool and the pinned engine copies) ask first thing, in the
     pool's initializer (``synth.executors.local``);
   - vLLM's processes (its engine core, which holds the GPU, and through it the tensor-parallel workers) are
     started by vLLM, where synth has no say: while a ``VLLMEngine`` is built, ``children_die_with_me`` makes
     every child that multiprocessing or ``os.fork`` starts from the main thread ask. A forked child asks from
     an at-fork hook; a spawned one as it unpickles its ``Process``, from a marker in multiprocessing's
     per-process config, which the child's own config keeps: each generation ties itself to its own parent;
   - Apertium needs nothing: its pipeline reads the text from one pipe and writes to another, so when synth
     dies its input ends and its next write kills it (SIGPIPE); likewise the short ``apertium -l`` and
     ``dpkg-query``.

   The kernel fires when the *thread* that started the child ends, even if its process lives on. The local
   executor starts its pool's processes from the thread that holds the pool until they are done; vLLM's are
   tied only when started from the main thread, which lasts as long as its process (nor are a forkserver's
   children, whose parent is the forkserver): the others are left to the watchdog.

2. The watchdog (``start_watchdog``, started by a process that builds a vLLM engine), for what the kernel line
   does not reach: processes started off the main thread, or by a library's own subprocess. A tiny process in a
   session of its own notes every descendant of its parent twice a second (pid and start time, so a reused pid
   is never hit). When the parent is gone, it adds those it had no time to note (processes of the parent's
   process group started since its last look and orphaned with the parent, and what they and the noted ones
   started since), SIGTERMs them all, SIGKILLs those still running, and exits. It watches the parent's pid
   rather than a pipe, because a forked engine core would hold a pipe open.

Elsewhere (no ``prctl``, no ``/proc``) neither line exists: a synth process SIGKILLed there can leave its
children running.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_CONFIG_KEY = "synth_die_with_parent"  # the marker's key in multiprocessing's per-process config


@cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent: int | None) -> bool:
    """In a child, first thing: have the kernel SIGKILL this process the moment ``parent`` (the pid of the
    process that started it) dies; if it is already gone, die now. The kernel keys this to the thread that
    started the child: start it from a thread that lives as long as its process. ``parent`` None: no check.
    Returns whether the kernel will do it (False off Linux)."""
    prctl = _prctl()
    if prctl is None or prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                              ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        return False
    if parent is not None and os.getppid() != parent:  # it died before the kernel was asked: nothing would fire
        os.kill(os.getpid(), signal.SIGKILL)
    return True


# -- children that synth does not start itself (vLLM's): tied while children_die_with_me runs ----------------

_tying = False  # children started now from the main thread ask; a forked child inherits it, a spawned one is told
_hooked = False
_forked_by: tuple[int, bool] = (0, False)  # set just before a fork: the forking pid, and whether from the main thread


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _before_fork() -> None:
    global _forked_by
    _forked_by = (os.getpid(), _on_main_thread())


def _after_fork_in_child() -> None:
    parent, from_main = _forked_by
    if _tying and from_main:
        die_with_parent(parent)


def _start_tying() -> None:
    global _tying, _hooked
    if not _hooked:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _hooked = True
    _tying = True


class _Tie:
    """The marker in multiprocessing's config of a process whose children die with it. A ``Process`` copies the
    config as it is made and a spawned child unpickles it with the ``Process``: that ties the child to the
    process that pickled it, and leaves the marker in the child's own config, for the child's children."""

    def __reduce__(self) -> tuple[Callable[[int | None], _Tie], tuple[int | None]]:
        from multiprocessing import context, popen_spawn_posix

        # Spawned from the main thread: the child's parent is this process. A forkserver's children are not.
        spawned = isinstance(context.get_spawning_popen(), popen_spawn_posix.Popen) and _on_main_thread()
        return _tied, (os.getpid() if spawned else None,)


def _tied(parent: int | None) -> _Tie:
    """In a spawned child, as it unpickles its ``Process`` (before its target runs)."""
    if parent is not None:
        die_with_parent(parent)
    _start_tying()  # its own forks, too
    return _Tie()


@contextmanager
def children_die_with_me() -> Iterator[None]:
    """While this runs, every child that multiprocessing (fork or spawn) or ``os.fork`` starts from the main
    thread dies the moment this process dies, and so on down: each child ties its own children the same way.
    Linux only; elsewhere it does nothing."""
    global _tying
    if _tying or _prctl() is None:  # already (a tied child, or nested), or not possible here
        yield
        return
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    _start_tying()
    config[_CONFIG_KEY] = _Tie()
    try:
        yield
    finally:
        _tying = False
        config.pop(_CONFIG_KEY, None)


# -- the second line: the watchdog ---------------------------------------------------------------------------

_SCRIPT = r"""
import os, signal, sys, time
parent, group, born = map(int, sys.argv[1:4])  # its pid, process group and start time: it may be gone already
me = os.getpid()

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None

def now():  # in clock ticks since boot, as /proc counts start times (less one: /proc/uptime is rounded)
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")) - 1

def running(pid, start):
    f = stat(pid)
    return f is not None and f[0] != "Z" and int(f[19]) == start

def table():  # every live process: pid -> (parent, process group, start time)
    out = {}
    for name in os.listdir("/proc"):
        f = stat(name) if name.isdigit() else None
        if f is not None and f[0] != "Z":
            out[int(name)] = (int(f[1]), int(f[2]), int(f[19]))
    return out

def below(procs, roots):  # the roots (pid -> start time, or None: any) and their descendants, pid -> start time
    children, found, todo = {}, {}, list(roots.items())
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid, start = todo.pop()
        if pid != me and pid in procs and pid not in found and start in (None, procs[pid][2]):
            found[pid] = procs[pid][2]
            todo += [(c, None) for c in children.get(pid, ())]
    return found

seen = {}  # pid -> start time: every process ever seen below the parent
since = born  # what started from then on may be missing from seen
while os.getppid() == parent:  # the parent is alive: keep the list of its descendants current
    since, procs = now(), table()
    for pid, start in below(procs, {c: None for c, (pp, _, _) in procs.items() if pp == parent}).items():
        seen.setdefault(pid, start)
    seen = {p: t for p, t in seen.items() if running(p, t)}
    time.sleep(0.5)
# The parent is gone. What it started since the last look was orphaned with it (now a child of whoever adopts
# orphans: this process's new parent) and is still in its process group; those seen may have started more.
procs, reaper = table(), os.getppid()
roots = {p: None for p, (pp, g, t) in procs.items() if pp == reaper and g == group and t >= max(since, born)}
seen.update(below(procs, {**seen, **roots}))
for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
    for p, t in seen.items():
        if running(p, t):
            try:
                os.kill(p, sig)
            except OSError:
                pass
    deadline = time.monotonic() + wait
    while any(running(p, t) for p, t in seen.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
"""
_watchdog: subprocess.Popen | None = None
_for_pid: int | None = None


def start_watchdog() -> None:
    """Make sure no process this one starts outlives it (idempotent: one watchdog per process)."""
    global _watchdog, _for_pid
    if not Path("/proc/self/stat").exists():
        return
    if _watchdog is not None and _for_pid == os.getpid() and _watchdog.poll() is None:
        return
    born = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    # Its own session: a signal to this process group (Ctrl-C, a group kill) must not stop it before its work.
    _watchdog = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(os.getpid()), str(os.getpgrp()), born],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    _for_pid = os.getpid()
