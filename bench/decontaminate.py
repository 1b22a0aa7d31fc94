"""Speed of decontamination (``synth.stages.decontaminate``): fragments against evaluation items by word 8-grams.

Synthetic text: words drawn from a Zipf-like vocabulary of 200k words (as real text repeats its words), fragments
of 20-80 words, evaluation items of 20-60 words. 1% of the fragments are planted copies of an evaluation item
(inside other words), and the bench checks that every planted one, and nothing else, is found. It times the
evaluation index (hashing every item's n-grams, sorted unique uint64) and the check of the fragments, in
batches of 10,000 as the stage gets them from the runner, on one core. Peak RSS is the process's high-water mark.

    .venv/bin/python bench/decontaminate.py [--fragments 1000000] [--eval 100000] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py is named like the standard library's select module: take this folder off the path first.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from synth.stages.decontaminate import EvalIndex  # noqa: E402

BATCH = 10_000


def vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(n)])


def texts(count: int, lo: int, hi: int, vocab: np.ndarray, rng: np.random.Generator) -> list[str]:
    weights = 1 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    lengths = rng.integers(lo, hi + 1, count)
    words = vocab[rng.choice(len(vocab), lengths.sum(), p=weights)]
    bounds = np.r_[0, np.cumsum(lengths)]
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fragments", type=int, default=1_000_000)
    ap.add_argument("--eval", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    vocab = vocabulary(200_000, rng)
    items = texts(args.eval, 20, 60, vocab, rng)
    frags = texts(args.fragments, 20, 80, vocab, rng)
    planted = rng.choice(args.fragments, args.fragments // 100, replace=False)
    for i in planted.tolist():
        frags[i] = f"{frags[i][:80]} {items[int(rng.integers(args.eval))]} {frags[i][-80:]}"
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = EvalIndex(items)
    known = index.hashes(args.n, False)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = np.zeros(args.fragments, dtype=bool)
    for a in range(0, args.fragments, BATCH):
        found[a:a + BATCH] = index.overlap(frags[a:a + BATCH], args.n, False) >= args.threshold
    t_check = time.perf_counter() - t0
    want = np.zeros(args.fragments, dtype=bool)
    want[planted] = True
    result = {
        "fragments": args.fragments, "eval_items": args.eval, "n": args.n, "threshold": args.threshold,
        "eval_ngrams": int(len(known)), "index_s": round(t_index, 1), "check_s": round(t_check, 1),
        "fragments_per_s": round(args.fragments / t_check), "planted": int(want.sum()),
        "found_planted": int((found & want).sum()), "false_positives": int((found & ~want).sum()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "data_generation_s": round(t_gen, 1), "load_average": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
