"""Does the export train as given in TRL, LLaMA-Factory and axolotl? First-step losses side by side (not a test).

Makes the example export (the 12 Swahili UDHR rows of ``tests/test_export_report.py``) in a temporary run dir,
then runs each trainer's generated config from the export's ``final/`` folder exactly as ``trainers/README.md``
says, with the offline SmolLM2-135M-Instruct as the base model and only run-size overrides on the command line
(max steps, batch size 2, sequence length 256, an output folder). Each trainer gets a virtual environment of its
own under ``--venvs`` (made once, reused), its output goes to ``--logs``, and the table gives the version, the rows
it loaded, the steps it ran, its first-step loss, the wall seconds and a status: ``ok`` or why it failed.

    .venv/bin/python bench/trainers.py [--trainers trl,llamafactory,axolotl] [--steps 2] \\
        [--venvs .cache/bench-trainers] [--logs DIR] [--timeout 1200] [--json]

Installing, on a CPU-only machine (what this script does; each venv is ``python -m venv`` and pip):

* torch first, alone: ``pip install torch==2.13.0``. The registry's default wheel of that version is the CPU
  build (``2.13.0+cpu``); installing a trainer first lets its resolver pick torch itself, which may pull a CUDA
  build of several GB.
* TRL: ``pip install trl peft`` (the export's ``trl_sft.py`` needs nothing else). ``--reuse trl`` runs it with
  this interpreter instead (synth's own venv has trl and peft) and installs nothing.
* LLaMA-Factory 0.9.5 (pins transformers<=5.6.0; it got 5.6.0): ``pip install llamafactory==0.9.5 torch==2.13.0
  torchvision==0.28.0``. Unpinned, pip takes the newest torchvision (0.29.x), which needs torch>=2.14, and swaps
  the CPU torch for the CUDA build of 2.14.1 (the venv grew to 6.6 GB). Even torch 2.13's own torchvision 0.28.0
  from the registry is a CUDA build: with the CPU torch, ``import torchvision`` fails with ``RuntimeError: operator
  torchvision::nms does not exist``, and torchaudio (newest 2.11.1, +cu132) with ``OSError: Could not load this
  library: .../torchaudio/lib/_torchaudio.so`` (``libc10_cuda.so: cannot open shared object file``).
  LLaMA-Factory imports torchaudio unconditionally (``data/mm_plugin.py``, for audio inputs only) and
  torchvision nowhere, so the workaround, after the install:

      pip uninstall -y torchvision                                  # transformers runs without it
      rm VENV/lib/python3*/site-packages/torchaudio/lib/*.so        # torchaudio then imports as pure Python

  (torchaudio loads its compiled library only if the file exists; without it ``import torchaudio`` works and only
  its compiled ops, unused for text, are missing.) Where PyTorch's own CPU wheel index is reachable, installing
  torch, torchvision and torchaudio from it instead is the clean fix. No environment variable avoids the import.
* axolotl 0.19.0 (transformers 5.16.1, bitsandbytes 0.50.2): ``pip install axolotl==0.19.0`` keeps the CPU torch
  and trains on a CPU as generated (float32, the generated config's ``lora_*_kernel: false``; bitsandbytes
  imports without a GPU). Offline, its telemetry kept the process alive after training ("Training completed!",
  model saved, then PostHog upload retries, and no exit 10 minutes later): ``AXOLOTL_DO_NOT_TRACK=1`` (set here)
  makes it exit at once. The generated config sets ``seed: 42``: without a seed axolotl shuffled the rows
  differently each run (first-step losses 5.182, then 5.353; with the seed 5.444 twice).

First-step losses: with LoRA's B matrices at zero the first step's loss is the base model's on the trained tokens
of the first batch, so trainers agree exactly when they batch the same rows and mask the same tokens. TRL and
LLaMA-Factory both gave 5.126; axolotl shuffles the rows once more (``shuffle_merged_datasets``) and still gave
5.172 with that shuffle off (its first batch or its masked tokens differ; not traced further), so its number is
not comparable to the others'.
"""

from __future__ import annotations

import os.path
import sys

# Run as `python bench/trainers.py`, this folder comes first on sys.path, where bench/select.py shadows the
# standard library's `select` that subprocess imports: drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # export_rows: the example rows the export tests use

TORCH = "torch==2.13.0"



@dataclass
class Trainer:
    name: str
    dist: str  # the distribution whose version the table shows
    packages: list[str]  # installed after torch, in one pip call
    after: list[tuple] = field(default_factory=list)  # workarounds after the install: ("pip", args) or ("rm", glob)
    env: dict[str, str] = field(default_factory=dict)  # environment for the training run (workarounds)


