"""What names a model in cache keys and fingerprints: a hub name and revision, or a local directory's content."""

from __future__ import annotations

import hashlib
from pathlib import Path


def model_identity(name_or_path: str, revision: str | None = None) -> str:
    """``name@revision`` for a hub name; for a local directory, its name plus a digest of its config files and of
    its other files' names, sizes and first and last 64 KiB. Moving the folder keeps the identity; retraining
    into the same folder changes it (new weights differ at the start of the tensor data), without reading
    gigabytes of weights at every run."""
    path = Path(name_or_path)
    if not path.exists():
        return f"{name_or_path}@{revision or 'main'}"
    h = hashlib.blake2b(digest_size=8)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        h.update(f"{rel}:{f.stat().st_size}".encode())
        h.update(sampled_content(f))
    return f"{path.name}:{h.hexdigest()}"


def sampled_content(f: Path, edge: int = 1 << 16) -> bytes:
    """A small file whole; a large one by its first and last ``edge`` bytes."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        if size <= 2 * edge:
            return fh.read()
        head = fh.read(edge)
        fh.seek(size - edge)
        return head + fh.read(edge)
