"""How long `synth --help` takes: this checkout against another (``--tree``, say a ``git worktree`` of an older
commit), in fresh processes, alternated, medians; and which libraries each loads. A command line that loads a
model library to print its help costs every user seconds on every call.

    .venv/bin/python bench/cli_start.py [--tree PATH] [--runs 7]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not bench/: its select.py is a stdlib module's name

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

HEAVY = ("torch", "transformers", "vllm", "sentence_transformers", "faiss", "ray", "datasketch", "lm_eval", "pandas")
CODE = ("import sys, json; sys.path.insert(0, sys.argv[1]); from typer.testing import CliRunner; "
        "from synth.cli import app; assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", help="another synth checkout to compare with")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    trees = {"this": str(Path(__file__).resolve().parent.parent), **({"other": args.tree} if args.tree else {})}
    times: dict[str, list[float]] = {k: [] for k in trees}
    loaded: dict[str, list[str]] = {}
    for _ in range(args.runs):
        for name, tree in trees.items():
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CODE, tree], capture_output=True, text=True, check=True)
            times[name].append(time.perf_counter() - t0)
            loaded[name] = json.loads(out.stdout)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| tree | median s | runs (s) | libraries loaded |\n|---|---:|---|---|")
    for name, tree in trees.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} ({tree}) | {statistics.median(times[name]):.2f} | {runs} | {', '.join(loaded[name]) or '-'} |")


if __name__ == "__main__":
    main()
