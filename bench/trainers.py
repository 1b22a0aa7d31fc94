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
* LLaMA-Factory: see LLAMAFACTORY_NOTES below, filled in from the run that produced the README table.
* axolotl: see AXOLOTL_NOTES below.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TORCH = "torch==2.13.0"

LLAMAFACTORY_NOTES = "(filled in below)"
AXOLOTL_NOTES = "(filled in below)"


@dataclass
class Trainer:
    name: str
    dist: str  # the distribution whose version the table shows
    packages: list[str]  # installed after torch, in one pip call
    after: list[list[str]] = field(default_factory=list)  # pip commands run after the install (workarounds)
    env: dict[str, str] = field(default_factory=dict)  # environment for the training run (workarounds)


TRAINERS = {
    "trl": Trainer("trl", "trl", ["trl", "peft"]),
    "llamafactory": Trainer("llamafactory", "llamafactory", ["llamafactory"]),
    "axolotl": Trainer("axolotl", "axolotl", ["axolotl"]),
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
    """The 12-row Swahili export of tests/test_export_report.py: its rows, built the same way."""
    import pyarrow as pa

    from synth.export import export

    text = (REPO / "examples/corpus/sw/udhr_swahili.txt").read_text(encoding="utf-8")
    sw = [p for p in text.split("\n\n") if len(p) > 120][:12]
    n = len(sw)
    table = pa.table({
        "id": [f"id{i}" for i in range(n)], "lang": ["swh"] * n, "fragment": sw,
        "instruction": [f"Eleza kifungu namba {i} cha tamko." for i in range(n)],
        "instruction_en": [f"Explain article {i} of the declaration." for i in range(n)],
        "response_en": ["English text"] * n, "quality": [float(3 + i % 3) for i in range(n)],
        "source": ["examples/corpus/sw/udhr_swahili.txt"] * n, "source_id": ["doc"] * n,
        "bt_length_ratio": [1.1] * n, "embedding": [[0.1, 0.2]] * n,
    })
    return export(table, rundir)


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
    for extra in t.after:
        pip(bindir, extra, log, timeout)
    marker.write_text(spec)
    return bindir


def version(python: str, dist: str) -> str:
    r = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


# -------------------------------------------------------------------------------------------------------- parsing

_LOSS = re.compile(r"""['"]loss['"]\s*:\s*['"]?([-+0-9.eE]+|nan|inf)""")
_ROWS = [re.compile(p) for p in (r"trained \d+ steps on (\d+) rows", r"Num examples\s*=\s*([\d,]+)",
                                 r"Generating train split: (\d+) examples \[")]
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
        try:
            rc = subprocess.run(cmd, cwd=final, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
        except OSError as e:  # the trainer's command is missing from its venv
            rc = -1
            log.write(f"{type(e).__name__}: {e}\n")
    row.wall_s = round(time.perf_counter() - t0, 1)
    shutil.rmtree(out, ignore_errors=True)
    text = log_path.read_text(errors="replace")
    row.first_loss, row.steps, row.rows = first_loss(text), steps_logged(text), rows_loaded(text)
    if rc is None:
        row.status = f"timeout after {args.timeout} s"
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
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
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
