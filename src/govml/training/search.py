"""Hyperparameter search with Optuna: trials, timeout, pruning and a carbon budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


@dataclass(frozen=True)
class TrialProblem:
    """What every trial of one search shares: the model type, the arrays and the scoring."""

    spec: ModelSpec
    data: SearchData
    task: TaskKind
    metric: str
    seed: int


def fit_and_score(problem: TrialProblem, params: dict[str, Any], trial: optuna.Trial | None = None) -> float:
    """Fit one trial on train and score it on validation; a ``trial`` turns pruning on."""
    data = problem.data
    estimator = build_for_trial(
        problem.spec, problem.task, params, seed=problem.seed, n_classes=data.n_classes, trial=trial,
        metric=problem.metric,
    )
    kwargs = problem.spec.fit_kwargs(trial, (data.X_valid, data.y_valid), problem.metric, problem.task)
    estimator.fit(data.X_train, data.y_train, **kwargs)
    score = metric_function(problem.metric, problem.task)
    return float(score(data.y_valid, predict_scores(estimator, data.X_valid, problem.task)))


BatchScorer = Callable[[list[dict[str, Any]]], list[float]]


class TrialExecutor(Protocol):
    """Fits batches of trials elsewhere (``govml.compute``); the search asks and tells."""

    parallelism: int

    def bind(self, problem: TrialProblem) -> BatchScorer:
        """Ship the problem to the workers once; the scorer fits one batch of parameter sets."""
        ...


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
    executor: TrialExecutor | None = None,
    enqueued: Sequence[Mapping[str, Any]] = (),
) -> TrainingResult:
    """Search the spec's space and return the best parameters with every trial.

    ``over_budget`` is asked after each trial; when it answers True the search stops
    (the carbon budget). Fixed parameters from the YAML override sampled ones.
    ``enqueued`` parameter sets are tried first. With an ``executor`` the trials are
    asked in batches of its parallelism and fitted there, without pruning.
    """
    fixed = fixed_params or {}
    direction: Literal["maximize", "minimize"] = "maximize" if higher_is_better(metric) else "minimize"
    problem = TrialProblem(spec=spec, data=data, task=task, metric=metric, seed=seed)
    use_pruning = pruning and spec.supports_pruning
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20)
        if use_pruning else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner
    )
    for params in enqueued:
        study.enqueue_trial(dict(params))
    stopped_by: dict[str, str] = {}

    def trial_params(trial: optuna.Trial) -> dict[str, Any]:
        params = {**spec.sample(trial), **fixed}
        trial.set_user_attr("params", params)
        return params

    def objective(trial: optuna.Trial) -> float:
        return fit_and_score(problem, trial_params(trial), trial if use_pruning else None)

    def should_stop(trial: optuna.trial.FrozenTrial) -> bool:
        if on_trial is not None:
            on_trial(trial.number, trial.value)
        if over_budget is not None and over_budget():
            stopped_by["reason"] = "carbon_budget"
        return "reason" in stopped_by

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if should_stop(trial):
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    if executor is None:
        study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, callbacks=[after_trial])
    else:
        _optimize_in_batches(
            study, executor.bind(problem), trial_params, should_stop,
            batch_size=executor.parallelism, n_trials=n_trials, deadline=None if timeout_seconds is None
            else started + timeout_seconds,
        )
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


def _optimize_in_batches(
    study: optuna.Study,
    score_batch: BatchScorer,
    trial_params: Callable[[optuna.Trial], dict[str, Any]],
    should_stop: Callable[[optuna.trial.FrozenTrial], bool],
    *,
    batch_size: int,
    n_trials: int,
    deadline: float | None,
) -> None:
    """Optuna's ask and tell: ask a batch, fit it on the executor, tell every result back."""
    asked = 0
    while asked < n_trials and (deadline is None or time.perf_counter() < deadline):
        trials = [study.ask() for _ in range(min(max(batch_size, 1), n_trials - asked))]
        asked += len(trials)
        try:
            values = score_batch([trial_params(trial) for trial in trials])
        except BaseException:
            for trial in trials:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        stop = False
        for trial, value in zip(trials, values, strict=True):
            stop = should_stop(study.tell(trial, value)) or stop
        if stop:
            return
