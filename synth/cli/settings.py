"""Commands made from a settings dataclass (``synth.config.option`` fields): one option per field, its help and
default from the field, the flags laid over the ``--config`` file's section over the defaults, then the
dataclass built and handed to the command's work. A new setting is one field; its option follows."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from synth.cli.common import _fail, app
from synth.config import ConfigError, Option, cli_fields, defaults, record
from synth.config import section as config_section
from synth.errors import SynthError


def _base(annotation: Any) -> type:
    """``int | None`` → int; ``int | str`` → str ("auto" or a number); a list or dict → str (its flag's text is
    parsed)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else [annotation]
    base = str if str in args else args[0] if args else str
    return base if base in (int, float, str, bool) else str


def _help(opt: Option, default: Any) -> str:
    """The option's help with its default (not rich markup: ``[plan]`` shows as written)."""
    shown = opt.show_default and default not in (None, [], {}, ()) and not isinstance(default, bool)
    if shown:
        default = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        text, dot = (opt.help[:-1], ".") if opt.help.endswith(".") else (opt.help, "")
        return escape(f"{text} (default {default}){dot}")
    return escape(opt.help)


def _default(f: Field) -> Any:
    """The default a field states (a factory is not called, ``synth --help`` probes no GPU; a list's literal is
    kept beside its copying factory)."""
    return f.default if f.default is not MISSING else f.metadata.get("shown")


def _flag(f: Field, opt: Option) -> str:
    return opt.flag or f"--{f.name.replace('_', '-')}"


def _name(flag: str) -> str:
    """The command function's parameter for ``flag``: --judge-model → judge_model."""
    return flag.removeprefix("--").replace("-", "_")


def _param(name: str, hint: Any, opt: Option, help: str, flag: str) -> inspect.Parameter:
    """The typer parameter of one option: given or not (None), parsed later (``_value``)."""
    kind = list[str] if opt.many else str if opt.parse else _base(hint)
    if opt.argument:
        default = typer.Argument(None, help=help)
    elif kind is bool:  # --x/--no-x, or the one switch a field names (--no-cache)
        default = typer.Option(None, opt.flag or f"{flag}/--no-{flag.removeprefix('--')}", help=help)
    else:
        default = typer.Option(None, flag, *([opt.alias] if opt.alias else []), help=help)
    return parameter(name, kind, default)


def _value(opt: Option, value: Any) -> Any:
    """A flag's value as the setting takes it; None where it was not given."""
    value = None if value in ([], ()) else value
    return opt.parse(value) if opt.parse and value is not None else value


def parameter(name: str, kind: Any, default: Any) -> inspect.Parameter:
    """A parameter of a made command that is no setting (the input an audit reads, --push-to-hub)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)


def _common(out_help: str, config_help: str, quiet: bool) -> list[inspect.Parameter]:
    params = [parameter("out", Path, typer.Option(..., "--out", "-o", help=out_help)),
              parameter("config", Path, typer.Option(None, "--config", help=config_help))]
    if quiet:
        params.append(parameter("quiet", bool, typer.Option(False, "--quiet/--no-quiet", show_default=False,
                                                            help="No progress bars.")))
    return params


def settings_command(name: str, cls: type, run: Callable[..., None], help: str, out_help: str,
                     quiet: bool = False, on: typer.Typer = app, section: str | None = None,
                     record_in_out: bool = True) -> None:
    """Add ``<name>`` to ``on`` (``synth``, or a group like ``synth baseline``): ``--out``, an option (or the
    argument) per field of ``cls``, ``--config`` (its ``[section]``, default ``[name]``) and with ``quiet`` a
    ``--quiet``. ``run(settings, out[, quiet=…])`` does the work, after the resolved section is recorded in
    ``OUT/run.toml`` (not where ``--out`` is a file: ``record_in_out`` off)."""
    section = section or name
    hints = _hints(cls)
    params = [_param(f.name, hints[f.name], opt, _help(opt, _default(f)), _flag(f, opt)) for f, opt in cli_fields(cls)]
    params += _common(out_help, f"A run.toml; flags override its \\[{section}] section.", quiet)

    def command(**given: Any) -> None:
        try:
            flags = {f.name: _value(opt, given[f.name]) for f, opt in cli_fields(cls)}
            whole = tuple(f.name for f, opt in cli_fields(cls) if opt.whole)
            cfg = config_section(given["config"], section, defaults(cls), flags, whole=whole)  # fresh lists each call
            settings = cls(**cfg)
            if record_in_out:
                record(given["out"], {section: cfg})
        except (ConfigError, ValueError, TypeError, OSError) as e:
            _fail(e)
        run(settings, given["out"], **({"quiet": given["quiet"]} if quiet else {}))

    command.__signature__ = inspect.Signature(params)  # what typer reads the options from
    command.__doc__ = help
    on.command(name, help=help)(command)


# ------------------------------------------------------------------------ commands over run.toml (run, stages, audit)


@dataclass
class Wire:
    """One option of a command over run.toml, and the settings it sets: ``(None, field)`` a top-level one,
    ``(section, field)`` a field of a section (``--translator`` in ``synth run``: [translate] and [backtranslate])."""

    option: Option
    hint: Any
    default: Any
    targets: list[tuple[str | None, str]] = field(default_factory=list)


def _hints(cls: type) -> dict[str, Any]:
    """Field types as objects where they can be read (a type named only for type checkers reads as str)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {f.name: str for f in fields(cls)}


