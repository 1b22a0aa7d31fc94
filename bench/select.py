"""Speed and memory of stage 4's selection (``synth.select``) and of the default embedding model.

* Greedy (DEITA) selection at cosine tau = 0.9 over 1M synthetic 384-d embeddings stored as float16: a Gaussian
  mixture of 3,000 clusters on the unit sphere (lognormal cluster sizes, a shared direction as real sentence
  embeddings have, per-cluster spread so that rows of one cluster sit at cosine ~0.55) with 5% planted
  near-duplicates (cosine 0.93-0.99 to an earlier row, chains included) and judge-like integer scores 1-5 (so
  most ranks are ties, broken by row). ``index="auto"`` takes the IVF cells at this size. Targets: < 2 min and
  < 4 GB peak RSS on the 2-core development machine.
* The same run at 50k rows three ways: ours (auto → IVF cells), ours with ``index="flat"`` (exact) and a naive
  exact numpy implementation (the lower triangle of X·Xᵀ in row blocks, every pair >= tau, then the same
  in-order acceptance), with the speed ratio and the overlap of the selected sets (Jaccard).
* Embedding throughput (sentences/s) of the packaged all-MiniLM-L6-v2 on this CPU over 2,000 real sentences
  (the UDHR paragraphs of examples/corpus/noise/udhr_english.txt, repeated), batch size 64.

Each measurement runs in a fresh subprocess, so its peak RSS (sampled every 20 ms, and the kernel's
high-water mark) is that run's alone; the embeddings are generated once per size and loaded from disk
(their 768 MB at 1M count in the peak). Times exclude data generation. Cheap cases report the median over
``--repeats``; the 1M and the naive runs go once unless ``--repeats-big`` says more. The machine's load average
is printed with the table: other work on a 2-core machine slows every number here.

    .venv/bin/python bench/select.py [--n 1000000] [--small 50000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``select`` module; as a script its folder comes first on the
# path and would shadow it (subprocess imports it), so take the folder off before importing anything else.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

UDHR = REPO / "examples" / "corpus" / "noise" / "udhr_english.txt"
RESULT_TAG = "@@RESULT "
TAU = 0.9


# --- data -----------------------------------------------------------------------------------------------------


def synthetic(n: int, d: int = 384, clusters: int = 3000, dup_frac: float = 0.05, seed: int = 0):
    """Float16 unit vectors (n, d) and integer scores 1-5, written chunk by chunk (no full float32 copy)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d).astype(np.float32)
    common /= np.linalg.norm(common)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers += 0.35 * common
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weight = rng.lognormal(0.0, 1.0, clusters)
    weight /= weight.sum()
    spread = (rng.uniform(0.7, 1.1, clusters) / np.sqrt(d)).astype(np.float32)
    n_dup = int(n * dup_frac)
    n_base = n - n_dup
    emb = np.empty((n, d), dtype=np.float16)  # generation order; shuffled positions below
    label = rng.choice(clusters, size=n_base, p=weight)
    for a in range(0, n_base, 65_536):
        lab = label[a:a + 65_536]
        x = centers[lab] + rng.standard_normal((len(lab), d), dtype=np.float32) * spread[lab, None]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        emb[a:a + len(lab)] = x
    source = rng.integers(0, n_base + np.arange(n_dup))  # a duplicate of any earlier row, duplicates included
    for a in range(0, n_dup, 65_536):
        src = source[a:a + 65_536]
        eps = (rng.uniform(0.08, 0.3, len(src)) / np.sqrt(d)).astype(np.float32)[:, None]
        x = emb[src].astype(np.float32) + rng.standard_normal((len(src), d), dtype=np.float32) * eps
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        emb[n_base + a:n_base + a + len(src)] = x
    perm = rng.permutation(n)
    out = np.empty_like(emb)
    for a in range(0, n, 65_536):
        out[a:a + 65_536] = emb[perm[a:a + 65_536]]
    del emb
    quality = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n, p=[0.05, 0.15, 0.3, 0.35, 0.15])
    return out, quality


