"""Performance metrics, their direction and bootstrap confidence intervals (pure functions)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from govml.errors import ConfigError

LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss")
# metrics of the decision alone (the arg-max class), not of the scores' ranking or calibration
DECISION_METRICS = ("accuracy", "balanced_accuracy", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def default_metric(task: str, n_classes: int) -> str:
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "accuracy"


def check_metric(metric: str, task: str) -> str:
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in allowed:
        raise ConfigError(f"training.search.metric {metric!r} is not a {task} metric; allowed: {list(allowed)}")
    return metric


def _classification_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def compute(y: np.ndarray, proba: np.ndarray) -> float:
        labels = np.arange(proba.shape[1])
        pred = proba.argmax(axis=1)
        if name == "accuracy":
            return float(skm.accuracy_score(y, pred))
        if name == "balanced_accuracy":
            return float(skm.balanced_accuracy_score(y, pred))
        if name == "f1":
            average = "binary" if proba.shape[1] == 2 else "macro"
            return float(skm.f1_score(y, pred, average=average, labels=labels, zero_division=0))
        if name == "roc_auc":
            if len(np.unique(y)) < 2:
                return float("nan")
            if proba.shape[1] == 2:
                return float(skm.roc_auc_score(y, proba[:, 1]))
            return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))
        if name == "log_loss":
            return float(skm.log_loss(y, proba, labels=labels))
        raise ConfigError(f"unknown classification metric {name!r}")

    return compute


def _regression_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def compute(y: np.ndarray, pred: np.ndarray) -> float:
        if name == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, pred)))
        if name == "mae":
            return float(skm.mean_absolute_error(y, pred))
        if name == "r2":
            return float(skm.r2_score(y, pred))
        raise ConfigError(f"unknown regression metric {name!r}")

    return compute


def metric_function(name: str, task: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(y_true, scores)``: scores are class probabilities (classification) or predictions."""
    return _classification_metric(name) if task == "classification" else _regression_metric(name)


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> dict[str, float]:
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    return {name: metric_function(name, task)(y_true, scores) for name in names}


def decision_scores(decisions: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot "scores" of hard decisions, so the decision metrics score exactly them."""
    return np.eye(n_classes)[np.asarray(decisions, dtype=int)]


def bootstrap_intervals(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str,
    *,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric of the task."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    functions = {name: metric_function(name, task) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        for name, fn in functions.items():
            samples[name].append(fn(y_true[idx], scores[idx]))
    alpha = (1 - confidence) / 2
    return {
        name: (float(np.nanquantile(v, alpha)), float(np.nanquantile(v, 1 - alpha)))
        for name, v in samples.items()
    }


def improvement_pct(model_value: float, baseline_value: float, metric: str) -> float:
    """Relative improvement over a baseline in %, positive when the model is better."""
    if baseline_value == 0:
        return float("inf") if model_value != 0 else 0.0
    gain = model_value - baseline_value if higher_is_better(metric) else baseline_value - model_value
    return float(100.0 * gain / abs(baseline_value))