def wires(command: str) -> dict[str, Wire]:
    """The options of ``synth <command>`` over run.toml, by flag. A stage command takes its stages' fields, the
    top-level settings they take (their ``top``) and the executor's; ``run``, ``audit`` and ``export`` take the
    fields that name them in ``also`` (the judge's model as its ``wide`` flag, --judge-model) and ``export``
    [export]'s own. A flag two settings share sets both; two different settings under one flag is an error."""
    from synth.orchestrate import RunSettings
    from synth.pipeline import PIPELINE
    from synth.registry import EXPORT

    stages = PIPELINE.commands().get(command, [])
    top = {k for s in stages for k in s.top} | (set(RunSettings.EXECUTION) if stages else set())
    own = {s.section: s.command for s in PIPELINE.runnable if s.settings_of is None} | {EXPORT: EXPORT}
    found: dict[str, Wire] = {}
    run_level = {f.name for f in fields(RunSettings)}

    def add(f: Field, opt: Option, hint: Any, flag: str, target: tuple[str | None, str]) -> None:
        # a section's model or engine defaults to the top level's, not to its class's: no default shown
        default = None if target[0] is not None and f.name in run_level else _default(f)
        wire = found.setdefault(flag, Wire(opt, hint, default))
        if wire.targets and wire.targets[0][1] != f.name:
            raise ValueError(f"synth {command}: {flag} would set both {wire.targets[0][1]} and {f.name}")
        wire.targets.append(target)

    hints = _hints(RunSettings)
    for f, opt in cli_fields(RunSettings):
        if f.name in top or command in opt.also:
            add(f, opt, hints[f.name], _flag(f, opt), (None, f.name))
    for section, cls in PIPELINE.sections().items():
        hints, lifted = _hints(cls), {k for s in stages if s.section == section for k in s.top}
        for f, opt in cli_fields(cls):
            if own.get(section) == command and f.name not in lifted:
                add(f, opt, hints[f.name], _flag(f, opt), (section, f.name))
            elif command in opt.also:
                add(f, opt, hints[f.name], opt.wide or _flag(f, opt), (section, f.name))
    return found


def _targets_help(wire: Wire) -> str:
    sections = [f"\\[{s}]" for s, _ in wire.targets if s is not None]  # \\[: not rich markup
    text = _help(wire.option, wire.default)
    return text if len(sections) < 2 else f"{text} Sets {', '.join(sections[:-1])} and {sections[-1]}."


def run_toml_command(name: str, work: Callable[..., None], help: str, out_help: str,
                     extra: tuple[inspect.Parameter, ...] = (), quiet: bool = True) -> None:
    """Add ``synth <name>`` over run.toml: its options (``wires``), ``extra`` parameters that are no setting (an
    input file, a switch), ``--out``, ``--config`` and ``--quiet``. The flags given are laid over the file's
    top level and sections (``RunSettings.load``) and ``work(settings, given)`` runs with the checked settings
    and every parameter's value."""
    from synth.pipeline import PIPELINE

    found = wires(name)
    params = [*extra, *(_param(_name(flag), w.hint, w.option, _targets_help(w), flag) for flag, w in found.items())]
    sections = ", ".join(f"\\[{s}]" for s in PIPELINE.section_names)
    params += _common(out_help, f"A run.toml: top-level keys and a section per stage ({sections}); flags win.", quiet)

    def command(**given: Any) -> None:
        from synth.orchestrate import RunSettings

        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        try:
            for flag, wire in found.items():
                value = _value(wire.option, given[_name(flag)])
                if value is None:
                    continue
                for section, key in wire.targets:
                    (top if section is None else sections.setdefault(section, {}))[key] = value
            settings = RunSettings.load(given["config"], top, sections)
        except (SynthError, ValueError, OSError) as e:
            _fail(e)
        work(settings, given)

    command.__signature__ = inspect.Signature(params)  # what typer reads the options from
    command.__doc__ = help
    app.command(name, help=help)(command)
