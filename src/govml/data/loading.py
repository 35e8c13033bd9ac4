"""Read CSV (plain or gzip) and Parquet files into pandas, with errors a user can act on."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from govml.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


def file_sha256(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of the files, in order: the data's provenance fingerprint."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise DataError(f"{path}: the file is empty")
    if head == _PARQUET_MAGIC:
        return "parquet"
    if head[:2] == _GZIP_MAGIC:
        return "csv.gz"
    return "csv"


def load_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV (optionally gzip-compressed, detected from its bytes) or Parquet file.

    Raises DataError for a missing, empty, non-UTF-8 or malformed file.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: no such data file")
    kind = _sniff(source)
    try:
        if kind == "parquet":
            frame = pd.read_parquet(source)
        else:
            frame = pd.read_csv(
                source,
                compression="gzip" if kind == "csv.gz" else None,
                encoding="utf-8",
                skipinitialspace=True,
                quoting=csv.QUOTE_MINIMAL,
            )
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file has no columns (is it empty?)") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{source}: malformed CSV: {exc}") from None
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{source}: cannot be read as {kind}: {exc}") from None
    if frame.empty:
        raise DataError(f"{source}: the file has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{source}: duplicate column names {duplicated}")
    return frame
