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
    if task == "classification" and scores.ndim == 2 and scores.shape[1] == 2:
        samples = _binary_bootstrap(np.asarray(y_true), scores, rng, n_resamples)
    else:
        functions = {name: metric_function(name, task) for name in names}
        lists: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(n_resamples):
            idx = rng.integers(0, n, n)
            for name, fn in functions.items():
                lists[name].append(fn(y_true[idx], scores[idx]))
        samples = {name: np.asarray(v, dtype=float) for name, v in lists.items()}
    alpha = (1 - confidence) / 2
    return {
        name: (float(np.nanquantile(v, alpha)), float(np.nanquantile(v, 1 - alpha)))
        for name, v in samples.items()
    }


def _binary_bootstrap(
    y: np.ndarray, proba: np.ndarray, rng: np.random.Generator, n_resamples: int
) -> dict[str, np.ndarray]:
    """Every binary metric on every resample at once, as weighted metrics of the full set.

    A resample is the vector of how often each row was drawn (the same draws as indexing
    with ``rng.integers``), and each metric is its ``sample_weight`` form, so the values
    equal scikit-learn's on the resampled rows. Written by hand because calling
    scikit-learn 1,000 times (200 resamples x 5 metrics) took 7.2 s of a 54 s credit-risk
    run on 16,281 test rows, mostly parameter validation; this takes well under a second.
    """
    from scipy import sparse

    n = len(y)
    positive = y == 1
    pred = proba.argmax(axis=1)
    eps = np.finfo(proba.dtype).eps
    p_true = np.clip(np.where(positive, proba[:, 1], proba[:, 0]), eps, 1 - eps)
    row_loss = -np.log(p_true)
    # ROC AUC with ties: group rows by distinct score, count each resample's weight per group
    distinct, group = np.unique(proba[:, 1], return_inverse=True)
    member = sparse.csr_matrix((np.ones(n), (np.arange(n), group)), shape=(n, len(distinct)))
    out: dict[str, list[np.ndarray]] = {name: [] for name in CLASSIFICATION_METRICS}
    chunk = max(1, 4_000_000 // max(n, 1))  # resamples per block: bounded memory on big test sets
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]).astype(float)
        total = weights.sum(axis=1)
        pos = weights @ positive
        neg = total - pos
        tp = weights @ (positive & (pred == 1))
        fp = weights @ (~positive & (pred == 1))
        tn = neg - fp
        fn = pos - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            out["accuracy"].append((tp + tn) / total)
            recalls = np.stack([np.where(pos > 0, tp / pos, np.nan), np.where(neg > 0, tn / neg, np.nan)])
            out["balanced_accuracy"].append(np.nanmean(recalls, axis=0))
            out["f1"].append(np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0))
            pos_by_score = np.asarray((member.T @ (weights * positive).T).T)
            neg_by_score = np.asarray((member.T @ (weights * ~positive).T).T)
            below = np.cumsum(neg_by_score, axis=1) - neg_by_score
            wins = (pos_by_score * (below + 0.5 * neg_by_score)).sum(axis=1)
            out["roc_auc"].append(np.where((pos > 0) & (neg > 0), wins / (pos * neg), np.nan))
        out["log_loss"].append(weights @ row_loss / total)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def improvement_pct(model_value: float, baseline_value: float, metric: str) -> float:
    """Relative improvement over a baseline in %, positive when the model is better."""
    if baseline_value == 0:
        return float("inf") if model_value != 0 else 0.0
    gain = model_value - baseline_value if higher_is_better(metric) else baseline_value - model_value
    return float(100.0 * gain / abs(baseline_value))
