"""Streaming readers of raw corpora: find the input files, cut them into parts, read a part as documents.

A part is one unit of work (one output shard). Large uncompressed text files are cut into byte ranges at line
(paragraph) starts; the lines before each cut are counted once while planning, so a part knows its line
numbers without reading what comes before it. Reading holds one document at a time, so memory stays flat
however big the corpus is. Bad items are reported through ``on_error`` and skipped; only a file that cannot
be read at all raises ``UnreadableInput``.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

OnError = Callable[[str, str], None]

_KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
          ".arrow": "arrow"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_DATASET_FILES = {"state.json", "dataset_info.json", "dataset_dict.json"}  # `datasets` metadata, not corpus
_CHUNK = 1 << 20  # longest piece of a line read at once
_SNIFF = 8192
_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16/32: full of NUL bytes, so say what it is
_DAMAGE = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)  # a compressed stream broke off
_BATCH_ROWS = 1024


class UnreadableInput(Exception):
    """A whole file cannot be read; the message names the file and why."""


class _Truncated(Exception):
    """The compressed stream broke off; already reported, the reader stops."""


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


# ---------------------------------------------------------------------------------------------------- lines


def _read_line(f: BinaryIO, limit: int) -> tuple[bytes | None, int, bool, bool]:
    """One line: (its bytes, or None if longer than ``limit``; bytes consumed; whitespace only; ends in \\n).

    Reads at most ``_CHUNK`` at a time and lets go of an over-long line as soon as it is over the limit, so a
    100 MB line costs ``limit`` bytes of memory once, never the whole line.
    """
    piece = f.readline(_CHUNK)
    if len(piece) < _CHUNK or piece.endswith(b"\n"):  # the usual case: the whole line in one piece
        nl = piece.endswith(b"\n")
        return (piece if len(piece) - nl <= limit else None), len(piece), not piece or piece.isspace(), nl
    pieces: list[bytes] | None = [piece]
    size, blank = len(piece), piece.isspace()
    while True:
        piece = f.readline(_CHUNK)
        size += len(piece)
        blank = blank and (not piece or piece.isspace())
        if pieces is not None:
            pieces.append(piece)
            if size > limit + 1:
                pieces = None
        if len(piece) < _CHUNK or piece.endswith(b"\n"):
            break
    nl = piece.endswith(b"\n")
    if pieces is None or size - nl > limit:
        return None, size, blank, nl
    return b"".join(pieces), size, blank, nl


def _marks(f: BinaryIO) -> Iterator[tuple[int, int, int, bool]]:
    """(offset, lines before, paragraphs before, starts a paragraph) for each line of a plain file."""
    pos = lines = paras = 0
    prev_blank = True
    while True:
        _, size, blank, _ = _read_line(f, -1)
        if size == 0:
            return
        starts = prev_blank and not blank
        yield pos, lines, paras, starts
        pos, lines, paras, prev_blank = pos + size, lines + 1, paras + starts, blank


def _zstd_complete(path: str) -> bool:
    """Whether a zstd file is whole frames only: zstandard's reader ends quietly at a truncated frame."""
    size = os.path.getsize(path)
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(18)
            magic = int.from_bytes(head[:4], "little")
            if len(head) >= 8 and magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
                pos += 8 + int.from_bytes(head[4:8], "little")
                continue
            try:
                pos += zstandard.frame_header_size(head)
                checksum = zstandard.get_frame_parameters(head).has_checksum
            except zstandard.ZstdError:
                return False
            last = False
            while not last:
                f.seek(pos)
                block = f.read(3)
                if len(block) < 3:
                    return False
                v = int.from_bytes(block, "little")
                last, rle, bsize = bool(v & 1), (v >> 1) & 3 == 1, v >> 3
                pos += 3 + (1 if rle else bsize)
            pos += 4 * checksum
    return pos == size


