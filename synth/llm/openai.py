"""OpenAI-compatible engine: any server speaking ``/chat/completions`` and ``/completions`` (``vllm serve``,
TGI, llama.cpp server, hosted APIs).

Requests go out concurrently: ``httpx.AsyncClient``s of ``POOL`` connections each (one per 32 of concurrency, taken in
turn: httpx scans a client's whole pool per request), on an event loop thread of the engine's own, started in groups
with one wake-up, under a semaphore of ``concurrency``; ``stream`` (``OpenAIFeed``) keeps a few times that many
submitted. By default (``concurrency="auto"``) the engine finds how many a vLLM server runs at once: starting at
``AUTO_START`` it doubles while the server's ``/metrics`` show it running more than half of what it sends and its KV
cache less than half full (twice as many sequences would overfill it: vLLM then preempts sequences and computes them
again, which costs throughput), and steps back once when a doubling overshot (the server preempts or its KV cache fills
three quarters) or when that count stays at half or below (synth.llm.autoconcurrency; a vLLM server runs up to 128
sequences on a CPU, 256 on most GPUs, 1,024 on an H100 or H200, fewer when its KV cache fills). A server without vLLM's
metrics keeps ``AUTO_START``. Each attempt has a hard time limit; 429, 5xx, timeouts and connection failures (a reset, a
refused connection while a server restarts) are retried with exponential backoff and jitter, honouring ``Retry-After``,
within a per-request time budget, so a batch never hangs. What still fails comes back as a ``Result`` whose ``error``
names the reason (``timeout``, ``http_503``, ``connection_error``…), never as an exception.

The API key is read from an environment variable at request time and sent as a Bearer header only: it is
never logged, never put in a result, an error or a cache key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from synth.llm.autoconcurrency import AUTO_MAX, AUTO_START, ServerState, adapt, server_state
from synth.llm.base import Engine
from synth.llm.precision import UNKNOWN, canonical_dtype
from synth.llm.request import Request, Result, finish, options_key
from synth.redact import redact_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {429, 500, 502, 503, 504}
POOL = 32  # connections per HTTP client (``_Clients``)


class _Retry(Exception):
    """An attempt failed in a way worth another try; ``reason`` is the error a final failure reports."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without ``user:password@``, and those credentials (sent as basic auth): httpx logs the URL of
    every request, so a password left in it would reach the logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


