"""Run configuration: defaults, a ``run.toml`` file, then command-line flags, in that order of strength.

Every command reads its settings the same way: ``load_config`` reads the file, ``resolve`` lays the flags over
it (a flag left at ``None`` does not override), and the resolved settings are recorded in ``RUNDIR/run.toml``
(``record``) so a run can be repeated or inspected later.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from synth.budget import GPU_HOURS, TOKENS
from synth.errors import SynthError
from synth.io import atomic_write_text
from synth.lock import run_lock
from synth.redact import redact


class ConfigError(SynthError, ValueError):
    """A configuration file that cannot be read or holds an unknown setting; the message says where."""


def load_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def resolve(defaults: dict[str, Any], file_cfg: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Merge section by section; a flag left at ``None`` does not override the file. With ``defaults``, a key of
    the file that has none is an error."""
    out: dict[str, Any] = {}
    for key in defaults.keys() | file_cfg.keys() | flags.keys():
        d, f, c = defaults.get(key), file_cfg.get(key), flags.get(key)
        if isinstance(d, dict) or isinstance(f, dict) or isinstance(c, dict):
            out[key] = resolve(d or {}, f or {}, c or {})
        elif c is not None:
            out[key] = c
        elif key in file_cfg:
            out[key] = f
        else:
            out[key] = d
    unknown = set(file_cfg) - set(defaults) - set(flags)
    if defaults and unknown:
        raise ConfigError(f"unknown setting(s) in config: {', '.join(sorted(unknown))}")
    return dict(sorted(out.items()))


