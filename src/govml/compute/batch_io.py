"""Streaming Parquet and CSV: read a file of any size in chunks of rows, write results as they come.

Nothing here holds more than one chunk (plus one reader block) in memory. Output goes
to a temporary file beside the target and is renamed into place only when complete,
so a failed run never leaves a half-written result under the requested name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from govml.errors import DataError

FileFormat = Literal["parquet", "csv"]
Engine = Literal["local", "ray"]
DEFAULT_CHUNK_ROWS = 100_000

_SUFFIXES: dict[str, FileFormat] = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv", ".csv.bz2": "csv",
}
_CSV_BLOCK_BYTES = 8 << 20


def file_format(path: Path) -> FileFormat:
    """Parquet or CSV, from the file name (``.parquet``, ``.pq``, ``.csv``, ``.csv.gz``, ``.csv.bz2``)."""
    name = path.name.lower()
    for suffix, kind in sorted(_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise DataError(f"{path}: unknown file type; use one of {', '.join(sorted(_SUFFIXES))}")


def csv_convert_options(columns: list[str], column_types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    """Read only the model's columns, with the types of its signature (not guessed per block)."""
    return pacsv.ConvertOptions(include_columns=columns, column_types=column_types, strings_can_be_null=True)


def _rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def _parquet_batches(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    missing = sorted(set(columns) - set(parquet.schema_arrow.names))
    if missing:
        raise DataError(f"{path}: the model needs column(s) {missing}, which the file does not have")
    with parquet:
        yield from parquet.iter_batches(batch_size=chunk_rows, columns=columns)


def _csv_batches(path: Path, columns: list[str], column_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=csv_convert_options(columns, column_types),
    )
    yield from reader


def read_chunks(
    path: Path, *, columns: list[str], column_types: dict[str, pa.DataType], chunk_rows: int
) -> Iterator[pa.Table]:
    """Yield ``path``'s rows (only ``columns``) as tables of at most ``chunk_rows`` rows, in order."""
    if not path.is_file():
        raise DataError(f"{path}: no such input file")
    if chunk_rows < 1:
        raise DataError(f"chunk rows must be at least 1 (got {chunk_rows})")
    batches = (
        _parquet_batches(path, columns, chunk_rows) if file_format(path) == "parquet"
        else _csv_batches(path, columns, column_types)
    )
    try:
        yield from _rechunk(batches, chunk_rows)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:  # a missing column; a bad value, with its row
        raise DataError(f"{path}: {exc}") from None


class ChunkWriter(Protocol):
    def write(self, table: pa.Table) -> None: ...


class _ParquetChunks:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


class _CsvChunks:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pacsv.CSVWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


@contextmanager
def chunk_writer(path: Path, schema: pa.Schema) -> Iterator[ChunkWriter]:
    """Append tables to ``path`` (Parquet row groups or CSV rows); the file appears only on success."""
    kind = file_format(path)
    if kind == "csv" and path.name.lower().endswith((".gz", ".bz2")):
        raise DataError(f"{path}: compressed CSV output is not supported; write .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    writer = _ParquetChunks(partial, schema) if kind == "parquet" else _CsvChunks(partial, schema)
    try:
        yield writer
        writer.close()
        partial.replace(path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
