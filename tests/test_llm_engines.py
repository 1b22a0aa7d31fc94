"""The LLM engines on a real model (SmolLM2-135M-Instruct, prepared offline): transformers, vLLM in-process
(CPU build), and the OpenAI-compatible engine against a real vLLM server started for the session."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import llm_server
import pytest
from llm_server import API_KEY, SERVED_NAME, SERVER_DTYPE, VLLMServer, descendants, start_watchdog, wait_gone
from typer.testing import CliRunner

from synth.llm import CachedEngine, Request, RequestCache, Result, Sampling
from synth.llm.base import Engine

pytestmark = pytest.mark.requires("smollm2")  # `make install` prepares it

vllm_server = llm_server.vllm_server  # the session fixture: one server for every module
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
          "required": ["city", "country"], "additionalProperties": False}
SHORT = Sampling(max_tokens=24)


def ask(rid: str, text: str, sampling: Sampling = SHORT, **kw) -> Request:
    return Request(rid, messages=[{"role": "user", "content": text}], sampling=sampling, **kw)


QUESTIONS = [
    ask("fr", "What is the capital of France?"),
    ask("two", "What is 2 + 2? Answer with a number."),
    ask("color", "Name one colour of the rainbow."),
    Request("raw", prompt="The capital of Germany is", sampling=Sampling(max_tokens=8)),
]


class Counting(Engine):
    """Counts what reaches the wrapped engine: the proof that cache hits never call the model."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.name, self.model_key = engine, engine.name, engine.model_key
        self.calls = 0
        self.requests = 0

    def generate(self, requests: list[Request]) -> list[Result]:
        self.calls += 1
        self.requests += len(requests)
        return self.engine.generate(requests)


def check_answers(results: list[Result]) -> None:
    assert [r.id for r in results] == [q.id for q in QUESTIONS]
    assert all(r.ok for r in results), [r.error for r in results]
    assert "Paris" in results[0].text
    assert "4" in results[1].text
    assert "Berlin" in results[3].text
    for r in results:
        assert r.finish_reason in ("stop", "length")
        assert r.prompt_tokens > 0 and 0 < r.completion_tokens <= 24


# -- transformers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    from synth.llm.hf import HFEngine

    with HFEngine("smollm2", batch_size=8) as engine:
        yield engine


def test_hf_answers(hf):
    check_answers(hf.generate(QUESTIONS))


def test_hf_json_schema_and_logprobs(hf):
    res = hf.generate([ask("j", "Which city is the capital of France? Reply in JSON.", Sampling(max_tokens=48),
                           json_schema=SCHEMA),
                       ask("lp", "Say hello.", Sampling(max_tokens=6, logprobs=3))])
    assert res[0].ok, res[0].error
    assert set(res[0].parsed) == {"city", "country"} and json.loads(res[0].text) == res[0].parsed
    lp = res[1].logprobs
    assert lp and len(lp) == res[1].completion_tokens
    assert all(1 <= len(step) <= 3 and all(v <= 0 for v in step.values()) for step in lp)


def test_hf_cache_second_run_served_from_cache(hf, tmp_path):
    counting = Counting(hf)
    first = CachedEngine(counting, RequestCache(tmp_path / "cache.sqlite"))
    a = first.generate(QUESTIONS)
    assert (first.hits, first.misses, counting.requests) == (0, len(QUESTIONS), len(QUESTIONS))
    first.cache.close()

    second = CachedEngine(counting, RequestCache(tmp_path / "cache.sqlite"))  # a new run, the same cache file
    b = second.generate(QUESTIONS)
    assert (second.hits, second.misses) == (len(QUESTIONS), 0)
    assert counting.requests == len(QUESTIONS) and counting.calls == 1  # the model was not called again
    assert all(r.cached for r in b) and [r.text for r in b] == [r.text for r in a]
    second.cache.close()


def test_cli_generate_shows_cache_count(tmp_path):
    from synth.cli import app

    inp, out, cache = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    inp.write_text("".join(json.dumps({"id": q.id, "messages": q.messages, "max_tokens": 12}) + "\n"
                           for q in QUESTIONS[:3]))
    args = ["generate", "--engine", "hf", "--model", "smollm2", "-i", str(inp), "-o", str(out),
            "--cache", str(cache), "--quiet"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())  # rich wraps long lines
    assert "3/3 ok" in said and "served from cache: 0" in said
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    assert "served from cache: 3" in said and "new tokens: 0 prompt" in said
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["fr", "two", "color"] and all(r["cached"] for r in rows)


# -- vLLM in-process (CPU build here) ----------------------------------------------------------------------------

needs_vllm = pytest.mark.requires("vllm")