TRAINERS = {
    "trl": Trainer("trl", "trl", ["trl", "peft"]),
    # torch pinned again beside LLaMA-Factory, with torchvision 0.28.0 (torch 2.13's): unpinned, pip takes the newest
    # torchvision, which needs torch>=2.14, and replaces the CPU torch with the CUDA build of 2.14.1 (6.6 GB venv).
    # Then the two CPU workarounds of the docstring: no torchvision, torchaudio without its compiled libraries.
    "llamafactory": Trainer("llamafactory", "llamafactory", ["llamafactory==0.9.5", TORCH, "torchvision==0.28.0"],
                            after=[("pip", ["uninstall", "-y", "-q", "torchvision"]),
                                   ("rm", "lib/python3*/site-packages/torchaudio/lib/*.so")]),
    # offline, axolotl's telemetry keeps the process alive after training (it did not exit in 10 minutes)
    "axolotl": Trainer("axolotl", "axolotl", ["axolotl==0.19.0"], env={"AXOLOTL_DO_NOT_TRACK": "1"}),
}


def command(name: str, bindir: Path, model: str, steps: int, out: Path) -> list[str]:
    """The README's command for this trainer, with the run-size overrides the trainer's command line accepts."""
    if name == "trl":
        return [str(bindir / "python"), "trainers/trl_sft.py", "--model", model, "--lora", "--max-steps", str(steps),
                "--batch-size", "2", "--max-length", "256", "--output-dir", str(out)]
    if name == "llamafactory":
        return [str(bindir / "llamafactory-cli"), "train", "trainers/llamafactory_sft.yaml",
                f"model_name_or_path={model}", f"max_steps={steps}", "per_device_train_batch_size=2",
                "cutoff_len=256", f"output_dir={out}"]
    if name == "axolotl":
        return [str(bindir / "axolotl"), "train", "trainers/axolotl.yaml", f"--base-model={model}",
                f"--max-steps={steps}", "--micro-batch-size=2", "--sequence-len=256", f"--output-dir={out}"]
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------------------- setup


def make_export(rundir: Path) -> Path:
    """The 12-row Swahili export of tests/test_export_report.py (tests/export_rows.py builds its rows)."""
    from export_rows import final_rows

    from synth.export import export

    return export(final_rows(), rundir)


def pip(bindir: Path, args: list[str], log, timeout: int) -> None:
    cmd = [str(bindir / "python"), "-m", "pip", *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=timeout)


def ensure_venv(t: Trainer, venvs: Path, log, timeout: int) -> Path:
    """The trainer's venv, made and installed once (a marker file names what was installed); its bin folder."""
    venv = venvs / t.name
    bindir = venv / "bin"
    spec = json.dumps({"torch": TORCH, "packages": t.packages, "after": t.after})
    marker = venv / ".bench-trainers"
    if marker.exists() and marker.read_text() == spec:
        return bindir
    if not (bindir / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=log, stderr=subprocess.STDOUT)
    pip(bindir, ["install", "-q", TORCH], log, timeout)  # first and alone: the CPU wheel, never a CUDA one
    pip(bindir, ["install", "-q", *t.packages], log, timeout)
    for kind, what in t.after:
        if kind == "pip":
            pip(bindir, what, log, timeout)
        else:
            for f in venv.glob(what):
                log.write(f"$ rm {f}\n")
                f.unlink()
    marker.write_text(spec)
    return bindir


def version(python: str, dist: str) -> str:
    r = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


# -------------------------------------------------------------------------------------------------------- parsing

_LOSS = re.compile(r"""['"]loss['"]\s*:\s*['"]?([-+0-9.eE]+|nan|inf)""")
_ROWS = [re.compile(p) for p in (r"trained \d+ steps on (\d+) rows",  # TRL (the export's script)
                                 r"Num examples\s*=\s*([\d,]+)",  # LLaMA-Factory (transformers' Trainer at INFO)
                                 r"Saving the dataset \(\d+/\d+ shards\): 100%\|[^|]*\| (\d+)/",  # axolotl, kept
                                 r"Generating train split: (\d+) examples \[")]  # rows read (datasets)
_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit)\w*)(?::\s*(.*))?$")
# failure causes worth naming in a few words, looked for in the whole log, first match wins
_KNOWN = [
    (re.compile(r"No module named '([\w.]+)'"), "import: no module {0}"),
    (re.compile(r"Torch not compiled with CUDA|Found no NVIDIA driver|No CUDA GPUs are available|"
                r"CUDA_HOME|libcuda\.so|nvcc"), "needs CUDA"),
    (re.compile(r"(?:cannot|could not) import name '(\w+)' from '([\w.]+)'"), "import: no {0} in {1}"),
]


def first_loss(text: str) -> float | None:
    m = _LOSS.search(text)
    return float(m.group(1)) if m else None


def steps_logged(text: str) -> int:
    """Steps whose loss was logged (every config logs every step)."""
    return len(_LOSS.findall(text))


def rows_loaded(text: str) -> int | None:
    for pat in _ROWS:
        found = pat.findall(text)
        if found:
            return int(found[-1].replace(",", ""))
    return None


