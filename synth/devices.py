"""Which accelerators this process may use, and how a stage spreads its copies (engines, embedders) over them.

The visible GPUs are what CUDA says (``torch.cuda.device_count()``, which honours ``CUDA_VISIBLE_DEVICES``);
without torch or CUDA there are none. A stage asks for ``replicas`` copies of ``tensor_parallel`` GPUs each
(``auto``: as many as fit); ``assign`` hands each copy its own GPUs, never one GPU to two copies. The copies see
their GPUs as the ``CUDA_VISIBLE_DEVICES`` of the process that runs them (vLLM and torch then number them 0…).
"""

from __future__ import annotations

import os

from synth.errors import SynthError


class DeviceError(SynthError, ValueError):
    """More GPUs asked for than are visible, or a device name that is not one."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as the ids ``CUDA_VISIBLE_DEVICES`` gives them (0, 1… when it is unset)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in env.split(",") if d.strip()] if env else []
    return ids[:count] if len(ids) >= count else [str(i) for i in range(count)]


def assign(replicas: int | str = "auto", tensor_parallel: int = 1, gpus: list[str] | None = None) -> list[list[str]]:
    """The GPUs of each copy: ``replicas`` groups of ``tensor_parallel`` visible GPUs (``auto``: as many groups as
    fit, at least one). No GPUs visible: one copy per replica with none (it runs on the CPU)."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    tp = int(tensor_parallel)
    if tp < 1:
        raise DeviceError(f"tensor_parallel must be >= 1, not {tensor_parallel}")
    if not gpus:
        return [[] for _ in range(1 if replicas == "auto" else int(replicas))]
    fit = len(gpus) // tp
    if fit == 0:
        raise DeviceError(f"tensor_parallel {tp} needs {tp} GPUs; {len(gpus)} visible ({','.join(gpus)})")
    n = fit if replicas == "auto" else int(replicas)
    if n < 1 or n > fit:
        raise DeviceError(f"{n} replicas of {tp} GPU(s) need {n * tp} GPUs; {len(gpus)} visible "
                          f"({','.join(gpus)}): use at most {fit}")
    return [gpus[i * tp:(i + 1) * tp] for i in range(n)]


def torch_devices(device: str = "auto", workers: int = 1) -> list[str]:
    """Devices for ``workers`` copies of a torch model (an embedder): ``auto`` is one per visible GPU (``cuda:i``,
    up to ``workers``; all of them when ``workers`` is 0), else ``workers`` CPU processes; an explicit device
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is used by every copy."""
    workers = int(workers)
    if device != "auto":
        return [device] * max(1, workers)
    gpus = visible_gpus()
    if gpus:  # torch numbers the visible GPUs 0…n-1 whatever their ids in CUDA_VISIBLE_DEVICES
        return [f"cuda:{i}" for i in range(len(gpus) if workers < 1 else min(workers, len(gpus)))]
    return ["cpu"] * max(1, workers)
