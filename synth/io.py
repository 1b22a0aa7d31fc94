"""Atomic files and Parquet shards.

A shard is written under a temporary name, fsynced, then renamed into place, so a shard that exists is
complete. Its key-value metadata carries the row count and the shard's stats, committed by the same rename.
A stage's shards also get a sidecar ``<shard>.sha256`` (sha256 and rows), written atomically just before the
rename, so a resume can verify every finished shard, not only those of a stage whose manifest was written.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.errors import SynthError
from synth.identity import file_digest

SHARD_META_KEY = b"synth"
_UMASK = os.umask(0o022)  # read once, at import (os.umask both sets and returns it: no thread races here yet)
os.umask(_UMASK)


class ShardError(SynthError):
    """A shard that cannot be read; the message names the file."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it: mkstemp's 0600 hid the card from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class ShardWriter:
    """Streams record batches to ``path`` through a temp file; ``commit`` makes it appear whole."""

    def __init__(self, path: str | Path, compression: str = "zstd") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per attempt: a retried or duplicated task (a Ray task on another node, where pids repeat) never
        # writes into another attempt's temp file; the rename makes one of them the shard, whole.
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        self.compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._schema = table.schema.remove_metadata()
            self._writer = pq.ParquetWriter(self.tmp, self._schema, compression=self.compression)
        elif not table.schema.remove_metadata().equals(self._schema):
            table = table.cast(self._schema)  # same columns, differently inferred types (e.g. null vs string)
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self, meta: dict[str, Any], empty_schema: pa.Schema | None = None,
               checksum: bool = False) -> dict[str, Any]:
        """Close with ``meta`` in the footer, fsync, rename into place; with ``checksum``, record the shard's
        sha256 and rows in its sidecar first (a crash between the two leaves a sidecar without its shard, which
        is redone, never a shard with a stale sidecar that passes)."""
        meta = {**meta, "rows": self.rows}
        if self._writer is None:  # nothing came out: still write a valid empty shard
            schema = (empty_schema or pa.schema([])).remove_metadata()
            self._writer = pq.ParquetWriter(self.tmp, schema, compression=self.compression)
        self._writer.add_key_value_metadata({SHARD_META_KEY: json.dumps(meta, ensure_ascii=False).encode()})
        self._writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        if checksum:
            atomic_write_text(sidecar(self.path), json.dumps({"sha256": file_digest(self.tmp), "rows": self.rows}))
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return meta

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def sidecar(shard: str | Path) -> Path:
    """Where a shard's recorded sha256 and row count live."""
    shard = Path(shard)
    return shard.with_name(shard.name + ".sha256")


def read_sidecar(shard: str | Path) -> dict[str, Any] | None:
    """The sha256 and rows recorded when ``shard`` was committed, or None if there is no readable record."""
    try:
        rec = json.loads(sidecar(shard).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and {"sha256", "rows"} <= rec.keys() else None


def read_shard_meta(path: str | Path) -> dict[str, Any]:
    """The metadata a shard was committed with; ``ShardError`` if the file is damaged or foreign."""
    try:
        md = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: not a readable Parquet file ({e})") from e
    raw = (md.metadata or {}).get(SHARD_META_KEY)
    if raw is None:
        raise ShardError(f"{path}: Parquet file without synth shard metadata")
    meta = json.loads(raw)
    if meta.get("rows") != md.num_rows:
        raise ShardError(f"{path}: footer says {md.num_rows} rows, shard metadata says {meta.get('rows')}")
    return meta


def iter_shard(path: str | Path, batch_size: int = 1024, columns: list[str] | None = None):
    """Yield the shard as tables of at most ``batch_size`` rows; damage raises ``ShardError`` naming the file."""
    try:
        pf = pq.ParquetFile(path)
        for rb in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield pa.Table.from_batches([rb])
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: cannot read Parquet shard ({e})") from e


def read_table(paths: list[Path], columns: list[str] | None = None) -> pa.Table:
    """Read several shards into one table (for small outputs, tests and export). A shard a stage wrote with no
    columns (every row of it dropped before the stage knew its schema) holds nothing and is passed over."""
    tables = []
    for p in paths:
        try:
            if columns is not None and not len(pq.read_schema(p)):
                continue
            tables.append(pq.read_table(p, columns=columns))
        except (OSError, pa.ArrowException) as e:
            raise ShardError(f"{p}: cannot read Parquet shard ({e})") from e
    non_empty = [t for t in tables if t.num_columns]
    return pa.concat_tables(non_empty, promote_options="default") if non_empty else pa.table({})
