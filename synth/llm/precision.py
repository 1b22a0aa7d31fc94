"""The floating-point precision an engine really runs, decided before anything is named after it.

``dtype="auto"`` means different things on different machines: vLLM's CPU build picks bfloat16 where the CPU
has ``avx512_bf16`` and float32 elsewhere, and a 135M model in bfloat16 answers garbage ("What is the capital
of France?" → "L'Étoile, la Marseillaise…"). Naming outputs and cache entries after "auto" would let two
machines produce different rows under one name. So every engine resolves the dtype here, runs exactly that
(it is passed to vLLM or transformers explicitly, and checked after loading), and the resolved name goes into
the stage fingerprint and the request-cache key.

The rule: an explicit dtype wins. Otherwise, on a CPU, float32 (bf16 on a CPU is slower than float32 for
small models and degrades them; see ``bench/dtype.py``); on a GPU, the model's own dtype, except that vLLM
runs a float32 checkpoint in bfloat16 (float16 on GPUs without bfloat16), as vLLM itself does. An
OpenAI-compatible server does not report its precision: it is what the user declares (``dtype=…``), else
``unknown``. Each engine class carries its rule (``Engine.resolve_dtype``); whether a GPU has bfloat16 is
read through NVML (``synth.devices.Gpu.bf16``), never by initialising CUDA, and where the copy runs (its
executor asks there: ``synth.kernel.Stage.facts``).
"""

from __future__ import annotations

import json
from pathlib import Path

from synth.errors import SynthError

CPU_DEFAULT = "float32"
UNKNOWN = "unknown"
_ALIASES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float": "float32",
            "bfloat16": "bfloat16", "bf16": "bfloat16",
            "float16": "float16", "fp16": "float16", "half": "float16"}


class DtypeError(SynthError, ValueError):
    """A dtype that no engine knows, or one that cannot be resolved for this model and machine."""


def canonical_dtype(dtype: str | None) -> str:
    """``bf16`` → ``bfloat16`` and so on; ``None`` → ``auto``."""
    if dtype is None:
        return "auto"
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _ALIASES:
        raise DtypeError(f"unknown dtype {dtype!r}: choose one of auto, float32, bfloat16, float16")
    return _ALIASES[name]


def model_dtype(model_path: str | None) -> str:
    """The dtype a checkpoint declares in its ``config.json`` (float32 when it declares none, as transformers
    assumes). A hub name that is not on this machine is read through transformers' cache."""
    if model_path is None:
        raise DtypeError("no model to resolve the dtype of: pass dtype=float32, bfloat16 or float16")
    config_file = Path(model_path) / "config.json"
    try:
        if config_file.is_file():
            config = json.loads(config_file.read_text())
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model_path).to_dict()
    except Exception as e:  # offline with an unknown hub name, a broken config…
        raise DtypeError(f"cannot read the config of {model_path} to resolve dtype=auto ({type(e).__name__}): "
                         f"pass the dtype explicitly, e.g. --engine-opt dtype=bfloat16") from e
    declared = config.get("dtype") or config.get("torch_dtype") or "float32"
    return canonical_dtype(str(declared))


def torch_dtype_name(dtype: object) -> str:
    """``torch.bfloat16`` → ``bfloat16``: how an engine reports what it loaded, to check against the plan."""
    return canonical_dtype(str(dtype))


def check_loaded(engine: str, resolved: str, loaded: object) -> None:
    """Fail loudly if the engine loaded another precision than the one its outputs are named after."""
    if torch_dtype_name(loaded) != resolved:
        raise DtypeError(f"{engine} loaded the model in {loaded}, not the resolved {resolved}: its outputs would "
                         f"be named after the wrong precision")
