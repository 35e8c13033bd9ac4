"""The compiled inference path reproduces the sklearn pipeline, or refuses and the server falls back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from govml.serving.fastpath import CompiledModel, NotCompilable
from govml.serving.loading import LoadedModel
from govml.serving.predictor import Predictor
from govml.serving.validation import InputValidator, frame_to_batch

if TYPE_CHECKING:
    from conftest import AdultData

NUMERIC = ["age", "education_num", "hours_per_week", "capital_gain"]
CATEGORICAL = ["workclass", "occupation", "native_country", "sex"]


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    validator = InputValidator.from_model(None, None, fallback_columns=list(frame.columns))
    return validator.validate(frame_to_batch(frame), enforce=False).columns


def _typed_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for name in frame.columns:
        if name in NUMERIC:
            out[name] = frame[name].to_numpy(dtype=float, na_value=np.nan)
        else:
            out[name] = frame[name].astype(object).where(frame[name].notna(), np.nan).to_numpy()
    return out


def _preprocessor(*, handle_unknown: str = "infrequent_if_exist", scale: bool = True) -> ColumnTransformer:
    numeric = [("impute", SimpleImputer(strategy="median"))] + ([("scale", StandardScaler())] if scale else [])
    return ColumnTransformer(
        [
            ("num", Pipeline(numeric), NUMERIC),
            (
                "cat",
                Pipeline([
                    ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                    ("encode", OneHotEncoder(handle_unknown=handle_unknown, max_categories=8, sparse_output=False)),
                ]),
                CATEGORICAL,
            ),
        ]
    )


@pytest.fixture(scope="module")
def data(adult: AdultData) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    cols = NUMERIC + CATEGORICAL
    train = adult.train_X[cols].astype({c: object for c in CATEGORICAL})
    test = adult.test_X[cols].astype({c: object for c in CATEGORICAL}).copy()
    # unseen categories and missing values the training data never had in these columns
    test.loc[test.index[:20], "native_country"] = "Atlantis"
    test.loc[test.index[20:40], "sex"] = np.nan
    test.loc[test.index[40:60], "hours_per_week"] = np.nan
    return train, adult.train_y, test


@pytest.mark.parametrize(
    "estimator",
    [
        lgb.LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1),
        RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1),
        LogisticRegression(max_iter=300),
        XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1),
    ],
    ids=["lightgbm", "random_forest", "logistic_regression", "xgboost"],
)
@pytest.mark.parametrize("handle_unknown", ["infrequent_if_exist", "ignore"])
def test_compiled_probabilities_match_the_pipeline(data, estimator, handle_unknown: str) -> None:  # type: ignore[no-untyped-def]
    train, y, test = data
    preprocess = _preprocessor(handle_unknown=handle_unknown)
    pipeline = Pipeline([("preprocess", preprocess), ("model", estimator)]).fit(train, y)
    compiled = CompiledModel(pipeline)
    X = compiled.preprocessor.transform(_typed_columns(test))
    assert np.array_equal(X, pipeline[0].transform(test))
    proba = compiled.predict_proba(X)
    assert np.abs(proba - pipeline.predict_proba(test)).max() <= 1e-6
    assert np.array_equal(compiled.predict(X, proba), pipeline.predict(test))


def test_govml_preprocessor_compiles_exactly(adult: AdultData, adult_pipeline: Pipeline) -> None:
    compiled = CompiledModel(adult_pipeline)
    test = adult.test_X
    X = compiled.preprocessor.transform(_columns(test))
    proba = compiled.predict_proba(X)
    reference = adult_pipeline.predict_proba(test)
    assert np.abs(proba - reference).max() <= 1e-6
    assert np.array_equal(proba, reference)  # in fact bit for bit


def test_large_batches_take_the_indexed_one_hot_path(adult: AdultData, adult_pipeline: Pipeline) -> None:
    """Above _DICT_LOOKUP_ROWS the one-hot lookup switches to a pandas index: the same matrix."""
    from govml.serving import fastpath

    copies = fastpath._DICT_LOOKUP_ROWS // len(adult.test_X) + 1
    big = pd.concat([adult.test_X] * copies, ignore_index=True)
    big.loc[:99, "native_country"] = "Atlantis"  # unseen
    big.loc[100:199, "workclass"] = np.nan
    assert len(big) >= fastpath._DICT_LOOKUP_ROWS
    compiled = CompiledModel(adult_pipeline)
    X = compiled.preprocessor.transform(_columns(big))
    assert np.array_equal(X, adult_pipeline[0].transform(big))
    assert np.abs(compiled.predict_proba(X) - adult_pipeline.predict_proba(big)).max() <= 1e-6


def test_unknown_steps_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    train, y, _ = data
    custom = ColumnTransformer([("num", FunctionTransformer(np.log1p), NUMERIC)])
    pipeline = Pipeline([("preprocess", custom), ("model", LogisticRegression(max_iter=200))]).fit(train, y)
    with pytest.raises(NotCompilable, match="log1p"):
        CompiledModel(pipeline)
    with pytest.raises(NotCompilable, match="two-step"):
        CompiledModel(Pipeline([("model", LogisticRegression())]))
    dropping = ColumnTransformer([("cat", OneHotEncoder(drop="first"), CATEGORICAL)])
    with pytest.raises(NotCompilable, match="drop"):
        CompiledModel(Pipeline([("preprocess", dropping), ("model", LogisticRegression(max_iter=200))]).fit(train, y))


def test_server_falls_back_to_the_model_and_says_why(loaded: LoadedModel, data) -> None:  # type: ignore[no-untyped-def]
    train, y, test = data
    custom = ColumnTransformer(
        [("num", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), ["age", "education_num"])]
    )
    pipeline = Pipeline([("preprocess", custom), ("model", LogisticRegression(max_iter=200))]).fit(train, y)
    model = LoadedModel(
        ref=loaded.ref, sklearn_model=pipeline, pyfunc_model=None, signature=None, input_example=None,
        schema_json=None, drift_reference=None, record=None,
    )
    validator = InputValidator.from_model(None, None, fallback_columns=["age", "education_num"])
    predictor = Predictor(model, validator)
    assert predictor.path == "sklearn"
    assert "log1p" in (predictor.fallback_reason or "")
    batch = validator.validate(frame_to_batch(test[["age", "education_num"]]))
    result = predictor.predict(batch)
    assert np.array_equal(result.labels, pipeline.predict(test[["age", "education_num"]]))


def test_predictor_verifies_on_probe_rows(loaded: LoadedModel) -> None:
    validator = InputValidator.from_model(loaded.signature, loaded.schema_json)
    predictor = Predictor(loaded, validator)
    assert predictor.path == "compiled"
    assert predictor.max_abs_difference is not None and predictor.max_abs_difference <= 1e-9
    probe = predictor.probe_frame()
    assert len(probe) > 100
    assert (probe["native_country"] == "__unseen__").any()  # unseen categories are exercised


@pytest.mark.parametrize(
    "estimator",
    [lgb.LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1), lgb.LGBMRegressor(n_estimators=40, verbose=-1)],
    ids=["classifier", "regressor"],
)
def test_one_row_requests_match_the_pipeline(data, estimator) -> None:  # type: ignore[no-untyped-def]
    """A row scored alone takes the small-batch preprocessing and LightGBM's one-row C call: same bits."""
    train, y, test = data
    pipeline = Pipeline([("preprocess", _preprocessor()), ("model", estimator)]).fit(train, y)
    compiled = CompiledModel(pipeline)
    assert compiled.single_row is not None
    columns = _typed_columns(test.head(80))  # includes unseen categories and missing values
    batch = compiled.preprocessor.transform(columns)
    for i in range(80):
        row = compiled.preprocessor.transform({k: v[i : i + 1] for k, v in columns.items()})
        assert np.array_equal(row, batch[i : i + 1])
        if hasattr(estimator, "predict_proba"):
            proba = compiled.predict_proba(row)
            assert np.array_equal(proba, pipeline.predict_proba(test.iloc[i : i + 1]))
            assert np.array_equal(compiled.predict(row, proba), pipeline.predict(test.iloc[i : i + 1]))
        else:
            assert np.array_equal(compiled.predict(row, None), pipeline.predict(test.iloc[i : i + 1]))
