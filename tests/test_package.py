"""synth as an installable package: every distribution synth imports is declared in pyproject.toml, and a wheel
built from the working tree, installed into a fresh venv, runs the English pipeline to ``final/`` from another
directory, with the prompts it ships inside the package.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from synth.models import SMOLLM2, smollm2_dir
from synth.prompts import prompts_dir

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path("prompts", "wheel_probe", "nested.v1.toml")  # proves that subfolders of prompts/ ship too


def _declared() -> set[str]:
    """Every distribution pyproject.toml names, in its dependencies or in any extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def _imported() -> set[str]:
    """Top-level names of the third-party modules synth imports anywhere, lazy imports inside functions too."""
    names = set()
    for path in (ROOT / "synth").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"synth"}


def test_every_imported_distribution_is_declared():
    imported = _imported()
    assert {"pyarrow", "langcodes", "vllm", "trl"} <= imported  # top-level, lazy and optional imports all seen
    owners, declared = importlib.metadata.packages_distributions(), _declared()
    undeclared = {m: sorted(owners.get(m, [])) or "no installed distribution"
                  for m in sorted(imported) if not {canonicalize_name(d) for d in owners.get(m, [])} & declared}
    assert not undeclared, f"imported under synth/ but not declared in pyproject.toml: {undeclared}"


def test_a_checkout_reads_its_own_prompts():
    """Editable installs and plain checkouts use prompts/ itself: an edited prompt counts at once."""
    assert prompts_dir() == ROOT / "prompts"


def _working_tree(dest: Path) -> Path:
    """What a clone plus the uncommitted work holds: tracked and untracked-but-not-ignored files (git archive
    would miss uncommitted edits; a plain copy would carry .venv, .cache and old build/ output)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():  # a tracked file deleted in the working tree is listed but gone
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _working_tree(tmp / "src")
    (src / PROBE).parent.mkdir()
    (src / PROBE).write_text('user = "probe"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (found,) = (tmp / "dist").glob("synth-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_ships_every_prompt_file(wheel):
    in_repo = {p.relative_to(ROOT / "prompts").as_posix() for p in (ROOT / "prompts").rglob("*") if p.is_file()}
    shipped = {n.removeprefix("synth/prompts_data/") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("synth/prompts_data/")}
    assert shipped == in_repo | {PROBE.relative_to("prompts").as_posix()}


@pytest.mark.slow
def test_the_wheel_runs_the_pipeline_from_another_directory(wheel, tmp_path):
    """A fresh venv with only the wheel installed; the dependencies come from the dev venv's site-packages as a
    plain path line in a .pth file, which does not run that folder's own .pth files, so the editable synth there
    stays out of reach. Run from tmp_path, so neither the checkout nor its prompts/ is on any path."""
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def venv_python(code: str) -> str:
        return subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    site = Path(venv_python("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (site / "dev-venv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found = venv_python("import synth, synth.prompts; print(synth.__file__); print(synth.prompts.prompts_dir())")
    assert found.splitlines() == [str(site / "synth" / "__init__.py"), str(site / "synth" / "prompts_data")]
    script = venv / "bin" / "synth"
    assert script.read_text().splitlines()[0] == f"#!{python}"

    cache = tmp_path / "cache"  # a request cache of its own, so the stages really call the model
    (cache / "models").mkdir(parents=True)
    (cache / "models" / SMOLLM2).symlink_to(smollm2_dir())
    run = subprocess.run([str(script), "run", "--lang", "en", "--input", str(ROOT / "examples" / "corpus"),
                          "--out", str(tmp_path / "run"), "--fragments", "4", "--engine", "hf", "--model", "smollm2",
                          "--config", str(ROOT / "examples" / "demo.toml"), "--quiet"], cwd=tmp_path,
                         env={**env, "SYNTH_CACHE": str(cache)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert pq.read_table(tmp_path / "run" / "final" / "data").num_rows > 0
