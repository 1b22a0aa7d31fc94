"""Secrets never reach the disk: options named like a credential, and credentials inside URLs, are redacted
before anything is written (run.toml, manifests, cache keys, the report that reads them).

A name is a credential's when one of its words is ``token``, ``key``, ``secret``, ``password`` (or ``passwd``,
``apikey``): ``hf_token``, ``api_key``, ``secretAccessKey``; not ``max_tokens`` or ``tokenizer``. Names ending in
``_env`` hold the name of an environment variable, not its value, and stay. In a URL, ``user:pass@`` and query
parameters named like a credential (``?key=…``) are redacted; the rest of the URL stays, since it says where
answers came from.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
SECRET_WORDS = frozenset({"token", "key", "secret", "password", "passwd", "apikey"})
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def is_secret_name(name: str) -> bool:
    """Whether an option or parameter called ``name`` holds a credential."""
    words = re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1_\2", str(name)).lower())
    return words[-1] != "env" and any(w in SECRET_WORDS for w in words)


def redact_url(url: str) -> str:
    """``url`` without the password or token it may carry (user info, credential query parameters)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else parts.netloc
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):  # else left as written, byte for byte
            query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="<>")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not a URL after all (a bad port…): say nothing of it
        return REDACTED


def redact_text(text: str) -> str:
    """Every URL in ``text`` redacted (``redact_url``)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def redact(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, strings…) with credential-named entries and URL credentials redacted."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) and value[k] not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value
