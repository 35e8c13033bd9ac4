from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from govml.data.loading import file_sha256, load_table
from govml.errors import DataError
from tests.conftest import EXAMPLES


def test_reads_gzip_csv_detected_from_bytes(tmp_path: Path) -> None:
    frame = load_table(EXAMPLES / "credit-risk/data/adult_test.csv.gz")
    assert len(frame) == 16281
    assert frame["workclass"].isna().sum() > 0  # '?' became missing
    # gzip is recognised by its magic bytes, whatever the file is called
    renamed = tmp_path / "adult.csv"
    renamed.write_bytes((EXAMPLES / "credit-risk/data/adult_test.csv.gz").read_bytes())
    assert len(load_table(renamed)) == 16281


def test_reads_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    assert load_table(path).equals(load_table(path))
    assert list(load_table(path).columns) == ["a", "b"]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_table(path)


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b,y\n")
    with pytest.raises(DataError, match="no data rows"):
        load_table(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,y\nJos\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*byte"):
        load_table(path)


def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match="malformed CSV.*line 3"):
        load_table(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n")[:15])
    with pytest.raises(DataError):
        load_table(path)


def test_hash_is_stable_and_order_sensitive(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    assert file_sha256([a, b]) == file_sha256([a, b])
    assert file_sha256([a, b]) != file_sha256([b, a])
