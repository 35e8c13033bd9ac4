"""Schema inference and lazy validation with pandera.

The schema is inferred from the training data (dtype and nullability per column) and
tightened by the YAML's constraints (ranges, allowed values, nullability, uniqueness).
It is stored with the model so that serving validates requests against the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from govml.config import ColumnConstraint
from govml.errors import DataError


@dataclass(frozen=True)
class RowIssue:
    """One failing value: which column, which check, which row."""

    column: str | None
    check: str
    failure_case: str | None
    row: int | None


@dataclass(frozen=True)
class ValidationOutcome:
    frame: pd.DataFrame
    issues: list[RowIssue] = field(default_factory=list)
    dropped_rows: list[int] = field(default_factory=list)


def check_columns_usable(frame: pd.DataFrame, *, source: str, target: str) -> None:
    """Raise DataError for a missing target or a column with no values at all."""
    if target not in frame.columns:
        raise DataError(
            f"{source}: target column {target!r} not found; columns are {list(frame.columns)}"
        )
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise DataError(
            f"{source}: column(s) {empty} hold no values at all; drop them with data.drop_columns"
        )
    if frame[target].isna().any():
        rows = np.flatnonzero(frame[target].isna().to_numpy())[:10].tolist()
        raise DataError(f"{source}: target {target!r} is missing in rows {rows} (0-based)")


def _column_dtype(series: pd.Series) -> type | str:
    if pd.api.types.is_bool_dtype(series):
        return bool
    if pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    if pd.api.types.is_numeric_dtype(series):
        return "float64"
    return str


def _checks(constraint: ColumnConstraint | None) -> list[pa.Check]:
    if constraint is None:
        return []
    checks: list[pa.Check] = []
    if constraint.min is not None:
        checks.append(pa.Check.ge(constraint.min))
    if constraint.max is not None:
        checks.append(pa.Check.le(constraint.max))
    if constraint.allowed is not None:
        checks.append(pa.Check.isin(constraint.allowed))
    return checks


def build_schema(
    frame: pd.DataFrame,
    constraints: dict[str, ColumnConstraint] | None = None,
    *,
    name: str = "govml",
) -> pa.DataFrameSchema:
    """Infer a schema from a reference frame and add the YAML's constraints.

    Nullability is inferred (a column with nulls in the reference accepts nulls) unless
    a constraint says otherwise. Constraints naming unknown columns are an error.
    """
    constraints = constraints or {}
    unknown = sorted(set(constraints) - set(frame.columns))
    if unknown:
        raise DataError(
            f"validation.constraints names column(s) {unknown} that are not in the data; "
            f"columns are {list(frame.columns)}"
        )
    columns = {}
    for column in frame.columns:
        series = frame[column]
        constraint = constraints.get(column)
        dtype = _column_dtype(series)
        if dtype == "int64" and constraint is not None and constraint.nullable:
            dtype = "float64"  # integers with missing values arrive as floats
        nullable = bool(series.isna().any())
        if constraint is not None and constraint.nullable is not None:
            nullable = constraint.nullable
        columns[column] = pa.Column(
            dtype,
            checks=_checks(constraint),
            nullable=nullable,
            unique=bool(constraint and constraint.unique),
            coerce=True,
            required=True,
        )
    return pa.DataFrameSchema(columns, name=name, coerce=True, strict=False)


def _issues_from(errors: SchemaErrors) -> list[RowIssue]:
    cases = errors.failure_cases
    issues = []
    for row in cases.itertuples(index=False):
        index = getattr(row, "index", None)
        column = None if pd.isna(row.column) else str(row.column)
        if row.check == "column_in_dataframe":
            # pandera names the schema as the column and the missing column as the case.
            column = str(row.failure_case)
        issues.append(
            RowIssue(
                column=column,
                check=str(row.check),
                failure_case=None if pd.isna(row.failure_case) else str(row.failure_case),
                row=None if index is None or pd.isna(index) else int(index),
            )
        )
    return issues


def validate_frame(
    frame: pd.DataFrame,
    schema: pa.DataFrameSchema,
    *,
    policy: Literal["fail", "drop"],
    source: str,
    max_listed: int = 50,
) -> ValidationOutcome:
    """Validate lazily: collect every failing column and row in one report.

    With ``policy="fail"`` any failure raises DataError listing them (line numbers
    count the header as line 1); with ``"drop"`` the failing rows are removed and
    reported. Failures that are not tied to a row (a missing column) always raise.
    """
    try:
        validated = schema.validate(frame, lazy=True)
        return ValidationOutcome(frame=validated)
    except SchemaErrors as errors:
        issues = _issues_from(errors)
    row_less = [i for i in issues if i.row is None]
    if policy == "fail" or row_less:
        listed = "\n".join(
            f"  - column {i.column!r}: {i.check} failed"
            + (f" at line {i.row + 2} (value {i.failure_case!r})" if i.row is not None else "")
            + ("" if i.row is not None or i.check != "column_in_dataframe" else " (the column is missing)")
            for i in (row_less or issues)[:max_listed]
        )
        more = len(issues) - min(len(issues), max_listed)
        hint = "" if row_less else "\n  (set validation.on_error: drop to remove these rows instead)"
        raise DataError(
            f"{source}: {len(issues)} validation failure(s):\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + hint
        )
    bad_rows = sorted({i.row for i in issues if i.row is not None})
    kept = frame.drop(index=bad_rows)
    if kept.empty:
        raise DataError(f"{source}: every row failed validation; nothing is left to train on")
    return ValidationOutcome(frame=schema.validate(kept, lazy=False), issues=issues, dropped_rows=bad_rows)
