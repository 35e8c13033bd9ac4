"""The model types govml trains, each with its search space.

Every model type implements :class:`ModelSpec`: build an estimator from parameters,
sample parameters from an Optuna trial, and (optionally) give a pruning callback.
One parametrised test runs every spec through the same checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import optuna
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from govml.errors import ConfigError

TaskKind = Literal["classification", "regression"]


class ModelSpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def supports_pruning(self) -> bool: ...

    def build(self, task: TaskKind, params: dict[str, Any], *, seed: int, n_classes: int) -> BaseEstimator:
        """An unfitted estimator with these parameters."""
        ...

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Parameters for one trial of the search."""
        ...

    def fit_kwargs(
        self, trial: optuna.Trial | None, eval_set: tuple[Any, Any], metric: str, task: TaskKind
    ) -> dict[str, Any]:
        """Extra keyword arguments for ``fit`` (evaluation set, pruning callbacks)."""
        ...


class _NoFitKwargs:
    """For models fitted without an evaluation set or pruning callbacks."""

    def fit_kwargs(
        self, trial: optuna.Trial | None, eval_set: tuple[Any, Any], metric: str, task: TaskKind
    ) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class _LightGBM:
    name: str = "lightgbm"
    supports_pruning: bool = True

    def build(self, task: TaskKind, params: dict[str, Any], *, seed: int, n_classes: int) -> BaseEstimator:
        import lightgbm as lgb

        base = {"random_state": seed, "n_jobs": 2, "verbosity": -1}
        cls = lgb.LGBMClassifier if task == "classification" else lgb.LGBMRegressor
        return cls(**{**base, **params})

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "subsample_freq": 1,
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }

    def fit_kwargs(
        self, trial: optuna.Trial | None, eval_set: tuple[Any, Any], metric: str, task: TaskKind
    ) -> dict[str, Any]:
        if trial is None:
            return {}
        from optuna_integration import LightGBMPruningCallback

        lgb_metric = _LIGHTGBM_METRICS.get(metric, "binary_logloss" if task == "classification" else "l2")
        return {
            "eval_X": eval_set[0],
            "eval_y": eval_set[1],
            "eval_metric": lgb_metric,
            "callbacks": [LightGBMPruningCallback(trial, lgb_metric, valid_name="valid_0")],
        }


_LIGHTGBM_METRICS = {"roc_auc": "auc", "log_loss": "binary_logloss", "rmse": "rmse", "mae": "l1"}


@dataclass(frozen=True)
class _XGBoost:
    name: str = "xgboost"
    supports_pruning: bool = True

    def build(self, task: TaskKind, params: dict[str, Any], *, seed: int, n_classes: int) -> BaseEstimator:
        import xgboost as xgb

        base = {"random_state": seed, "n_jobs": 2, "tree_method": "hist", "verbosity": 0}
        cls = xgb.XGBClassifier if task == "classification" else xgb.XGBRegressor
        return cls(**{**base, **params})

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "max_depth": trial.suggest_int("max_depth", 3, 9),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }

    def fit_kwargs(
        self, trial: optuna.Trial | None, eval_set: tuple[Any, Any], metric: str, task: TaskKind
    ) -> dict[str, Any]:
        # XGBoost's pruning callback must be given to the constructor, see build_for_trial.
        return {"eval_set": [eval_set], "verbose": False} if trial is not None else {}


@dataclass(frozen=True)
class _RandomForest(_NoFitKwargs):
    name: str = "random_forest"
    supports_pruning: bool = False

    def build(self, task: TaskKind, params: dict[str, Any], *, seed: int, n_classes: int) -> BaseEstimator:
        cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
        return cls(**{"random_state": seed, "n_jobs": 2, **params})

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 400, step=50),
            "max_depth": trial.suggest_int("max_depth", 4, 24),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
            "max_features": trial.suggest_float("max_features", 0.2, 1.0),
        }


@dataclass(frozen=True)
class _LogisticRegression(_NoFitKwargs):
    name: str = "logistic_regression"
    supports_pruning: bool = False

    def build(self, task: TaskKind, params: dict[str, Any], *, seed: int, n_classes: int) -> BaseEstimator:
        if task == "classification":
            return LogisticRegression(**{"max_iter": 2000, "random_state": seed, **params})
        # For regression the linear family's member is ridge regression.
        return Ridge(**{"alpha": 1.0 / params.get("C", 1.0)})

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 100.0, log=True)}


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (_LightGBM(), _XGBoost(), _RandomForest(), _LogisticRegression())
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ConfigError(f"training.model {name!r} is unknown; allowed: {sorted(MODEL_SPECS)}") from None


def build_for_trial(
    spec: ModelSpec,
    task: TaskKind,
    params: dict[str, Any],
    *,
    seed: int,
    n_classes: int,
    trial: optuna.Trial | None,
    metric: str,
) -> BaseEstimator:
    """Build the estimator of a trial, with XGBoost's constructor-side pruning callback."""
    estimator = spec.build(task, params, seed=seed, n_classes=n_classes)
    if trial is not None and spec.name == "xgboost":
        from optuna_integration import XGBoostPruningCallback

        xgb_metric = {"roc_auc": "auc", "rmse": "rmse", "mae": "mae"}.get(
            metric, "logloss" if task == "classification" else "rmse"
        )
        estimator.set_params(
            eval_metric=xgb_metric, callbacks=[XGBoostPruningCallback(trial, f"validation_0-{xgb_metric}")]
        )
    return estimator


BaselineFactory = Callable[[int], BaseEstimator]


def baselines(task: TaskKind) -> dict[str, BaselineFactory]:
    """The baselines every run is measured against."""
    if task == "classification":
        return {
            "majority_class": lambda seed: DummyClassifier(strategy="most_frequent"),
            "logistic_regression": lambda seed: LogisticRegression(max_iter=2000, random_state=seed),
        }
    return {
        "mean": lambda seed: DummyRegressor(strategy="mean"),
        "ridge": lambda seed: Ridge(alpha=1.0),
    }