@pytest.fixture(scope="class")
def vllm_engine():
    from synth.llm.vllm import VLLMEngine

    for k, v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
        os.environ.setdefault(k, v)
    # vLLM runs the engine core (and its worker) in processes of their own, which outlive a killed pytest: the
    # watchdog stops them then; after close() they must be gone.
    start_watchdog()
    before = set(descendants())  # a session server started earlier (another test order) is not the engine's
    engine = VLLMEngine("smollm2", max_model_len=512)  # dtype "auto": float32 on every CPU (synth.llm.precision)
    procs = [p for p in descendants(match="VLLM") if p not in before]
    assert procs, "no vLLM engine process found"
    yield engine
    engine.close()  # before the server starts: two engines need not share two cores
    left = wait_gone(procs, 30)
    assert not left, f"vLLM engine processes outlived close(): {left}"


@pytest.mark.slow
@needs_vllm
class TestVLLMInProcess:
    def test_answers_in_order(self, vllm_engine):
        import torch

        assert vllm_engine.model_key.startswith("vllm:SmolLM2-135M-Instruct:")
        # "auto" was resolved before naming anything, and the engine runs what the name says, on any CPU
        assert vllm_engine.dtype == "float32" and vllm_engine.model_key.endswith(":float32:max_model_len=512")
        assert vllm_engine.llm.llm_engine.model_config.dtype == torch.float32
        # The raw prompt is the shortest and comes last: length sorting moves it, results come back in order.
        check_answers(vllm_engine.generate(QUESTIONS))

    def test_structured_logprobs_and_errors_per_request(self, vllm_engine):
        reqs = [
            ask("json", "Which city is the capital of France? Reply in JSON.", Sampling(max_tokens=48),
                json_schema=SCHEMA),
            Request("regex", prompt="Is the sky blue? Answer:", regex=r" (yes|no)", sampling=Sampling(max_tokens=4)),
            ask("lp", "Say hello.", Sampling(max_tokens=6, logprobs=3)),
            Request("too_long", prompt="word " * 600, sampling=SHORT),  # over max_model_len=512
            Request("bad_regex", prompt="x", regex="(((", sampling=SHORT),
            ask("short", "Tell me a long story about a dragon.", Sampling(max_tokens=5)),
            ask("sampled", "Name a fruit.", Sampling(max_tokens=8, temperature=0.9, seed=7, stop=("\n",))),
        ]
        res = {r.id: r for r in vllm_engine.generate(reqs)}
        assert list(res) == [r.id for r in reqs]
        assert res["json"].ok and set(res["json"].parsed) == {"city", "country"}, res["json"]
        assert res["regex"].ok and res["regex"].text.strip() in ("yes", "no"), res["regex"]
        lp = res["lp"].logprobs
        assert res["lp"].ok and lp and len(lp) == res["lp"].completion_tokens
        assert all(1 <= len(step) <= 3 and all(v <= 0 for v in step.values()) for step in lp)
        assert res["too_long"].error == "context_length" and not res["too_long"].transient
        assert res["bad_regex"].error.startswith("bad_request")
        assert res["short"].finish_reason == "length" and res["short"].completion_tokens == 5
        assert res["sampled"].ok and "\n" not in res["sampled"].text
        again = vllm_engine.generate([reqs[6]])[0]  # a seeded sample is reproducible
        assert again.text == res["sampled"].text

    def test_stream_keeps_a_bounded_window(self, vllm_engine):
        from synth.llm.stream import Counts, stream

        counts = Counts()
        copy = ask("fr_again", QUESTIONS[0].messages[0]["content"])  # the payload of "fr", in flight with it
        results = list(stream(vllm_engine.feed, iter([QUESTIONS[0], copy, *QUESTIONS[1:]]), window=2, counts=counts))
        again = results.pop(1)
        check_answers(results)
        assert again.id == "fr_again" and again.cached and again.text == results[0].text  # sent once
        assert (counts.sent, counts.hits, counts.max_in_flight) == (len(QUESTIONS), 1, 2)

    def test_two_streams_share_the_engine(self, vllm_engine):
        """Two streams in flight on one engine at once (a stage's second pass reading the first's answers): each
        step hands out both streams' finished requests, and neither loses one to the other."""
        renamed = [Request(f"b_{q.id}", messages=q.messages, prompt=q.prompt, sampling=q.sampling) for q in QUESTIONS]
        a, b = vllm_engine.stream(QUESTIONS, window=2), vllm_engine.stream(renamed, window=2)
        first, second = [], []
        for x, y in zip(a, b, strict=True):  # taking turns: each poll steps the other's requests too
            first.append(x)
            second.append(y)
        check_answers(first)
        assert [r.id for r in second] == [r.id for r in renamed] and all(r.ok for r in second)
        assert [r.text for r in second] == [r.text for r in first]
        assert not vllm_engine.mail and not vllm_engine.external  # nothing left behind

    def test_seeded_sampling_over_prompts_longer_than_a_step(self, vllm_engine):
        """24 seeded, sampled requests whose prompts (~8k tokens) exceed one step's token budget: with chunked
        prefill (vLLM's default) the CPU build's engine core died on them ("CPU Generator does not use
        offset"); synth turns it off on a CPU, so each is answered, and a seed gives the same sample again."""
        sched = vllm_engine.llm.llm_engine.vllm_config.scheduler_config
        assert not sched.enable_chunked_prefill
        text = " ".join(f"word{j}" for j in range(100))
        reqs = [ask(f"s{i}", f"Summarise note {i}: {text}", Sampling(max_tokens=6, temperature=0.8, top_p=0.9, seed=i))
                for i in range(24)]
        res = vllm_engine.generate(reqs)
        assert sum(r.prompt_tokens for r in res) > sched.max_num_batched_tokens  # one step could not take them
        assert all(r.ok and r.completion_tokens > 0 for r in res), [r.error for r in res if not r.ok]
        again = vllm_engine.generate(reqs[:3])
        assert [r.text for r in again] == [r.text for r in res[:3]]

    def test_cache_wraps_vllm(self, vllm_engine, tmp_path):
        counting = Counting(vllm_engine)
        cached = CachedEngine(counting, RequestCache(tmp_path / "v.sqlite"))
        a = cached.generate(QUESTIONS[:2])
        b = cached.generate(QUESTIONS[:2])
        assert counting.requests == 2 and cached.hits == 2 and [r.text for r in a] == [r.text for r in b]
        cached.cache.close()


