"""Real servers for the LLM engine tests, all on 127.0.0.1 and free ports, all bounded in time.

- ``VLLMServer``: vLLM's OpenAI-compatible server serving SmolLM2 (one per test session: see ``vllm_server``).
- ``FaultProxy``: a small HTTP server that forwards to an upstream (the vLLM server) and injects faults chosen
  per test: error statuses with ``Retry-After``, slow answers, rewritten bodies, and being killed (every open
  connection reset, the port refusing) and started again on the same port.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from required import require

from synth.watchdog import start_watchdog

SERVED_NAME = "smollm2"
API_KEY = "sk-synth-test-7f3a9c1e5b"  # what the session's vLLM server demands; tests check it never leaks
SERVER_DTYPE = "float32"  # SmolLM2-135M in bf16 answers garbage; float32 gives the same answers on every CPU
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
STARTUP_TIMEOUT = float(os.environ.get("SYNTH_TEST_VLLM_STARTUP", "420"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` passes (then fail with the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log is not None and log.exists() else ""


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` in its own process group, stopped for sure on exit."""

    def __init__(self, model: str, log_path: Path, served_name: str = SERVED_NAME, api_key: str | None = API_KEY,
                 max_model_len: int = 1024, extra: list[str] | None = None) -> None:
        self.model, self.served_name, self.api_key = model, served_name, api_key
        self.log_path = log_path
        self.port = free_port()
        self.args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                     "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
                     "--max-model-len", str(max_model_len), "--enforce-eager", "--seed", "0",
                     # vLLM's own "auto" is bf16 on CPUs with avx512_bf16 only: pin the precision
                     "--dtype", SERVER_DTYPE,
                     "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log", *(extra or [])]
        if api_key:
            self.args += ["--api-key", api_key]
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> VLLMServer:
        t0 = time.monotonic()
        env = {**os.environ, **CPU_ENV, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
        start_watchdog()  # a new session escapes pytest's process group: the watchdog stops it if pytest dies
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        try:
            wait_http(self.url + "/health", timeout, self.proc, self.log_path)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the whole process group (the API server and its engine core) and wait until it is gone."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc.pid, timeout, proc)

    def crash(self) -> None:
        """Die like a crashed server: SIGKILL to every process of the server, nothing shut down cleanly."""
        self.stop(timeout=0.0)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> VLLMServer:
        """Start again on the same port (after ``crash`` or ``stop``)."""
        self.stop()
        return self.start(timeout)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies waiting for a parent that never reaps them, as
    in containers whose init does not, do not count)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, timeout: float, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM a process group, give it ``timeout`` seconds to go, then SIGKILL whatever is left, and wait until
    no process of the group runs (the engine core can outlive the API server leader by a few seconds).
    ``timeout=0`` sends SIGKILL at once (a crash)."""
    steps = ([(signal.SIGTERM, timeout)] if timeout > 0 else []) + [(signal.SIGKILL, 10.0)]
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while True:
            if leader is not None:
                leader.poll()  # reap it, so it is no zombie
            if not _group_alive(pgid):
                if leader is not None:
                    leader.wait(10)
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    raise RuntimeError(f"process group {pgid} survived SIGKILL")


# -- cleanup when the test process itself dies: synth's own watchdog (synth.watchdog) ------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def descendants(root: int | None = None, match: str | None = None) -> list[int]:
    """Every live process below ``root`` (this process by default), from /proc (empty where there is none);
    with ``match``, only those whose command line contains it (vLLM titles its processes ``VLLM::…``)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(d.name))
        if fields and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if match is not None:
            try:
                if match not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    continue
            except OSError:
                continue
        out.append(pid)
    return out


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs (zombies count as gone); returns those still running at the end."""
    stamped = {p: t for p in pids if (t := _start_time(p)) is not None}
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p, t in stamped.items() if (f := _stat(p)) and f[0] != "Z" and int(f[19]) == t]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


# One vLLM server per test session, shared by every module that asks for it (a session fixture imported into
# two modules would otherwise start two).
_SERVER: VLLMServer | None = None


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    global _SERVER
    require("vllm", "smollm2")  # skips on a developer's machine without them, fails under CI
    from synth.models import resolve_model

    if _SERVER is None:
        model = resolve_model("smollm2")
        log = tmp_path_factory.mktemp("vllm-server") / "server.log"
        _SERVER = VLLMServer(model, log).start()
        print(f"\nvLLM server up in {_SERVER.startup_s:.1f}s on port {_SERVER.port}", file=sys.stderr)
    yield _SERVER
    if _SERVER is not None:  # session teardown: the first module's finaliser stops it, the others find it gone
        _SERVER.stop()
        _SERVER = None


# -- a fault-injecting HTTP proxy ---------------------------------------------------------------------------

Behaviour = Callable[["Call"], "Reply | None"]


class Call:
    """One request the proxy received: ``n`` counts the calls with the same body (first attempt is 1)."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes, n: int, seq: int) -> None:
        self.path, self.headers, self.body, self.n, self.seq = path, headers, body, n, seq
        self.t = time.monotonic()

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")


