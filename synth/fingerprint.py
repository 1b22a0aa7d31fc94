"""Data-relevant fingerprints: the hash that names a stage's output folder.

Only what changes the rows goes in (model id and revision, prompt text, sampling params, thresholds, the
input's fingerprint). Paths, worker counts and log levels stay out, so moving a run or adding workers reuses
finished work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal settings hash equally."""
    return _dumps(plain_value(obj))


def fingerprint(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj``."""
    return digest(plain_value(obj), length)


def digest(plain: Any, length: int = 16) -> str:
    """``fingerprint`` of a value already made plain (``plain_value``): the hot path of request-cache keys."""
    return hashlib.blake2b(_dumps(plain).encode(), digest_size=16).hexdigest()[:length]


def _dumps(plain: Any) -> str:
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_id(*parts: Any) -> str:
    """A row id that depends only on its lineage (source, source id, position), never on run order."""
    return hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=10).hexdigest()


def plain_value(obj: Any) -> Any:
    """``obj`` as the JSON a fingerprint hashes (dataclasses as dicts of their fingerprinted fields, tuples as
    lists, sets sorted, whole floats as ints)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain_value(getattr(obj, f.name)) for f in fields(obj) if f.metadata.get("fingerprint", True)}
    if isinstance(obj, dict):
        return {str(k): plain_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_value(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(plain_value(v) for v in obj)
    if isinstance(obj, Path):
        raise TypeError(f"paths do not belong in a fingerprint; hash the file's content instead: {obj}")
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj

