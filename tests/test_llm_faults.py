"""The OpenAI-compatible engine under faults: a server killed mid-batch and back, slow answers, error statuses
with ``Retry-After``, malformed structured output, a crashed client restarted on its cache, and the API key
never leaking. Everything runs on 127.0.0.1; every wait is bounded in count and time.

Faults about the transport use ``FaultProxy`` (tests/llm_server.py); where a model must answer it forwards to
the session's real vLLM server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import llm_server
import pytest
from llm_server import (
    API_KEY,
    SERVED_NAME,
    STARTUP_TIMEOUT,
    FaultProxy,
    Reply,
    chat_completion,
    descendants,
    wait_gone,
)

from synth.llm import CachedEngine, Request, RequestCache, Sampling
from synth.llm.openai import OpenAIEngine

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "SYNTH_TEST_API_KEY"
needs_vllm = pytest.mark.requires("vllm", "smollm2")
vllm_server = llm_server.vllm_server  # the session fixture: one server for every module
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)


def questions(n: int, max_tokens: int = 12) -> list[Request]:
    topics = ["France", "Japan", "Kenya", "Peru", "Italy", "Egypt", "Canada", "India", "Chile", "Spain",
              "Ghana", "Norway", "Brazil", "Mexico", "Greece", "Turkey"]
    return [Request(f"q{i}", messages=[{"role": "user", "content": f"What is the capital of {topics[i % 16]}? ({i})"}],
                    sampling=Sampling(max_tokens=max_tokens)) for i in range(n)]


def engine(base_url: str, **kw) -> OpenAIEngine:
    opts = {"concurrency": 4, "timeout": 60.0, "max_retries": 5, "backoff": 0.1, "max_backoff": 1.0, **kw}
    return OpenAIEngine(SERVED_NAME, base_url=base_url, api_key_env=KEY_ENV, **opts)


# -- transport faults, no model needed ------------------------------------------------------------------------


def finishes_within(call, limit: float) -> list:
    """Run ``call`` on a thread and wait for it at most ``limit`` seconds: the bound is an event (it returned),
    not a stopwatch reading, and ``limit`` sits far from both the right run and a hang."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(call()), daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"still running after {limit:.0f}s: the engine did not give up"
    return box[0]


def test_slow_responses_time_out_after_retries_in_bounded_time():
    # One server holds every answer until the test ends; another sends its body one byte every 0.5 s (a read
    # timeout between bytes would never fire). Waiting for either would take minutes; both must end as
    # `timeout` after exactly 1 + max_retries attempts each, long before that.
    ok = json.dumps(chat_completion("fine")).encode()
    release = threading.Event()

    def held(call):
        release.wait(120)
        return Reply(body=ok)

    try:
        with FaultProxy(behaviour=held) as late, \
                FaultProxy(behaviour=lambda c: Reply(body=ok, trickle=0.5)) as trickling:
            for proxy in (late, trickling):
                eng = engine(proxy.base_url, concurrency=6, timeout=0.4, max_retries=2, backoff=0.05,
                             max_backoff=0.1)
                res = finishes_within(lambda e=eng: e.generate(questions(6)), 60)
                assert [r.error for r in res] == ["timeout"] * 6 and all(r.transient for r in res)
                assert eng.attempts == 6 * 3 and proxy.wait_for(lambda p=proxy: len(p.calls) == 18, 5)
    finally:
        release.set()


def test_retry_after_beyond_the_budget_fails_fast():
    with FaultProxy(behaviour=lambda c: Reply(429, {"error": "slow down"}, {"retry-after": "3600"})) as proxy:
        eng = engine(proxy.base_url, timeout=2.0, max_retries=5)
        res = finishes_within(lambda: eng.generate(questions(2)), 60)  # not the hour the server asks for
        assert [r.error for r in res] == ["http_429"] * 2
        assert len(proxy.calls) == 2  # waiting an hour would blow the request's time budget: no retry


