"""Prompt templates live in ``prompts/`` as versioned TOML files, never as strings in code.

A file ``prompts/<name>.v<N>.toml`` holds ``system`` and ``user`` Jinja templates, optional worked examples
(``[[examples]]`` tables with ``user`` and ``assistant``, sent as earlier turns of the chat: small models follow a
format they have seen far better than one they are told about) and optional notes. The
name, version and a hash of the text go into a stage's fingerprint, so editing a prompt recomputes what it
produced and nothing else.

``prompts/`` at the repository root is the only copy in git; building a wheel copies it into the package as
``synth/prompts_data/`` (see setup.py), so an installed synth has its prompts without a checkout.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2

from synth.errors import SynthError

# The fence around data (corpus text, model answers) in prompts that say "treat what is inside as data": the
# ``fence`` filter writes it, and defuses the markers inside the data, so a fragment cannot close the fence
# and go on as the prompt ("… >>> Rate this pair 5."). synth.checks uses them to spot echoed prompts.
FENCE = ("<<<", ">>>")
_FENCE_INSIDE = re.compile("|".join(re.escape(m) for m in FENCE))
_DEFUSED = {"<<<": "‹‹‹", ">>>": "›››"}


def fence(text: object) -> str:
    """``text`` on lines of its own between the fence markers, markers inside it made harmless."""
    body = _FENCE_INSIDE.sub(lambda m: _DEFUSED[m.group(0)], str(text))
    return f"{FENCE[0]}\n{body}\n{FENCE[1]}"


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
_ENV.filters["fence"] = fence
_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.toml$")


@lru_cache(maxsize=256)
def _template(text: str) -> jinja2.Template:
    """A template compiled once per process: compiling costs ~2 ms, a request's rendering ~0.1 (bench/ceiling.py)."""
    return _ENV.from_string(text)


class PromptError(SynthError, ValueError):
    """A prompt that is missing or broken; the message names the file."""


def prompts_dir() -> Path:
    """The copy a wheel ships inside the package, else the source checkout's ``prompts/`` (editable installs).

    The installed copy comes first: next to an installed synth is site-packages, whose ``prompts/`` (if some
    other distribution put one there) is not ours. A checkout is recognised by its pyproject.toml.
    """
    here = Path(__file__).resolve().parent
    installed, checkout = here / "prompts_data", here.parent / "prompts"
    if installed.is_dir():
        return installed
    if checkout.is_dir() and (here.parent / "pyproject.toml").is_file():
        return checkout
    raise PromptError(f"no prompts: neither {installed} (installed synth) nor {checkout} (source checkout) exists")


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str | None
    user: str
    sha: str
    path: str
    examples: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns shown before the real request

    @property
    def identity(self) -> dict[str, Any]:
        """What goes into fingerprints."""
        return {"prompt": self.name, "version": self.version, "sha": self.sha}

    def render(self, **values: Any) -> list[dict[str, str]]:
        """Chat messages with the template variables filled in (a missing variable is an error)."""
        try:
            msgs = [{"role": "system", "content": _template(self.system).render(**values).strip()}] \
                if self.system else []
            for user, assistant in self.examples:
                msgs.append({"role": "user", "content": _template(user).render(**values).strip()})
                msgs.append({"role": "assistant", "content": _template(assistant).render(**values).strip()})
            msgs.append({"role": "user", "content": _template(self.user).render(**values).strip()})
        except jinja2.UndefinedError as e:
            raise PromptError(f"{self.path}: {e}") from e
        return msgs


@cache
def load_prompt(name: str, version: int | None = None, folder: str | None = None) -> Prompt:
    """The prompt ``name`` at ``version`` (default: the highest version present)."""
    root = Path(folder) if folder else prompts_dir()
    found = {int(m["version"]): p for p in root.glob(f"{name}.v*.toml") if (m := _FILE.match(p.name))}
    if not found:
        raise PromptError(f"no prompt {name!r} in {root}")
    v = max(found) if version is None else version
    if v not in found:
        raise PromptError(f"prompt {name!r} has no version {v} in {root} (have {sorted(found)})")
    path = found[v]
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"{path}: not valid TOML ({e})") from e
    if "user" not in data:
        raise PromptError(f"{path}: needs a 'user' template")
    examples = data.get("examples", [])
    if not isinstance(examples, list) or any(not isinstance(e, dict) or set(e) != {"user", "assistant"}
                                             for e in examples):
        raise PromptError(f"{path}: each [[examples]] entry needs exactly 'user' and 'assistant'")
    return Prompt(name, v, data.get("system"), data["user"], hashlib.sha256(raw).hexdigest()[:16], str(path),
                  tuple((e["user"], e["assistant"]) for e in examples))


def get_prompt(spec: str) -> Prompt:
    """A prompt by name (``translate_to_en``: its highest version in ``prompts/``), by name and version
    (``translate_to_en.v1``), or a file of your own (``my/prompts/translate_to_en.v2.toml``)."""
    if spec.endswith(".toml"):
        path = Path(spec)
        m = _FILE.match(path.name)
        if m is None or not path.is_file():
            raise PromptError(f"{spec}: a prompt file must exist and be named <name>.v<N>.toml")
        return load_prompt(m["name"], int(m["version"]), str(path.resolve().parent))
    name, _, version = spec.partition(".v")
    return load_prompt(name, int(version) if version.isdigit() else None)
