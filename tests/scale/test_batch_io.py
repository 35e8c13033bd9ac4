"""Streaming reads and incremental writes of Parquet and CSV, on real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from govml.compute.batch_io import chunk_writer, file_format, read_chunks
from govml.errors import DataError

TABLE = pa.table({"a": list(range(1000)), "b": [f"x{i % 7}" for i in range(1000)], "c": [i / 3 for i in range(1000)]})
TYPES = {"a": pa.int64(), "b": pa.string()}


@pytest.fixture(params=["parquet", "csv", "csv.gz"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"rows.{request.param}"
    if request.param == "parquet":
        pq.write_table(TABLE, path, row_group_size=128)
    elif request.param == "csv":
        pacsv.write_csv(TABLE, path)
    else:
        plain = tmp_path / "plain.csv"
        pacsv.write_csv(TABLE, plain)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    return path


def test_chunks_have_the_asked_size_keep_order_and_only_the_asked_columns(source: Path) -> None:
    chunks = list(read_chunks(source, columns=["a", "b"], column_types=TYPES, chunk_rows=300))
    assert [c.num_rows for c in chunks] == [300, 300, 300, 100]
    assert all(c.column_names == ["a", "b"] for c in chunks)
    joined = pa.concat_tables(chunks)
    assert joined.column("a").to_pylist() == list(range(1000))
    assert joined.column("b").to_pylist() == TABLE.column("b").to_pylist()


def test_missing_column_is_a_data_error_naming_it(source: Path) -> None:
    with pytest.raises(DataError, match="nope"):
        list(read_chunks(source, columns=["a", "nope"], column_types={}, chunk_rows=100))


def test_a_bad_value_deep_in_a_csv_is_reported_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    lines = ["a,b"] + [f"{i},x" for i in range(5000)] + ["oops,x"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv.*oops"):
        list(read_chunks(path, columns=["a", "b"], column_types=TYPES, chunk_rows=1000))


@pytest.mark.parametrize("name", ["rows.txt", "rows.json", "rows"])
def test_unknown_file_types_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="unknown file type"):
        file_format(tmp_path / name)


def test_no_file_and_bad_chunk_size_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such input file"):
        list(read_chunks(tmp_path / "x.parquet", columns=["a"], column_types={}, chunk_rows=10))
    pq.write_table(TABLE, tmp_path / "x.parquet")
    with pytest.raises(DataError, match="at least 1"):
        list(read_chunks(tmp_path / "x.parquet", columns=["a"], column_types={}, chunk_rows=0))


def test_a_corrupt_parquet_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(read_chunks(path, columns=["a"], column_types={}, chunk_rows=10))


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_writer_appends_chunks_and_publishes_only_on_success(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "out" / f"scored.{suffix}"
    with chunk_writer(target, TABLE.schema) as writer:
        for start in range(0, 1000, 250):
            writer.write(TABLE.slice(start, 250))
        assert not target.exists()  # still being written under a temporary name
    back = pq.read_table(target) if suffix == "parquet" else pacsv.read_csv(target)
    assert back.num_rows == 1000 and back.column("a").to_pylist() == list(range(1000))
    if suffix == "parquet":
        assert pq.ParquetFile(target).metadata.num_row_groups == 4  # one per chunk: written as they came

    failed = tmp_path / f"failed.{suffix}"
    with pytest.raises(RuntimeError), chunk_writer(failed, TABLE.schema) as writer:
        writer.write(TABLE.slice(0, 10))
        raise RuntimeError("scoring crashed mid-file")
    assert list(tmp_path.glob("*failed*")) == []
