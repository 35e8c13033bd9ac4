"""Hyperparameter search with Optuna: trials, timeout, pruning and a carbon budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
from sklearn.base import BaseEstimator

from govml.evaluation.metrics import higher_is_better, metric_function
from govml.record import TrainingResult, TrialRecord
from govml.training.estimators import ModelSpec, TaskKind, build_for_trial


@dataclass(frozen=True)
class SearchData:
    """Preprocessed arrays: the search fits on ``train`` and scores on ``valid``."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    n_classes: int


def predict_scores(estimator: BaseEstimator, X: np.ndarray, task: TaskKind) -> np.ndarray:
    """Class probabilities for classification, predictions for regression."""
    if task == "classification":
        return np.asarray(estimator.predict_proba(X))
    return np.asarray(estimator.predict(X), dtype=float)


def _trial_records(study: optuna.Study) -> list[TrialRecord]:
    return [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            value=t.value,
            params=t.user_attrs.get("params", t.params),
            duration_s=t.duration.total_seconds() if t.duration else None,
        )
        for t in study.trials
    ]


def run_search(
    spec: ModelSpec,
    data: SearchData,
    *,
    task: TaskKind,
    metric: str,
    n_trials: int,
    timeout_seconds: float | None,
    seed: int,
    pruning: bool = True,
    fixed_params: dict[str, Any] | None = None,
    over_budget: Callable[[], bool] | None = None,
    on_trial: Callable[[int, float | None], None] | None = None,
) -> TrainingResult:
    """Search the spec's space and return the best parameters with every trial.

    ``over_budget`` is asked after each trial; when it answers True the search stops
    (the carbon budget). Fixed parameters from the YAML override sampled ones.
    """
    fixed = fixed_params or {}
    direction: Literal["maximize", "minimize"] = "maximize" if higher_is_better(metric) else "minimize"
    score = metric_function(metric, task)
    use_pruning = pruning and spec.supports_pruning
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20)
        if use_pruning else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner
    )
    stopped_by: dict[str, str] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {**spec.sample(trial), **fixed}
        trial.set_user_attr("params", params)
        active = trial if use_pruning else None
        estimator = build_for_trial(
            spec, task, params, seed=seed, n_classes=data.n_classes, trial=active, metric=metric
        )
        kwargs = spec.fit_kwargs(active, (data.X_valid, data.y_valid), metric, task)
        estimator.fit(data.X_train, data.y_train, **kwargs)
        return score(data.y_valid, predict_scores(estimator, data.X_valid, task))

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial.number, trial.value)
        if over_budget is not None and over_budget():
            stopped_by["reason"] = "carbon_budget"
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, callbacks=[after_trial])
    duration = time.perf_counter() - started
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    if not complete:
        raise RuntimeError("no trial of the hyperparameter search completed")
    if "reason" not in stopped_by:
        stopped_by["reason"] = "n_trials" if len(study.trials) >= n_trials else "timeout"
    return TrainingResult(
        model_type=spec.name,
        best_params=dict(study.best_trial.user_attrs["params"]),
        search_metric=metric,
        search_direction=direction,
        best_validation_score=float(study.best_value),
        trials=_trial_records(study),
        n_trials_completed=len(complete),
        n_trials_pruned=len(pruned),
        stopped_by=stopped_by["reason"],  # type: ignore[arg-type]
        duration_s=duration,
    )
