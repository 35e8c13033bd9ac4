"""One conformance suite for every model type (the scikit-learn habit)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.datasets import make_classification, make_regression

from govml.errors import ConfigError
from govml.training.estimators import MODEL_SPECS, baselines, get_spec
from govml.training.search import SearchData, predict_scores, run_search


@pytest.fixture(scope="module")
def classification() -> SearchData:
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    return SearchData(X_train=X[:400], y_train=y[:400], X_valid=X[400:], y_valid=y[400:], n_classes=2)


@pytest.fixture(scope="module")
def regression() -> SearchData:
    X, y = make_regression(n_samples=600, n_features=8, noise=5.0, random_state=0)
    return SearchData(X_train=X[:400], y_train=y[:400], X_valid=X[400:], y_valid=y[400:], n_classes=0)


# Few trees keep the suite fast; the search space itself is exercised by sampling.
SMALL = {"lightgbm": {"n_estimators": 40}, "xgboost": {"n_estimators": 40}, "random_forest": {"n_estimators": 30}}


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_spec_builds_fits_and_samples(name: str, classification: SearchData, regression: SearchData) -> None:
    spec = get_spec(name)
    params = {**spec.sample(optuna.trial.FixedTrial(_first_values(spec))), **SMALL.get(name, {})}
    for task, data in (("classification", classification), ("regression", regression)):
        model = spec.build(task, params, seed=0, n_classes=data.n_classes).fit(data.X_train, data.y_train)
        scores = predict_scores(model, data.X_valid, task)
        if task == "classification":
            assert scores.shape == (200, 2)
            assert np.allclose(scores.sum(axis=1), 1.0)
            assert (scores.argmax(axis=1) == data.y_valid).mean() > 0.75
        else:
            assert scores.shape == (200,)
            assert np.corrcoef(scores, data.y_valid)[0, 1] > 0.8


def _first_values(spec) -> dict:  # type: ignore[no-untyped-def]
    """Record the parameter names a spec samples, with a value inside each range."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spec.sample(trial)
    return trial.params


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_search_is_reproducible_and_beats_chance(name: str, classification: SearchData) -> None:
    spec = get_spec(name)
    kwargs = dict(
        task="classification", metric="roc_auc", n_trials=3, timeout_seconds=None, seed=1,
        fixed_params=SMALL.get(name),
    )
    first = run_search(spec, classification, **kwargs)
    second = run_search(spec, classification, **kwargs)
    assert first.best_params == second.best_params
    assert first.best_validation_score > 0.85
    assert first.n_trials_completed + first.n_trials_pruned == 3
    assert first.stopped_by == "n_trials"


def test_carbon_budget_callback_stops_the_search(classification: SearchData) -> None:
    calls = []

    def over_budget() -> bool:
        calls.append(1)
        return len(calls) >= 2

    result = run_search(
        get_spec("logistic_regression"), classification, task="classification", metric="roc_auc",
        n_trials=10, timeout_seconds=None, seed=0, over_budget=over_budget,
    )
    assert len(result.trials) == 2
    assert result.stopped_by == "carbon_budget"


def test_fixed_params_override_the_search(classification: SearchData) -> None:
    result = run_search(
        get_spec("random_forest"), classification, task="classification", metric="accuracy",
        n_trials=2, timeout_seconds=None, seed=0, fixed_params={"n_estimators": 17},
    )
    assert result.best_params["n_estimators"] == 17


def test_unknown_model_and_baselines() -> None:
    with pytest.raises(ConfigError, match="allowed"):
        get_spec("svm")
    assert set(baselines("classification")) == {"majority_class", "logistic_regression"}
    assert set(baselines("regression")) == {"mean", "ridge"}
