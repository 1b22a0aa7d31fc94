"""The shape of synth/, written as tests: its import graph has no circle and no import from a lower layer to a
higher one, and no module is longer than a newcomer reads in one sitting.

Every ``import`` counts, at module level or inside a function, and those under ``TYPE_CHECKING`` too: an import
hidden in a function is still a dependency. A module importing its own package (``synth.llm.stage`` importing
``synth.llm``) is not an edge of the package graph.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SYNTH = Path(__file__).resolve().parent.parent / "synth"
MAX_LINES = 500

# Bottom to top: a module may import its own layer and those below. Each name is a module or package of synth/.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "version", "text", "io", "identity", "budget", "fingerprint", "redact", "lang", "models",
                    "progress", "stats", "prompts", "lock", "watchdog", "devices", "config"}),
    ("kernel: what a stage is, and the row checks", {"kernel", "checks", "fidelity", "gate"}),
    ("models, corpora and executors", {"llm", "mt_models", "extract", "executors"}),
    ("the runner", {"runner"}),
    ("translators and selection", {"translate", "select"}),
    ("stages", {"stages"}),
    ("the declaration", {"registry", "pipeline"}),
    ("what a run makes, and the tools beside it", {"export", "report", "plan", "pick", "audit", "baselines",
                                                   "train", "eval"}),
    ("orchestration", {"orchestrate"}),
    ("interface", {"cli", "__main__", ""}),  # "": the package itself (synth/__init__.py)
]


def modules() -> dict[str, Path]:
    out = {}
    for path in SYNTH.rglob("*.py"):
        if (SYNTH / "data") in path.parents:  # files synth writes out (trainer configs), never imported
            continue
        parts = path.relative_to(SYNTH.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the synth modules it imports (``from synth.x import name`` is an edge to ``synth.x.name`` when
    that is a module, else to ``synth.x``)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != mod and not mod.startswith(name + "."):
                    graph[mod].add(name)
    return graph


def unit(mod: str) -> str:
    """The top-level module or package of synth/ that ``mod`` belongs to ("" for synth itself)."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_modules_or_packages():
    graph = import_graph()
    assert cycles(graph) == []
    packages: dict[str, set[str]] = defaultdict(set)
    for mod, targets in graph.items():
        packages[unit(mod)] |= {unit(t) for t in targets} - {unit(mod)}
    assert cycles(packages) == []


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower():
    layer = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    graph = import_graph()
    unplaced = sorted({unit(m) for m in modules()} - set(layer))
    assert unplaced == [], f"give these a layer in LAYERS: {unplaced}"
    upward = sorted(f"{m} ({LAYERS[layer[unit(m)]][0]}) imports {t} ({LAYERS[layer[unit(t)]][0]})"
                    for m, targets in graph.items() for t in targets if layer[unit(t)] > layer[unit(m)])
    assert upward == []


def test_no_module_is_longer_than_a_sitting():
    long = {str(p.relative_to(SYNTH.parent)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The graph is read from the source: a circle or an upward import added to a copy of synth/ is found."""
    import shutil

    copy = tmp_path / "synth"
    shutil.copytree(SYNTH, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    with (copy / "kernel.py").open("a") as f:
        f.write("\n\ndef _late():\n    from synth.pipeline import PIPELINE  # up two layers, and a circle\n\n"
                "    return PIPELINE\n")
    monkeypatch.setattr(sys.modules[__name__], "SYNTH", copy)
    graph = import_graph()
    assert "synth.pipeline" in graph["synth.kernel"]
    assert any("synth.kernel" in c and "synth.pipeline" in c for c in cycles(graph))
