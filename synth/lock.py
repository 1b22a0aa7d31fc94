"""One writer per run directory: a second process that would write the same run stops at once, naming the holder.

Two ``synth run`` on one directory would delete each other's temporary shards and interleave stats. The lock is
a POSIX record lock (``fcntl.lockf``) on ``RUNDIR/.synth.lock``: the kernel drops it when the holder dies, by
any signal, so a lock left by a killed process is never in the way; the file keeps who held it last (pid, host,
start time), which names the holder in the refusal and the dead holder whose lock is taken over. Record locks
belong to a process and are not inherited by its children (vLLM's engine core, pool workers), so an orphaned
child never keeps a run locked. The lock is re-entrant within a process: ``synth run`` takes it for the whole
run and every stage takes it again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synth.errors import SynthError

LOCK_FILE = ".synth.lock"


class RunLocked(SynthError):
    """Another live process holds the run directory; the message names it."""


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[str, _Held] = {}  # run directory (real path) -> this process's lock on it
_guard = threading.Lock()


def _holder_text(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (started {started})"


def _read_holder(fd: int) -> dict:
    """Who held the lock last, read through ``fd``: opening the file again and closing it would drop this
    process's record lock on it."""
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def acquire(rundir: str | Path) -> None:
    """Take the run directory's lock (again, if this process holds it); ``RunLocked`` if another process does."""
    rundir = Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(rundir)
    with _guard:
        if key in _held:
            _held[key].depth += 1
            return
        path = Path(key) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise RunLocked(f"{rundir} is in use by another synth process: {_holder_text(holder)}. Wait for it "
                            f"to finish, or stop it, then run again") from None
        previous = _read_holder(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        if previous.get("pid") and previous.get("host") == me["host"] and not _alive(int(previous["pid"])):
            from synth.progress import console

            console.print(f"{rundir}: taking over the lock left by {_holder_text(previous)}, which is no longer "
                          "running", style="yellow", markup=False, highlight=False, soft_wrap=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _held[key] = _Held(fd, 1)


def release(rundir: str | Path) -> None:
    """Give back one ``acquire``; the last one unlocks. The holder file stays (it names the last holder)."""
    key = os.path.realpath(rundir)
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.depth -= 1
        if held.depth == 0:
            del _held[key]
            os.close(held.fd)  # closing the only descriptor of the file drops this process's record lock


@contextmanager
def run_lock(rundir: str | Path) -> Iterator[None]:
    """Hold the run directory's lock for the block (re-entrant)."""
    acquire(rundir)
    try:
        yield
    finally:
        release(rundir)
