"""Does the response answer the instruction? A relevance score with no LLM, and its calibrated threshold.

A swapped pair (an instruction written for another fragment, or one that drifted off its fragment) reads fine
on each side, so only a look at both catches it. The score is the cosine similarity of the English instruction
and response under the embedding model the run already loads for selection (``Embed`` writes it as the
``relevance`` column); with a cross-encoder or reranker (``relevance_model``) it is that model's probability
that the two match. Scoring and deciding are apart (as NeMo Curator splits them): the column is computed once,
and selection applies ``min_relevance``, whose ``auto`` value is the threshold measured for that exact model on
``bench/qc.py``'s labelled pairs (``synth/data/relevance.toml``, keyed by the model's content identity).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from synth.errors import SynthError

RELEVANCE = "relevance"
OFF_TOPIC = "off_topic"
AUTO = "auto"


class RelevanceError(SynthError, RuntimeError):
    """The relevance model cannot be loaded; the message names it."""


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two matrices (any float dtype; computed in float32)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def bi_encoder_scores(model: Any, instructions: list[str], responses: list[str], batch_size: int = 64,
                      instruction_vectors: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each instruction with its response under a sentence-transformers model (the instructions'
    vectors may be given: the embed stage has them already)."""
    if instruction_vectors is None:
        instruction_vectors = model.encode(instructions, batch_size=batch_size, convert_to_numpy=True,
                                           show_progress_bar=False)
    answers = model.encode(responses, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return cosine_rows(instruction_vectors, answers)


def cross_encoder_scores(model: Any, instructions: list[str], responses: list[str],
                         batch_size: int = 32) -> np.ndarray:
    """A cross-encoder's (or reranker's) match probability per pair: its logit through a sigmoid, so every
    model's score lies in [0, 1] (a model trained with a sigmoid head gives the same numbers it was trained on)."""
    logits = np.asarray(model.predict(list(zip(instructions, responses, strict=True)), batch_size=batch_size,
                                      convert_to_numpy=True, show_progress_bar=False, activation_fn=_identity()),
                        dtype=np.float64).reshape(len(instructions), -1)[:, -1]
    return 1.0 / (1.0 + np.exp(-logits))


def _identity() -> Any:
    import torch

    return torch.nn.Identity()


def load_cross_encoder(name_or_path: str, device: str = "cpu") -> Any:
    """A sentence-transformers CrossEncoder, offline for a local directory."""
    import os
    from pathlib import Path

    if Path(name_or_path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import CrossEncoder

        return CrossEncoder(name_or_path, device=device)
    except Exception as e:  # a bad path or an unreachable hub: say which model
        raise RelevanceError(f"cannot load relevance model {name_or_path!r} as a cross-encoder: "
                         f"{type(e).__name__}: {e}") from e


@cache
def calibration() -> dict[str, dict[str, Any]]:
    """The measured thresholds, by model identity (``synth/data/relevance.toml``)."""
    text = resources.files("synth").joinpath("data/relevance.toml").read_text(encoding="utf-8")
    return tomllib.loads(text).get("models", {})


def calibrated_threshold(model_identity: str | None) -> float | None:
    """The ``min_relevance`` measured for this model, or None when nobody measured it (the check stays off)."""
    entry = calibration().get(model_identity or "")
    return float(entry["min_relevance"]) if entry else None


def min_relevance_flag(text: str) -> float | str:
    """``--min-relevance``'s text, checked: a number, ``auto``, or ``off`` kept as the word (the settings read it
    as no check; a flag that gave None would read as not given, and the default would apply)."""
    value = parse_min_relevance(text)
    return "off" if value is None else value


def parse_min_relevance(text: str | float | None) -> float | str | None:
    """``auto`` (the measured threshold), ``off``/``none``, or a number (the CLI's and the config's spelling)."""
    if text is None or isinstance(text, float | int):
        return None if text is None else float(text)
    low = text.strip().lower()
    if low == AUTO:
        return AUTO
    if low in ("off", "none", ""):
        return None
    try:
        return float(low)
    except ValueError:
        raise ValueError(f"min_relevance: 'auto', 'off' or a number, not {text!r}") from None
