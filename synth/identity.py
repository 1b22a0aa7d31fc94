"""What names a model or a file in fingerprints and cache keys: its content, never the path it lives at.

One identity for every model and input file (LLM weights, MT and embedding models, fastText LID files, raw
corpora): a hub name with its revision, or for what exists on disk its name plus a digest of its files' names,
sizes and first and last 64 KiB. Moving a folder keeps the identity; retraining into the same folder or editing
a config changes it (new weights differ at the start of the tensor data), without reading gigabytes at every
run. ``file_digest`` is the other hash: every byte of one file, for the manifest's integrity check of a shard.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

EDGE = 1 << 16  # bytes read at each end of a large file


def identity(name_or_path: str | Path, revision: str | None = None) -> str:
    """``name@revision`` for a hub name (``@main`` without one); for a local file or directory
    ``<name>:<digest>`` over each file's relative path, size and sampled content."""
    path = Path(name_or_path)
    if not path.exists():
        return f"{name_or_path}@{revision or 'main'}"
    h = hashlib.blake2b(digest_size=8)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        h.update(f"{rel}:{f.stat().st_size}".encode())
        h.update(_sampled(f))
    return f"{path.name}:{h.hexdigest()}"


def _sampled(f: Path, edge: int = EDGE) -> bytes:
    """A small file whole; a large one by its first and last ``edge`` bytes."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        if size <= 2 * edge:
            return fh.read()
        head = fh.read(edge)
        fh.seek(size - edge)
        return head + fh.read(edge)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of every byte of a file: a shard's checksum in its stage's manifest."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
