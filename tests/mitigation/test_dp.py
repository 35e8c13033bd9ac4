from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from govml.errors import ConfigError, DataError
from govml.features.preprocess import build_preprocessor, split_columns
from govml.mitigation.dp import DPTrainingResult, feature_bounds, train_dp_model
from tests.evaluation.datasets import adult, german


@pytest.fixture(scope="module")
def adult_split():
    X, y = adult(3000, seed=31)
    X_test, y_test = adult(3000, split="test", seed=32)
    return X, y, X_test, y_test


@pytest.mark.parametrize("model", ["logistic_regression", "naive_bayes", "random_forest"])
def test_each_dp_model_trains_without_privacy_leaks(adult_split, model: str) -> None:
    X, y, X_test, y_test = adult_split
    preprocess = build_preprocessor(split_columns(X))
    # Privacy-leak warnings are errors inside train_dp_model: fitting proves the bounds were set.
    pipeline, info = train_dp_model(preprocess, X, y, model=model, epsilon=5.0)
    assert isinstance(pipeline, Pipeline) and [name for name, _ in pipeline.steps] == ["preprocess", "model"]
    assert pipeline.predict_proba(X_test).shape == (len(X_test), 2)
    accuracy = np.mean(pipeline.predict(X_test) == y_test)
    assert accuracy >= 0.70, f"{model} at epsilon 5 reached only {accuracy:.3f}"
    assert info.model == model and info.epsilon == 5.0 and info.n_rows == len(X)
    assert (info.data_norm is not None) == (model == "logistic_regression")
    assert DPTrainingResult.model_validate_json(info.model_dump_json()) == info


def test_smaller_epsilon_costs_accuracy(adult_split) -> None:
    X, y, X_test, y_test = adult_split
    preprocess = build_preprocessor(split_columns(X))
    accuracies = {}
    for epsilon in (0.01, 50.0):
        scores = [
            np.mean(train_dp_model(preprocess, X.iloc[:1500], y[:1500], epsilon=epsilon, seed=seed)[0]
                    .predict(X_test) == y_test)
            for seed in (0, 1)
        ]
        accuracies[epsilon] = float(np.mean(scores))
    assert accuracies[50.0] > accuracies[0.01] + 0.03
    assert accuracies[50.0] > 0.8


def test_bounds_follow_the_column_layout() -> None:
    X, y = german()
    preprocess = build_preprocessor(split_columns(X)).fit(X)
    lower, upper, groups = feature_bounds(preprocess, clip=2.5)
    assert len(lower) == len(preprocess.get_feature_names_out())
    numeric = len(split_columns(X).numeric)
    assert np.sum(lower == -2.5) == numeric and np.all(upper[lower == 0] == 1.0)
    assert groups == len(split_columns(X).categorical)


def test_bad_inputs_are_named() -> None:
    X, y = german()
    preprocess = build_preprocessor(split_columns(X))
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        train_dp_model(preprocess, X, y, epsilon=0.0)
    with pytest.raises(ConfigError, match="allowed"):
        train_dp_model(preprocess, X, y, model="svm")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="0..k-1"):
        train_dp_model(preprocess, X, y + 1)
    with pytest.raises(DataError, match="targets"):
        train_dp_model(preprocess, X, y[:-1])
    unscaled = build_preprocessor(split_columns(X), scaling="none")
    with pytest.raises(ConfigError, match="scaling: standard"):
        train_dp_model(unscaled, X, y)