def section(path: str | Path | None, name: str, defaults: dict[str, Any], flags: dict[str, Any],
            whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``[name]`` section of the file at ``path`` under ``flags``, over ``defaults``. ``whole`` keys (paths,
    which may be a list or a ``{lang = path}`` table) are taken whole from the flag or else the file, never
    merged."""
    table = load_config(path).get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    file_cfg, flags, defaults = dict(table), dict(flags), dict(defaults)
    taken = {}
    for key in whole:
        flag, found, default = flags.pop(key, None), file_cfg.pop(key, None), defaults.pop(key, None)
        taken[key] = flag if flag is not None else found if found is not None else default
    try:
        cfg = resolve(defaults, file_cfg, flags)
    except ConfigError as e:
        raise ConfigError(f"{path} [{name}]: {e}") from None
    return {**cfg, **taken}


def parse_count(text: str | int | None) -> int | None:
    """'1M' → 1_000_000, '500k' → 500_000, '1234' → 1234."""
    if text is None or isinstance(text, int):
        return text
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise ConfigError(f"{text!r} is not a count like 1000, 500k or 1M") from None
    if value <= 0 or value != int(value):
        raise ConfigError(f"{text!r} must be a positive whole number")
    return int(value)


def _tomlable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):  # a table of settings (the fidelity thresholds…)
        return _tomlable(asdict(obj))
    if isinstance(obj, dict):
        return {k: _tomlable(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_tomlable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_run_config(rundir: str | Path, cfg: dict[str, Any]) -> Path:
    """Write the resolved configuration to ``RUNDIR/run.toml`` (None values are left out, credentials redacted:
    synth.redact), under the run's lock (synth.lock): a second process on the run stops here, before writing."""
    path = Path(rundir) / "run.toml"
    with run_lock(rundir):
        atomic_write_text(path, tomli_w.dumps(_tomlable(redact(cfg))))
    return path


def record(rundir: str | Path, cfg: dict[str, Any]) -> Path:
    """Record what one command resolved in ``RUNDIR/run.toml``: its keys and sections replace theirs, the rest
    of the file (what other commands recorded) stays."""
    path = Path(rundir) / "run.toml"
    return write_run_config(rundir, {**(load_config(path) if path.exists() else {}), **cfg})


_GPU_HOURS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*gpu[-_ ]?h(?:ours?)?\s*$", re.IGNORECASE)
_MONEY = re.compile(r"^\s*(\$)?\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]{3})?\s*$")


def parse_budget(value: int | float | str | None) -> tuple[float, str] | None:
    """``--max-budget``: a count of tokens (``2M``, ``500k``, ``120000``), GPU-hours (``3gpu-h``, ``0.5 GPU-hours``)
    or money in a currency (``40USD``, ``$40``, ``25 EUR``): ``(amount, unit)``, the unit ``tokens``,
    ``GPU-hours`` or the currency's code."""
    if value is None:
        return None
    if isinstance(value, int | float):
        amount, unit = float(value), TOKENS
    elif m := _GPU_HOURS.match(value):
        amount, unit = float(m.group(1)), GPU_HOURS
    elif (m := _MONEY.match(value)) and (m.group(1) or m.group(3)):
        amount, unit = float(m.group(2)), (m.group(3) or "USD").upper()
    else:
        try:
            amount, unit = float(parse_count(value)), TOKENS
        except ConfigError:
            raise ConfigError(f"--max-budget {value!r}: give tokens (2M), GPU-hours (3gpu-h) or money (40USD, "
                              "$40)") from None
    if amount <= 0:
        raise ConfigError(f"--max-budget must be positive, not {value!r}")
    return amount, unit


def budget_flag(text: str | None) -> int | str | None:
    """The flag as run.toml keeps it: a token count as a number, GPU-hours or money as written (checked now)."""
    parsed = parse_budget(text)
    return None if parsed is None else int(parsed[0]) if parsed[1] == TOKENS else str(text).strip()


# ------------------------------------------------------------------------- settings that make a command's options
# A settings dataclass whose fields carry ``option(...)`` is what a command's options are made from
# (``synth.cli.settings``): each field states its default once, with its help and how its flag reads.


@dataclass(frozen=True)
class Option:
    """How one settings field is given on the command line."""

    help: str
    flag: str = ""  # the option when it is not --<field>: --engine-opt
    alias: str = ""  # a second spelling: --lora-r beside --lora-rank, -i beside --input
    parse: Callable[[Any], Any] | None = None  # the flag's text → the setting (counts, comma lists, KEY=VALUE)
    many: bool = False  # repeatable (each value through ``parse``)
    argument: bool = False  # the command's positional argument
    whole: bool = False  # a list or {lang = path} table, taken whole from the flag or else the file, never merged
    # The commands over the whole pipeline (``run``, ``audit``) that take it too, beside its stage's own command: there
    # it sets the field in every run.toml section whose settings have it (--translator: [translate], [backtranslate]).
    also: tuple[str, ...] = ()
    wide: str = ""  # its flag in those commands, where not its own (the judge's model: --judge-model)
    show_default: bool = True  # False where the help says the default in its own words


def option(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None,
           fingerprint: bool = True, **how: Any) -> Any:
    """A settings field with its command-line option: ``max_tokens: int = option(128, "Max new tokens…")``.
    ``factory`` makes the default (instead of ``default``); ``fingerprint=False``: the field does not change the
    rows (a cache path, a device), so it is not in the stage's fingerprint."""
    meta = {"cli": Option(help, **how), **({} if fingerprint else {"fingerprint": False})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, list | dict):  # a fresh copy for each object; the help shows the literal
        return field(default_factory=lambda: type(default)(default), metadata={**meta, "shown": default})
    return field(default=default, metadata=meta)


def cli_fields(cls: type) -> list[tuple[Field, Option]]:
    """The fields of ``cls`` that have an option, in order."""
    return [(f, f.metadata["cli"]) for f in fields(cls) if "cli" in f.metadata]


def defaults(cls: type) -> dict[str, Any]:
    """Every field's default (a required field: None, so a missing one is named by the dataclass's own check)."""
    out = {}
    for f in fields(cls):
        out[f.name] = (f.default if f.default is not MISSING else
                       f.default_factory() if f.default_factory is not MISSING else None)
    return out


def split_list(values: list[str] | str | None) -> list[str] | None:
    """Repeatable and comma-separated at once: ``--langs swh,yor --langs zul`` → [swh, yor, zul]."""
    if values is None:
        return None
    items = [v.strip() for raw in ([values] if isinstance(values, str) else values) for v in str(raw).split(",")]
    return [v for v in items if v] or None


def key_values(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``--engine-opt dtype=bfloat16``) to keyword arguments, numbers and booleans parsed."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--engine-opt needs KEY=VALUE, got {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


LISTS = {"parse": split_list, "many": True, "whole": True}  # an option(...) comma-separated or repeated, taken whole
