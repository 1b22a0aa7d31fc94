"""Translation by Apertium, Debian's rule-based MT (``apt-get install apertium apertium-eng-spa``): CPU only,
offline, about a thousand sentences a second, for the pairs it ships (English with Spanish, Catalan, Galician…).

Every text of one direction goes through one ``apertium`` process: the texts are joined with a marker paragraph
(``<<<SYNTH n>>>`` between blank lines), which Apertium passes through unchanged, and split again at the markers.
The markers must come back exactly, in order; if they do not (a text that contains one), each text of that batch
is translated in its own process, so row alignment never rests on a guess.

Its fingerprint names the pair packages with their Debian versions: those between English and the run's language
(``lang``, which ``synth run`` gives the stage), so installing or upgrading another pair recomputes nothing; a
stage made without a language (the Python API) names every installed pair.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from synth import checks as ck
from synth.errors import SynthError
from synth.lang import spellings
from synth.stats import ShardStats
from synth.translate import FORWARD, BatchTranslator, Direction, TranslateError, Translation

INSTALL = "apt-get install apertium apertium-eng-spa (Debian/Ubuntu; `apt-cache search apertium` lists the pairs)"
MARKER = "<<<SYNTH {}>>>"
MARKER_LINE = re.compile(r"^<<<SYNTH (\d+)>>>$", re.M)
TIMEOUT_S = 600


class ApertiumMissing(TranslateError):
    """The ``apertium`` command or one of its language pairs is not installed."""


def binary() -> str:
    """The ``apertium`` command, or an error that says how to install it."""
    path = shutil.which("apertium")
    if path is None:
        raise ApertiumMissing(f"translator 'apertium' needs the apertium command: {INSTALL}")
    return path


@cache
def modes() -> tuple[str, ...]:
    """The translation modes installed (``eng-spa``, ``spa-eng``, ``eng-cat_valencia``…), from ``apertium -l``."""
    out = subprocess.run([binary(), "-l"], capture_output=True, text=True, check=True, timeout=60).stdout
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def mode_for(src: str, tgt: str) -> str:
    """The installed mode that translates ``src`` into ``tgt`` (any spelling: ``eng-spa``, ``en-es``)."""
    installed = set(modes())
    for a in spellings(src):
        for b in spellings(tgt):
            if f"{a}-{b}" in installed:
                return f"{a}-{b}"
    a, b = spellings(src)[0], spellings(tgt)[0]
    raise ApertiumMissing(f"no Apertium pair translates {a} into {b} (installed: {', '.join(modes()) or 'none'}); "
                          f"install the Debian package of that pair, apertium-{a}-{b} or apertium-{b}-{a} "
                          f"(apt-get install …; `apt-cache search apertium` lists them)")


def _mode_file(mode: str) -> Path:
    return Path(binary()).resolve().parent.parent / "share" / "apertium" / "modes" / f"{mode}.mode"


@cache
def pair_versions(lang: str | None = None) -> dict[str, str]:
    """Installed pair package → its Debian version (or, off Debian, the size and time of its mode files); with
    ``lang``, only the packages of modes between it and English (either way)."""
    out: dict[str, str] = {}
    for mode in modes():
        if lang is not None and not _between(mode, lang, "eng"):
            continue
        path = _mode_file(mode)
        text = path.read_text(errors="replace") if path.exists() else ""
        found = re.search(r"/apertium/(apertium-[a-z_]+-[a-z_]+)/", text)
        package = found.group(1) if found else mode
        if package in out:
            continue
        query = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                               check=False) if shutil.which("dpkg-query") else None
        if query is not None and query.returncode == 0 and query.stdout.strip():
            out[package] = query.stdout.strip()
        else:
            out[package] = f"unpackaged:{path.stat().st_size}:{int(path.stat().st_mtime)}" if path.exists() else "?"
    return dict(sorted(out.items()))


def _between(mode: str, a: str, b: str) -> bool:
    """Whether ``mode`` (``eng-spa``, ``cat-eng_valencia``…) translates between languages ``a`` and ``b``."""
    src, _, tgt = mode.partition("-")
    sides = {src.split("_")[0], tgt.split("_")[0]}
    return any(x in sides for x in spellings(a)) and any(y in sides for y in spellings(b))


def run_apertium(mode: str, text: str) -> str:
    """One ``apertium -u MODE`` process over ``text`` (``-u``: unknown words as they are, without a ``*``)."""
    res = subprocess.run([binary(), "-u", mode], input=text, capture_output=True, text=True, timeout=TIMEOUT_S,
                         check=False)
    if res.returncode != 0:
        raise SynthError(f"apertium {mode} failed (exit {res.returncode}): {res.stderr.strip()[:500]}")
    return res.stdout


def translate_batch(mode: str, texts: list[str]) -> list[str]:
    """Each text translated by ``mode``, in one process when the markers come back intact."""
    if not texts:
        return []
    joined = "".join(f"{t.strip()}\n\n{MARKER.format(i)}\n\n" for i, t in enumerate(texts))
    out = run_apertium(mode, joined)
    found = [int(m.group(1)) for m in MARKER_LINE.finditer(out)]
    if found == list(range(len(texts))):
        return [part.strip() for part in MARKER_LINE.split(out)[0:-1:2]]
    return [run_apertium(mode, t).strip() for t in texts]  # a marker was lost or doubled: one process per text


class ApertiumTranslator(BatchTranslator):
    """A translator backend (``synth.translate``) over the ``apertium`` command; no settings of its own, no model
    (no placement: the stage runs on plain workers)."""

    def __init__(self, settings: Any, directions: tuple[Direction, ...] = (FORWARD,), engine: Any = None) -> None:
        binary()  # missing: fails when the stage is made, not at the first shard
        super().__init__(settings, directions, engine)

    def params(self, facts: dict[str, Any]) -> dict[str, Any]:
        return {"apertium": pair_versions(getattr(self.settings, "lang", None))}

    def setup(self) -> None:
        modes()

    def run(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], direction: Direction,
            stats: ShardStats) -> list[Translation]:
        out: list[Translation] = [("", ck.EMPTY)] * len(texts)
        groups: dict[str, list[int]] = {}
        for i, (s, t) in enumerate(zip(src_langs, tgt_langs, strict=True)):
            groups.setdefault(mode_for(s, t), []).append(i)
        for mode, idx in groups.items():
            done = translate_batch(mode, [texts[i] for i in idx])
            stats.count("apertium_calls")
            for i, text in zip(idx, done, strict=True):
                out[i] = ck.result_problem(text, "stop", None, self.settings.checks)
        return out
