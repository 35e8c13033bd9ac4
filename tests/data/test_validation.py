from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from govml.config import ColumnConstraint, DataConfig, ValidationConfig
from govml.data.prepare import encode_target, infer_task, prepare_data
from govml.data.validation import build_schema, check_columns_usable, validate_frame
from govml.errors import DataError
from tests.conftest import EXAMPLES


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [25, 40, 130, 33, -1],
            "sex": ["Male", "Female", "Male", "Robot", "Female"],
            "id": [1, 2, 3, 3, 5],
            "y": ["a", "b", "a", "b", "a"],
        }
    )


CONSTRAINTS = {
    "age": ColumnConstraint(min=0, max=120),
    "sex": ColumnConstraint(allowed=["Male", "Female"]),
    "id": ColumnConstraint(unique=True),
}


def test_lazy_report_lists_every_failing_column_and_line(frame: pd.DataFrame) -> None:
    schema = build_schema(frame, CONSTRAINTS)
    with pytest.raises(DataError) as info:
        validate_frame(frame, schema, policy="fail", source="t.csv")
    message = str(info.value)
    assert "validation failure(s)" in message
    for expected in ("'age'", "line 4", "line 6", "'sex'", "'Robot'", "'id'", "on_error: drop"):
        assert expected in message


def test_drop_policy_removes_and_counts_bad_rows(frame: pd.DataFrame) -> None:
    schema = build_schema(frame, CONSTRAINTS)
    outcome = validate_frame(frame, schema, policy="drop", source="t.csv")
    assert outcome.dropped_rows == [2, 3, 4]
    assert list(outcome.frame["age"]) == [25, 40]
    assert {i.column for i in outcome.issues} == {"age", "sex", "id"}


def test_nulls_are_allowed_only_where_the_reference_had_them() -> None:
    reference = pd.DataFrame({"a": [1.0, np.nan], "b": [1.0, 2.0]})
    schema = build_schema(reference)
    batch = pd.DataFrame({"a": [np.nan, 1.0], "b": [np.nan, 1.0]})
    with pytest.raises(DataError, match="'b'.*line 2"):
        validate_frame(batch, schema, policy="fail", source="batch")


def test_missing_column_always_fails_even_with_drop(frame: pd.DataFrame) -> None:
    schema = build_schema(frame)
    with pytest.raises(DataError, match="column 'sex'.*the column is missing"):
        validate_frame(frame.drop(columns=["sex"]), schema, policy="drop", source="t.csv")


def test_constraint_on_unknown_column(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"names column\(s\) \['agee'\]"):
        build_schema(frame, {"agee": ColumnConstraint(min=0)})


def test_schema_round_trips_through_json(frame: pd.DataFrame) -> None:
    import pandera.pandas as pa

    schema = build_schema(frame, CONSTRAINTS)
    again = pa.DataFrameSchema.from_json(schema.to_json())
    assert set(again.columns) == set(schema.columns)


def test_missing_target_and_all_null_column(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="target column 'label' not found"):
        check_columns_usable(frame, source="t.csv", target="label")
    with_empty = frame.assign(empty=np.nan)
    with pytest.raises(DataError, match=r"\['empty'\] hold no values"):
        check_columns_usable(with_empty, source="t.csv", target="y")


def test_task_inference_and_target_encoding() -> None:
    assert infer_task(pd.Series(["a", "b"]), "auto") == "classification"
    assert infer_task(pd.Series([0, 1, 1]), "auto") == "classification"
    assert infer_task(pd.Series(np.linspace(0, 1, 100)), "auto") == "regression"
    y, classes = encode_target(
        pd.Series([">50K", "<=50K", ">50K"]), task="classification", positive_class=">50K", source="s"
    )
    assert classes == ["<=50K", ">50K"] and list(y) == [1, 0, 1]
    with pytest.raises(DataError, match="positive_class 'yes'"):
        encode_target(pd.Series(["a", "b"]), task="classification", positive_class="yes", source="s")
    with pytest.raises(DataError, match="single class"):
        encode_target(pd.Series(["a", "a"]), task="classification", positive_class=None, source="s")


def test_prepare_adult_uses_the_official_test_split() -> None:
    data = DataConfig(
        train=EXAMPLES / "credit-risk/data/adult_train.csv.gz",
        test=EXAMPLES / "credit-risk/data/adult_test.csv.gz",
        target="income",
        positive_class=">50K",
        drop_columns=["fnlwgt"],
    )
    prepared = prepare_data(data, ValidationConfig(on_error="drop"))
    assert prepared.result.split_rows["test"] == 16281
    assert prepared.result.split_rows["train"] + prepared.result.split_rows["validation"] == 32561
    assert prepared.classes == ["<=50K", ">50K"]
    assert "fnlwgt" not in prepared.train.X.columns and "income" not in prepared.train.X.columns
    assert 0.2 < prepared.test.y.mean() < 0.3
    assert len(prepared.result.data_hash) == 64