def test_refused_connection_is_connection_error():
    from llm_server import free_port

    eng = engine(f"http://127.0.0.1:{free_port()}/v1", max_retries=2, backoff=0.01, max_backoff=0.02)
    res = eng.generate(questions(3))
    assert [r.error for r in res] == ["connection_error"] * 3 and eng.attempts == 9


def test_generate_from_a_thread_and_from_a_running_loop():
    import asyncio

    with FaultProxy(behaviour=lambda c: Reply(body=chat_completion("hi"))) as proxy:
        eng = engine(proxy.base_url)
        box: list = []
        t = threading.Thread(target=lambda: box.extend(eng.generate(questions(2))))
        t.start()
        t.join(30)
        assert [r.text for r in box] == ["hi", "hi"]

        async def inside() -> list:
            return eng.generate(questions(1))

        assert asyncio.run(inside())[0].text == "hi"


def test_api_key_never_leaks(tmp_path, monkeypatch, caplog, capfd):
    secret = "sk-leakcheck-" + os.urandom(8).hex()
    monkeypatch.setenv(KEY_ENV, secret)
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and ours, all at their chattiest

    def behaviour(call):
        if call.n == 1:
            return Reply(500, {"error": "boom"})
        if "Kenya" in call.body.decode():
            return Reply(401, {"error": "invalid key"})
        return Reply(body=chat_completion("Nairobi"))

    cache_path = tmp_path / "cache.sqlite"
    with FaultProxy(behaviour=behaviour) as proxy:
        cached = CachedEngine(engine(proxy.base_url, max_retries=1, backoff=0.01), RequestCache(cache_path))
        results = cached.generate(questions(4))
        cached.close()
    assert [r.error for r in results] == [None, None, "http_401", None]
    assert proxy.auth_headers and set(proxy.auth_headers) == {f"Bearer {secret}"}  # it was sent, as a header
    out, err = capfd.readouterr()
    blobs = {"results": json.dumps([r.to_json() for r in results]), "log": caplog.text, "stdout": out,
             "stderr": err, "model_key": cached.model_key}
    for p in tmp_path.iterdir():  # the sqlite file and its journal
        blobs[p.name] = p.read_bytes().decode("latin-1")
    assert caplog.text  # the check means something: there was log output
    for where, text in blobs.items():
        assert secret not in text, f"API key found in {where}"


# -- faults in front of the real vLLM server -----------------------------------------------------------------


@pytest.mark.slow
@needs_vllm
def test_connections_reset_mid_batch_and_port_back(vllm_server):
    # The proxy in front of the server dies (every open connection reset, the port refusing) and comes back on
    # the same port 1.5 s later; the real server restart is the last test of this file.
    n = 12
    with FaultProxy(vllm_server.url) as proxy:
        eng = engine(proxy.base_url, concurrency=4, max_retries=8, backoff=0.2, max_backoff=1.0)
        state: dict = {}

        def crash_and_restart() -> None:
            # Kill once some answers are back and others are in flight, stay down, come back on the same port.
            if proxy.wait_for(lambda: proxy.answered >= 3 and len(proxy.calls) > proxy.answered, 120):
                state["in_flight"] = len(proxy.calls) - proxy.answered
                state["answered_before"] = proxy.answered
                proxy.kill()
                time.sleep(1.5)
                state["calls_while_down"] = len(proxy.calls)
                proxy.start()

        killer = threading.Thread(target=crash_and_restart)
        killer.start()
        res = eng.generate(questions(n))  # bounded by the engine's per-request budget, not a stopwatch
        killer.join(150)
    assert state.get("in_flight", 0) > 0, "the kill did not land mid-batch"
    assert [r.id for r in res] == [f"q{i}" for i in range(n)]  # none lost, in order
    assert all(r.ok for r in res), [r.error for r in res]
    assert eng.retries >= state["in_flight"]  # the cut requests (and refused ones) were tried again
    assert len(proxy.calls) > n


