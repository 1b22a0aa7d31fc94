"""No orphans: whatever this process dies of, the processes it started (vLLM's engine core and workers) die too.

vLLM runs its engine core in a process of its own, which lives on when its parent is SIGKILLed (an OOM killer,
a CI timeout, ``kill -9``), holding the GPU. A dying process runs no cleanup, and ``PR_SET_PDEATHSIG`` would
have to be set inside vLLM's children, so a watchdog does it from outside: a tiny process, started once,
notes every descendant of its parent twice a second (pid and start time, so a reused pid is never hit); when
the parent is gone, it SIGTERMs, then SIGKILLs those still running, and exits. It watches the parent's pid
rather than a pipe, because a forked engine core would hold a pipe open. Linux only (/proc); elsewhere it
does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import os, signal, sys, time
parent, me = int(sys.argv[1]), os.getpid()

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None

def running(pid, start):
    f = stat(pid)
    return f is not None and f[0] != "Z" and int(f[19]) == start

seen = {}  # pid -> start time: every process ever seen below the parent
while os.getppid() == parent:  # the parent is alive: keep the list of its descendants current
    children = {}
    for name in os.listdir("/proc"):
        f = stat(name) if name.isdigit() else None
        if f is not None and f[0] != "Z":
            children.setdefault(int(f[1]), []).append((int(name), int(f[19])))
    todo = list(children.get(parent, ()))
    while todo:
        pid, start = todo.pop()
        if pid != me:
            seen.setdefault(pid, start)
            todo += children.get(pid, ())
    seen = {p: t for p, t in seen.items() if running(p, t)}
    time.sleep(0.5)
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
    # Its own session: a signal to this process group (Ctrl-C, a group kill) must not stop it before its work.
    _watchdog = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(os.getpid())], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _for_pid = os.getpid()
