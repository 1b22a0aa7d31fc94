"""The ray executor on a real Ray cluster whose nodes declare logical GPUs (``ray start --num-gpus``): a head and
a second node of one GPU each, a third node of two added for the tensor-parallel test. Ray places and pins
(``CUDA_VISIBLE_DEVICES``) by logical GPUs as by real ones; the hf engine does the work on the CPU. Under
CI=true a missing Ray fails these tests (tests/required.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from ray_cluster import add_node, driving, env
from required import require
from toy_stages import Pinned, Upper, toy_source

from synth.executors.base import ExecutorError
from synth.executors.local import LocalExecutor
from synth.executors.ray import RayExecutor
from synth.fingerprint import stable_id
from synth.kernel import TableSource
from synth.runner import run_stage
from synth.select.embed import Embed
from synth.stages.instruct import Instruct

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_cluster():
    require("ray")
    with driving(gpus=(1, 1)) as c:
        yield c


def _made_by(out) -> list[tuple[str, str]]:
    return [tuple(m.split(":")) for m in out.read().column("made_by").to_pylist()]


@pytest.mark.slow
def test_a_tensor_parallel_group_no_node_holds_stops_the_run_within_a_minute(gpu_cluster, tmp_path):
    """The issue's command: ``synth run --executor ray`` on 2 nodes of 1 GPU with ``tensor_parallel_size = 2``
    for instruct ends with one line naming the nodes and their GPUs (before: it hung)."""
    config = tmp_path / "run.toml"
    config.write_text('engine = "vllm"\n\n[instruct]\nengine_options = { tensor_parallel_size = 2 }\n')
    t0 = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "synth"), "run", "--lang", "en", "--input",
                           str(ROOT / "examples" / "corpus"), "--out", str(tmp_path / "run"), "--fragments", "4",
                           "--executor", "ray", "--ray-address", gpu_cluster.address, "--config", str(config)],
                          env={**env(), "COLUMNS": "400"}, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    line = next(x for x in out.splitlines() if "asks for engine copies that each take 2 GPUs" in x)
    assert "03_instruct" in line and len(re.findall(r"node \S+ [\d.]+ \(\w+\): 1 GPU, 1 CPU", line)) == 2, line
    assert seconds < 60, f"{seconds:.0f}s"


@pytest.mark.slow
def test_copies_one_per_gpu_replicas_and_clamping_with_cuda_visible_devices_per_actor(gpu_cluster, tmp_path,
                                                                                     no_cuda):
    """One actor per logical GPU, each seeing its own (Ray pins ``CUDA_VISIBLE_DEVICES``), with the rows of the
    local run; ``replicas=1`` gives one actor; an ``actors`` override beyond the cluster is clamped, not left
    pending; a copy that needs no GPU (a server client) runs on a CPU actor that sees none."""
    plain = run_stage(Upper(), toy_source(), tmp_path / "plain", progress=False).read()
    ex = RayExecutor(address=gpu_cluster.address, actors=5)
    try:
        both = run_stage(Pinned(), toy_source(), tmp_path / "both", progress=False, executor=ex)
        assert both.read().drop_columns(["made_by"]).equals(plain)
        made = set(_made_by(both))
        assert len({pid for pid, _ in made}) == 2 and {gpu for _, gpu in made} == {"0"}
        ex.actors = None
        one = run_stage(Pinned(replicas=1), toy_source(), tmp_path / "one", progress=False, executor=ex)
        assert len(set(_made_by(one))) == 1
        cpu = run_stage(Pinned(per_copy=0), toy_source(), tmp_path / "cpu", progress=False, executor=ex)
        assert {gpu for _, gpu in _made_by(cpu)} == {""}
        with pytest.raises(ExecutorError, match="gpus=0 names GPUs of this machine"):
            run_stage(Pinned(gpus="0"), toy_source(), tmp_path / "named", progress=False, executor=ex)
    finally:
        ex.close()


@pytest.mark.slow
@pytest.mark.requires("smollm2")
def test_an_llm_stage_on_logical_gpu_actors_matches_the_local_rows(gpu_cluster, tmp_path, no_cuda):
    """Instruct with the hf engine on two actors of one logical GPU each (the model runs on their CPU), the
    driver's CUDA armed to raise: the same rows and fingerprint as the local executor."""
    texts = [f"Point {i}: everyone has the right to rest and leisure, including reasonable limitation of working "
             f"hours and periodic holidays with pay." for i in range(4)]
    table = pa.table({"id": [stable_id("g", i) for i in range(4)], "lang": ["en"] * 4, "fragment": texts,
                      "response_en": texts})

    def stage():
        return Instruct(engine="hf", cache=str(tmp_path / "cache.sqlite"), max_tokens=12)

    ex = RayExecutor(address=gpu_cluster.address)
    try:
        remote = run_stage(stage(), TableSource(table, rows_per_shard=2), tmp_path / "ray", progress=False,
                           executor=ex)
    finally:
        ex.close()
    local = run_stage(stage(), TableSource(table, rows_per_shard=2), tmp_path / "local", progress=False)
    assert remote.dir.name == local.dir.name and remote.read().equals(local.read())
    assert remote.stats()["counters"]["llm_requests"] == 4  # the actors generated; local read their cache


@pytest.mark.slow
def test_facts_come_from_where_the_actors_run(gpu_cluster, fake_gpus):
    """This driver sees an H100 through NVML; the nodes have none. A vLLM stage's output is named float32 and
    an embedding's fp32, as the actors will run them, not bfloat16/fp16 as the driver would guess."""
    fake_gpus("NVIDIA H100 80GB HBM3:9.0")
    stage, embed = Instruct(engine="vllm"), Embed()
    assert LocalExecutor().facts(stage) == {"dtype": "bfloat16"}
    ex = RayExecutor(address=gpu_cluster.address)
    try:
        assert ex.facts(stage) == {"dtype": "float32"}
        assert ex.facts(embed)["precision"] == "float32"
    finally:
        ex.close()


@pytest.mark.slow
def test_a_tensor_parallel_group_is_placed_on_one_node(gpu_cluster, tmp_path):
    """With a node of two GPUs added, a copy of two GPUs is placed there, alone, seeing both."""
    add_node(gpu_cluster, gpus=2, resources='{"node3": 1}')
    ex = RayExecutor(address=gpu_cluster.address)
    try:
        for _ in range(30):  # the node registers within seconds
            if ex._connect().cluster_resources().get("GPU", 0) >= 4:
                break
            time.sleep(1)
        out = run_stage(Pinned(per_copy=2), toy_source(), tmp_path / "tp", progress=False, executor=ex)
    finally:
        ex.close()
    (pid, seen), = set(_made_by(out))
    assert sorted(seen.split(",")) == ["0", "1"]
