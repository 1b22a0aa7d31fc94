"""Device assignment (synth.devices) and the embed stage's copies: GPUs are given out whole, never twice; on
this CPU-only machine ``auto`` falls back to CPU processes, which give the same embeddings as one process."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from synth.devices import DeviceError, assign, local_groups
from synth.stats import ShardStats


def test_replicas_and_tensor_parallel_share_out_the_visible_gpus():
    gpus = ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert assign("auto", 1, gpus) == [[g] for g in gpus]  # data parallel: one engine per GPU
    assert assign("auto", 2, gpus) == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]
    assert assign(2, 4, gpus) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert assign(3, 2, ["3", "5", "6", "7", "9", "1"]) == [["3", "5"], ["6", "7"], ["9", "1"]]  # the ids as given
    assert assign("auto", 3, gpus) == [["0", "1", "2"], ["3", "4", "5"]]  # what does not fit a group stays idle
    used = [g for group in assign("auto", 2, gpus) for g in group]
    assert len(used) == len(set(used))
    with pytest.raises(DeviceError, match="at most 2"):
        assign(3, 4, gpus)
    with pytest.raises(DeviceError, match="needs 4 GPUs; 2 visible"):
        assign("auto", 4, ["0", "1"])
    assert assign("auto", 1, []) == [[]] and assign(2, 1, []) == [[], []]  # no GPU: copies on the CPU
    with pytest.raises(DeviceError, match="tensor_parallel 2 needs 2 GPUs per copy; no GPU is visible"):
        assign("auto", 2, [])  # not a CPU copy that still asks vLLM for a tensor-parallel group


@pytest.mark.requires("gpu", "minilm")
def test_embed_runs_on_the_gpu_in_half_precision():
    from synth.select.embed import Embed

    stage = Embed()
    stage.setup()
    assert str(stage._model.device).startswith("cuda") and stage._batch == 512
    assert next(stage._model.parameters()).dtype.itemsize == 2
    out = stage.process(pa.table({"id": ["a"], "instruction_en": ["Say hello."]}), ShardStats())
    assert out.column("embedding").null_count == 0


@pytest.mark.requires("minilm")
def test_embed_copies_give_the_embeddings_of_one_process(tmp_path):
    """``workers=2`` on a CPU: two copies, each a process of its own made by the executor (the embedder no longer
    starts a pool of its own), with the embeddings of one process."""
    from synth.kernel import TableSource
    from synth.runner import run_stage
    from synth.select.embed import Embed

    texts = [f"Explain point {i} of the declaration in simple words." for i in range(40)] + [""]
    batch = pa.table({"id": [str(i) for i in range(len(texts))], "lang": ["en"] * len(texts),
                      "instruction_en": texts})
    assert local_groups(Embed(workers=2).placement()) == [[], []]
    out = {w: run_stage(Embed(workers=w), TableSource(batch, rows_per_shard=10), tmp_path / str(w),
                        progress=False).read().column("embedding") for w in (1, 2)}
    one, two = (np.array(out[w].to_pylist()[:-1], dtype=np.float32) for w in (1, 2))
    assert one.shape == (40, 384) and np.abs(one - two).max() < 2e-3
    assert out[2].null_count == 1  # the empty text
