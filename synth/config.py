"""Run configuration: defaults, a ``run.toml`` file, then command-line flags, in that order of strength.

The resolved configuration is written to ``RUNDIR/run.toml`` so a run can be repeated or inspected later.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from synth.errors import SynthError
from synth.io import atomic_write_text


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
    """Merge section by section; a flag left at ``None`` does not override the file."""
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


def _tomlable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _tomlable(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_tomlable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_run_config(rundir: str | Path, cfg: dict[str, Any]) -> Path:
    """Write the resolved configuration to ``RUNDIR/run.toml`` (None values are left out)."""
    path = Path(rundir) / "run.toml"
    atomic_write_text(path, tomli_w.dumps(_tomlable(cfg)))
    return path
