"""On a GPU machine: does synth see the GPUs as CUDA does, without touching CUDA, and pin each copy to its own?
(not a test; prints JSON, ``--json`` writes it; the first step of ``bench/gpu_check.py``).

1. NVML's view (``synth.devices``, ctypes, no CUDA): GPUs, names, compute capability, bf16.
2. A probe stage with one copy per GPU through the local executor: each copy, a process of its own, reports its
   ``CUDA_VISIBLE_DEVICES`` and what torch sees there (device count, name, capability).
3. Whether this process (the driver) initialised CUDA during 1 and 2 (``torch.cuda.is_initialized``, which does
   not initialise it): it must not have.
4. Only then torch's view in this process, to compare with NVML's: the same count, names, capabilities and
   bf16 support, and each copy seeing exactly one GPU.

It needs synth's core (pyarrow, rich) and torch, nothing else (no model, no vLLM), so it runs on a bare GPU image
with the repository alone. On a CPU it reports no GPU on both sides and one copy without one.

    python bench/gpu_devices.py [--json out.json]
"""

from __future__ import annotations

import os.path
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))  # bench/select.py would shadow the standard library's select
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.devices import Placement, local_groups, physical_gpus  # noqa: E402
from synth.kernel import Stage, TableSource  # noqa: E402
from synth.runner import run_stage  # noqa: E402
from synth.stats import ShardStats  # noqa: E402


@dataclass
class Probe(Stage):
    """One copy per GPU; every row records what its copy's process sees."""

    key = "01_probe"

    def placement(self) -> Placement:
        return Placement(per_copy=1)

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        import torch

        seen: dict[str, Any] = {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if torch.cuda.is_available():
            seen.update(count=torch.cuda.device_count(), name=torch.cuda.get_device_name(0),
                        capability=list(torch.cuda.get_device_capability(0)))
        else:
            seen.update(count=0)
        return batch.append_column("seen", pa.array([json.dumps(seen)] * batch.num_rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    import torch

    nvml = [asdict(g) | {"bf16": g.bf16} for g in physical_gpus()]
    groups = local_groups(Probe().placement())
    n = max(1, len(groups)) * 2
    with tempfile.TemporaryDirectory(prefix="gpu-devices-") as d:
        out = run_stage(Probe(), TableSource(pa.table({"id": [str(i) for i in range(n)], "lang": ["en"] * n}), 1),
                        d, progress=False)
        copies = sorted({s for s in out.read().column("seen").to_pylist()})
    copies_seen = [json.loads(s) for s in copies]
    driver_initialised = bool(torch.cuda.is_initialized())  # before this process asks torch anything
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    torch_view = [{"name": torch.cuda.get_device_name(i), "capability": list(torch.cuda.get_device_capability(i)),
                   "bf16": bool(torch.cuda.get_device_capability(i) >= (8, 0))} for i in range(count)]
    agree = len(nvml) == count and all(
        g["name"] == t["name"] and list(g["capability"]) == t["capability"] and g["bf16"] == t["bf16"]
        for g, t in zip(nvml, torch_view, strict=False))
    pinned = all(c["count"] == (1 if nvml else 0) for c in copies_seen) and (
        len({c["visible"] for c in copies_seen}) == len(groups))
    result = {"nvml": nvml, "torch": torch_view, "groups": groups, "copies": copies_seen,
              "driver_initialised_cuda": driver_initialised, "nvml_agrees_with_torch": agree,
              "copies_pinned": pinned, "ok": agree and pinned and not driver_initialised}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":  # the copies are spawned processes that import this file again
    main()