class Reply:
    """What the proxy answers instead of forwarding (``body`` bytes or JSON-able), after ``delay`` seconds, the
    body sent ``trickle`` seconds per byte when set. ``rewrite`` forwards first and then changes the upstream's
    JSON answer."""

    def __init__(self, status: int = 200, body: Any = b"", headers: dict[str, str] | None = None,
                 delay: float = 0.0, trickle: float = 0.0,
                 rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.status, self.body, self.headers, self.delay, self.rewrite = status, body, headers or {}, delay, rewrite
        self.trickle = trickle


class FaultProxy:
    """Forwards each request path (``/v1/...``) to ``upstream`` (the server root, no ``/v1``) unless
    ``behaviour(call)`` returns a ``Reply``.

    ``kill()`` closes the listening socket and resets every open connection (what clients see when a server
    process dies); ``start()`` brings it back on the same port. Counters: ``calls`` (all), ``forwarded``,
    ``answered`` (forwarded and sent back in full), ``by_status``.
    """

    def __init__(self, upstream: str | None = None, behaviour: Behaviour | None = None,
                 port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.behaviour = behaviour
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.seen: Counter[str] = Counter()
        self.forwarded = 0
        self.answered = 0
        self.by_status: Counter[int] = Counter()
        self.auth_headers: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._client = httpx.Client(timeout=120.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return False

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy._conns.add(self.connection)

            def finish(self) -> None:
                with proxy.lock:
                    proxy._conns.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self._handle(self.rfile.read(length))

            def _handle(self, body: bytes) -> None:
                try:
                    proxy._serve(self, body)
                except OSError:  # the client went away, or kill() reset us
                    self.close_connection = True

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Die like a crashed server: stop listening and reset (RST) every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self.kill()
        self._client.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- serving --------------------------------------------------------------------------------------------

    def _serve(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        key = hashlib.sha1(handler.path.encode() + b"\0" + body).hexdigest()
        with self.lock:
            self.seen[key] += 1
            call = Call(handler.path, headers, body, self.seen[key], len(self.calls) + 1)
            self.calls.append(call)
            if "authorization" in headers:
                self.auth_headers.append(headers["authorization"])
        reply = self.behaviour(call) if self.behaviour else None
        if reply is not None and reply.delay:
            time.sleep(reply.delay)
        if reply is not None and reply.rewrite is None:
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self._send(handler, reply.status, data, {"content-type": "application/json", **reply.headers},
                       trickle=reply.trickle)
            return
        if self.upstream is None:
            self._send(handler, 502, b'{"error": "no upstream"}', {"content-type": "application/json"})
            return
        fwd = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
        resp = self._client.request(handler.command, self.upstream + handler.path, content=body, headers=fwd)
        data = resp.content
        if reply is not None and reply.rewrite is not None and resp.status_code == 200:
            data = json.dumps(reply.rewrite(resp.json())).encode()
        with self.lock:
            self.forwarded += 1
        self._send(handler, resp.status_code, data, {"content-type": resp.headers.get("content-type", "")})
        with self.lock:
            self.answered += resp.status_code == 200

    def _send(self, handler: http.server.BaseHTTPRequestHandler, status: int, data: bytes,
              headers: dict[str, str], trickle: float = 0.0) -> None:
        handler.send_response(status)
        for k, v in headers.items():
            if v:
                handler.send_header(k, v)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        if trickle:
            for i in range(len(data)):
                handler.wfile.write(data[i : i + 1])
                handler.wfile.flush()
                time.sleep(trickle)
        else:
            handler.wfile.write(data)
        handler.wfile.flush()
        with self.lock:
            self.by_status[status] += 1


def chat_completion(content: str, finish_reason: str = "stop", prompt_tokens: int = 5,
                    completion_tokens: int = 3) -> dict[str, Any]:
    """A minimal, valid ``/chat/completions`` answer, for servers that do not need a model."""
    return {"id": "cmpl-test", "object": "chat.completion", "model": SERVED_NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