@contextmanager
def _open(part: InputPart) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed as they are read."""
    with ExitStack() as stack:
        try:
            f: BinaryIO = stack.enter_context(open(part.path, "rb", buffering=_CHUNK))
        except OSError as e:
            raise UnreadableInput(f"{part.name}: cannot open ({e.strerror or e})") from e
        if part.compression == "gzip":
            f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))  # type: ignore[arg-type]
        elif part.compression == "zstd":
            raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=False)
            f = stack.enter_context(io.BufferedReader(raw, _CHUNK))  # type: ignore[arg-type]
        yield f


def _check_head(part: InputPart) -> None:
    """Refuse files that are not text at all, judged by their first 8 KB, before any document comes out."""
    head = b""
    try:
        with _open(part) as f:
            while len(head) < _SNIFF and (chunk := f.read1(_SNIFF - len(head))):
                head += chunk
    except _DAMAGE as e:
        if not head:
            raise UnreadableInput(f"{part.name}: not a valid {part.compression} file ({e})") from e
    if head.startswith(_WIDE_BOMS):
        raise UnreadableInput(f"{part.name}: UTF-16/UTF-32 text; convert it to UTF-8")
    if b"\x00" in head:
        raise UnreadableInput(f"{part.name}: binary file (NUL bytes in the first 8 KB)")
    if part.kind == "jsonl":
        first = head.removeprefix(_BOM).lstrip()
        if first.startswith(b"[") and ".json" in Path(part.path).suffixes:
            raise UnreadableInput(f"{part.name}: a JSON array, not JSON Lines (one object per line)")
        if first.split(b"\n", 1)[0].strip() == b"{":
            raise UnreadableInput(f"{part.name}: pretty-printed JSON, not JSON Lines (one object per line)")


def _seek_start(f: BinaryIO, part: InputPart, paragraphs: bool) -> tuple[int, int, int] | None:
    """Put ``f`` at the first line (paragraph) that starts at or after ``part.start``.

    Returns (offset, lines before, paragraphs before), or None when nothing starts inside the part. Parts
    from ``plan_parts`` already start there; a part made by hand is found by counting from the top.
    """
    if part.start == 0:
        return 0, 0, 0
    if part.compression:
        raise ValueError(f"{part.key()}: a compressed file cannot be read from an offset")
    if part.lines_before is not None:
        f.seek(part.start - 1)
        if f.read(1) != b"\n":
            raise UnreadableInput(f"{part.key()}: no line starts there; the file changed since it was planned")
        return part.start, part.lines_before, part.paras_before or 0
    for pos, lines, paras, starts in _marks(f):
        if pos >= part.start and (starts or not paragraphs):
            f.seek(pos)
            return pos, lines, paras
    return None


def _numbered(f: BinaryIO, part: InputPart, limit: int, on_error: OnError, lineno: int, pos: int,
              ) -> Iterator[tuple[int, int, bytes | None, bool]]:
    """(line number, offset, bytes or None if over ``limit``, blank) per line; damage is reported once."""
    try:
        while True:
            line, size, blank, nl = _read_line(f, limit)
            if not nl:  # end of stream: a last line without newline, or nothing
                if part.compression == "zstd" and not _zstd_complete(part.path):
                    break
                if size:
                    yield lineno, pos, line, blank
                return
            yield lineno, pos, line, blank
            lineno, pos = lineno + 1, pos + size
    except _DAMAGE:
        pass
    on_error("truncated_stream", f"{part.name}:{lineno}")
    raise _Truncated


# ------------------------------------------------------------------------------------------ text and JSON


def _read_jsonl(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
                limit: int) -> Iterator[Document]:
    with _open(part) as f:
        begin = _seek_start(f, part, paragraphs=False)
        if begin is None:
            return
        pos0, lines, _ = begin
        try:
            for lineno, pos, line, blank in _numbered(f, part, limit, on_error, lines + 1, pos0):
                if part.end is not None and pos >= part.end:
                    return
                if blank:
                    continue  # blank lines are layout, not records
                where = f"{part.name}:{lineno}"
                doc = _json_doc(line, pos == 0, text_field, id_field)
                if isinstance(doc, str):
                    on_error(doc, where)
                else:
                    yield Document(doc[0], part.name, doc[1] or f"L{lineno}")
        except _Truncated:
            return


def _json_doc(line: bytes | None, first: bool, text_field: str, id_field: str | None,
              ) -> tuple[str, str | None] | str:
    """(text, own id) of one JSON Lines record, or the reason it is skipped."""
    if line is None:
        return "document_too_large"
    if b"\x00" in line:
        return "binary_file"
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        rec = json.loads(s.removeprefix("\ufeff") if first else s)
    except (ValueError, RecursionError):
        return "malformed_json"
    if not isinstance(rec, dict) or rec.get(text_field) is None:
        return "missing_text_field"
    text = rec[text_field]
    if not isinstance(text, str):
        return "not_a_string"
    if not text.strip():
        return "empty_document"
    if not _encodable(text):
        return "invalid_utf8"  # a lone surrogate from a \ud800 escape: it would break the Parquet writer
    return text, _own_id(rec.get(id_field)) if id_field else None


def _encodable(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _own_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    s = str(value)
    return s if _encodable(s) else s.encode("utf-8", "backslashreplace").decode("ascii")


def _read_paragraphs(part: InputPart, on_error: OnError, limit: int) -> Iterator[Document]:
    with _open(part) as f:
        begin = _seek_start(f, part, paragraphs=True)
        if begin is None:
            return
        pos0, lines, index = begin
        para: list[bytes] | None = None  # lines of the paragraph being read; None once it is too large
        head: tuple[int, int] | None = None  # (line number, offset) where it started
        size = 0
        try:
            for lineno, pos, line, blank in _numbered(f, part, limit, on_error, lines + 1, pos0):
                if blank:
                    if head is not None:
                        yield from _paragraph_doc(part, para, head, index, on_error)
                        head, index = None, index + 1
                    continue
                if head is None:
                    if part.end is not None and pos >= part.end:
                        return
                    head, para, size = (lineno, pos), [], 0
                if para is not None:
                    size += len(line) if line is not None else 0
                    if line is None or size > limit:
                        para = None  # too large: keep reading to its end, holding nothing
                    else:
                        para.append(line)
            if head is not None:
                yield from _paragraph_doc(part, para, head, index, on_error)
        except _Truncated:
            return  # the paragraph being read may be cut short: leave it out


def _paragraph_doc(part: InputPart, lines: list[bytes] | None, head: tuple[int, int], index: int,
                   on_error: OnError) -> Iterator[Document]:
    where = f"{part.name}:{head[0]}"
    if lines is None:
        on_error("document_too_large", where)
        return
    raw = b"".join(lines)
    if b"\x00" in raw:
        on_error("binary_file", where)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        on_error("invalid_utf8", where)
        return
    if head[1] == 0:
        text = text.removeprefix("\ufeff")
    text = text.rstrip("\r\n")
    if not text.strip():
        on_error("empty_document", where)
        return
    yield Document(text, part.name, f"p{index}")


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _read_txt_file(part: InputPart, on_error: OnError, limit: int) -> Iterator[Document]:
    if part.start or part.end is not None:
        raise ValueError(f"{part.key()}: txt_mode='file' reads whole files; plan the parts with txt_mode='file'")
    where = f"{part.name}:1"
    with _open(part) as f:
        try:
            data = f.read(limit + len(_BOM) + 1)
        except _DAMAGE:
            on_error("truncated_stream", where)
            return
    if len(data) > limit + (len(_BOM) if data.startswith(_BOM) else 0):
        on_error("document_too_large", where)
        return
    if part.compression == "zstd" and not _zstd_complete(part.path):
        on_error("truncated_stream", where)
        return
    data = data.removeprefix(_BOM)
    if b"\x00" in data:
        on_error("binary_file", f"{part.name}:{_line_of(data, data.index(0))}")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") >= 0.01 * len(text):  # mostly another encoding: do not pass mojibake on
            on_error("invalid_utf8", f"{part.name}:{_line_of(data, e.start)}")
            return
    if not text.strip():
        on_error("empty_document", where)
        return
    yield Document(text, part.name, "doc")


# ------------------------------------------------------------------------------------------ Parquet, Arrow


def _text_columns(schema: pa.Schema, part: InputPart, text_field: str, id_field: str | None) -> list[str]:
    """The columns to read; the text column must exist and hold strings, else the file is unusable."""
    if text_field not in schema.names:
        raise UnreadableInput(f"{part.name}: no column {text_field!r} (columns: {', '.join(schema.names)})")
    t = schema.field(text_field).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise UnreadableInput(f"{part.name}: column {text_field!r} holds {t}, not text")
    return [text_field] + ([id_field] if id_field and id_field in schema.names and id_field != text_field else [])


def _batch_docs(batch: pa.RecordBatch | pa.Table, cols: list[str], row0: int, part: InputPart,
                on_error: OnError, limit: int) -> Iterator[Document]:
    col = batch.column(cols[0])
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type) or pa.types.is_string_view(col.type):
        col = col.cast(pa.binary())  # bytes out, decoded here, so bad UTF-8 is one skipped row, not a crash
    elif pa.types.is_large_string(col.type):
        col = col.cast(pa.large_binary())
    texts = col.to_pylist()
    ids = batch.column(cols[1]).to_pylist() if len(cols) > 1 else None
    for i, raw in enumerate(texts):
        where = f"{part.name}:row {row0 + i}"
        if raw is None:
            on_error("missing_text_field", where)
        elif len(raw) > limit:
            on_error("document_too_large", where)
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                on_error("invalid_utf8", where)
                continue
            if not text.strip():
                on_error("empty_document", where)
                continue
            yield Document(text, part.name, (_own_id(ids[i]) if ids else None) or f"r{row0 + i}")


def _read_parquet(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
                  limit: int) -> Iterator[Document]:
    try:
        pf = pq.ParquetFile(part.path)
    except (OSError, pa.ArrowException) as e:
        raise UnreadableInput(f"{part.name}: not a readable Parquet file ({e})") from e
    with pf:
        cols = _text_columns(pf.schema_arrow, part, text_field, id_field)
        md = pf.metadata
        end = md.num_row_groups if part.end is None else min(part.end, md.num_row_groups)
        row = sum(md.row_group(i).num_rows for i in range(part.start))
        for rg in range(part.start, end):
            first, n = row, md.row_group(rg).num_rows
            try:  # one damaged row group costs its rows, not the file
                for batch in pf.iter_batches(_BATCH_ROWS, row_groups=[rg], columns=cols, use_threads=False):
                    yield from _batch_docs(batch, cols, row, part, on_error, limit)
                    row += batch.num_rows
            except (OSError, pa.ArrowException):
                on_error("corrupt_row_group", f"{part.name}:row {row}")
            row = first + n


def _dataset_files(folder: Path, name: str) -> list[Path]:
    """The arrow files of a `datasets` save_to_disk folder, in order, from its state.json."""
    try:
        state = json.loads((folder / "state.json").read_text())
        return [folder / d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnreadableInput(f"{name}: a datasets folder whose state.json cannot be read ({e})") from e


def _ipc_batches(path: str) -> Iterator[pa.RecordBatch]:
    """Record batches of an Arrow IPC stream (what `datasets` writes) or file, memory-mapped: nothing is copied
    until a column is used."""
    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            file_reader = pa.ipc.open_file(source)
            yield from (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            return
        yield from reader


def _read_arrow(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
                limit: int) -> Iterator[Document]:
    if os.path.isdir(part.path):  # plan_parts could not list the folder's files
        _dataset_files(Path(part.path), part.name)
    batches = _ipc_batches(part.path)
    try:
        first = next(batches, None)
    except (OSError, pa.ArrowException) as e:
        raise UnreadableInput(f"{part.name}: not a readable Arrow file ({e})") from e
    if first is None:
        return
    cols = _text_columns(first.schema, part, text_field, id_field)
    row = 0
    batch: pa.RecordBatch | None = first
    try:
        while batch is not None:
            n = batch.num_rows
            lo = max(part.start - row, 0)
            hi = n if part.end is None else min(n, part.end - row)
            if hi > lo:
                yield from _batch_docs(batch.slice(lo, hi - lo), cols, row + lo, part, on_error, limit)
            row += n
            batch = None if part.end is not None and row >= part.end else next(batches, None)
    except (OSError, pa.ArrowException):
        on_error("truncated_stream", f"{part.name}:row {row}")


# ----------------------------------------------------------------------------------------------- planning


def _byte_parts(path: Path, kind: str, source: str, target: int, paragraphs: bool) -> list[InputPart]:
    """Cut at the first line (paragraph) start at or after every ``target`` bytes, counting lines on the way."""
    cuts = [(0, 0, 0)]
    with open(path, "rb", buffering=_CHUNK) as f:
        for pos, lines, paras, starts in _marks(f):
            if pos >= cuts[-1][0] + target and (starts or not paragraphs):
                cuts.append((pos, lines, paras))
    ends: list[int | None] = [c[0] for c in cuts[1:]] + [None]
    return [InputPart(str(path.absolute()), kind, s, e, source, n, p if paragraphs else None)
            for (s, n, p), e in zip(cuts, ends, strict=True)]


def _row_group_parts(path: str, source: str, counts: list[int], per_part: int) -> list[InputPart]:
    """Runs of whole row groups of about ``per_part`` rows."""
    cuts, acc = [0], 0
    for i, n in enumerate(counts[:-1]):
        acc += n
        if acc >= per_part:
            cuts.append(i + 1)
            acc = 0
    ends: list[int | None] = cuts[1:] + [None]
    return [InputPart(path, "parquet", s, e, source) for s, e in zip(cuts, ends, strict=True)]


def _arrow_parts(path: Path, source: str, per_part: int) -> list[InputPart]:
    """Row ranges of ``per_part`` rows; an unreadable file is one part, to fail by name when read."""
    try:
        rows = sum(b.num_rows for b in _ipc_batches(str(path)))
    except (OSError, pa.ArrowException):
        rows = 0
    starts = list(range(0, rows, per_part)) or [0]
    ends: list[int | None] = starts[1:] + [None]
    return [InputPart(str(path.absolute()), "arrow", s, e, source) for s, e in zip(starts, ends, strict=True)]


def _size(path: Path) -> int:
    """The file's size; 0 for one that went away or loops since it was listed (one part, which then fails by
    name when it is read, counted)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def plan_parts(files: list[Path], target_bytes: int = 64 << 20, rows_per_part: int = 50_000,
               txt_mode: str = "file") -> list[InputPart]:
    """Cut input files into parts of about ``target_bytes`` (text) or ``rows_per_part`` rows, in file order.

    Uncompressed JSON Lines (and .txt in ``txt_mode="paragraphs"``) over ``target_bytes`` are cut at line
    (paragraph) starts; this reads them once, to count lines. Compressed files are one part each (no seeking
    into a compressed stream). A file whose metadata cannot be read becomes one part, so the error comes out
    when it is read, named, instead of stopping the plan.
    """
    if target_bytes < 1 or rows_per_part < 1:
        raise ValueError("target_bytes and rows_per_part must be positive")
    parts: list[InputPart] = []
    for f in files:
        source, path = str(f), str(f.absolute())
        if f.is_dir():
            try:
                arrows = _dataset_files(f, source)
            except UnreadableInput:
                parts.append(InputPart(path, "arrow", source=source))
                continue
            for a in arrows:
                parts += _arrow_parts(a, str(f / a.name), rows_per_part)
            continue
        kind_comp = file_kind(f)
        if kind_comp is None:
            raise ValueError(f"{f}: unsupported file type")
        kind, compression = kind_comp
        if kind == "parquet":
            try:
                md = pq.read_metadata(f)
                counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
            except (OSError, pa.ArrowException):
                counts = []
            parts += _row_group_parts(path, source, counts, rows_per_part) if counts else [
                InputPart(path, kind, source=source)]
        elif kind == "arrow":
            parts += _arrow_parts(f, source, rows_per_part)
        elif (not compression and (kind == "jsonl" or txt_mode == "paragraphs")
              and _size(f) > target_bytes):
            parts += _byte_parts(f, kind, source, target_bytes, paragraphs=kind == "txt")
        else:
            parts.append(InputPart(path, kind, source=source))
    return parts


