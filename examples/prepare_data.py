"""Rebuild the example data sets shipped under examples/ from their public sources.

Run from the repository root with the shared data beside it:
    python examples/prepare_data.py ../shared/data

Only the standard library is used, so the files can be rebuilt before govml is installed.
The outputs are committed; this script documents exactly how they were made.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]
GERMAN_COLUMNS = [
    "status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "present_employment", "installment_rate", "status_sex", "other_debtors",
    "present_residence_since", "property", "age", "installment_plans", "housing",
    "number_of_existing_credits", "job", "number_of_people_liable_for", "telephone",
    "foreign_worker", "credit",
]


def _write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes (and so the data hash) reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with open_text(gz) as text:
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)


def open_text(binary):  # type: ignore[no-untyped-def]
    import io

    return io.TextIOWrapper(binary, encoding="utf-8", newline="")


def prepare_adult(source: Path, out: Path) -> None:
    for name, target in (("adult.data", "adult_train.csv.gz"), ("adult.test", "adult_test.csv.gz")):
        rows = []
        for line in (source / name).read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("|"):
                continue
            values = [v.strip() for v in line.split(",")]
            values = ["" if v == "?" else v for v in values]
            values[-1] = values[-1].rstrip(".")  # the test split's labels end with a dot
            rows.append(values)
        _write_csv_gz(out / target, ADULT_COLUMNS, rows)


def prepare_german(source: Path, out: Path) -> None:
    codes = json.loads((source / "codes.json").read_text(encoding="utf-8"))
    rows = []
    for line in (source / "german.data").read_text(encoding="utf-8").splitlines():
        values = line.split()
        record = dict(zip(GERMAN_COLUMNS, values, strict=True))
        for column, mapping in codes.items():
            if column in record and column != "credit":
                value = mapping[record[column]]
                record[column] = value.strip() if isinstance(value, str) else ("yes" if value else "no")
        personal_status = record.pop("status_sex")
        sex, _, marital = personal_status.partition(":")
        record["sex"] = sex.strip()
        record["personal_status"] = marital.strip()
        record["credit"] = "good" if record["credit"] == "1" else "bad"
        rows.append(record)
    header = list(rows[0])
    _write_csv_gz(out / "german.csv.gz", header, [[r[h] for h in header] for r in rows])


def main() -> None:
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    here = Path(__file__).parent
    prepare_adult(shared / "adult", here / "credit-risk" / "data")
    prepare_german(shared / "german", here / "german-credit" / "data")


if __name__ == "__main__":
    main()
