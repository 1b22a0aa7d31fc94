"""Learned translation quality estimation (QE): a model that scores a translation against its source alone.

Stage 5 uses it as an optional fidelity check (``Backtranslate.qe_model``, the gate's ``qe_threshold``). Two
kinds of model, named by a local directory (offline) or a hub name:

``metricx``
    MetricX-24 hybrid in QE mode (google/metricx-24-hybrid-*; Apache-2.0): an mT5 encoder-decoder trained as a
    regression. Its input is ``"source: <source> candidate: <translation>"`` (no reference), tokenized without
    the end-of-sequence token; the decoder runs one step from token 0 and the score is that step's logit at one
    fixed vocabulary id (``METRICX_SCORE_ID``), clipped to [0, 25]: an MQM-like error count, **lower is
    better**. The checkpoints load as transformers' ``MT5ForConditionalGeneration`` (same weights as MetricX's
    own regression class) and ship no tokenizer: give the mT5 one (``tokenizer="google/mt5-xl"``).
CometKiwi (Unbabel's, licensed for non-commercial use) is not run in process: its package, ``unbabel-comet``
2.2, pins numpy < 2, transformers < 5 and huggingface-hub < 1, which synth's stack has outgrown; a COMET
checkpoint given here is refused with that reason (score it in an environment of its own). The gate reads each
row's direction (``bt_qe_higher_is_better``), so a higher-is-better kind needs no change there.

``kind="auto"`` recognises a MetricX model by its files (an mT5 ``config.json``) or, for a hub name, by its
name. The scorer runs on the process's first GPU (``cuda:0``) when ``local_gpus()``
says it has one, else on the CPU, in float32, batched by length. A pair with an empty side scores None.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synth.devices import local_gpus
from synth.errors import SynthError
from synth.identity import identity

KINDS = ("metricx",)
HIGHER_IS_BETTER = {"metricx": False}
METRICX_SCORE_ID = 250089  # the vocabulary id whose first-step logit is MetricX's score (an <extra_id_…> token)
METRICX_RANGE = (0.0, 25.0)
METRICX_MAX_INPUT_TOKENS = 1536  # as MetricX-24 was trained and is run
METRICX_DECODER_START = 0  # MetricX feeds the decoder this one token (mT5's pad, which is also its start token)
COMET_REFUSED = ("CometKiwi is not run inside synth: its package, unbabel-comet, pins numpy < 2, transformers < 5 "
                 "and huggingface-hub < 1, older than synth needs; score with it in an environment of its own, or "
                 "use MetricX-24 (google/metricx-24-hybrid-*, Apache-2.0) here")


class QEError(SynthError, ValueError):
    """A QE model that cannot be used as asked (unknown kind, missing package, too small a vocabulary…)."""


def detect_kind(model: str) -> str:
    """``metricx`` from a model's files (a local path) or its name (a hub name); a COMET checkpoint is refused."""
    path = Path(model)
    comet = (path.is_file() and path.suffix == ".ckpt") or (path.is_dir() and (
        (path / "checkpoints" / "model.ckpt").exists() or (path / "hparams.yaml").exists()))
    if comet or (not path.exists() and "comet" in model.lower()):
        raise QEError(f"QE model {model}: {COMET_REFUSED}")
    if path.is_dir():
        config = path / "config.json"
        if config.exists():
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
            if model_type in ("mt5", "t5", "umt5"):
                return "metricx"
            raise QEError(f"QE model {model}: model_type {model_type!r} is not a MetricX (mT5) model")
    if "metricx" in model.lower():
        return "metricx"
    raise QEError(f"cannot tell which kind of QE model {model!r} is (a MetricX mT5 directory, or a hub name "
                  f"containing metricx): set the QE kind to one of {', '.join(KINDS)}")


