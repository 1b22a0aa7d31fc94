"""The input side of extract: which files are corpora (``expand_inputs``, ``file_kind``), what a part of one is
(``InputPart``: one unit of work, one output shard) and what reading it yields (``Document``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OnError = Callable[[str, str], None]

_KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
          ".arrow": "arrow"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_DATASET_FILES = {"state.json", "dataset_info.json", "dataset_dict.json"}  # `datasets` metadata, not corpus


class UnreadableInput(Exception):
    """A whole file cannot be read; the message names the file and why."""


@dataclass(frozen=True)
class InputPart:
    """One unit of work, one output shard. Plain data, so it pickles and fingerprints the same everywhere."""

    path: str  # absolute path of the file (or of a `datasets` folder's arrow file)
    kind: str  # "txt" | "jsonl" | "parquet" | "arrow"
    start: int = 0  # byte offset (txt/jsonl), first row group (parquet) or first row (arrow)
    end: int | None = None  # exclusive; None: to the end
    source: str = ""  # the path as the user gave it (relative stays relative); "" means `path`
    lines_before: int | None = None  # lines before `start`, counted by plan_parts; None: count when read
    paras_before: int | None = None  # paragraphs before `start` (txt split in paragraph mode)

    @property
    def name(self) -> str:
        return self.source or self.path

    @property
    def compression(self) -> str | None:
        return _COMPRESSIONS.get(Path(self.path).suffix.lower())

    def key(self) -> str:
        """What a person recognises in an error message, e.g. ``corpus/a.jsonl[0:67108864]``."""
        if self.start == 0 and self.end is None:
            return self.name
        end = "" if self.end is None else self.end
        unit = {"parquet": "row groups ", "arrow": "rows "}.get(self.kind, "")
        return f"{self.name}[{unit}{self.start}:{end}]"


@dataclass(slots=True)
class Document:
    text: str
    source: str  # file path as given by the user
    source_id: str  # stable within the source: L<line>, p<paragraph>, doc, r<row>, or the record's own id


def file_kind(path: str | Path) -> tuple[str, str | None] | None:
    """(kind, compression) from the file name, e.g. ``a.jsonl.zst`` → ("jsonl", "zstd"); None if unknown."""
    name = Path(path).name.lower()
    compression = _COMPRESSIONS.get(Path(name).suffix)
    if compression:
        name = name[: -len(Path(name).suffix)]
    kind = _KINDS.get(Path(name).suffix)
    if kind is None or (compression and kind not in ("txt", "jsonl")):
        return None
    return kind, compression


def _is_dataset_dir(path: Path) -> bool:
    return (path / "state.json").is_file()  # dataset_info.json alone also sits in hub repos of Parquet files


def _walk(folder: Path, seen: set[str] | None = None) -> list[Path]:
    try:
        if _is_dataset_dir(folder):
            return [folder]
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:  # a folder the user gave, or one inside it, that cannot be listed: say so, lose nothing
        raise PermissionError(f"{folder}: cannot read this folder ({e.strerror or e})") from e
    seen = set() if seen is None else seen
    if (real := os.path.realpath(folder)) in seen:  # a link back up the tree
        return []
    seen.add(real)
    found: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:  # a link that loops: kept as a file, so reading it fails by name and is counted
            is_dir, is_file = False, entry.is_symlink()
        if is_dir:
            found += _walk(path, seen)
        elif is_file and entry.name not in _DATASET_FILES and file_kind(entry.name):
            found.append(path)
    return found


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files, folders (recursive, sorted) and globs as a list of input files, in the order given.

    A `datasets` ``save_to_disk`` folder is one input. Hidden files and unknown extensions inside folders are
    skipped; a path that yields nothing raises ``FileNotFoundError`` naming it, so a typo never runs quietly
    on less data. Paths stay as given (relative or through links) because they name the documents' source.
    """
    out: list[Path] = []
    seen: set[str] = set()
    for given in paths:
        p = Path(given)
        if p.exists():
            matches = [p]
        elif any(c in given for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(given, recursive=True))]
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
        found: list[Path] = []
        for m in matches:
            if m.is_dir():
                found += _walk(m)
            elif file_kind(m):
                found.append(m)
            elif m is p:
                raise ValueError(f"{given}: unsupported file type (expected .txt, .jsonl, .json, .ndjson, "
                                 ".parquet or .arrow, optionally .gz/.zst for text and JSON Lines)")
        if not found:
            raise FileNotFoundError(f"{given}: no readable input files there")
        for f in found:
            if (key := os.path.abspath(f)) not in seen:
                seen.add(key)
                out.append(f)
    return out


def encodable(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8 (no lone surrogates from a broken decode)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def own_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    s = str(value)
    return s if encodable(s) else s.encode("utf-8", "backslashreplace").decode("ascii")