@pytest.mark.slow
@needs_vllm
def test_500_then_429_with_retry_after_then_through(vllm_server):
    def behaviour(call):
        if call.n == 1:
            return Reply(500, {"error": "internal"})
        if call.n == 2:
            return Reply(429, {"error": "busy"}, {"retry-after": "1"})
        return None  # the third attempt reaches vLLM

    n = 4
    with FaultProxy(vllm_server.url, behaviour) as proxy:
        eng = engine(proxy.base_url, backoff=0.05)
        res = eng.generate(questions(n))
    assert all(r.ok for r in res), [r.error for r in res]
    assert proxy.by_status[500] == n and proxy.by_status[429] == n and proxy.forwarded == n
    assert eng.attempts == 3 * n and eng.retries == 2 * n
    by_body: dict[bytes, list] = {}
    for c in proxy.calls:
        by_body.setdefault(c.body, []).append(c.t)
    for times in by_body.values():
        assert times[2] - times[1] >= 0.95  # Retry-After: 1 was honoured


@pytest.mark.slow
@needs_vllm
def test_slow_first_answer_times_out_then_real_answer(vllm_server):
    # Every first attempt hangs past the per-attempt timeout (the proxy holds it); the retry reaches vLLM.
    hold = threading.Event()

    def behaviour(call):
        if call.n == 1:
            hold.wait(60)
            return Reply(body=chat_completion("too late"))  # written to a connection the client has given up on
        return None

    n, timeout = 4, 15.0  # a retry on a loaded CPU must not time out too
    with FaultProxy(vllm_server.url, behaviour) as proxy:
        eng = engine(proxy.base_url, timeout=timeout, backoff=0.05, max_backoff=0.1)
        try:
            res = finishes_within(lambda: eng.generate(questions(n)), 50)  # the held answers come at 60 s
        finally:
            hold.set()
    assert all(r.ok for r in res), [r.error for r in res]
    assert all("too late" not in r.text and r.completion_tokens > 0 for r in res)
    assert eng.attempts == 2 * n and eng.retries == n and proxy.forwarded == n  # each first attempt timed out


@pytest.mark.slow
@needs_vllm
def test_malformed_structured_output_is_parse_error(vllm_server, tmp_path):
    def prose(data: dict) -> dict:
        data["choices"][0]["message"]["content"] = "Sure! The capital is Paris, as everyone knows."
        return data

    def behaviour(call):
        return Reply(rewrite=prose) if "BROKEN" in call.body.decode() else None

    reqs = [Request(f"j{i}", messages=[{"role": "user", "content": f"Capital of France as JSON{tag}."}],
                    json_schema=SCHEMA, sampling=Sampling(max_tokens=32))
            for i, tag in enumerate(["", " BROKEN", "!", " BROKEN!"])]
    with FaultProxy(vllm_server.url, behaviour) as proxy:
        cached = CachedEngine(engine(proxy.base_url), RequestCache(tmp_path / "c.sqlite"))
        res = cached.generate(reqs)
        errors = [r.error for r in res]
        assert errors == [None, "parse_error", None, "parse_error"], errors
        assert isinstance(res[0].parsed, dict) and "city" in res[0].parsed
        assert len(proxy.calls) == 4  # a bad output is an answer, not a transport failure: no retry
        again = cached.generate(reqs)  # and it is cached: asking again would give the same answer
        assert cached.hits == 4 and [r.error for r in again] == errors and len(proxy.calls) == 4
        cached.close()


CHILD = textwrap.dedent("""
    import sys
    from synth.llm import CachedEngine, Request, RequestCache, Sampling
    from synth.llm.openai import OpenAIEngine
    base_url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    eng = OpenAIEngine("smollm2", base_url=base_url, api_key_env="SYNTH_TEST_API_KEY", concurrency=1)
    reqs = [Request(f"q{i}", messages=[{"role": "user", "content": f"Count to {i}."}],
                    sampling=Sampling(max_tokens=8)) for i in range(n)]
    CachedEngine(eng, RequestCache(cache), window=2).generate(reqs)
    print("finished")  # never reached: the test kills this process first
""")