def naive_greedy(emb: np.ndarray, quality: np.ndarray, tau: float, block: int = 2048) -> np.ndarray:
    """Exact greedy in plain numpy: all pairs >= tau from X·Xᵀ (lower triangle, row blocks), then in order."""
    n = len(quality)
    order = np.lexsort((np.arange(n), -quality))
    x = emb[order].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    src, dst = [], []
    for a in range(0, n, block):
        sims = x[a:a + block] @ x[:a + block].T
        i, j = np.nonzero(sims >= tau)
        keep = j < i + a
        src.append(i[keep] + a)
        dst.append(j[keep])
    src, dst = np.concatenate(src), np.concatenate(dst)
    accepted = np.ones(n, dtype=bool)
    o = np.lexsort((dst, src))
    src, dst = src[o], dst[o]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if len(src) else np.zeros(0, dtype=np.int64)
    for k, a in enumerate(starts.tolist()):
        b = starts[k + 1] if k + 1 < len(starts) else len(src)
        if accepted[dst[a:b]].any():
            accepted[src[a]] = False
    selected = np.zeros(n, dtype=bool)
    selected[order[accepted]] = True
    return selected


# --- children ---------------------------------------------------------------------------------------------------


class PeakRSS:
    """Largest resident set size of this process, sampled every 20 ms while running."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def child_select(data: str, impl: str, index: str, target: int | None, out: str | None) -> dict[str, Any]:
    import importlib

    sel = importlib.import_module("synth.select.select")
    emb = np.load(data + ".emb.npy")
    quality = np.load(data + ".q.npy")
    import psutil

    base = psutil.Process().memory_info().rss
    with PeakRSS() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        if impl == "naive":
            selected, info = naive_greedy(emb, quality, TAU), {}
        else:
            settings = sel.SelectSettings(min_quality=None, method="greedy", tau=TAU, index=index, target=target)
            codes, _, info = sel.select_arrays(emb, quality, settings)
            selected = codes == 0
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if out:
        np.save(out, selected)
    info = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in info.items()}
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss": rss.peak, "rss_with_data": base,
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "selected": int(selected.sum()),
            "rows": len(quality), "info": info}


def udhr_sentences(count: int) -> list[str]:
    paragraphs = [p.strip().replace("\n", " ") for p in UDHR.read_text(encoding="utf-8").split("\n\n")]
    paragraphs = [p for p in paragraphs if len(p) > 20]
    return [paragraphs[i % len(paragraphs)] for i in range(count)]


def child_embed(count: int, repeats: int, batch_size: int) -> dict[str, Any]:
    from synth.select.embed import embedding_dim, load_model

    texts = udhr_sentences(count)
    t0 = time.perf_counter()
    model = load_model("default")
    load = time.perf_counter() - t0
    model.encode(texts[:64], batch_size=batch_size)  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        runs.append(time.perf_counter() - t0)
    import torch

    return {"sentences": count, "seconds": runs, "per_s": count / statistics.median(runs), "load_s": load,
            "dim": embedding_dim(model), "chars_mean": sum(map(len, texts)) / count,
            "torch_threads": torch.get_num_threads(), "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            * 1024}


def run_child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"child {args} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


# --- driver -----------------------------------------------------------------------------------------------------


def gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-big", type=int, default=1)
    ap.add_argument("--target", type=int, default=500_000, help="also a 1M run with this target (0: skip)")
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs="*")
    args = ap.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "select":
            data, impl, index, target, out = rest
            res = child_select(data, impl, index, int(target) or None, out or None)
        else:
            res = child_embed(int(rest[0]), int(rest[1]), int(rest[2]))
        print(RESULT_TAG + json.dumps(res), flush=True)
        return

    import faiss
    import torch

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "faiss": faiss.__version__, "torch": torch.__version__,
                    "load_before": os.getloadavg()},
        "cases": {},
    }
    cases = results["cases"]
    with tempfile.TemporaryDirectory(prefix="bench-select-") as tmp:
        for n in sorted({args.small, args.n}):
            t0 = time.perf_counter()
            emb, q = synthetic(n)
            np.save(f"{tmp}/d{n}.emb.npy", emb)
            np.save(f"{tmp}/d{n}.q.npy", q)
            del emb, q
            print(f"generated {n:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

        def measure(name: str, n: int, impl: str, index: str, repeats: int, target: int = 0) -> None:
            runs = []
            for r in range(repeats):
                out = f"{tmp}/{name}.npy" if r == 0 else ""
                runs.append(run_child(["select", f"{tmp}/d{n}", impl, index, str(target), out]))
                print(f"{name}: {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
            best = dict(runs[0])
            best["seconds_runs"] = [round(r["seconds"], 2) for r in runs]
            best["seconds"] = statistics.median(r["seconds"] for r in runs)
            best["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
            best["peak_rss"] = max(r["peak_rss"] for r in runs)
            best["max_rss"] = max(r["max_rss"] for r in runs)
            cases[name] = best

        measure("greedy_big", args.n, "ours", "auto", args.repeats_big)
        if args.target:
            measure("greedy_big_target", args.n, "ours", "auto", args.repeats_big, args.target)
        measure("small_auto", args.small, "ours", "auto", args.repeats)
        measure("small_flat", args.small, "ours", "flat", args.repeats)
        if not args.no_naive:
            measure("small_naive", args.small, "naive", "-", args.repeats_big)
        sets = {k: np.load(f"{tmp}/{k}.npy") for k in ("small_auto", "small_flat", "small_naive") if k in cases}
        if "small_naive" in sets:
            ref = sets["small_naive"]
            for k in ("small_auto", "small_flat"):
                a = sets[k]
                cases[k]["vs_naive"] = {"jaccard": float((a & ref).sum() / max(1, (a | ref).sum())),
                                        "identical": bool((a == ref).all()), "only_ours": int((a & ~ref).sum()),
                                        "only_naive": int((ref & ~a).sum()),
                                        "speedup": cases["small_naive"]["seconds"] / cases[k]["seconds"]}
        cases["embed"] = run_child(["embed", str(args.sentences), str(args.repeats), "64"])
    results["machine"]["load_after"] = os.getloadavg()
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict[str, Any], args) -> None:
    c, m = results["cases"], results["machine"]
    print(f"\nsynth select benchmark — {m['affinity']} CPUs, faiss {m['faiss']}, torch {m['torch']}, "
          f"load average {m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after")
    print(f"data: synthetic 384-d float16, 3,000-cluster mixture, 5% planted near-duplicates; greedy tau={TAU}\n")
    head = f"{'case':<34} {'rows':>9} {'wall s':>8} {'cpu s':>7} {'peak RSS':>9} {'selected':>9}  notes"
    print(head)
    print("-" * len(head))

    def row(label: str, k: str, notes: str = "") -> None:
        if k not in c:
            return
        r = c[k]
        runs = r.get("seconds_runs", [])
        spread = f" (runs {', '.join(f'{s:.1f}' for s in runs)})" if len(runs) > 1 else ""
        print(f"{label:<34} {r['rows']:>9,} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {gb(r['peak_rss']):>9} "
              f"{r['selected']:>9,}  {notes}{spread}")

    info, big = c["greedy_big"]["info"], c["greedy_big"]
    row("greedy, ours (auto)", "greedy_big",
        f"{info.get('index')} nlist={info.get('nlist')} nprobe={info.get('nprobe')}; train {info.get('t_train')} s, "
        f"assign {info.get('t_assign')} s, join {info.get('t_join')} s; data alone {gb(big['rss_with_data'])}")
    if "greedy_big_target" in c:
        row(f"greedy, ours, target {args.target:,}", "greedy_big_target", "stops once the target is reached")
    for k, label in (("small_auto", "greedy, ours (auto)"), ("small_flat", "greedy, ours (flat, exact)"),
                     ("small_naive", "greedy, naive numpy O(n²), exact")):
        v = c.get(k, {}).get("vs_naive")
        note = f"{c[k]['info'].get('index', '')}" if k in c and c[k]["info"] else ""
        if v:
            note += (f"; {v['speedup']:.1f}x faster than naive; same set: {'yes' if v['identical'] else 'no'}, "
                     f"Jaccard {v['jaccard'] * 100:.2f}% ({v['only_ours']} only ours, {v['only_naive']} only naive)")
        row(label, k, note)
    e = c["embed"]
    print(f"\nembedding, all-MiniLM-L6-v2 (packaged), CPU, batch 64, {e['torch_threads']} torch threads: "
          f"{e['per_s']:.0f} sentences/s (median of {len(e['seconds'])}; {e['sentences']} UDHR paragraphs of "
          f"{e['chars_mean']:.0f} chars on average; runs {', '.join(f'{s:.2f}' for s in e['seconds'])} s; "
          f"model load {e['load_s']:.1f} s; dim {e['dim']})")


if __name__ == "__main__":
    main()
