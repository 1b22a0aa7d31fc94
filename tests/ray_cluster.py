"""A real two-node Ray cluster on 127.0.0.1 for the tests: a head and a second node with its own resource
(``node2``), each with one CPU, started with ``ray start`` under a temp dir of their own.

Stopped by killing exactly the processes of this cluster: those whose command line names its temp dir (or its
address: Ray's client server), and their descendants (Ray's agents and workers rename themselves ``ray::…``).
``ray stop`` would end every Ray process of the machine, other sessions' too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
COMMON = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(200 << 20),
          "--disable-usage-stats"]  # every node: one CPU, a small object store, no usage report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    """What the nodes (and drivers of the tests) run with: the tests on the path (toy stages), one thread per
    process, no auth token (a throwaway cluster on the loopback)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Cluster:
    address: str
    temp_dir: Path

    def pids(self) -> set[int]:
        """This cluster's processes: command lines naming its temp dir or its address, and all their descendants."""
        parents: dict[int, int] = {}
        roots: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents[int(proc.name)] = ppid
            port = self.address.rsplit(":", 1)[1]
            if str(self.temp_dir) in cmd or ("ray" in cmd and f":{port} " in cmd):  # the latter: Ray's client server
                roots.add(int(proc.name))
        found = set(roots)
        grew = True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    grew = True
        return found - {os.getpid()}

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # its sessions' logs and sockets


def start_cluster(gpus: tuple[int, int] = (0, 0)) -> Cluster:
    """``gpus``: logical GPUs the head and the second node declare (``ray start --num-gpus``): Ray places and
    pins (``CUDA_VISIBLE_DEVICES``) by them as by real ones, and nothing on these nodes can use CUDA."""
    ray = str(Path(sys.executable).parent / "ray")
    temp = Path(tempfile.mkdtemp(prefix="synth-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", temp)
    try:
        subprocess.run([ray, "start", "--head", "--port", str(port), "--include-dashboard=false",
                        "--temp-dir", str(temp), "--num-gpus", str(gpus[0]), *COMMON], env=env(), check=True,
                       capture_output=True, timeout=180)
        add_node(cluster, gpus[1], '{"node2": 1}')
    except subprocess.CalledProcessError as e:
        cluster.stop()
        raise RuntimeError(f"ray start failed: {e.stderr.decode(errors='replace')[-2000:]}") from e
    return cluster


@contextlib.contextmanager
def driving(gpus: tuple[int, int] = (0, 0)) -> Iterator[Cluster]:
    """A cluster (``start_cluster``) that this process drives for the duration, stopped after."""
    c = start_cluster(gpus)
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process is a driver of the throwaway cluster too
    try:
        yield c
    finally:
        c.stop()
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def add_node(cluster: Cluster, gpus: int = 0, resources: str = "{}") -> None:
    """Another node of one CPU and ``gpus`` logical GPUs (stopped with the cluster); returns once it has joined."""
    ray = str(Path(sys.executable).parent / "ray")
    try:
        subprocess.run([ray, "start", "--address", cluster.address, "--resources", resources, "--num-gpus",
                        str(gpus), *COMMON], env=env(), check=True, capture_output=True, timeout=180)
    except subprocess.CalledProcessError as e:
        cluster.stop()
        raise RuntimeError(f"ray start failed: {e.stderr.decode(errors='replace')[-2000:]}") from e
