"""Reading text files line by line, as bytes: plain, gzip or zstd, from a byte offset, with line numbers and with a
broken-off compressed stream or a wide encoding reported, never raised (``synth.extract.readers`` builds on these).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import zstandard

from synth.extract.inputs import InputPart, OnError, UnreadableInput

CHUNK = 1 << 20  # longest piece of a line read at once
SNIFF = 8192
BOM = b"\xef\xbb\xbf"
WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16/32: full of NUL bytes, so say what it is
DAMAGE = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)  # a compressed stream broke off


class Truncated(Exception):
    """The compressed stream broke off; already reported, the reader stops."""



def _read_line(f: BinaryIO, limit: int) -> tuple[bytes | None, int, bool, bool]:
    """One line: (its bytes, or None if longer than ``limit``; bytes consumed; whitespace only; ends in \\n).

    Reads at most ``CHUNK`` at a time and lets go of an over-long line as soon as it is over the limit, so a
    100 MB line costs ``limit`` bytes of memory once, never the whole line.
    """
    piece = f.readline(CHUNK)
    if len(piece) < CHUNK or piece.endswith(b"\n"):  # the usual case: the whole line in one piece
        nl = piece.endswith(b"\n")
        return (piece if len(piece) - nl <= limit else None), len(piece), not piece or piece.isspace(), nl
    pieces: list[bytes] | None = [piece]
    size, blank = len(piece), piece.isspace()
    while True:
        piece = f.readline(CHUNK)
        size += len(piece)
        blank = blank and (not piece or piece.isspace())
        if pieces is not None:
            pieces.append(piece)
            if size > limit + 1:
                pieces = None
        if len(piece) < CHUNK or piece.endswith(b"\n"):
            break
    nl = piece.endswith(b"\n")
    if pieces is None or size - nl > limit:
        return None, size, blank, nl
    return b"".join(pieces), size, blank, nl


def marks(f: BinaryIO) -> Iterator[tuple[int, int, int, bool]]:
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


def zstd_complete(path: str) -> bool:
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
def open_part(part: InputPart) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed as they are read."""
    with ExitStack() as stack:
        try:
            f: BinaryIO = stack.enter_context(open(part.path, "rb", buffering=CHUNK))
        except OSError as e:
            raise UnreadableInput(f"{part.name}: cannot open ({e.strerror or e})") from e
        if part.compression == "gzip":
            f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))  # type: ignore[arg-type]
        elif part.compression == "zstd":
            raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=False)
            f = stack.enter_context(io.BufferedReader(raw, CHUNK))  # type: ignore[arg-type]
        yield f


def check_head(part: InputPart) -> None:
    """Refuse files that are not text at all, judged by their first 8 KB, before any document comes out."""
    head = b""
    try:
        with open_part(part) as f:
            while len(head) < SNIFF and (chunk := f.read1(SNIFF - len(head))):
                head += chunk
    except DAMAGE as e:
        if not head:
            raise UnreadableInput(f"{part.name}: not a valid {part.compression} file ({e})") from e
    if head.startswith(WIDE_BOMS):
        raise UnreadableInput(f"{part.name}: UTF-16/UTF-32 text; convert it to UTF-8")
    if b"\x00" in head:
        raise UnreadableInput(f"{part.name}: binary file (NUL bytes in the first 8 KB)")
    if part.kind == "jsonl":
        first = head.removeprefix(BOM).lstrip()
        if first.startswith(b"[") and ".json" in Path(part.path).suffixes:
            raise UnreadableInput(f"{part.name}: a JSON array, not JSON Lines (one object per line)")
        if first.split(b"\n", 1)[0].strip() == b"{":
            raise UnreadableInput(f"{part.name}: pretty-printed JSON, not JSON Lines (one object per line)")


def seek_start(f: BinaryIO, part: InputPart, paragraphs: bool) -> tuple[int, int, int] | None:
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
    for pos, lines, paras, starts in marks(f):
        if pos >= part.start and (starts or not paragraphs):
            f.seek(pos)
            return pos, lines, paras
    return None


def numbered(f: BinaryIO, part: InputPart, limit: int, on_error: OnError, lineno: int, pos: int,
              ) -> Iterator[tuple[int, int, bytes | None, bool]]:
    """(line number, offset, bytes or None if over ``limit``, blank) per line; damage is reported once."""
    try:
        while True:
            line, size, blank, nl = _read_line(f, limit)
            if not nl:  # end of stream: a last line without newline, or nothing
                if part.compression == "zstd" and not zstd_complete(part.path):
                    break
                if size:
                    yield lineno, pos, line, blank
                return
            yield lineno, pos, line, blank
            lineno, pos = lineno + 1, pos + size
    except DAMAGE:
        pass
    on_error("truncated_stream", f"{part.name}:{lineno}")
    raise Truncated
