"""Which accelerators a process may use, read without touching CUDA, and how a stage spreads its copies over them.

**The driver never initialises CUDA.** Once a process has called into CUDA (``torch.cuda.is_available()`` is
enough with some builds, ``device_count()`` or ``is_bf16_supported()`` always), a forked child cannot use the GPU
and the process holds a context on GPU 0 for its lifetime. So GPUs are counted and described through NVML (the
driver's management library, ``libnvidia-ml.so.1`` or the path in ``SYNTH_NVML_LIBRARY``, loaded with ctypes: no
package needed), filtered by
``CUDA_VISIBLE_DEVICES`` as CUDA would filter them; CUDA itself lives only in the processes that run models,
pinned to their GPUs before they import anything. A machine without the NVIDIA driver has no GPU here.

A stage that holds a model declares a ``Placement``: how many GPUs one copy takes (0 for an engine that runs
elsewhere, a server), how many copies (``auto``: as many as fit) and, on this machine, which GPUs. ``assign``
hands each copy its own GPUs, never one GPU to two copies; the copies see them as the ``CUDA_VISIBLE_DEVICES``
of the process that runs them (vLLM and torch then number them 0…).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache

from synth.errors import SynthError


class DeviceError(SynthError, ValueError):
    """More GPUs asked for than are visible, or a device name that is not one."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML describes it: ``id`` as ``CUDA_VISIBLE_DEVICES`` names it here (an index, or the UUID
    when the variable names it so), its model name and CUDA compute capability."""

    id: str
    name: str = "GPU"
    capability: tuple[int, int] = (0, 0)
    uuid: str = ""

    @property
    def bf16(self) -> bool:
        """bfloat16 arithmetic in hardware: compute capability 8.0 (Ampere) and newer."""
        return self.capability >= (8, 0)


@dataclass(frozen=True)
class Placement:
    """What a stage that holds a model asks for its copies: ``per_copy`` GPUs each (0: the copy needs none, e.g.
    an engine that calls a server), ``replicas`` copies (``auto``: one per group of ``per_copy`` GPUs, one when
    there are no GPUs), and ``gpus``: the ids of this machine's GPUs to use (None: every visible one)."""

    per_copy: int = 1
    replicas: int | str = "auto"
    gpus: tuple[str, ...] | None = None
    upto: bool = False  # ``replicas`` is a most (an embedder's workers), not a number of copies to insist on


# ------------------------------------------------------------------------------------------------------ NVML


NVML_LIBRARY = "SYNTH_NVML_LIBRARY"  # a path to NVML where the driver put it off the loader's path


def _nvml() -> ctypes.CDLL | None:
    """The initialised NVML library, or None where there is no NVIDIA driver."""
    try:
        lib = ctypes.CDLL(os.environ.get(NVML_LIBRARY) or "libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        return lib if lib.nvmlInit_v2() == 0 else None
    except AttributeError:
        return None


_PHYSICAL: list[tuple[Gpu, ...]] = []  # read once per process (a failed read is not kept: it is tried again)


def physical_gpus() -> tuple[Gpu, ...]:
    """Every CUDA GPU of this machine, by NVML index (ignoring ``CUDA_VISIBLE_DEVICES``); () without a driver, or
    where the installed torch has no CUDA (a CPU build cannot use them, whatever NVML sees: vLLM's CPU build
    runs on such a machine too). NVML answers in milliseconds; the set does not change under a run."""
    if _PHYSICAL:
        return _PHYSICAL[0]
    if not cuda_build():
        return ()
    lib = _nvml()
    if lib is None:
        return ()
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return ()
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                raise DeviceError(f"NVML lists {count.value} GPUs but cannot open GPU {i}: check `nvidia-smi`")
            name, uuid = ctypes.create_string_buffer(96), ctypes.create_string_buffer(96)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            if (lib.nvmlDeviceGetName(handle, name, 96) or lib.nvmlDeviceGetUUID(handle, uuid, 96)
                    or lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor))):
                raise DeviceError(f"NVML cannot describe GPU {i} (name, UUID, compute capability): check "
                                  f"`nvidia-smi`; synth names outputs after what the GPUs can run")
            gpus.append(Gpu(str(i), name.value.decode(errors="replace"), (major.value, minor.value),
                            uuid.value.decode(errors="replace")))
        _PHYSICAL.append(tuple(gpus))
        return _PHYSICAL[0]
    finally:
        lib.nvmlShutdown()


def forget_gpus() -> None:
    """Read the GPUs again on the next call (after the environment that describes them changed: tests)."""
    _PHYSICAL.clear()


@cache
def cuda_build() -> bool:
    """Whether the installed torch is built for CUDA: ``torch.version`` says so without initialising anything."""
    try:
        import torch
    except ImportError:
        return False
    return getattr(torch.version, "cuda", None) is not None