class QEScorer:
    """A QE model, loaded on first use (``load``); ``score(pairs)`` gives one float (or None) per
    ``(source, translation)`` pair. Constructing it is cheap, so a stage's fingerprint can ask for its
    ``identity`` without loading anything."""

    def __init__(self, model: str, kind: str = "auto", tokenizer: str | None = None, revision: str | None = None,
                 batch_size: int = 16, max_input_tokens: int = METRICX_MAX_INPUT_TOKENS,
                 device: str | None = None) -> None:
        if kind not in ("auto", *KINDS):
            raise QEError(f"QE kind must be auto or one of {', '.join(KINDS)}, not {kind!r}")
        self.model_name = str(model)
        self.kind = detect_kind(self.model_name) if kind == "auto" else kind
        if batch_size < 1:
            raise QEError(f"QE batch size must be >= 1, not {batch_size}")
        self.tokenizer_name = tokenizer
        self.revision = revision
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger score means a better translation (False for MetricX: an error score)."""
        return HIGHER_IS_BETTER[self.kind]

    def identity(self) -> dict[str, Any]:
        """What names its scores in a fingerprint: the kind, the model (and tokenizer) by content, and what
        shapes the input."""
        return {"kind": self.kind, "model": identity(self.model_name, self.revision),
                "tokenizer": identity(self.tokenizer_name) if self.tokenizer_name else None,
                "max_input_tokens": self.max_input_tokens, "score_id": METRICX_SCORE_ID}

    def _device(self) -> str:
        return self.device or ("cuda:0" if local_gpus() else "cpu")  # NVML: CUDA is touched only to load

    # ------------------------------------------------------------------------------------------ loading

    def load(self) -> QEScorer:
        """Load the model (and tokenizer) onto the device; a second call does nothing."""
        if self._model is None:
            self._load_metricx()
        return self

    def _load_metricx(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        kw = {"revision": self.revision} if self.revision else {}
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, **kw)
        except OSError as e:
            raise QEError(f"transformers could not load QE model {self.model_name!r}: {e}") from e
        if model.config.vocab_size <= METRICX_SCORE_ID:
            raise QEError(f"QE model {self.model_name!r} has {model.config.vocab_size} vocabulary entries; a MetricX "
                          f"model scores at id {METRICX_SCORE_ID}")
        source = self.tokenizer_name or self.model_name
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **({} if self.tokenizer_name else kw))
        except (OSError, ValueError) as e:
            raise QEError(f"no tokenizer for QE model {self.model_name!r} at {source!r} ({e}); MetricX checkpoints "
                          f"ship none: set the QE tokenizer to google/mt5-xl (or a local copy of it)") from e
        tokenizer.padding_side = "right"
        self._tokenizer = tokenizer
        self._model = model.to(self._device()).eval()

    def close(self) -> None:
        self._model = self._tokenizer = None

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, pairs: Sequence[tuple[str | None, str | None]]) -> list[float | None]:
        """One score per ``(source, translation)`` pair; None where either side is empty."""
        out: list[float | None] = [None] * len(pairs)
        todo = [i for i, (src, mt) in enumerate(pairs) if src and src.strip() and mt and mt.strip()]
        if not todo:
            return out
        self.load()
        given = [(pairs[i][0] or "", pairs[i][1] or "") for i in todo]
        scores = self._metricx(given)
        for i, s in zip(todo, scores, strict=True):
            out[i] = float(s)
        return out

    @staticmethod
    def metricx_input(source: str, translation: str) -> str:
        """MetricX's QE input text for one pair."""
        return f"source: {source} candidate: {translation}"

    def _metricx(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        texts = [self.metricx_input(s, t) for s, t in pairs]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # alike lengths share a batch: less padding
        scores: list[float] = [0.0] * len(texts)
        device = self._model.device
        lo, hi = METRICX_RANGE
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            # MetricX tokenizes with </s>, truncates to max_input_tokens, then drops the last token: the same
            # tokens as no special tokens, truncated one shorter.
            enc = self._tokenizer([texts[i] for i in idx], add_special_tokens=False, truncation=True,
                                  max_length=self.max_input_tokens - 1, padding=True, return_tensors="pt")
            start_ids = torch.full((len(idx), 1), METRICX_DECODER_START, dtype=torch.long)
            with torch.inference_mode():
                logits = self._model(input_ids=enc["input_ids"].to(device),
                                     attention_mask=enc["attention_mask"].to(device),
                                     decoder_input_ids=start_ids.to(device)).logits
                batch = logits[:, 0, METRICX_SCORE_ID].float().clamp(lo, hi).tolist()
            for i, s in zip(idx, batch, strict=True):
                scores[i] = s
        return scores
