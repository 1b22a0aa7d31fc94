"""Seq2seq machine translation through transformers: NLLB-200, M2M100, MADLAD-400 and Marian (opus-mt).

Each family names languages its own way; ``Seq2SeqTranslator`` maps synth's ISO 639-3 codes (``swh``) to them
by looking the candidates up in the model's own vocabulary:

========  ===========================================  ============================================
family    language tokens                              how the target language is chosen
========  ===========================================  ============================================
nllb      ``swh_Latn``, ``eng_Latn`` (code + script)   ``tokenizer.src_lang`` + forced first token
m2m100    ``__sw__``, ``__en__`` (mostly ISO 639-1)    ``tokenizer.src_lang`` + forced first token
madlad    ``<2sw>``, ``<2en>``                         a ``<2xx>`` prefix on the source text
marian    none (one model per pair), or ``>>swh<<``    the model itself, or a ``>>xxx<<`` prefix
========  ===========================================  ============================================

A model is a local directory or a hub name, passed to ``from_pretrained`` unchanged (offline, a hub name that
is not in the local cache fails with transformers' own error). Text longer than ``max_input_tokens`` is split
at paragraph and sentence boundaries, the pieces are translated in length-sorted batches and joined again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import langcodes

from synth.devices import visible_gpus
from synth.errors import SynthError
from synth.identity import identity
from synth.lang import script, spellings
from synth.text import join_pieces, split_text

FAMILIES = ("nllb", "m2m100", "madlad", "marian")


class MTError(SynthError, RuntimeError):
    """A seq2seq model that cannot be used as asked (unknown family, a language it lacks…)."""


# ---------------------------------------------------------------------------------------------- languages

def code_candidates(lang: str) -> list[str]:
    """Codes a model may use for ``lang``, most specific first: ``swh`` → ``["swh", "swa", "sw"]``.

    ``synth.lang.spellings``, with the two-letter code langcodes gives each of them ahead of the rest, so that
    a language a model lacks can fall back to its macrolanguage's token (``swc`` → ``sw``).
    """
    codes = spellings(lang)
    short = []
    for c in codes:
        try:
            found = langcodes.Language.get(c).language
        except (LookupError, ValueError):
            continue
        if found and len(found) == 2:
            short.append(found)
    first_short = next((i for i, c in enumerate(codes) if len(c) == 2), len(codes))
    return list(dict.fromkeys([*codes[:first_short], *short, *codes[first_short:]]))


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class MTOutput:
    text: str
    finish_reason: str  # "stop", or "length" when a piece hit max_new_tokens or its input was cut
    input_tokens: int = 0
    output_tokens: int = 0
    latency: float = 0.0


def detect_family(model_type: str, tokenizer: Any, name: str = "") -> str:
    """Which naming scheme a loaded model uses, from its config type and tokenizer."""
    vocab = {**tokenizer.get_vocab(), **getattr(tokenizer, "lang_token_to_id", {})}
    if model_type == "marian":
        return "marian"
    if model_type == "m2m_100":
        if "Nllb" in type(tokenizer).__name__ or "eng_Latn" in vocab:
            return "nllb"
        return "m2m100"
    if model_type in ("t5", "mt5", "umt5") and ("<2en>" in vocab or "madlad" in name.lower()):
        return "madlad"
    raise MTError(f"{name or 'model'}: model type {model_type!r} with {type(tokenizer).__name__} is not a "
                  f"supported translation family ({', '.join(FAMILIES)}); give family= if it is one of them")


def lang_token(family: str, vocab: dict[str, int], lang: str, model: str = "model") -> str | None:
    """The code a model of ``family`` uses for ``lang``, found in its vocabulary: ``swh_Latn`` (nllb), ``sw``
    (m2m100, whose tokens are ``__sw__``), ``<2sw>`` (madlad), ``>>swh<<`` (a multi-target Marian model) or
    None (a Marian pair model, whose languages are fixed). MTError when the model lacks the language."""
    cands = code_candidates(lang)
    tried: list[str] = []
    if family == "nllb":
        written = script(lang)
        for c in cands:
            options = [f"{c}_{written}"] if written else sorted(
                t for t in vocab if t.startswith(f"{c}_") and len(t) == len(c) + 5)
            tried += options or [f"{c}_<script>"]
            for tok in options:
                if tok in vocab:
                    return tok
    elif family == "m2m100":
        for c in sorted(cands, key=len):
            tried.append(f"__{c}__")
            if f"__{c}__" in vocab:
                return c
    elif family == "madlad":
        for c in sorted(cands, key=len):
            tried.append(f"<2{c}>")
            if f"<2{c}>" in vocab:
                return f"<2{c}>"
    elif family == "marian":
        if not any(t.startswith(">>") and t.endswith("<<") for t in vocab):
            return None
        for c in cands:
            tried.append(f">>{c}<<")
            if f">>{c}<<" in vocab:
                return f">>{c}<<"
    else:
        raise MTError(f"unknown MT family {family!r}: choose one of {', '.join(FAMILIES)}")
    raise MTError(f"{model} ({family}) has no language token for {lang!r} (tried {', '.join(tried)})")


class Seq2SeqTranslator:
    """A seq2seq translation model; ``translate(texts, src, tgt)`` in length-sorted batches."""

    def __init__(self, model: str, revision: str | None = None, family: str | None = None,
                 device: str | None = None, dtype: str = "auto", batch_size: int = 16,
                 max_input_tokens: int = 200, max_new_tokens: int | None = None, num_beams: int = 1) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if family is not None and family not in FAMILIES:
            raise MTError(f"unknown MT family {family!r}: choose one of {', '.join(FAMILIES)}")
        self.name = model
        self.model_key = identity(model, revision)
        kw = {"revision": revision} if revision else {}
        # Hub names go to transformers unchanged. Its errors (offline and not cached, no such model) do not
        # always say which model; the message gets the name, the original stays chained.
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **kw)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model, dtype=torch_dtype, **kw)
        except OSError as e:
            raise OSError(f"transformers could not load MT model {model!r}: {e}") from e
        self.device = device or ("cuda" if visible_gpus() else "cpu")  # NVML's count: CUDA not touched to decide
        self.model.to(self.device).eval()
        self.family = family or detect_family(self.model.config.model_type, self.tokenizer, model)
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self._vocab = {**self.tokenizer.get_vocab(), **getattr(self.tokenizer, "lang_token_to_id", {})}

    # --------------------------------------------------------------------------------- language codes

    def lang_code(self, lang: str) -> str | None:
        """The model's code for ``lang`` (see ``lang_token``)."""
        return lang_token(self.family, self._vocab, lang, self.name)

    def _prepare(self, src: str, tgt: str) -> tuple[str, dict[str, Any]]:
        """The prefix to put before each source text and the extra ``generate`` arguments for a direction."""
        tgt_code = self.lang_code(tgt)
        if self.family in ("nllb", "m2m100"):
            self.tokenizer.src_lang = self.lang_code(src)
            tok = tgt_code if self.family == "nllb" else f"__{tgt_code}__"
            return "", {"forced_bos_token_id": self.tokenizer.convert_tokens_to_ids(tok)}
        if tgt_code is None:  # a Marian pair model: its direction is the model itself
            return "", {}
        return tgt_code + " ", {}

    def generate_kwargs(self, src: str, tgt: str) -> dict[str, Any]:
        """What ``generate`` gets besides the inputs for this direction (for inspection and tests)."""
        return self._prepare(src, tgt)[1]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --------------------------------------------------------------------------------- translation

    def translate(self, texts: list[str], src: str, tgt: str) -> list[MTOutput]:
        """Translate each text from ``src`` to ``tgt`` (ISO codes); long texts are split, translated, joined."""
        prefix, gen_kwargs = self._prepare(src, tgt)
        split = [split_text(t, self.max_input_tokens, self.count_tokens) for t in texts]
        flat = [(i, k, piece) for i, (pieces, _) in enumerate(split) for k, piece in enumerate(pieces)]
        done: dict[tuple[int, int], tuple[str, str, int, int]] = {}
        order = sorted(range(len(flat)), key=lambda j: len(flat[j][2]))
        t0 = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            batch = [flat[j] for j in order[start : start + self.batch_size]]
            for (i, k, _), out in zip(batch, self._generate([prefix + p for _, _, p in batch], gen_kwargs),
                                      strict=True):
                done[(i, k)] = out
        results = []
        for i, (pieces, seps) in enumerate(split):
            outs = [done[(i, k)] for k in range(len(pieces))]
            results.append(MTOutput(
                text=join_pieces([o[0] for o in outs], seps),
                finish_reason="length" if any(o[1] == "length" for o in outs) else "stop",
                input_tokens=sum(o[2] for o in outs), output_tokens=sum(o[3] for o in outs),
                latency=time.perf_counter() - t0))
        return results

    def _generate(self, inputs: list[str], gen_kwargs: dict[str, Any]) -> list[tuple[str, str, int, int]]:
        """(text, finish reason, input tokens, output tokens) per input."""
        import torch

        full = self.tokenizer(inputs, padding=True, truncation=False, return_tensors="pt")
        cut = [int(n) > self.max_input_tokens + 2 for n in full["attention_mask"].sum(dim=1)]
        enc = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_input_tokens + 2,
                             return_tensors="pt").to(self.device)
        n_in = int(enc["attention_mask"].sum(dim=1).max())
        limit = self.max_new_tokens or min(1024, 2 * n_in + 16)
        with torch.inference_mode():
            # No forced </s> at the limit (Marian configs ask for one): a cut-off output must look cut off.
            out = self.model.generate(**enc, max_new_tokens=limit, num_beams=self.num_beams, do_sample=False,
                                      forced_eos_token_id=None, **gen_kwargs)
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        pad = self.tokenizer.pad_token_id
        start = 1 if self.model.config.decoder_start_token_id is not None else 0
        results = []
        for row, seq in enumerate(out.tolist()):
            gen = seq[start:]
            stopped = any(t in eos for t in gen)
            n_out = next((j for j, t in enumerate(gen) if t in eos), len(gen))
            n_out = len([t for t in gen[:n_out] if t != pad])
            text = self.tokenizer.decode(gen, skip_special_tokens=True).strip()
            reason = "length" if cut[row] or not stopped else "stop"
            results.append((text, reason, int(enc["attention_mask"][row].sum()), n_out))
        return results

    def close(self) -> None:
        self.model = None