@pytest.mark.slow
@needs_vllm
def test_crashed_run_restarts_from_cache(vllm_server, tmp_path):
    n, done_before_crash = 8, 4
    cache = tmp_path / "requests.sqlite"
    hold = threading.Event()

    def behaviour(call):
        if call.seq > done_before_crash:  # the fifth request hangs until the test has killed the client
            hold.wait(60)
        return None

    with FaultProxy(vllm_server.url, behaviour) as proxy:
        child = subprocess.Popen([sys.executable, "-c", CHILD, proxy.base_url, str(cache), str(n)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            assert proxy.wait_for(lambda: len(proxy.calls) > done_before_crash or child.poll() is not None, 180)
            assert child.poll() is None, child.communicate()[0].decode()[-2000:]
            child.send_signal(signal.SIGKILL)  # a crash: no cleanup, no flush
            child.wait(30)
        finally:
            hold.set()
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        proxy.behaviour = None
        calls_before = len(proxy.calls)

        # The restart: the two chunks that finished are in the cache; only the rest goes to the server.
        reqs = [Request(f"q{i}", messages=[{"role": "user", "content": f"Count to {i}."}],
                        sampling=Sampling(max_tokens=8)) for i in range(n)]
        cached = CachedEngine(engine(proxy.base_url), RequestCache(cache), window=2)
        assert len(cached.cache) == done_before_crash
        res = cached.generate(reqs)
        cached.close()
    assert all(r.ok for r in res) and [r.id for r in res] == [f"q{i}" for i in range(n)]
    assert (cached.hits, cached.misses) == (done_before_crash, n - done_before_crash)
    assert [r.cached for r in res] == [True] * done_before_crash + [False] * (n - done_before_crash)
    assert len(proxy.calls) - calls_before == n - done_before_crash  # finished work was not paid for twice


@pytest.mark.slow
@needs_vllm
def test_real_server_killed_mid_batch_and_restarted(vllm_server):
    # The vLLM server itself (API server and engine core) is SIGKILLed while a batch runs and started again on the
    # same port, which takes about 40 s on two CPU cores. Requests cut mid-answer, refused while it is down, or
    # left waiting on the socket it binds before the model is loaded are retried until it answers again. Last
    # in this file: the session's server is the restarted one from here on.
    n = 12
    eng = engine(vllm_server.base_url, concurrency=4, timeout=20.0, max_retries=200, backoff=0.5, max_backoff=4.0,
                 request_budget=STARTUP_TIMEOUT + 120)
    state: dict = {}

    def crash_and_restart() -> None:
        # `attempts` counts attempts begun; with at most 4 in flight, 6 begun means 2 answered and 4 running.
        deadline = time.monotonic() + 120
        while eng.attempts < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        if eng.attempts < 6:
            return
        try:
            server_pids = [vllm_server.proc.pid, *descendants(vllm_server.proc.pid)]
            state["begun_at_crash"] = eng.attempts
            t = time.monotonic()
            vllm_server.crash()
            state["left_after_crash"] = wait_gone(server_pids, 5)
            vllm_server.start()
            state["down_s"] = time.monotonic() - t
        except BaseException as e:  # reported by the test, not lost in this thread
            state["error"] = e

    killer = threading.Thread(target=crash_and_restart)
    killer.start()
    res = eng.generate(questions(n, max_tokens=24))  # bounded by request_budget
    killer.join(STARTUP_TIMEOUT + 30)
    assert "error" not in state, repr(state.get("error"))
    assert "begun_at_crash" in state, "the batch finished before the crash"
    assert state["left_after_crash"] == []  # the crash took every server process with it
    assert [r.id for r in res] == [f"q{i}" for i in range(n)]  # none lost, in order
    assert all(r.ok for r in res), [r.error for r in res]
    assert eng.retries >= 1, "no request was cut or refused: the crash did not land mid-batch"
    print(f"\nreal server crash: {state['begun_at_crash']} attempts begun, down {state['down_s']:.0f}s, "
          f"{eng.retries} retries, {n}/{n} ok")


def test_concurrency_auto_keeps_its_start_on_a_server_without_readable_metrics():
    """A server whose /metrics is missing, or has the gauge's name without a number, gives no reading (never an
    exception that would end the probe silently): concurrency "auto" then stays where it starts (AUTO_START)."""
    import asyncio

    import httpx

    async def running(base_url: str) -> float | None:
        async with httpx.AsyncClient() as client:
            return await OpenAIEngine("m", base_url=base_url, api_key_env="")._server_running(client)

    pages = {"/metrics": b"# HELP vllm:num_requests_running\nvllm:num_requests_running\n"}
    with FaultProxy(behaviour=lambda c: Reply(body=pages.get(c.path, b""), status=200 if c.path in pages else 404)) \
            as proxy:
        assert asyncio.run(running(proxy.base_url)) is None  # a name without a number
        pages["/metrics"] = b"vllm:num_requests_running{engine=\"0\"} 7.0\nvllm:num_requests_running{engine=\"1\"} 5\n"
        assert asyncio.run(running(proxy.base_url)) == 12.0  # summed over the server's engines
        del pages["/metrics"]
        assert asyncio.run(running(proxy.base_url)) is None  # 404


def _adapt_to(pages: list[bytes]) -> OpenAIEngine:
    """Run concurrency "auto" against a server whose /metrics answers ``pages`` in turn (real Prometheus text over
    HTTP; scripted, so the rule is tested, not a server's timing), the engine always as busy as it may be."""
    import asyncio

    import httpx

    answers = iter(pages)

    async def adapt(eng: OpenAIEngine) -> None:
        async with httpx.AsyncClient() as client:
            eng.running = 4096  # the engine is the limit, so it probes the server
            await asyncio.wait_for(eng._adapt(client, asyncio.Semaphore(eng.concurrency)), 30)

    with FaultProxy(behaviour=lambda call: Reply(body=next(answers), status=200)) as proxy:
        eng = OpenAIEngine("m", base_url=proxy.base_url, api_key_env="", probe_seconds=0.001)
        asyncio.run(adapt(eng))
    return eng


def _metrics(running: int, kv: float, preempted: int = 0) -> bytes:
    return (f"vllm:num_requests_running {running}\nvllm:kv_cache_usage_perc {kv}\n"
            f"vllm:num_preemptions_total {preempted}\n").encode()


def test_concurrency_auto_stops_doubling_when_the_kv_cache_is_half_full():
    """Doubling while the KV cache has room, then holding once it is half full (twice the sequences would not fit:
    vLLM would preempt and recompute)."""
    eng = _adapt_to([_metrics(30, 0.2),  # room: 32 -> 64
                     _metrics(40, 0.7)])  # 70 % full: stay at 64
    assert eng.concurrency == 64
    assert eng.adaptations[-1] == "the server runs 40 at once with its KV cache 70% full; concurrency stays 64"


def test_concurrency_auto_steps_back_when_a_doubling_fills_the_kv_cache():
    """What a CPU vLLM server did in bench/stage_llm.py: room at 64, so 128; at 128 it admitted 68 and filled its
    KV cache 80 %, then preempted. The doubling overshot: back to 64, where it fitted."""
    eng = _adapt_to([_metrics(30, 0.1), _metrics(60, 0.3),  # 32 -> 64 -> 128
                     _metrics(68, 0.8)])  # 80 % full: back to 64
    assert eng.concurrency == 64
    assert eng.adaptations[-1] == ("the server runs 68 at once with its KV cache 80% full and 0 preempted; "
                                   "concurrency back to 64")


def test_concurrency_auto_steps_back_when_a_doubling_makes_the_server_preempt():
    """Preemptions counted before the doubling do not count against it; preemptions since do, however empty the
    KV cache looks at the probe (vLLM frees an evicted sequence's blocks)."""
    eng = _adapt_to([_metrics(30, 0.1, preempted=3),  # 32 -> 64 (3 preempted earlier, at 32)
                     _metrics(50, 0.4, preempted=5)])  # 2 more since the doubling: back to 32
    assert eng.concurrency == 32
    assert eng.adaptations[-1] == ("the server runs 50 at once with its KV cache 40% full and 2 preempted; "
                                   "concurrency back to 32")
