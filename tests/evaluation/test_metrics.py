from __future__ import annotations

import numpy as np
import pytest

from govml.errors import ConfigError
from govml.evaluation.metrics import (
    bootstrap_intervals,
    check_metric,
    compute_metrics,
    higher_is_better,
    improvement_pct,
)


def test_classification_metrics_on_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = compute_metrics(y, proba, "classification")
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(0.8)


def test_regression_metrics_on_known_values() -> None:
    m = compute_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), "regression")
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)


def test_bootstrap_interval_contains_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p1 = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 2000), 0, 1)
    proba = np.column_stack([1 - p1, p1])
    point = compute_metrics(y, proba, "classification")
    ci = bootstrap_intervals(y, proba, "classification", n_resamples=100)
    for name, (low, high) in ci.items():
        assert low <= point[name] <= high
        assert high - low < 0.1


def test_improvement_respects_direction() -> None:
    assert improvement_pct(0.9, 0.8, "accuracy") == pytest.approx(12.5)
    assert improvement_pct(0.8, 1.0, "rmse") == pytest.approx(20.0)
    assert not higher_is_better("log_loss")
    with pytest.raises(ConfigError, match="not a regression metric"):
        check_metric("accuracy", "regression")


def test_fast_binary_bootstrap_equals_scikit_learn_on_the_same_resamples() -> None:
    """The vectorised bootstrap must give scikit-learn's values on each resample (ties included)."""
    from sklearn import metrics as skm

    from govml.evaluation.metrics import _binary_bootstrap

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p1 = np.round(np.clip(y * 0.5 + rng.normal(0.25, 0.25, 500), 0, 1), 2)  # rounding makes ties
    proba = np.column_stack([1 - p1, p1])
    fast = _binary_bootstrap(y, proba, np.random.default_rng(7), 6)
    draws = np.random.default_rng(7)
    for r in range(6):
        idx = draws.integers(0, 500, 500)
        yy, pp = y[idx], proba[idx]
        pred = pp.argmax(axis=1)
        assert fast["accuracy"][r] == pytest.approx(skm.accuracy_score(yy, pred), abs=1e-12)
        assert fast["balanced_accuracy"][r] == pytest.approx(skm.balanced_accuracy_score(yy, pred), abs=1e-12)
        assert fast["f1"][r] == pytest.approx(skm.f1_score(yy, pred), abs=1e-12)
        assert fast["roc_auc"][r] == pytest.approx(skm.roc_auc_score(yy, pp[:, 1]), abs=1e-12)
        assert fast["log_loss"][r] == pytest.approx(skm.log_loss(yy, pp, labels=[0, 1]), abs=1e-9)