# ---------------------------------------------------------------------------------------------------- read


def read_part(
    part: InputPart,
    on_error: OnError,
    text_field: str = "text",
    id_field: str | None = None,
    txt_mode: str = "file",
    max_doc_bytes: int = 20 << 20,
) -> Iterator[Document]:
    """Yield the documents of one part; every skipped item goes to ``on_error(reason, where)``.

    ``where`` is ``path:line`` (``path:row N`` for Parquet and Arrow). Raises ``UnreadableInput`` when the file
    cannot be read at all; a file that breaks off midway yields what comes before the damage. A whole file that
    gives neither a document nor a skipped item (empty, or blank lines only) is counted as ``empty_file``.
    """
    if txt_mode not in ("file", "paragraphs"):
        raise ValueError(f"txt_mode must be 'file' or 'paragraphs', not {txt_mode!r}")
    seen = False

    def note(reason: str, where: str) -> None:
        nonlocal seen
        seen = True
        on_error(reason, where)

    if part.kind == "parquet":
        docs = _read_parquet(part, note, text_field, id_field, max_doc_bytes)
    elif part.kind == "arrow":
        docs = _read_arrow(part, note, text_field, id_field, max_doc_bytes)
    elif part.kind in ("txt", "jsonl"):
        _check_head(part)
        if part.kind == "jsonl":
            docs = _read_jsonl(part, note, text_field, id_field, max_doc_bytes)
        elif txt_mode == "paragraphs":
            docs = _read_paragraphs(part, note, max_doc_bytes)
        else:
            docs = _read_txt_file(part, note, max_doc_bytes)
    else:
        raise ValueError(f"{part.key()}: unknown kind {part.kind!r}")
    for doc in docs:
        seen = True
        yield doc
    if not seen and part.start == 0 and part.end is None:
        on_error("empty_file", f"{part.name}:1")
