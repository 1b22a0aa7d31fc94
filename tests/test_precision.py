"""The dtype an engine runs is resolved before it names anything: stage fingerprints and request-cache keys
carry the resolved dtype, never "auto", so two machines that would run different precisions never share a name.
These tests hold on any CPU: "auto" resolves to float32 on every one of them."""

from __future__ import annotations

import json

import pytest
import torch

from synth.devices import Gpu
from synth.llm import Request, Sampling
from synth.llm.factory import engine_class
from synth.llm.openai import OpenAIEngine
from synth.llm.precision import DtypeError, canonical_dtype, model_dtype
from synth.models import resolve_model
from synth.stages.instruct import Instruct

REQUEST = Request("q", messages=[{"role": "user", "content": "What is the capital of France?"}],
                  sampling=Sampling(max_tokens=12))


@pytest.fixture(scope="module")
def smollm2() -> str:
    return resolve_model("smollm2")


def test_aliases_and_bad_names():
    assert [canonical_dtype(d) for d in ("bf16", "torch.bfloat16", "fp16", "half", "fp32", None)] == [
        "bfloat16", "bfloat16", "float16", "float16", "float32", "auto"]
    with pytest.raises(DtypeError, match="unknown dtype 'int3'"):
        canonical_dtype("int3")


def resolve_dtype(engine: str, path: str | None, dtype: str, gpus: list[Gpu]) -> str:
    return engine_class(engine).resolve_dtype(path, dtype, gpus)


H100, V100 = Gpu("0", "NVIDIA H100", (9, 0)), Gpu("1", "Tesla V100", (7, 0))


def test_auto_on_a_cpu_is_float32_for_every_engine(smollm2):
    for engine in ("hf", "vllm"):
        assert resolve_dtype(engine, smollm2, "auto", []) == "float32"
        assert resolve_dtype(engine, smollm2, "bf16", []) == "bfloat16"  # an explicit dtype wins
        assert resolve_dtype(engine, smollm2, "fp32", [H100]) == "float32"


def test_auto_on_a_gpu_follows_the_checkpoint_and_the_gpu(tmp_path):
    """The GPU rule runs here too (nothing is loaded; the GPUs are as NVML would describe them): transformers
    keeps the checkpoint's dtype, vLLM runs a float32 checkpoint in bf16, or fp16 where a GPU of the copy lacks
    bf16 (compute capability below 8.0)."""
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert model_dtype(str(tmp_path)) == "float32"
    assert resolve_dtype("hf", str(tmp_path), "auto", [H100]) == "float32"
    assert resolve_dtype("vllm", str(tmp_path), "auto", [H100]) == "bfloat16"
    assert resolve_dtype("vllm", str(tmp_path), "auto", [V100]) == "float16"
    assert resolve_dtype("vllm", str(tmp_path), "auto", [H100, V100]) == "float16"  # one group, one precision
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    assert resolve_dtype("hf", str(tmp_path), "auto", [H100]) == "bfloat16"
    assert resolve_dtype("vllm", str(tmp_path), "auto", [V100]) == "float16"
    with pytest.raises(DtypeError, match="pass the dtype explicitly"):
        resolve_dtype("hf", str(tmp_path / "missing-model"), "auto", [H100])


def test_openai_dtype_is_what_the_user_declares_or_unknown():
    a = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1")
    b = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", dtype="bf16")
    assert (a.dtype, b.dtype) == ("unknown", "bfloat16")
    assert REQUEST.cache_key(a.model_key) != REQUEST.cache_key(b.model_key)


@pytest.mark.parametrize("engine", ["hf", "vllm", "openai"])
def test_fingerprint_follows_the_resolved_dtype(engine):
    """Stages differing only in dtype get different output folders; "auto" and what it resolves to get one."""

    def fp(**options) -> str:
        return Instruct(engine=engine, model="smollm2", engine_options=options).fingerprint("input")

    assert fp(dtype="bfloat16") != fp(dtype="float32")
    assert fp(dtype="bf16") == fp(dtype="bfloat16")
    if engine != "openai":
        assert Instruct(engine=engine, model="smollm2").params()["dtype"] == "float32"
        assert fp() == fp(dtype="float32")  # on a CPU, "auto" is float32: the same rows, the same name
    else:
        assert fp() != fp(dtype="float32")  # a server's unknown precision is not assumed


def test_hf_engine_runs_and_keys_the_resolved_dtype():
    from synth.llm.hf import HFEngine

    auto, bf16 = HFEngine("smollm2"), HFEngine("smollm2", dtype="bf16")
    assert auto.dtype == "float32" and auto.model.dtype == torch.float32 and auto.model_key.endswith(":float32")
    assert bf16.dtype == "bfloat16" and bf16.model.dtype == torch.bfloat16
    assert REQUEST.cache_key(auto.model_key) != REQUEST.cache_key(bf16.model_key)
    assert "Paris" in auto.generate([REQUEST])[0].text  # greedy, float32: the same answer on every CPU
