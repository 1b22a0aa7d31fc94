"""Streaming readers of raw corpora: cut the input files (``synth.extract.inputs``) into parts, read a part as
documents: text and JSON lines here, over ``synth.extract.lines``; Parquet and Arrow in ``synth.extract.columnar``.

A part is one unit of work (one output shard). Large uncompressed text files are cut into byte ranges at line
(paragraph) starts; the lines before each cut are counted once while planning, so a part knows its line
numbers without reading what comes before it. Reading holds one document at a time, so memory stays flat
however big the corpus is. Bad items are reported through ``on_error`` and skipped; only a file that cannot
be read at all raises ``UnreadableInput``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth.extract.columnar import dataset_files, ipc_batches, read_arrow, read_parquet
from synth.extract.inputs import Document, InputPart, OnError, UnreadableInput, encodable, file_kind, own_id
from synth.extract.lines import (
    BOM,
    CHUNK,
    DAMAGE,
    Truncated,
    check_head,
    marks,
    numbered,
    open_part,
    seek_start,
    zstd_complete,
)

# ------------------------------------------------------------------------------------------ text and JSON


def _read_jsonl(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
                limit: int) -> Iterator[Document]:
    with open_part(part) as f:
        begin = seek_start(f, part, paragraphs=False)
        if begin is None:
            return
        pos0, lines, _ = begin
        try:
            for lineno, pos, line, blank in numbered(f, part, limit, on_error, lines + 1, pos0):
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
        except Truncated:
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
    if not encodable(text):
        return "invalid_utf8"  # a lone surrogate from a \ud800 escape: it would break the Parquet writer
    return text, own_id(rec.get(id_field)) if id_field else None


def _read_paragraphs(part: InputPart, on_error: OnError, limit: int) -> Iterator[Document]:
    with open_part(part) as f:
        begin = seek_start(f, part, paragraphs=True)
        if begin is None:
            return
        pos0, lines, index = begin
        para: list[bytes] | None = None  # lines of the paragraph being read; None once it is too large
        head: tuple[int, int] | None = None  # (line number, offset) where it started
        size = 0
        try:
            for lineno, pos, line, blank in numbered(f, part, limit, on_error, lines + 1, pos0):
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
        except Truncated:
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
    with open_part(part) as f:
        try:
            data = f.read(limit + len(BOM) + 1)
        except DAMAGE:
            on_error("truncated_stream", where)
            return
    if len(data) > limit + (len(BOM) if data.startswith(BOM) else 0):
        on_error("document_too_large", where)
        return
    if part.compression == "zstd" and not zstd_complete(part.path):
        on_error("truncated_stream", where)
        return
    data = data.removeprefix(BOM)
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


# ----------------------------------------------------------------------------------------------- planning


def _byte_parts(path: Path, kind: str, source: str, target: int, paragraphs: bool) -> list[InputPart]:
    """Cut at the first line (paragraph) start at or after every ``target`` bytes, counting lines on the way."""
    cuts = [(0, 0, 0)]
    with open(path, "rb", buffering=CHUNK) as f:
        for pos, lines, paras, starts in marks(f):
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
        rows = sum(b.num_rows for b in ipc_batches(str(path)))
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
                arrows = dataset_files(f, source)
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
        docs = read_parquet(part, note, text_field, id_field, max_doc_bytes)
    elif part.kind == "arrow":
        docs = read_arrow(part, note, text_field, id_field, max_doc_bytes)
    elif part.kind in ("txt", "jsonl"):
        check_head(part)
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