def failure(text: str) -> str:
    """A few words on why a run failed: the last exception line of its log, or a known cause."""
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    last = ""
    for ln in reversed(lines):
        m = _ERROR.match(ln)
        if m and not ln.lstrip().startswith(("File ", "raise ")):
            last = f"{m.group(1)}: {m.group(2) or ''}".strip().rstrip(":")
            break
    for pat, words in _KNOWN:
        m = pat.search(last) or (None if last else pat.search(text))
        if m:
            return words.format(*m.groups())
    return (last or (lines[-1] if lines else "no output"))[:110]


# ------------------------------------------------------------------------------------------------------------ run


@dataclass
class Row:
    trainer: str
    version: str = "?"
    rows: int | None = None
    steps: int = 0
    first_loss: float | None = None
    wall_s: float | None = None
    status: str = ""
    log: str = ""


def run_one(name: str, args, final: Path, model: str, logs: Path) -> Row:
    t = TRAINERS[name]
    row = Row(name)
    log_path = logs / f"{name}.log"
    row.log = str(log_path)
    with open(logs / f"{name}-install.log", "w") as ilog:
        if name in args.reuse:
            bindir = Path(sys.executable).parent
        else:
            try:
                bindir = ensure_venv(t, Path(args.venvs), ilog, args.install_timeout)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                ilog.flush()
                reason = failure((logs / f"{name}-install.log").read_text(errors="replace"))
                row.status = f"install failed ({type(e).__name__}): {reason}"[:140]
                return row
    python = str(bindir / "python")
    row.version = version(python, t.dist)
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    cmd = command(name, bindir, model, args.steps, out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", **t.env}
    env.pop("VIRTUAL_ENV", None)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ (cd {final}) {' '.join(cmd)}\n")
        log.flush()
        try:  # a session of its own: a timeout ends the trainer's children too (axolotl runs one)
            proc = subprocess.Popen(cmd, cwd=final, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as e:  # the trainer's command is missing from its venv
            proc, rc = None, -1
            log.write(f"{type(e).__name__}: {e}\n")
            row.status = f"cannot start {Path(cmd[0]).name}: {e.strerror} (not installed?)"
        if proc is not None:
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
    row.wall_s = round(time.perf_counter() - t0, 1)
    shutil.rmtree(out, ignore_errors=True)
    text = log_path.read_text(errors="replace")
    row.first_loss, row.steps, row.rows = first_loss(text), steps_logged(text), rows_loaded(text)
    if rc is None:
        row.status = f"timeout after {args.timeout} s" + (" (after its steps)" if row.steps >= args.steps else "")
    elif rc == -1 and row.status:
        pass
    elif rc != 0:
        row.status = f"exit {rc}: {failure(text)}"
    elif row.first_loss is None:
        row.status = "ran, but no loss in its log"
    elif row.steps != args.steps:
        row.status = f"ok, but {row.steps} steps logged (asked {args.steps})"
    else:
        row.status = "ok"
    return row


def table(rows: list[Row]) -> str:
    head = ["trainer", "version", "rows loaded", "steps run", "first-step loss", "wall s", "status"]
    body = [[r.trainer, r.version, "?" if r.rows is None else str(r.rows), str(r.steps),
             "-" if r.first_loss is None else f"{r.first_loss:.4f}", "-" if r.wall_s is None else f"{r.wall_s:.1f}",
             r.status] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainers", default="trl,llamafactory,axolotl")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--venvs", default=str(REPO / ".cache/bench-trainers"), help="one venv per trainer, reused")
    ap.add_argument("--reuse", default="", help="trainers to run with this interpreter, no venv (e.g. trl)")
    ap.add_argument("--model", default=None, help="base model (default: synth's offline smollm2)")
    ap.add_argument("--logs", default=None, help="where the logs go (default: a temporary folder, kept)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per training run")
    ap.add_argument("--install-timeout", type=int, default=3600, help="seconds per pip call")
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args()
    names = [n.strip() for n in args.trainers.split(",") if n.strip()]
    unknown = set(names) - set(TRAINERS)
    if unknown:
        ap.error(f"unknown trainer(s) {sorted(unknown)}: choose from {', '.join(TRAINERS)}")
    args.reuse = {n.strip() for n in args.reuse.split(",") if n.strip()}

    if args.model is None:
        from synth.models import resolve_model

        args.model = str(resolve_model("smollm2"))
    logs = Path(args.logs or tempfile.mkdtemp(prefix="bench-trainers-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-trainers-") as tmp:
        final = make_export(Path(tmp))
        rows = []
        for name in names:
            print(f"{name}: installing if needed, then training {args.steps} steps ...", file=sys.stderr, flush=True)
            rows.append(run_one(name, args, final, args.model, logs))
            print(f"{name}: {rows[-1].status} (log {rows[-1].log})", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(f"model {args.model}; {args.steps} steps, batch 2, sequence length 256; logs in {logs}")
        print(table(rows))


if __name__ == "__main__":
    main()
