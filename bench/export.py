"""Peak memory of the export as the final rows grow (not a test; prints a table).

For each row count, a final stage output of that many rows is written (shards of 50,000 rows with the columns
the last stage really has: ids, texts of a few hundred characters, scores, a 384-float embedding), then a fresh
process exports it in every format (Parquet, JSONL, Alpaca, ShareGPT) with ``synth.export.export`` (what
``synth export`` calls) and reports its peak RSS; another writes the run report from the exported dataset (what
``synth run`` does last). The goal: the same peak at 1M rows as at 100k (≤ 1.2×), for both.

    .venv/bin/python bench/export.py [--rows 100000,1000000] [--json out.json] [--dir /tmp/synth-bench-export]
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/export.py`, this folder comes first on sys.path, where a sibling (select.py) shadows the
# standard library's `select` that subprocess imports: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARD = 50_000
WORDS = np.array(["habari", "ya", "asubuhi", "leo", "tunajifunza", "kuhusu", "historia", "nchi", "na", "watu",
                  "wake", "wote", "pamoja"])

# This process's own peak (VmHWM): ru_maxrss would carry the parent's peak over the exec.
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

CHILD = PEAK + """
import json, sys, time
from pathlib import Path
from synth.export import ExportSettings, export
from synth.kernel import StageOutput
out = StageOutput.open(sys.argv[1])
t0 = time.perf_counter()
export(out, sys.argv[2], ExportSettings(formats=("parquet", "jsonl", "alpaca", "sharegpt")))
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rss_mb": peak_mb()}))
"""

REPORT_CHILD = PEAK + """
import json, sys, time
from pathlib import Path
from synth.report import write_report
Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
t0 = time.perf_counter()
write_report(sys.argv[2], final=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rss_mb": peak_mb()}))
"""


def texts(rng: np.random.Generator, n: int, words: int) -> pa.Array:
    picks = WORDS[rng.integers(0, len(WORDS), size=(n, words))]
    return pa.array([" ".join(row) for row in picks], pa.string())


def make_output(folder: Path, rows: int) -> Path:
    """A finished stage output (shards and manifest) of ``rows`` final rows."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, rows, SHARD)):
        n = min(SHARD, rows - start)
        emb = rng.standard_normal((n, 384), dtype=np.float32)
        table = pa.table({
            "id": pa.array([f"r{start + j:08d}" for j in range(n)]), "lang": pa.array(["swh"] * n),
            "fragment": texts(rng, n, 80), "instruction": texts(rng, n, 15), "instruction_en": texts(rng, n, 15),
            "response_en": texts(rng, n, 80), "quality": pa.array(rng.integers(1, 6, n).astype(np.float64)),
            "source": pa.array(["corpus.txt"] * n), "source_id": pa.array([str(j) for j in range(n)]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 384),
        })
        name = f"part-{i:05d}.parquet"
        pq.write_table(table, folder / name)
        shards.append({"file": name, "rows": n})
    (folder / "_manifest.json").write_text(json.dumps({"fingerprint": f"bench-{rows}", "rows": rows,
                                                       "shards": shards}))
    return folder


def label(rows: int) -> str:
    """1000000 → 1m, 100000 → 100k (the JSON keys)."""
    return f"{rows // 10**6}m" if rows % 10**6 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--dir", default="/tmp/synth-bench-export")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    base = Path(args.dir)
    results = []
    for rows in [int(x) for x in args.rows.split(",")]:
        t0 = time.perf_counter()
        out = make_output(base / f"in-{rows}", rows)
        made = time.perf_counter() - t0
        run = base / f"run-{rows}"
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(run)], cwd=REPO, check=True,
                              capture_output=True, text=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        # the run's report from the exported dataset, in a fresh process too (what `synth run` does last)
        rep = subprocess.run([sys.executable, "-c", REPORT_CHILD, str(run / "final"), str(base / f"report-{rows}")],
                             cwd=REPO, check=True, capture_output=True, text=True)
        rep = json.loads(rep.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in out.glob("*.parquet")) / 2**20
        results.append({"rows": rows, "input_mb": round(size), "rss_mb": round(res["rss_mb"], 1),
                        "seconds": round(res["seconds"], 1), "make_seconds": round(made, 1),
                        "report_rss_mb": round(rep["rss_mb"], 1), "report_seconds": round(rep["seconds"], 1)})
        shutil.rmtree(base / f"report-{rows}", ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"{'rows':>10} {'input MB':>9} {'peak RSS MB':>12} {'export s':>9} {'report RSS MB':>14} {'report s':>9}")
    for r in results:
        print(f"{r['rows']:>10,} {r['input_mb']:>9} {r['rss_mb']:>12} {r['seconds']:>9} {r['report_rss_mb']:>14} "
              f"{r['report_seconds']:>9}")
    out_json = {f"rss_{label(r['rows'])}_mb": r["rss_mb"] for r in results}
    out_json.update({f"report_rss_{label(r['rows'])}_mb": r["report_rss_mb"] for r in results})
    if len(results) > 1:
        out_json["ratio"] = round(results[-1]["rss_mb"] / results[0]["rss_mb"], 3)
        out_json["report_ratio"] = round(results[-1]["report_rss_mb"] / results[0]["report_rss_mb"], 3)
        print(f"peak RSS, largest / smallest: export {out_json['ratio']:.2f}×, report {out_json['report_ratio']:.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({**out_json, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