class OpenAIEngine(Engine):
    name = "openai"
    remote = True  # a client: the server holds the model and its GPUs

    @classmethod
    def resolve_dtype(cls, model_path: str | None, dtype: str | None, gpus: list[Any]) -> str:
        """What the user declares the server runs (the API does not say), else ``unknown``."""
        asked = canonical_dtype(dtype) if dtype != UNKNOWN else UNKNOWN
        return UNKNOWN if asked == "auto" else asked

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int | str = "auto", timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 20.0, request_budget: float | None = None, dtype: str | None = None,
                 probe_seconds: float = 2.0) -> None:
        """``dtype``: the precision the server runs, as you know it (the API does not say); it only names the
        cache entries, so answers of a bf16 and an fp32 deployment of one model are never mixed.
        ``concurrency``: requests at the server at once; "auto" (see the module's docstring) grows it to what a
        vLLM server runs at once, measured every ``probe_seconds``; a number fixes it (a hosted API's limits).
        ``timeout``: seconds for one attempt, all included (connect, queue at the server, generation).
        ``request_budget``: seconds one request may take over all its attempts and waits; by default enough
        for every attempt to time out and every backoff to reach ``max_backoff``."""
        self.model = model
        self.base_url, self._auth = _without_credentials(_base_url(base_url))
        self.api_key_env = api_key_env
        self.adaptive = concurrency == "auto"
        self.concurrency = AUTO_START if self.adaptive else max(1, int(concurrency))
        self.probe_seconds = float(probe_seconds)
        self.running = 0  # requests at the server now (inside the semaphore)
        self.adaptations: list[str] = []  # what concurrency "auto" decided, in order (also logged)
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.request_budget = (float(request_budget) if request_budget is not None
                               else (self.max_retries + 1) * self.timeout + self.max_retries * self.max_backoff)
        self.model_key, self.dtype = self.key(model, base_url, dtype)
        self.attempts = 0  # HTTP attempts made, retries included (for reports and tests)
        self.retries = 0
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None  # the first of ``_clients``: the one the metrics probes use
        self._clients: _Clients | None = None
        self._sem: asyncio.Semaphore | None = None

    @staticmethod
    def key(model: str, base_url: str | None = None, dtype: str | None = None, **options: Any) -> tuple[str, str]:
        """The cache key of this server's answers and the dtype it is declared to run."""
        dtype = OpenAIEngine.resolve_dtype(None, dtype, [])
        # The server names the answers, its credentials do not (they are not written anywhere: synth.redact).
        return f"openai:{redact_url(_base_url(base_url))}:{model}:{dtype}{options_key(options)}", dtype

    # -- one client, on an event loop of the engine's own --------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The engine's loop, started with its one client on the first request."""
        with self._start_lock:
            if self._loop is None:
                import httpx

                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="synth-openai", daemon=True)
                thread.start()

                def new_client() -> Any:
                    limits = httpx.Limits(max_connections=AUTO_MAX, max_keepalive_connections=AUTO_MAX)
                    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(self.timeout), auth=self._auth)

                async def open_client() -> tuple[_Clients, asyncio.Semaphore]:
                    clients = _Clients(new_client)
                    sem = asyncio.Semaphore(self.concurrency)
                    if self.adaptive:
                        self._adapting = asyncio.get_running_loop().create_task(self._adapt(clients.first, sem))
                    return clients, sem

                self._clients, self._sem = asyncio.run_coroutine_threadsafe(open_client(), loop).result()
                self._client = self._clients.first
                self._loop, self._thread = loop, thread
        return self._loop

    def _submit(self, request: Request) -> concurrent.futures.Future[Result]:
        """Start one request on the engine's loop."""
        loop = self._running_loop()  # first: it opens the client the request goes through
        return asyncio.run_coroutine_threadsafe(self._one(self._clients.next(self.concurrency), self._sem, request),
                                                loop)

    def _start_many(self, items: list[tuple[int, Request]], deliver: Callable[[int, Result], None]) -> None:
        """Start requests with one wake-up of the engine's loop (not one each: a stream refills its window by
        the handful); ``deliver(tag, result)`` is called on the loop's thread as each finishes."""
        loop = self._running_loop()

        def start() -> None:
            for tag, request in items:
                task = loop.create_task(self._one(self._clients.next(self.concurrency), self._sem, request))
                task.add_done_callback(lambda t, tag=tag, request=request: deliver(tag, _outcome(t, request)))

        loop.call_soon_threadsafe(start)

    def generate(self, requests: list[Request]) -> list[Result]:
        # The requests run on the engine's own loop thread, so this works from any thread, a running loop included.
        futures = [self._submit(r) for r in requests]
        return [_outcome(f, r) for f, r in zip(futures, requests, strict=True)]

    async def agenerate(self, requests: list[Request]) -> list[Result]:
        """The same as ``generate`` for callers that already run an event loop."""
        futures = [self._submit(r) for r in requests]
        if futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in futures])
        return [_outcome(f, r) for f, r in zip(futures, requests, strict=True)]

    def feed(self) -> OpenAIFeed:
        return OpenAIFeed(self)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        adapting = getattr(self, "_adapting", None)
        if adapting is not None:
            loop.call_soon_threadsafe(adapting.cancel)
        asyncio.run_coroutine_threadsafe(self._clients.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(30)
        loop.close()
        self._client = self._clients = self._sem = self._thread = None

    # -- one request ----------------------------------------------------------------------------------------

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body for a request."""
        s = request.sampling
        body: dict[str, Any] = {"model": self.model, "max_tokens": s.max_tokens, "temperature": s.temperature,
                                "top_p": s.top_p}
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.repetition_penalty != 1.0:  # a vLLM extension: only sent when asked for
            body["repetition_penalty"] = s.repetition_penalty
        chat = request.messages is not None
        if chat:
            body["messages"] = request.messages
            if s.logprobs:
                body.update(logprobs=True, top_logprobs=s.logprobs)
        else:
            body["prompt"] = request.prompt
            if s.logprobs:
                body["logprobs"] = s.logprobs
        if request.json_schema is not None:
            if chat:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "output", "schema": request.json_schema}}
            else:  # the legacy completions API has no response_format; vLLM takes its own field
                body["structured_outputs"] = {"json": request.json_schema}
        elif request.regex is not None:  # vLLM's extension (the OpenAI API has no regex constraint)
            body["structured_outputs"] = {"regex": request.regex}
        return ("/chat/completions" if chat else "/completions"), body

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _one(self, client: Any, sem: asyncio.Semaphore, request: Request) -> Result:
        t0 = time.perf_counter()
        deadline = t0 + self.request_budget
        try:
            path, body = self.payload(request)
        except Exception as e:
            return Result.failed(request, f"bad_request:{type(e).__name__}")
        url = self.base_url + path
        attempt = 0
        while True:
            left = deadline - time.perf_counter()
            try:
                if left <= 0:
                    raise _Retry("timeout")
                async with sem:
                    self.attempts += 1
                    self.running += 1
                    try:
                        data = await asyncio.wait_for(self._post(client, url, body), min(self.timeout, left))
                    finally:
                        self.running -= 1
                return self._result(request, data, chat=request.messages is not None, t0=t0)
            except _Retry as r:
                failure = r
            except TimeoutError:
                failure = _Retry("timeout")
            except _Final as f:
                return Result.failed(request, f.reason, time.perf_counter() - t0)
            if attempt >= self.max_retries:
                return Result.failed(request, failure.reason, time.perf_counter() - t0)
            wait = min(self.max_backoff, self.backoff * 2**attempt)
            wait = wait / 2 + random.uniform(0, wait / 2)  # jitter: clients that failed together spread out
            if failure.retry_after is not None:
                wait = max(wait, failure.retry_after)
            if time.perf_counter() + wait >= deadline:  # no time left for another attempt: report this one
                return Result.failed(request, failure.reason, time.perf_counter() - t0)
            log.debug("request %s: %s, retry %d in %.2fs", request.id, failure.reason, attempt + 1, wait)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(wait)

    # -- concurrency "auto" (synth.llm.autoconcurrency) --------------------------------------------------------

    async def _adapt(self, client: Any, sem: asyncio.Semaphore) -> None:
        await adapt(self, client, sem)

    def _adapted(self, what: str) -> None:
        self.adaptations.append(what)
        log.info("openai: %s", what)

    def _resize(self, sem: asyncio.Semaphore, n: int) -> None:
        """Give the semaphore ``n`` permits: new ones at once, fewer by holding permits as requests finish."""
        for _ in range(n - self.concurrency):
            sem.release()
        loop = asyncio.get_running_loop()
        self._held = [loop.create_task(sem.acquire()) for _ in range(self.concurrency - n)]  # held for good
        self.concurrency = n

    def _metrics_url(self) -> str:
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        return root + "/metrics"

    async def _server_running(self, client: Any) -> float | None:
        """Requests the server runs now (vLLM's gauge, summed over its engines), or None without it."""
        return (await self._server_state(client)).running

    async def _server_state(self, client: Any) -> ServerState:
        return await server_state(client, self._metrics_url(), self._headers())

    async def _post(self, client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            resp = await client.post(url, json=body, headers=self._headers())
        except httpx.TimeoutException as e:
            raise _Retry("timeout") from e
        except (httpx.TransportError, OSError) as e:  # refused, reset, closed mid-response, protocol errors
            raise _Retry("connection_error") from e
        status = resp.status_code
        if status in RETRY_STATUS:
            raise _Retry(f"http_{status}", _retry_after(resp.headers.get("retry-after")))
        if status == 408:
            raise _Retry("timeout", _retry_after(resp.headers.get("retry-after")))
        if status >= 500:
            raise _Retry("server_error", _retry_after(resp.headers.get("retry-after")))
        if status >= 400:
            raise _Final(_client_error(status, resp))
        try:
            data = resp.json()
        except ValueError as e:  # a proxy's HTML page, a cut body: the server's fault, worth another try
            raise _Retry("server_error:bad_response") from e
        if not isinstance(data, dict) or not data.get("choices"):
            raise _Retry("server_error:bad_response")
        return data

    def _result(self, request: Request, data: dict[str, Any], chat: bool, t0: float) -> Result:
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        if chat:
            text = (choice.get("message") or {}).get("content")
            lp = (choice.get("logprobs") or {}).get("content")
            logprobs = ([{t["token"]: t["logprob"] for t in step.get("top_logprobs") or ()} for step in lp]
                        if lp is not None else None)
        else:
            text = choice.get("text")
            lp = (choice.get("logprobs") or {}).get("top_logprobs")
            logprobs = [dict(step or {}) for step in lp] if lp is not None else None
        return finish(request, text or "", choice.get("finish_reason"), t0,
                      prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      logprobs=logprobs if request.sampling.logprobs else None)


class _Clients:
    """HTTP clients of about ``POOL`` connections each, as many as the concurrency needs, taken in turn: httpx
    scans a client's whole pool for every request it sends, so 256 connections in one client cost more CPU per
    request than the rest of a stage (bench/ceiling.py)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.first = make()
        self.all = [self.first]
        self.turn = 0
        self.lock = threading.Lock()  # taken from the loop's thread and from callers of ``generate``

    def next(self, concurrency: int) -> Any:
        need = max(1, -(-int(concurrency) // POOL))
        with self.lock:
            while len(self.all) < need:
                self.all.append(self.make())
            self.turn = (self.turn + 1) % need
            return self.all[self.turn]

    async def aclose(self) -> None:
        for client in self.all:
            await client.aclose()


class OpenAIFeed:
    """Requests start as they are submitted and come back as each finishes; the engine's semaphore holds them to
    ``concurrency`` at the server, the stream's window (``window``) to a few times that in all (backpressure)."""

    def __init__(self, engine: OpenAIEngine) -> None:
        self.engine = engine
        self.done: queue.SimpleQueue[tuple[int, Result]] = queue.SimpleQueue()

    @property
    def window(self) -> int:  # follows the engine's concurrency as "auto" grows it
        return 4 * self.engine.concurrency

    def submit(self, items: list[tuple[int, Request]]) -> list[tuple[int, Result]]:
        if items:
            self.engine._start_many(items, lambda tag, result: self.done.put((tag, result)))
        return []

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        try:
            out = [self.done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                return out


def _outcome(future: concurrent.futures.Future[Result] | asyncio.Future[Result], request: Request) -> Result:
    """A finished request's result; a bug that escaped ``_one`` (or a cancellation, as the engine closes) fails
    that request alone (and is retried later)."""
    try:
        return future.result()
    except (Exception, asyncio.CancelledError) as e:
        log.warning("request %s: %s", request.id, type(e).__name__)
        return Result.failed(request, f"engine_error:{type(e).__name__}")


class _Final(Exception):
    """An answer that another try would not change (a 4xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _client_error(status: int, resp: Any) -> str:
    """A reason for a 4xx: ``context_length`` when the prompt does not fit, else ``http_<status>``."""
    if status in (400, 413, 422):
        try:
            text = resp.text.lower()
        except Exception:
            text = ""
        if "context length" in text or "context_length" in text or "maximum model length" in text:
            return "context_length"
    return f"http_{status}"
