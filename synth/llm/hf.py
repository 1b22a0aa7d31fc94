"""transformers engine: batched generation on CPU or GPU, for small models and for machines without vLLM.

Requests are grouped by sampling parameters and structured-output constraint, sorted by prompt length and
batched with left padding. JSON-schema and regex constraints are enforced while decoding with xgrammar (the
grammar engine vLLM uses), so the output parses.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from synth.devices import Gpu, local_gpus
from synth.identity import identity as model_identity
from synth.llm.base import Engine, EngineOptionError
from synth.llm.precision import check_loaded
from synth.llm.request import Request, Result, finish, options_key
from synth.models import quiet_transformers, resolve_model


def _gpus_for(device: str | None) -> list[Gpu]:
    """The accelerator a copy on ``device`` runs on: none for the CPU, this process's first GPU for
    ``auto``/None, and one of unknown kind for an explicit ``cuda…`` or ``mps`` (NVML is not asked to contradict
    the user; the checkpoint's dtype is the rule on any accelerator)."""
    if device is None or device == "auto":
        return local_gpus()[:1]
    if device.startswith("cuda"):
        return local_gpus()[:1] or [Gpu(device)]
    return [Gpu(device)] if device.startswith("mps") else []


class HFEngine(Engine):
    name = "hf"

    @classmethod
    def devices_per_copy(cls, options: dict[str, Any]) -> int:
        """One GPU, unless the options pin the copy to the CPU (or Apple's MPS, which is not CUDA). A stage's
        copy sees only its own GPU, as ``cuda:0``: ``device="cuda:N"`` would name a GPU it does not have."""
        device = str(options.get("device") or "auto")
        if device.startswith("cuda:") and device != "cuda:0":
            raise EngineOptionError(f"device={device}: each engine copy sees only its own GPUs (the first as "
                                    f"cuda:0); choose the GPU with --gpus {device.split(':')[1]} (or gpus = "
                                    f"\"{device.split(':')[1]}\" in the stage's section)")
        return 0 if device.startswith(("cpu", "mps")) else 1

    @classmethod
    def facts(cls, model_path: str | None, options: dict[str, Any], gpus: list[Gpu]) -> dict[str, Any]:
        device = options.get("device")
        return super().facts(model_path, options, gpus if device in (None, "auto") else _gpus_for(device))

    def __init__(self, model: str, revision: str | None = None, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 8, max_input_tokens: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        quiet_transformers()
        self.device = device if device not in (None, "auto") else ("cuda" if _gpus_for(device) else "cpu")
        self.model_key, self.dtype = self.key(model, revision, self.device, dtype, max_input_tokens)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        check_loaded("hf", self.dtype, self.model.dtype)
        self.max_input_tokens = max_input_tokens or getattr(self.model.config, "max_position_embeddings", 4096)
        self._grammars: dict[str, Any] = {}
        self._compiler: Any = None

    @staticmethod
    def key(model: str, revision: str | None = None, device: str | None = None, dtype: str = "auto",
            max_input_tokens: int | None = None, **options: Any) -> tuple[str, str]:
        """The cache key of this engine's answers and the dtype it runs, without loading the model. What changes
        answers is in the key: the weights, their precision (never "auto": see synth.llm.precision), and the
        options of ``OUTPUT_OPTIONS``, here the context window (a request over it fails as context_length, and
        that failure is cached)."""
        path = resolve_model(model)
        dtype = HFEngine.resolve_dtype(path, dtype, _gpus_for(device))
        options = {**options, "max_input_tokens": max_input_tokens}
        return f"{model_identity(path, revision)}:{dtype}{options_key(options)}", dtype

    def _render(self, request: Request) -> str:
        if request.prompt is not None:
            return request.prompt
        return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)

    def _grammar(self, request: Request) -> Any:
        """Compiled xgrammar grammar for the request's constraint (cached by constraint)."""
        if request.json_schema is None and request.regex is None:
            return None
        import xgrammar as xgr

        key = json.dumps(request.json_schema, sort_keys=True) if request.json_schema else f"re:{request.regex}"
        if key not in self._grammars:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            self._grammars[key] = (self._compiler.compile_json_schema(key) if request.json_schema
                                   else self._compiler.compile_regex(request.regex))
        return self._grammars[key]

    def generate(self, requests: list[Request]) -> list[Result]:
        results: dict[int, Result] = {}
        prompts = {}
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            try:
                prompts[i] = self._render(req)
            except Exception as e:  # a broken chat (roles out of order…) fails alone
                results[i] = Result.failed(req, f"bad_request:{type(e).__name__}")
                continue
            groups[json.dumps([req.payload()["sampling"], req.json_schema, req.regex], sort_keys=True)].append(i)
        for idx in groups.values():
            idx.sort(key=lambda i: len(prompts[i]))
            for start in range(0, len(idx), self.batch_size):
                batch = idx[start : start + self.batch_size]
                try:
                    out = self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch])
                except Exception:
                    # One request can break a whole batch (too long, a grammar edge case): retry alone.
                    out = [self._one(requests[i], prompts[i]) for i in batch]
                results.update(zip(batch, out, strict=True))
        return [results[i] for i in range(len(requests))]

    def _one(self, request: Request, prompt: str) -> Result:
        t0 = time.perf_counter()
        try:
            return self._generate_batch([request], [prompt])[0]
        except Exception as e:
            return Result.failed(request, f"engine_error:{type(e).__name__}", time.perf_counter() - t0)

    def _generate_batch(self, reqs: list[Request], prompts: list[str]) -> list[Result]:
        import torch

        t0 = time.perf_counter()
        s = reqs[0].sampling
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        if enc["input_ids"].shape[1] + s.max_tokens > self.max_input_tokens:
            if len(reqs) == 1:
                return [Result.failed(reqs[0], "context_length")]
            raise ValueError("batch exceeds the context window")
        enc = enc.to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                                  "repetition_penalty": s.repetition_penalty}
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        grammar = self._grammar(reqs[0])
        if grammar is not None:
            from xgrammar.contrib.hf import LogitsProcessor

            kwargs["logits_processor"] = [LogitsProcessor([grammar] * len(reqs))]
        if s.logprobs:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        seqs = out.sequences if s.logprobs else out
        new = seqs[:, enc["input_ids"].shape[1]:]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        results = []
        for row, req in enumerate(reqs):
            tokens = new[row].tolist()
            n_gen = len(tokens)
            for j, tok in enumerate(tokens):
                if tok in eos:
                    n_gen = j + 1
                    break
            stopped = n_gen < len(tokens) or (tokens and tokens[n_gen - 1] in eos)
            text = self.tokenizer.decode(tokens[:n_gen], skip_special_tokens=True)
            reason = "stop" if stopped else "length"
            for stop in s.stop:
                if stop in text:
                    text, reason = text[: text.index(stop)], "stop"
            logprobs = self._logprobs(out.scores, row, n_gen, s.logprobs) if s.logprobs else None
            prompt_tokens = int(enc["attention_mask"][row].sum())
            results.append(finish(req, text, reason, t0, prompt_tokens=prompt_tokens, completion_tokens=n_gen,
                                  logprobs=logprobs))
        return results

    def _logprobs(self, scores: Any, row: int, n: int, k: int) -> list[dict[str, float]]:
        import torch

        out = []
        for step in scores[:n]:
            lp = torch.log_softmax(step[row].float(), dim=-1)
            top = torch.topk(lp, k)
            out.append({self.tokenizer.decode([int(t)]): float(v) for v, t in zip(top.values, top.indices,
                                                                                   strict=True)})
        return out

    def causal_lm(self) -> tuple[Any, Any] | None:
        return (self.model, self.tokenizer) if self.model is not None else None

    def close(self) -> None:
        self.model = None


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