@needs_vllm
def test_vllm_cpu_refuses_options_it_cannot_run_before_loading():
    """Batch-invariant kernels are CUDA-only, and chunked prefill kills the CPU engine core under seeded
    sampling: each is refused in one line naming the option, before any model is loaded."""
    from vllm.platforms import current_platform

    from synth.llm.factory import EngineOptionError
    from synth.llm.vllm import VLLMEngine

    if not current_platform.is_cpu():
        pytest.skip("GPU machine: both options are valid there")
    with pytest.raises(EngineOptionError, match="batch_invariant=true: .*CUDA GPUs only"):
        VLLMEngine("smollm2", batch_invariant=True)
    with pytest.raises(EngineOptionError, match="enable_chunked_prefill=True"):
        VLLMEngine("smollm2", enable_chunked_prefill=True)


# -- OpenAI-compatible engine against a real vLLM server -----------------------------------------------------------


@pytest.fixture()
def api_key(monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_API_KEY", API_KEY)
    return "SYNTH_TEST_API_KEY"


def openai_engine(server: VLLMServer, key_env: str, **kw):
    from synth.llm.openai import OpenAIEngine

    return OpenAIEngine(SERVED_NAME, base_url=server.base_url, api_key_env=key_env, dtype=SERVER_DTYPE, **kw)


@pytest.mark.slow
@needs_vllm
class TestOpenAIEngineOnVLLMServer:
    def test_chat_and_completions(self, vllm_server, api_key):
        engine = openai_engine(vllm_server, api_key, concurrency=4)
        assert engine.model_key == f"openai:{vllm_server.base_url}:{SERVED_NAME}:{SERVER_DTYPE}"
        check_answers(engine.generate(QUESTIONS))

    def test_structured_logprobs_and_context_length(self, vllm_server, api_key):
        engine = openai_engine(vllm_server, api_key, concurrency=4)
        reqs = [
            ask("json", "Which city is the capital of France? Reply in JSON.", Sampling(max_tokens=48),
                json_schema=SCHEMA),
            Request("raw_json", prompt="France's capital as JSON:", json_schema=SCHEMA,
                    sampling=Sampling(max_tokens=48)),
            Request("regex", prompt="Is the sky blue? Answer:", regex=r" (yes|no)", sampling=Sampling(max_tokens=4)),
            ask("lp", "Say hello.", Sampling(max_tokens=6, logprobs=3)),
            Request("raw_lp", prompt="Hello, my name is", sampling=Sampling(max_tokens=5, logprobs=2)),
            Request("too_long", prompt="word " * 1500, sampling=SHORT),  # the server runs max_model_len=1024
        ]
        res = {r.id: r for r in engine.generate(reqs)}
        for rid in ("json", "raw_json"):
            assert res[rid].ok and set(res[rid].parsed) == {"city", "country"}, res[rid]
        assert res["regex"].ok and res["regex"].text.strip() in ("yes", "no"), res["regex"]
        for rid, k in (("lp", 3), ("raw_lp", 2)):
            lp = res[rid].logprobs
            assert res[rid].ok and lp and len(lp) == res[rid].completion_tokens, res[rid]
            assert all(1 <= len(step) <= k and all(v <= 0 for v in step.values()) for step in lp)
        assert res["too_long"].error == "context_length", res["too_long"]
        assert res["json"].prompt_tokens > 0 and res["json"].completion_tokens > 0

    def test_key_read_at_request_time_and_auth_failure_not_cached(self, vllm_server, monkeypatch, tmp_path):
        monkeypatch.setenv("SYNTH_TEST_API_KEY", "wrong-key")
        engine = openai_engine(vllm_server, "SYNTH_TEST_API_KEY", max_retries=1, backoff=0.01)
        cached = CachedEngine(engine, RequestCache(tmp_path / "c.sqlite"))
        bad = cached.generate(QUESTIONS[:1])[0]
        assert bad.error == "http_401" and bad.transient and len(cached.cache) == 0
        assert engine.attempts == 1  # a 4xx is not retried
        monkeypatch.setenv("SYNTH_TEST_API_KEY", API_KEY)  # fixed: the same engine and request now pass
        good = cached.generate(QUESTIONS[:1])[0]
        assert good.ok and not good.cached and "Paris" in good.text and len(cached.cache) == 1
        cached.cache.close()

    def test_generate_from_thread_and_running_loop(self, vllm_server, api_key):
        engine = openai_engine(vllm_server, api_key)
        out: list[Result] = []
        t = threading.Thread(target=lambda: out.extend(engine.generate(QUESTIONS[:1])))
        t.start()
        t.join(120)
        assert out and out[0].ok

        async def inside_a_loop() -> list[Result]:
            return engine.generate(QUESTIONS[1:2])  # sync call while a loop runs in this thread

        assert asyncio.run(inside_a_loop())[0].ok
        assert asyncio.run(engine.agenerate(QUESTIONS[2:3]))[0].ok

    def test_one_client_for_the_engine_and_a_bounded_stream(self, vllm_server, api_key):
        from synth.llm.stream import Counts, stream

        engine = openai_engine(vllm_server, api_key, concurrency=2)
        engine.generate(QUESTIONS[:1])
        client = engine._client
        counts = Counts()
        results = list(stream(engine.feed, iter(QUESTIONS), counts=counts))  # the feed's window: 4 x 2
        check_answers(results)
        assert engine._client is client  # one client over the engine's life, not one per call
        assert counts.max_in_flight == len(QUESTIONS) <= engine.feed().window
        engine.close()
        assert engine._client is None and not engine._thread
        assert engine.generate(QUESTIONS[:1])[0].ok  # a closed engine opens again when asked
        engine.close()

    def test_concurrency_auto_grows_to_what_the_server_runs(self, vllm_server, api_key):
        """The default concurrency starts at AUTO_START and doubles while the server's metrics show it running
        more than half of what is sent, then steps back once where that stops; a server without vLLM's metrics
        leaves it where it starts."""
        import httpx

        from synth.llm.openai import AUTO_START, OpenAIEngine

        async def running(base_url: str) -> float | None:
            async with httpx.AsyncClient() as client:
                return await OpenAIEngine("m", base_url=base_url, api_key_env="")._server_running(client)

        assert asyncio.run(running(vllm_server.base_url)) == 0.0  # idle: vLLM's real gauge, nothing running
        assert asyncio.run(running("http://127.0.0.1:9/v1")) is None  # no server there, no metrics

        engine = openai_engine(vllm_server, api_key, probe_seconds=0.2)
        assert engine.adaptive and engine.concurrency == AUTO_START
        reqs = [Request(f"c{i}", prompt=f"Item {i}:", sampling=Sampling(max_tokens=4)) for i in range(600)]
        results = list(engine.stream(reqs))
        assert [r.id for r in results] == [r.id for r in reqs] and all(r.ok for r in results)
        print("concurrency auto:", AUTO_START, "->", engine.concurrency, engine.adaptations)
        assert engine.running == 0 and engine.concurrency > AUTO_START
        # vLLM's CPU server runs 128 sequences at once: more than half of 128 of ours, never more than half of 256
        assert engine.concurrency <= 256
        peak = max(int(a.rsplit(" ", 1)[1]) for a in engine.adaptations)
        if "no more than" in engine.adaptations[-1]:  # one step back from the peak, to no less than it ran
            ran = int(engine.adaptations[-1].split("no more than ")[1].split()[0])
            assert engine.concurrency == peak // 2 >= ran
        engine.close()
