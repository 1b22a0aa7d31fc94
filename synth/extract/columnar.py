"""Reading Parquet files and Arrow (``datasets``) folders as documents, row group by row group or batch by batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth.extract.inputs import Document, InputPart, OnError, UnreadableInput, own_id

_BATCH_ROWS = 1024



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
            yield Document(text, part.name, (own_id(ids[i]) if ids else None) or f"r{row0 + i}")


def read_parquet(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
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


def dataset_files(folder: Path, name: str) -> list[Path]:
    """The arrow files of a `datasets` save_to_disk folder, in order, from its state.json."""
    try:
        state = json.loads((folder / "state.json").read_text())
        return [folder / d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnreadableInput(f"{name}: a datasets folder whose state.json cannot be read ({e})") from e


def ipc_batches(path: str) -> Iterator[pa.RecordBatch]:
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


def read_arrow(part: InputPart, on_error: OnError, text_field: str, id_field: str | None,
                limit: int) -> Iterator[Document]:
    if os.path.isdir(part.path):  # plan_parts could not list the folder's files
        dataset_files(Path(part.path), part.name)
    batches = ipc_batches(part.path)
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
