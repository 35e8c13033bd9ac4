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
