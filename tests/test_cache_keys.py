"""The request-cache key and the stage fingerprint name an engine's answers from ONE list of output-changing
options (synth.llm.request.OUTPUT_OPTIONS): an option changes both or neither, so an fp8 run is never served
answers cached from a bf16 one. Engines are not loaded: the cache builds them only on a miss."""

from __future__ import annotations

import pytest

from synth.llm import Request, load_engine
from synth.llm.request import OUTPUT_OPTIONS
from synth.stages.score import Score

REQUEST = Request("q", messages=[{"role": "user", "content": "What is the capital of France?"}])


def names(tmp_path, engine: str, options: dict) -> tuple[str, str]:
    """(the cache key of one request, the Score stage's fingerprint) under these engine options."""
    llm = load_engine(engine, "smollm2", cache=tmp_path / "cache.sqlite", **options)
    key = REQUEST.cache_key(llm.model_key)
    llm.close()
    return key, Score(engine=engine, model="smollm2", engine_options=options).fingerprint("input")


@pytest.mark.parametrize(("engine", "option", "a", "b"), [
    ("vllm", "quantization", None, "fp8"),
    ("vllm", "max_model_len", 512, 1024),
    ("vllm", "kv_cache_dtype", "auto", "fp8"),
    ("vllm", "tokenizer", None, "/models/other-tokenizer"),
    ("vllm", "batch_invariant", False, True),
    ("hf", "max_input_tokens", 512, 1024),
    ("openai", "base_url", "http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"),
])
def test_an_option_that_changes_answers_changes_key_and_fingerprint(tmp_path, engine, option, a, b):
    assert option in OUTPUT_OPTIONS
    key_a, fp_a = names(tmp_path, engine, {} if a is None else {option: a})
    key_b, fp_b = names(tmp_path, engine, {option: b})
    assert key_a != key_b and fp_a != fp_b


@pytest.mark.parametrize(("engine", "option", "a", "b"), [
    ("vllm", "gpu_memory_utilization", 0.5, 0.9),
    ("vllm", "tensor_parallel_size", 1, 2),
    ("hf", "batch_size", 1, 8),
    ("openai", "concurrency", 1, 16),
])
def test_an_option_that_changes_speed_changes_neither(tmp_path, engine, option, a, b):
    assert option not in OUTPUT_OPTIONS
    assert names(tmp_path, engine, {option: a}) == names(tmp_path, engine, {option: b})


def test_a_switch_given_as_false_is_the_same_as_none(tmp_path):
    assert names(tmp_path, "vllm", {"batch_invariant": False}) == names(tmp_path, "vllm", {})


def test_credentials_in_the_server_url_name_nothing(tmp_path):
    """A rotated password serves the same cached answers, and the key does not carry it."""
    first = names(tmp_path, "openai", {"base_url": "http://me:hunter2@127.0.0.1:9/v1"})
    assert names(tmp_path, "openai", {"base_url": "http://me:rotated3@127.0.0.1:9/v1"}) == first
    llm = load_engine("openai", "smollm2", base_url="http://me:hunter2@127.0.0.1:9/v1")
    assert "hunter2" not in llm.model_key and llm.model_key.startswith("openai:http://<redacted>@127.0.0.1:9/v1:")


def test_the_fast_request_key_is_the_fingerprint_of_the_payload():
    """``Request.cache_key`` skips the general walk for plain chat messages (the hot path of every stream): it
    must give exactly the key of the whole payload's fingerprint, or every cached answer would be paid again."""
    from synth.fingerprint import fingerprint
    from synth.llm.request import Request, Sampling

    requests = [
        Request("a", messages=[{"role": "user", "content": "hé 1.0"}],
                sampling=Sampling(max_tokens=5, temperature=0.7, stop=("x", "y"), logprobs=3)),
        Request("b", prompt="raw", sampling=Sampling(top_p=1.0, seed=None)),
        Request("c", messages=[{"role": "user", "content": "x"}],
                json_schema={"type": "object", "properties": {"s": {"type": "integer", "minimum": 1.0}}}),
        Request("d", messages=[{"role": "user", "content": "x", "name": ("t",)}]),  # not plain: the general walk
    ]
    for r in requests:
        assert r.cache_key("m") == fingerprint({"model": "m", **r.payload()}, length=32), r.id
    assert requests[0].cache_key("m") != requests[0].cache_key("n")
