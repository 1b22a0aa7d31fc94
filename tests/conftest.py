"""Pinned for every test, on any machine: one BLAS/OpenMP thread per process (float sums then add up in one
order, and the suite's worker processes do not fight over two cores). Greedy decoding and the dtype are pinned
by the tests themselves (``Sampling`` defaults to temperature 0; "auto" resolves to float32 on every CPU).
The ``requires`` marker applies tests/required.py's rule: a missing part skips locally and fails under CI."""

import os
import traceback

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*parts): parts the test needs (tests/required.py): a missing "
                                       "one skips it locally and fails it under CI=true")


def pytest_runtest_setup(item):
    from required import require

    for mark in item.iter_markers("requires"):
        require(*mark.args)


# ------------------------------------------------------------------ the GPU path on a machine without a GPU

CUDA_ENTRY_POINTS = ("is_available", "device_count", "is_bf16_supported", "init", "current_device", "set_device",
                     "get_device_properties", "get_device_name", "get_device_capability", "mem_get_info",
                     "synchronize", "_lazy_init")
H100 = "NVIDIA H100 80GB HBM3:9.0"
V100 = "Tesla V100-SXM2-16GB:7.0"


@pytest.fixture
def no_cuda(monkeypatch):
    """Every CUDA entry point of torch raises in this process, and is recorded with where it was called."""
    import torch

    touched: list[str] = []

    def trip(name: str):
        def tripped(*args, **kwargs):
            touched.append(f"torch.cuda.{name} from\n{''.join(traceback.format_stack(limit=8)[:-1])}")
            raise RuntimeError(f"the driver touched CUDA: torch.cuda.{name}")
        return tripped

    for name in CUDA_ENTRY_POINTS:
        monkeypatch.setattr(torch.cuda, name, trip(name))
    yield touched
    assert not touched, touched[0]


@pytest.fixture(scope="session")
def nvml_library(tmp_path_factory):
    from fake_nvml import build
    from required import require

    require("cc")
    return build(tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def fake_gpus(nvml_library, monkeypatch):
    """``fake_gpus("name:major.minor,…")``: the GPUs NVML describes from now on, here and in processes started
    from here, to this process as usable (its torch taken for a CUDA build; processes it starts see none)."""
    from synth import devices

    def use(spec: str) -> None:
        monkeypatch.setenv(devices.NVML_LIBRARY, str(nvml_library))
        monkeypatch.setenv("FAKE_NVML_GPUS", spec)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setattr(devices, "cuda_build", lambda: True)
        devices.forget_gpus()

    yield use
    devices.forget_gpus()  # the next reading sees the environment monkeypatch restores


