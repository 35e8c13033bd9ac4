"""Differentially private training with diffprivlib, behind govml's usual preprocessing.

The model is the usual ``Pipeline([("preprocess", ColumnTransformer), ("model", dp_model)])``.
diffprivlib needs the range of every feature *before* it sees the data, or it measures
the range on the data and leaks privacy (it warns). The preprocessing fixes those
ranges: one-hot columns lie in [0, 1], standardised numeric columns are clipped to
``[-clip, clip]`` (diffprivlib clips them while fitting), so the bounds and the
logistic regression's ``data_norm`` follow from the column layout alone.

What epsilon covers: the model's training. The preprocessing statistics (medians,
means, standard deviations, the category lists) are computed on the data without noise.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from diffprivlib.models import GaussianNB, LogisticRegression, RandomForestClassifier
from diffprivlib.utils import PrivacyLeakWarning
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from govml.errors import ConfigError, DataError

DPModelName = Literal["logistic_regression", "naive_bayes", "random_forest"]
DP_MODELS: tuple[DPModelName, ...] = ("logistic_regression", "naive_bayes", "random_forest")


class DPTrainingResult(BaseModel):
    """What was trained privately, with which budget and bounds."""

    model_config = ConfigDict(extra="forbid")

    model: DPModelName
    epsilon: float
    clip: float = Field(description="standardised numeric features were clipped to [-clip, clip]")
    data_norm: float | None = Field(description="L2 bound of a row (logistic regression)")
    n_features: int
    n_rows: int
    duration_s: float
    notes: list[str] = Field(default_factory=list)


def _last_step(transformer: Any) -> Any:
    return transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer


def _steps(transformer: Any) -> list[Any]:
    return [step for _, step in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]


def feature_bounds(preprocess: ColumnTransformer, *, clip: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Lower and upper bound of each transformed column, and the number of one-hot groups.

    Raises ConfigError for a numeric branch without standard scaling: its range is
    unknown without looking at the data.
    """
    lower: list[float] = []
    upper: list[float] = []
    one_hot_groups = 0
    for name, transformer, columns in preprocess.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        width = len(transformer.get_feature_names_out())
        if isinstance(_last_step(transformer), OneHotEncoder):
            lower += [0.0] * width
            upper += [1.0] * width
            one_hot_groups += len(columns)
        elif any(isinstance(step, StandardScaler) for step in _steps(transformer)):
            lower += [-clip] * width
            upper += [clip] * width
        else:
            raise ConfigError(
                f"differential privacy needs standardised numeric features (features.scaling: "
                f"standard); the preprocessing branch {name!r} has no StandardScaler or OneHotEncoder"
            )
    return np.array(lower), np.array(upper), one_hot_groups


def build_dp_estimator(
    model: DPModelName,
    *,
    epsilon: float,
    lower: np.ndarray,
    upper: np.ndarray,
    one_hot_groups: int,
    n_classes: int = 2,
    seed: int | None = 0,
) -> tuple[BaseEstimator, float | None]:
    """The diffprivlib estimator with its bounds set, and the data norm it uses (if any)."""
    if epsilon <= 0:
        raise ConfigError(f"responsible_ai.privacy.differential_privacy.epsilon must be > 0, got {epsilon}")
    if model == "logistic_regression":
        # A row has |one-hot part|^2 = number of one-hot groups and |numeric part|^2 <= n * clip^2.
        numeric = upper[lower < 0]
        data_norm = float(np.sqrt(one_hot_groups + np.sum(numeric**2)))
        return LogisticRegression(epsilon=epsilon, data_norm=data_norm, random_state=seed), data_norm
    if model == "naive_bayes":
        return GaussianNB(epsilon=epsilon, bounds=(lower, upper), random_state=seed), None
    if model == "random_forest":
        return RandomForestClassifier(
            n_estimators=10, epsilon=epsilon, bounds=(lower, upper), classes=list(range(n_classes)),
            max_depth=5, random_state=seed,
        ), None
    raise ConfigError(f"responsible_ai.privacy.differential_privacy.model: {model!r}; allowed: {list(DP_MODELS)}")


def train_dp_model(
    preprocess: ColumnTransformer,
    X_train: pd.DataFrame,
    y_train: Any,
    *,
    model: DPModelName = "logistic_regression",
    epsilon: float = 1.0,
    clip: float = 3.0,
    seed: int | None = 0,
) -> tuple[Pipeline, DPTrainingResult]:
    """Fit ``Pipeline([("preprocess", preprocess), ("model", <diffprivlib model>)])``.

    ``preprocess`` is an unfitted govml ColumnTransformer (standard scaling on); ``y_train``
    the encoded classes ``0..k-1``. diffprivlib's privacy-leak warnings become errors, so
    a fit that would spend privacy outside epsilon fails instead of passing quietly.
    """
    started = time.perf_counter()
    target = np.asarray(y_train)
    if len(X_train) != len(target) or len(target) == 0:
        raise DataError(f"DP training got {len(X_train)} feature rows and {len(target)} targets")
    labels = np.unique(target)
    if not np.array_equal(labels, np.arange(len(labels))):
        raise DataError(f"DP training needs classes encoded 0..k-1, got {labels[:10].tolist()}")
    fitted_preprocess = clone(preprocess).fit(X_train, target)
    lower, upper, groups = feature_bounds(fitted_preprocess, clip=clip)
    estimator, data_norm = build_dp_estimator(
        model, epsilon=epsilon, lower=lower, upper=upper, one_hot_groups=groups,
        n_classes=len(labels), seed=seed,
    )
    features = fitted_preprocess.transform(X_train)
    features = features.toarray() if hasattr(features, "toarray") else np.asarray(features, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        estimator.fit(features, target)
    pipeline = Pipeline([("preprocess", fitted_preprocess), ("model", estimator)])
    return pipeline, DPTrainingResult(
        model=model,
        epsilon=epsilon,
        clip=clip,
        data_norm=data_norm,
        n_features=len(lower),
        n_rows=len(target),
        duration_s=round(time.perf_counter() - started, 3),
        notes=["epsilon covers model training; preprocessing statistics are not privatised"],
    )
