"""The GPU path, made right on a machine without a GPU: engines declare what they need, the driver never touches
CUDA, copies are pinned to the GPUs asked for, Ray plans only what its nodes hold, outputs are named by what the
copies run with, and batch-invariant kernels stay with the engine that asked for them.

GPUs are simulated where the code reads them: a stand-in NVML library (tests/fake_nvml.py, built with the C
compiler; the ``fake_gpus`` fixture of conftest.py) describes GPUs to this process and every process it starts,
and a tripwire (``no_cuda``) makes torch's CUDA entry points raise in this process (the driver). The Ray
placement rules are tested on node lists of the shape ``ray.nodes()`` returns; tests/test_ray_gpus.py runs them
on a real cluster of logical GPUs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import H100, V100
from required import require
from toy_stages import Pinned, Upper, toy_source

from synth import devices
from synth.devices import DeviceError, Gpu, Placement, local_groups
from synth.errors import SynthError
from synth.executors.base import ExecutorError
from synth.executors.local import LocalExecutor
from synth.executors.ray import plan_actors
from synth.fingerprint import stable_id
from synth.kernel import StageError, TableSource
from synth.llm.factory import default_engine
from synth.runner import run_stage
from synth.select.embed import Embed
from synth.stages.instruct import Instruct

ROOT = Path(__file__).resolve().parents[1]


def _made_by(out) -> set[tuple[str, str]]:
    return {tuple(m.split(":")) for m in out.read().column("made_by").to_pylist()}


# ------------------------------------------------------------------------ devices, read through NVML only


def test_gpus_are_read_through_nvml_as_cuda_would_see_them(fake_gpus, no_cuda, monkeypatch):
    fake_gpus(f"{H100},{V100},{H100}")
    assert devices.visible_gpus() == ["0", "1", "2"]
    assert [g.bf16 for g in devices.local_gpus()] == [True, False, True]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-fake-0001,7,0")  # an index, a UUID, then one CUDA stops at
    assert [(g.id, g.name) for g in devices.local_gpus()] == [("2", "NVIDIA H100 80GB HBM3"),
                                                               ("GPU-fake-0001", "Tesla V100-SXM2-16GB")]
    assert devices.describe(["1"])[0].capability == (7, 0) and devices.describe([]) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-0001,GPU-fake-0001,0")  # CUDA stops at a repeat
    assert devices.visible_gpus() == ["GPU-fake-0001"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4a7f-slice")  # a MIG slice: a GPU of its own, Ampere or newer
    assert [(g.id, g.bf16) for g in devices.local_gpus()] == [("MIG-4a7f-slice", True)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == []
    assert default_engine() == "hf"  # no GPU visible to this process
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(devices, "cuda_build", lambda: False)  # a CPU build of torch cannot use what NVML sees
    devices.forget_gpus()
    assert devices.visible_gpus() == []


@pytest.mark.requires("smollm2")
def test_the_driver_never_touches_cuda_while_it_plans(fake_gpus, no_cuda):
    """Two GPUs described by NVML, CUDA's entry points armed to raise: counting GPUs, choosing the engine,
    placing copies and naming outputs (dtype per GPU kind, embedding precision) all work from NVML alone."""
    fake_gpus(f"{H100},{H100}")
    require("vllm")
    assert default_engine() == "vllm"
    assert local_groups(Instruct(engine="vllm").placement()) == [["0"], ["1"]]
    assert Instruct(engine="vllm").named_facts() == {"dtype": "bfloat16"}  # SmolLM2's float32, as vLLM runs it
    assert Instruct(engine="hf").named_facts() == {"dtype": "float32"}  # transformers keeps the checkpoint's
    assert Embed().named_facts() == {"backend": "torch", "precision": "float16"}
    assert LocalExecutor().facts(Embed(device="cpu")) == {"backend": "torch", "precision": "float32"}
    fake_gpus(f"{V100},{V100}")
    assert Instruct(engine="vllm").named_facts() == {"dtype": "float16"}  # no bf16 before compute capability 8


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_an_llm_stage_runs_with_cuda_armed_in_the_driver(no_cuda, tmp_path):
    """On this CPU machine the one copy runs in the driver: loading SmolLM2 and generating touch no CUDA."""
    text = "The sky is blue because air scatters the blue part of sunlight more than the red part."
    table = pa.table({"id": [stable_id("t", i) for i in range(2)], "lang": ["en"] * 2, "fragment": [text] * 2,
                      "response_en": [text] * 2})
    out = run_stage(Instruct(engine="hf", cache=None, max_tokens=16), TableSource(table), tmp_path, progress=False)
    assert out.num_rows + sum(out.stats()["dropped"].values()) == 2
    assert out.stats()["counters"]["llm_requests"] == 2


# -------------------------------------------------------------------------------- copies pinned locally


def test_one_copy_on_named_gpus_runs_pinned_to_them(tmp_path, fake_gpus, no_cuda):
    """``--gpus 2,3`` with one copy of two GPUs, and ``--gpus 3`` with one of one: the copy runs in a process of
    its own that sees exactly those GPUs (before: in the driver, on whatever CUDA calls device 0)."""
    fake_gpus(",".join([H100] * 4))
    plain = run_stage(Upper(), toy_source(), tmp_path / "plain", progress=False).read()
    for gpus, per_copy, want in (("2,3", 2, "2,3"), ("3", 1, "3")):
        out = run_stage(Pinned(gpus=gpus, replicas=1, per_copy=per_copy), toy_source(), tmp_path / gpus,
                        progress=False)
        assert out.read().drop_columns(["made_by"]).equals(plain)
        (pid, seen), = _made_by(out)
        assert seen == want and pid != str(os.getpid())


@pytest.mark.requires("smollm2")
def test_a_tensor_parallel_group_without_gpus_is_an_error_not_a_cpu_copy():
    with pytest.raises(DeviceError, match="tensor_parallel 2 needs 2 GPUs per copy; no GPU is visible"):
        LocalExecutor().facts(Instruct(engine="vllm", engine_options={"tensor_parallel_size": 2}))


def test_a_copy_names_its_gpu_by_gpus_not_by_a_cuda_index():
    """Each copy sees its own GPUs from cuda:0: ``device="cuda:1"`` would name one it does not have."""
    from synth.llm.base import EngineOptionError
    from synth.select.embed import EmbedError

    with pytest.raises(EngineOptionError, match="device=cuda:1: .* --gpus 1"):
        Instruct(engine="hf", engine_options={"device": "cuda:1"}).placement()
    with pytest.raises(EmbedError, match='gpus = "1"'):
        Embed(device="cuda:1").placement()
    assert Instruct(engine="hf", engine_options={"device": "mps"}).placement().per_copy == 0


def test_embed_workers_are_a_most_not_a_demand(fake_gpus):
    """A ``workers = 4`` tuned on a CPU runs on the 2 GPUs there are, not a DeviceError; 0 takes every GPU."""
    fake_gpus(f"{H100},{H100}")
    assert local_groups(Embed(workers=4).placement()) == [["0"], ["1"]]
    assert local_groups(Embed().placement()) == [["0"], ["1"]] and local_groups(Embed(gpus="1").placement()) == [
        ["1"]]
    assert plan_actors([_node(1, 1), _node(2, 1)], Embed(workers=4).placement(), "s")[::2] == (2, [])


def test_translators_say_what_copies_they_need(tmp_path):
    """A stage that translates with Apertium holds no model (plain workers); with a seq2seq model, one GPU per
    copy and no LLM resolved for it; with the LLM, the LLM's engine copies."""
    from synth.stages.translate import Translate

    llm = Translate(engine="vllm", model="/nowhere/model", engine_options={"tensor_parallel_size": 2})
    assert llm.placement().per_copy == 2
    seq = Translate(translator="seq2seq", mt_model=str(tmp_path), model="/nowhere/model",
                    engine_options={"tensor_parallel_size": 2})
    assert seq.placement().per_copy == 1 and seq.facts([Gpu("0", "H100", (9, 0))]) == {}
    assert Translate(translator="seq2seq", mt_model=str(tmp_path), mt_options={"device": "cpu"}).placement(
        ).per_copy == 0
    require("apertium")
    assert Translate(translator="apertium").placement() is None


