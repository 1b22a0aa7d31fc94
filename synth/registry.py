"""The registry's types: a ``StageSpec`` says what one stage is to the rest of synth (its class, whose ``key``
names it; what it reads, its settings and label); a ``Pipeline`` is the specs in run order, checked as one (each
reads a stage before it, no key or section twice), and answers what the commands, the config loader and the
lineage checks ask. The declaration itself is ``synth.pipeline.PIPELINE``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.kernel import CURRENT, StageError, StageOutput, check_lineage

EXPORT = "export"  # the section of the export settings (synth.export.ExportSettings), after the last stage
ALIASES = {"inputs": "input"}  # the name a top-level setting has in run.toml and on the command line


def _load(ref: Any) -> Any:
    """A class given as ``"module:Name"``, imported when the pipeline is declared (its key is the class's); stage
    modules import their libraries (datasketch, faiss, torch…) where they use them, so ``synth --help`` loads none."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageSpec:
    """One stage: where it writes, what it is, what it reads, how it is configured and shown."""

    stage: type | str  # its Stage class (or "module:Class"), whose ``key`` names the stage: its folder, its stats
    reads: str | None  # the key of the stage whose current output it reads; None: the raw corpora
    label: str = ""  # in the report, the plan and the card (default: the section)
    section: str = ""  # its table in run.toml (default: the key without its number)
    command: str = ""  # the `synth` command that runs it, with its neighbours of the same command (default: section)
    help: str = ""  # what that command does, for `synth --help`
    # The stage is made from its settings (its section over the top-level ones it takes) by its class's
    # ``from_settings``; a ``driver(settings, rundir, progress)`` runs a stage that reads no stage output (extract).
    driver: Callable[[dict[str, Any], Path, bool], StageOutput] | None = None
    uses_model: bool = False  # calls an LLM: takes the run's engine, model and request cache; the card names the model
    top: tuple[str, ...] = ()  # top-level settings it takes (extract: lang, fragments…; select: target)
    requires: tuple[str, ...] = ()  # top-level settings it cannot run without
    made_by: str | None = None  # written by that stage's driver, never run on its own
    fallback: str | None = None  # what it reads when the stage in ``reads`` has not run in the run directory
    card: Callable[[dict[str, Any]], str] | None = None  # its line in the dataset card, from its manifest's params
    # what its counters in stats.json say a user must know (a judge that cannot discriminate), or None; the console,
    # report.html and the card show it
    warn: Callable[[dict[str, Any]], str | None] | None = None
    # The key of an earlier stage whose section this one reads too, instead of a section of its own (the final
    # decontamination reads [decontaminate], as stage 1's does).
    settings_of: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "section", self.section or self.key.split("_", 1)[-1])
        object.__setattr__(self, "label", self.label or self.section)
        object.__setattr__(self, "command", self.command or self.section)

    @property
    def key(self) -> str:
        """The class's ``key`` (written there once): its folder in the run directory, its entry in stats.json."""
        return self.stage_class.key

    @property
    def stage_class(self) -> type:
        return _load(self.stage)

    @property
    def settings_class(self) -> type:
        """What its section is checked against: the class's ``SETTINGS``, or the class's own fields."""
        return self.stage_class.SETTINGS or self.stage_class


def _finished(rundir: str | Path, key: str) -> bool:
    return (Path(rundir) / key / CURRENT).exists()


@dataclass(frozen=True)
class Pipeline:
    """Stages in run order; each reads a stage before it."""

    specs: tuple[StageSpec, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        sections: set[str] = set()
        for s in self.specs:
            for ref in (s.reads, s.fallback):
                if ref is not None and ref not in seen:
                    raise ValueError(f"stage {s.key} reads {ref}, which is not a stage before it")
            if s.settings_of is not None and (s.settings_of not in seen or self[s.settings_of].section != s.section):
                raise ValueError(f"stage {s.key} reads the settings of {s.settings_of}: name a stage before it, and "
                                 "give its section")
            taken = s.made_by is None and s.settings_of is None and s.section in sections | {EXPORT}
            if s.key in seen or taken:
                raise ValueError(f"stage {s.key}: its key or section [{s.section}] is taken")
            seen.add(s.key)
            sections |= {s.section} if s.made_by is None else set()

    def __getitem__(self, key: str) -> StageSpec:
        for s in self.specs:
            if s.key == key:
                return s
        raise StageError(f"no stage {key!r} in the pipeline (stages: {', '.join(s.key for s in self.specs)})")

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.specs)

    def section(self, name: str) -> StageSpec:
        """The stage whose settings are the table ``[name]`` of run.toml (what commands outside the run take)."""
        for s in self.specs:
            if s.section == name and s.made_by is None:
                return s
        raise StageError(f"no stage reads [{name}] (sections: {', '.join(self.section_names)})")

    def register(self, spec: StageSpec, after: str | None = None) -> Pipeline:
        """A copy with ``spec`` after the stage ``after`` (default: at the end)."""
        at = len(self.specs) if after is None else [s.key for s in self.specs].index(self[after].key) + 1
        return Pipeline((*self.specs[:at], spec, *self.specs[at:]))

    @property
    def runnable(self) -> list[StageSpec]:
        """The stages ``run`` runs, in order (not those another stage's driver writes)."""
        return [s for s in self.specs if s.made_by is None]

    @property
    def section_names(self) -> list[str]:
        return [*(s.section for s in self.runnable if s.settings_of is None), EXPORT]

    def sections(self) -> dict[str, type]:
        """Every table ``run.toml`` may hold and the settings class it is checked against."""
        return {**{s.section: s.settings_class for s in self.runnable if s.settings_of is None},
                EXPORT: _load("synth.export:ExportSettings")}

    def commands(self) -> dict[str, list[StageSpec]]:
        """``synth <command>`` → the stages it runs, in order."""
        out: dict[str, list[StageSpec]] = {}
        for s in self.runnable:
            out.setdefault(s.command, []).append(s)
        return out

    def input_key(self, rundir: str | Path, spec: StageSpec) -> str | None:
        if spec.fallback is not None and not _finished(rundir, spec.reads):
            return spec.fallback
        return spec.reads

    def upstream(self, rundir: str | Path, key: str) -> list[str]:
        """``key`` and the stages its current output was made from, as far as they have run in ``rundir``."""
        chain = [key]
        while (up := self.input_key(rundir, self[chain[-1]])) is not None and _finished(rundir, up):
            chain.append(up)
        return chain

    def current_input(self, rundir: str | Path, spec: StageSpec) -> StageOutput:
        """The current output ``spec`` reads, refused when it does not follow from the outputs before it."""
        key = self.input_key(rundir, spec)
        check_lineage(rundir, self.upstream(rundir, key))
        return StageOutput.current(rundir, key)