def local_gpus(env: str | None = None) -> list[Gpu]:
    """The GPUs this process may use: ``physical_gpus`` filtered and ordered by ``CUDA_VISIBLE_DEVICES`` (``env``,
    default the variable's value) as CUDA does: indices or UUID prefixes, up to the first entry that names none
    or names one twice. A MIG slice (``MIG-…``) is a GPU of its own to CUDA; NVML lists its parent, and every GPU
    that has MIG is an Ampere or newer (compute capability ≥ 8.0, so bf16)."""
    physical = physical_gpus()
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if env is None:
        return list(physical)
    out: list[Gpu] = []
    for entry in (e.strip() for e in env.split(",")):
        if entry.startswith("MIG-") and physical:
            out.append(Gpu(entry, "MIG slice", (8, 0), entry))
            continue
        match = [g for g in physical if entry and ((entry.isdigit() and int(entry) == int(g.id))
                                                   or (not entry.isdigit() and g.uuid.startswith(entry)))]
        if not match or match[0].uuid in {g.uuid for g in out}:
            break  # CUDA stops at the first entry it cannot use
        out.append(Gpu(entry, match[0].name, match[0].capability, match[0].uuid))
    return out


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as the ids ``CUDA_VISIBLE_DEVICES`` gives them (0, 1… when it is unset)."""
    return [g.id for g in local_gpus()]


def describe(ids: list[str]) -> list[Gpu]:
    """The GPUs a copy pinned to ``ids`` (``CUDA_VISIBLE_DEVICES=<ids>``, ids as ``visible_gpus`` gives them) will
    see: exactly what ``local_gpus`` answers inside that copy (an id NVML does not know is no GPU there either)."""
    return local_gpus(",".join(ids)) if ids else []


# ------------------------------------------------------------------------------------------------ placement


def assign(replicas: int | str = "auto", tensor_parallel: int = 1, gpus: list[str] | None = None) -> list[list[str]]:
    """The GPUs of each copy: ``replicas`` groups of ``tensor_parallel`` visible GPUs (``auto``: as many groups as
    fit, at least one). No GPUs visible: one copy per replica with none (it runs on the CPU), which only a copy of
    one device can do: a tensor-parallel group without GPUs is an error, not a CPU copy that still asks for TP."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    tp = int(tensor_parallel)
    if tp < 1:
        raise DeviceError(f"tensor_parallel must be >= 1, not {tensor_parallel}")
    if not gpus:
        if tp > 1:
            raise DeviceError(f"tensor_parallel {tp} needs {tp} GPUs per copy; no GPU is visible here "
                              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        return [[] for _ in range(1 if replicas == "auto" else int(replicas))]
    fit = len(gpus) // tp
    if fit == 0:
        raise DeviceError(f"tensor_parallel {tp} needs {tp} GPUs; {len(gpus)} visible ({','.join(gpus)})")
    n = fit if replicas == "auto" else int(replicas)
    if n < 1 or n > fit:
        raise DeviceError(f"{n} replicas of {tp} GPU(s) need {n * tp} GPUs; {len(gpus)} visible "
                          f"({','.join(gpus)}): use at most {fit}")
    return [gpus[i * tp:(i + 1) * tp] for i in range(n)]


def local_groups(placement: Placement) -> list[list[str]]:
    """The GPUs of each copy this machine runs for ``placement``: copies that need no GPU get none. GPUs named
    in ``placement.gpus`` must be among those this process may use (``CUDA_VISIBLE_DEVICES`` included)."""
    if placement.per_copy == 0:
        return [[] for _ in range(1 if placement.replicas == "auto" else int(placement.replicas))]
    visible = visible_gpus()
    if placement.gpus is not None:
        unknown = [g for g in placement.gpus if g not in visible]
        if unknown:
            raise DeviceError(f"--gpus {','.join(placement.gpus)}: {','.join(unknown)} "
                              f"{'is' if len(unknown) == 1 else 'are'} not among the GPUs this process may use "
                              f"({','.join(visible) or 'none'}; CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    gpus = list(placement.gpus) if placement.gpus is not None else visible
    replicas = placement.replicas
    if placement.upto and replicas != "auto" and gpus:
        replicas = max(1, min(int(replicas), len(gpus) // placement.per_copy))
    return assign(replicas, placement.per_copy, gpus)


def parse_gpus(gpus: str | None) -> tuple[str, ...] | None:
    """``"0,1"`` → ("0", "1"); None or empty → None (every visible GPU)."""
    ids = tuple(g.strip() for g in str(gpus).split(",") if g.strip()) if gpus else ()
    return ids or None