# --------------------------------------------------------------------------------- Ray plans what fits


def _node(i: int, gpus: int, cpus: int = 8) -> dict:
    return {"Alive": True, "NodeID": f"{i:02d}" * 14, "NodeManagerAddress": f"10.0.0.{i}",
            "NodeManagerHostname": f"gpu{i}", "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}


def test_ray_plans_tensor_parallel_groups_per_node():
    """4 nodes of 1 GPU cannot hold a copy of 2 (a group never spans nodes): one line names every node (before:
    2 actors of 2 GPUs asked for, pending forever). 2 nodes of 3 GPUs hold 2 copies of 2, not 3."""
    with pytest.raises(ExecutorError) as e:
        plan_actors([_node(i, 1) for i in range(4)], Placement(2), "03_instruct")
    msg = str(e.value)
    assert "\n" not in msg and "03_instruct asks for engine copies that each take 2 GPUs" in msg
    assert all(f"node gpu{i} 10.0.0.{i}" in msg and "1 GPU" in msg for i in range(4))
    assert "at most 1" in msg
    assert plan_actors([_node(1, 3), _node(2, 3)], Placement(2), "s")[:2] == (2, {"num_gpus": 2, "num_cpus": 1})
    assert plan_actors([_node(1, 8, cpus=2)], Placement(1), "s")[0] == 2  # an actor takes a CPU too
    dead = {**_node(3, 8), "Alive": False}
    assert plan_actors([_node(1, 1), dead], Placement(1), "s")[0] == 1


def test_ray_clamps_copies_to_what_fits_and_honours_replicas():
    two = [_node(1, 1), _node(2, 1)]
    n, _, warnings = plan_actors(two, Placement(1), "s", actors=5)
    assert n == 2 and warnings == ["stage s: 5 engine copies asked for, the Ray cluster holds 2: running 2"]
    assert plan_actors(two, Placement(1, replicas=1), "s")[0] == 1  # the stage's replicas hold on Ray too
    assert plan_actors(two, Placement(1, replicas=4), "s")[0] == 2
    assert plan_actors(two, Placement(1), "s", shards=1)[0] == 1
    with pytest.raises(ExecutorError, match="gpus=0,1 names GPUs of this machine"):
        plan_actors(two, Placement(1, gpus=("0", "1")), "s")


def test_ray_counts_the_cpu_each_actor_takes():
    """A node with GPUs but no CPU for Ray cannot hold an actor: an error at once, not a wait of start_timeout."""
    with pytest.raises(ExecutorError, match="gpu1 10.0.0.1 .*: 8 GPU, 0 CPU"):
        plan_actors([_node(1, 8, cpus=0)], Placement(1), "s")
    with pytest.raises(ExecutorError, match="take a CPU"):
        plan_actors([_node(1, 0, cpus=0)], Placement(0), "s")


def test_ray_never_falls_back_to_a_cpu_actor_that_asks_for_tensor_parallel():
    cpu_only = [_node(1, 0), _node(2, 0)]
    assert plan_actors(cpu_only, Placement(1), "s")[:2] == (1, {"num_cpus": 1})  # one device: the CPU is fine
    with pytest.raises(ExecutorError, match="each take 2 GPUs and a CPU on one node.*The cluster has no GPU"):
        plan_actors(cpu_only, Placement(2), "s")


def test_a_remote_engine_gets_cpu_actors_not_gpus():
    placement = Instruct(engine="openai").placement()
    assert placement.per_copy == 0
    assert plan_actors([_node(1, 8), _node(2, 8)], placement, "s")[:2] == (1, {"num_cpus": 1})
    assert plan_actors([_node(1, 8)], Instruct(engine="openai", replicas=3).placement(), "s")[:2] == (
        3, {"num_cpus": 1})


# ------------------------------------------------------------------------------ names match the work


@pytest.mark.requires("smollm2")
def test_outputs_are_named_by_the_facts_where_the_copies_run():
    """The executor pins the facts it found where the copies run; the fingerprint follows them, whatever this
    process's devices are, and a copy that finds other facts stops before it writes a row."""
    stage = Instruct(engine="vllm")
    here = stage.fingerprint("in")
    stage.pinned_facts = {"dtype": "bfloat16"}  # as a GPU node reported it
    assert stage.params()["dtype"] == "bfloat16" and stage.fingerprint("in") != here
    with pytest.raises(StageError, match=r"would run with \{'dtype': 'float32'\}, but the output is named after"):
        stage.check_facts()  # this CPU process is not such a node
    embed = Embed()
    base = embed.fingerprint("in")
    embed.pinned_facts = {"backend": "torch", "precision": "float16"}
    assert embed.params()["precision"] == "float16" and embed.fingerprint("in") != base
    assert "precision" not in Embed().params()  # float32 names outputs as before


def test_embed_facts_follow_the_gpus_of_the_copy():
    gpu = [Gpu("0", "H100", (9, 0))]
    assert Embed().facts(gpu) == {"backend": "torch", "precision": "float16"}
    assert Embed().facts([]) == {"backend": Embed().resolved_backend("cpu"), "precision": "float32"}
    assert Embed(device="cpu").facts(gpu)["precision"] == "float32"
    assert (Embed()._device(gpu), Embed()._device([]), Embed(device="cpu")._device(gpu)) == ("cuda:0", "cpu", "cpu")


# ----------------------------------------------------------------------------- batch-invariant kernels


@pytest.mark.requires("smollm2")
def test_batch_invariant_is_scoped_to_its_engine_and_read_from_the_environment(monkeypatch):
    from synth.llm.vllm import BATCH_INVARIANT, VLLMEngine, _batch_invariant_env

    monkeypatch.delenv(BATCH_INVARIANT, raising=False)
    with _batch_invariant_env(True):
        assert os.environ[BATCH_INVARIANT] == "1"  # while this engine starts its core
    assert BATCH_INVARIANT not in os.environ  # the next engine of the run starts without it
    plain_key, _ = VLLMEngine.key("smollm2")
    plain_fp = Instruct(engine="vllm").fingerprint("in")
    monkeypatch.setenv(BATCH_INVARIANT, "1")  # a user's export switches the kernels on as surely as the option
    with _batch_invariant_env(False):
        assert os.environ[BATCH_INVARIANT] == "1"  # left alone
    key, _ = VLLMEngine.key("smollm2")
    assert "batch_invariant=true" in key and key == VLLMEngine.key("smollm2", batch_invariant=True)[0]
    assert key != plain_key
    stage = Instruct(engine="vllm")
    assert stage.params()["engine_options"] == {"batch_invariant": True}
    assert stage.fingerprint("in") == Instruct(engine="vllm", engine_options={"batch_invariant": True}).fingerprint(
        "in") != plain_fp
    monkeypatch.setenv(BATCH_INVARIANT, "2")  # vLLM reads an integer: any but 0 is on
    assert "batch_invariant=true" in VLLMEngine.key("smollm2")[0]
    monkeypatch.setenv(BATCH_INVARIANT, "yes")  # vLLM would refuse it: refused here first, with the value
    with pytest.raises(SynthError, match="VLLM_BATCH_INVARIANT='yes': vLLM reads an integer"):
        VLLMEngine.key("smollm2")


# ------------------------------------------------------------------------ nobody compares engine names


def test_no_engine_name_is_compared_outside_the_engine_package():
    """Executors, stages, precision and eval ask the engine class (``remote``, ``devices_per_copy``,
    ``resolve_dtype``, ``causal_lm``); a new engine is one module and one line in ``ENGINES``."""
    compare = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](hf|vllm|openai)["']|["'](hf|vllm|openai)["']\s*(==|!=)""")
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in sorted((ROOT / "synth").rglob("*.py")) if "llm" not in p.relative_to(ROOT / "synth").parts[:1]
             for i, line in enumerate(p.read_text().splitlines(), 1) if compare.search(line)]
    assert not found, found


def test_engine_errors_are_synth_errors():
    assert issubclass(ExecutorError, SynthError) and issubclass(DeviceError, SynthError)
