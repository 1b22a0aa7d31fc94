"""Commands made from a settings dataclass (``synth.config.option`` fields): one option per field, its help and
default from the field, the flags laid over the ``--config`` file's section over the defaults, then the
dataclass built and handed to the command's work. A new setting is one field; its option follows."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from synth.cli.common import _fail, app
from synth.config import ConfigError, cli_fields, defaults, record
from synth.config import section as config_section


def _base(annotation: Any) -> type:
    """``int | None`` → int; a list or dict → str (its flag's text is parsed)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else [annotation]
    base = args[0] if args else str
    return base if base in (int, float, str, bool) else str


def _help(opt: Any, default: Any) -> str:
    shown = default not in (None, [], {}) and not isinstance(default, bool)
    if not shown:
        return opt.help
    text, dot = (opt.help[:-1], ".") if opt.help.endswith(".") else (opt.help, "")
    return f"{text} (default {default}){dot}"


def settings_command(name: str, cls: type, run: Callable[..., None], help: str, out_help: str,
                     quiet: bool = False, on: typer.Typer = app, section: str | None = None,
                     record_in_out: bool = True) -> None:
    """Add ``<name>`` to ``on`` (``synth``, or a group like ``synth baseline``): ``--out``, an option (or the
    argument) per field of ``cls``, ``--config`` (its ``[section]``, default ``[name]``) and with ``quiet`` a
    ``--quiet``. ``run(settings, out[, quiet=…])`` does the work, after the resolved section is recorded in
    ``OUT/run.toml`` (not where ``--out`` is a file: ``record_in_out`` off)."""
    section = section or name
    hints, given_defaults = typing.get_type_hints(cls), defaults(cls)
    params = []
    for f, opt in cli_fields(cls):
        kind = list[str] if opt.many else str if opt.parse else _base(hints[f.name])
        flag = opt.flag or f"--{f.name.replace('_', '-')}"
        text = _help(opt, given_defaults[f.name])
        if opt.argument:
            default = typer.Argument(None, help=text)
        elif kind is bool:  # --x/--no-x, or the one switch a field names (--no-cache)
            default = typer.Option(None, opt.flag or f"{flag}/--no-{flag.removeprefix('--')}", help=text)
        else:
            default = typer.Option(None, flag, *([opt.alias] if opt.alias else []), help=text)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default))
    params += [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                 default=typer.Option(..., "--out", "-o", help=out_help)),
               inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                 default=typer.Option(None, "--config", help=f"A run.toml; flags override its "
                                                      f"\\[{section}] section."))]
    if quiet:
        params.append(inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, "--quiet", help="No progress bars.")))

    def command(**given: Any) -> None:
        try:
            flags = {}
            for f, opt in cli_fields(cls):
                value = given[f.name]
                value = None if value in ([], ()) else value
                flags[f.name] = opt.parse(value) if opt.parse and value is not None else value
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
