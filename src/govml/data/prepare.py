"""The data stage: read, validate, encode the target and split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from sklearn.model_selection import train_test_split

from govml.config import DataConfig, ValidationConfig
from govml.data.loading import file_sha256, load_table
from govml.data.validation import (
    RowIssue,
    build_schema,
    check_columns_usable,
    validate_frame,
)
from govml.errors import DataError
from govml.record import DataResult, ValidationIssue

_MAX_CLASSES = 50


@dataclass(frozen=True)
class Split:
    X: pd.DataFrame
    y: np.ndarray


@dataclass(frozen=True)
class PreparedData:
    train: Split
    valid: Split
    test: Split
    schema: pa.DataFrameSchema
    task: str
    classes: list[str]
    result: DataResult

    @property
    def train_full(self) -> Split:
        """Train and validation rows together, for the final fit."""
        return Split(
            X=pd.concat([self.train.X, self.valid.X]),
            y=np.concatenate([self.train.y, self.valid.y]),
        )


def infer_task(y: pd.Series, declared: str) -> str:
    if declared != "auto":
        return declared
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna()
    is_integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    return "classification" if is_integral and values.nunique() <= 20 else "regression"


def encode_target(
    y: pd.Series, *, task: str, positive_class: str | int | None, source: str
) -> tuple[np.ndarray, list[str]]:
    """Encode a classification target as 0..k-1 (binary: the positive class is 1)."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(f"{source}: a regression target must be numeric; {y.name!r} holds text")
        return y.to_numpy(dtype=float), []
    labels = y.astype(str).str.strip()
    classes = sorted(labels.unique().tolist())
    if len(classes) < 2:
        raise DataError(f"{source}: the target {y.name!r} has a single class {classes}; nothing to learn")
    if len(classes) > _MAX_CLASSES:
        raise DataError(
            f"{source}: the target {y.name!r} has {len(classes)} classes; set data.task: regression "
            "if it is a number"
        )
    if positive_class is not None:
        positive = str(positive_class)
        if positive not in classes:
            raise DataError(f"data.positive_class {positive!r} is not a value of {y.name!r}: {classes}")
        if len(classes) == 2:
            classes = [c for c in classes if c != positive] + [positive]
    index = {c: i for i, c in enumerate(classes)}
    return labels.map(index).to_numpy(dtype=np.int64), classes


def _to_issues(issues: list[RowIssue], limit: int) -> list[ValidationIssue]:
    return [
        ValidationIssue(
            column=i.column,
            check=i.check,
            failure_case=i.failure_case,
            line=None if i.row is None else i.row + 2,
        )
        for i in issues[:limit]
    ]


def _encode_split(frame: pd.DataFrame, target: str, task: str, classes: list[str], source: str) -> Split:
    X = frame.drop(columns=[target])
    if task == "classification":
        labels = frame[target].astype(str).str.strip()
        unknown = sorted(set(labels.unique()) - set(classes))
        if unknown:
            raise DataError(f"{source}: target values {unknown} do not occur in the training data")
        y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    else:
        y = frame[target].to_numpy(dtype=float)
    return Split(X=X.reset_index(drop=True), y=y)


def prepare_data(data: DataConfig, validation: ValidationConfig) -> PreparedData:
    """Read and validate the data, encode the target, and split train / validation / test."""
    train_frame = load_table(data.train)
    source = str(data.train)
    check_columns_usable(train_frame, source=source, target=data.target)
    missing_drops = sorted(set(data.drop_columns) - set(train_frame.columns))
    if missing_drops:
        raise DataError(f"data.drop_columns names column(s) {missing_drops} not in {source}")
    train_frame = train_frame.drop(columns=data.drop_columns)

    task = infer_task(train_frame[data.target], data.task)
    schema = build_schema(train_frame, validation.constraints, name=data.target)
    outcome = validate_frame(train_frame, schema, policy=validation.on_error, source=source)
    issues, dropped = list(outcome.issues), len(outcome.dropped_rows)
    frame = outcome.frame
    _, classes = encode_target(frame[data.target], task=task, positive_class=data.positive_class, source=source)
    rows_read = len(train_frame)

    stratify = task == "classification"
    if data.test is not None:
        test_frame = load_table(data.test)
        test_source = str(data.test)
        check_columns_usable(test_frame, source=test_source, target=data.target)
        test_frame = test_frame.drop(columns=[c for c in data.drop_columns if c in test_frame.columns])
        test_outcome = validate_frame(test_frame, schema, policy=validation.on_error, source=test_source)
        issues += test_outcome.issues
        dropped += len(test_outcome.dropped_rows)
        rows_read += len(test_frame)
        fit_frame, test_part = frame, test_outcome.frame
        test = _encode_split(test_part, data.target, task, classes, test_source)
    else:
        fit_frame, test_part = train_test_split(
            frame,
            test_size=data.test_size,
            random_state=data.seed,
            stratify=frame[data.target] if stratify else None,
        )
        test = _encode_split(test_part, data.target, task, classes, source)
    train_part, valid_part = train_test_split(
        fit_frame,
        test_size=data.validation_size,
        random_state=data.seed,
        stratify=fit_frame[data.target] if stratify else None,
    )
    train = _encode_split(train_part, data.target, task, classes, source)
    valid = _encode_split(valid_part, data.target, task, classes, source)

    paths = [data.train] + ([data.test] if data.test is not None else [])
    balance = {}
    if task == "classification":
        counts = np.bincount(train_full_y := np.concatenate([train.y, valid.y]), minlength=len(classes))
        balance = {c: float(n / len(train_full_y)) for c, n in zip(classes, counts, strict=True)}
    feature_schema = schema.remove_columns([data.target])
    result = DataResult(
        train_path=str(data.train),
        test_path=str(data.test) if data.test is not None else None,
        data_hash=file_sha256(paths),
        rows_read=rows_read,
        rows_dropped=dropped,
        columns=list(train.X.columns),
        target=data.target,
        task=task,  # type: ignore[arg-type]
        classes=classes,
        class_balance=balance,
        issues=_to_issues(issues, validation.max_error_rows),
        issue_count=len(issues),
        policy=validation.on_error,
        split_rows={"train": len(train.y), "validation": len(valid.y), "test": len(test.y)},
    )
    return PreparedData(
        train=train, valid=valid, test=test, schema=feature_schema, task=task, classes=classes, result=result
    )


def data_paths(data: DataConfig) -> list[Path]:
    return [data.train] + ([data.test] if data.test is not None else [])
