"""Bias mitigation with fairlearn: reductions and post-processing, judged on validation data.

:func:`mitigate` trains candidates with fairlearn's ExponentiatedGradient, GridSearch and
ThresholdOptimizer on the *preprocessed* features of a fitted govml model (the reductions
refit the base estimator many times; preprocessing once keeps that affordable), measures
every candidate's accuracy and pairwise demographic parity difference on the validation
rows, and picks the most accurate candidate that meets the bound.

The chosen model takes the raw feature frame like any govml model. A ThresholdOptimizer
model applies a threshold per group, so it reads the sensitive attribute from its named
column of the input at prediction time: that column must be part of the model input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import DemographicParity, ExponentiatedGradient, GridSearch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.pipeline import Pipeline

from govml.errors import ConfigError, DataError
from govml.evaluation.fairness import MISSING_GROUP, demographic_parity_difference

Method = Literal["exponentiated_gradient", "grid_search", "threshold_optimizer"]
METHODS: tuple[Method, ...] = ("exponentiated_gradient", "grid_search", "threshold_optimizer")
_MAX_SENSITIVE_VALUES = 20
# ThresholdOptimizer tolerances tried, as fractions of the bound: the loosest one that
# still meets the bound on validation data is usually the most accurate.
_TOLERANCE_FRACTIONS = (1.0, 0.9, 0.8, 0.65, 0.5)


def sensitive_values(X: pd.DataFrame, column: str) -> pd.Series:
    """The sensitive column as strings, missing values as their own group.

    Raises DataError when the column is not in ``X``.
    """
    if not isinstance(X, pd.DataFrame):
        raise DataError(f"a fairness-mitigated model needs a DataFrame with column {column!r}")
    if column not in X.columns:
        raise DataError(
            f"this fairness-mitigated model applies a threshold per group of {column!r}, so the "
            f"input must include the column {column!r} (got columns {list(X.columns)[:20]})"
        )
    values = X[column]
    return values.astype(object).where(values.notna(), MISSING_GROUP).astype(str)


def row_uniforms(X: pd.DataFrame) -> np.ndarray:
    """A number in [0, 1) per row, fixed by the row's values.

    Randomised fair classifiers draw their decision from these instead of a random
    generator, so the same input always gets the same answer, whatever the batch.
    """
    hashes = pd.util.hash_pandas_object(X.reset_index(drop=True), index=False).to_numpy()
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


class FairnessMitigatedClassifier(ClassifierMixin, BaseEstimator):
    """A fairlearn mitigator behind the model's own preprocessing, taking the raw frame.

    ``preprocess`` is the model's ColumnTransformer; ``mitigator`` an ExponentiatedGradient
    or a ThresholdOptimizer over the preprocessed features. A ThresholdOptimizer reads the
    group of each row from the column ``sensitive_feature`` of the input. Predictions are
    randomised as fairlearn intends, but drawn from a hash of each row, so they repeat.
    """

    def __init__(
        self,
        preprocess: Any,
        mitigator: ExponentiatedGradient | ThresholdOptimizer,
        *,
        sensitive_feature: str,
    ) -> None:
        self.preprocess = preprocess
        self.mitigator = mitigator
        self.sensitive_feature = sensitive_feature

    @classmethod
    def from_fitted(
        cls,
        preprocess: Any,
        mitigator: ExponentiatedGradient | ThresholdOptimizer,
        *,
        sensitive_feature: str,
    ) -> FairnessMitigatedClassifier:
        """Wrap an already fitted preprocessor and mitigator without refitting them."""
        model = cls(preprocess, mitigator, sensitive_feature=sensitive_feature)
        model.preprocess_ = preprocess
        model.mitigator_ = mitigator
        model.classes_ = np.array([0, 1])
        return model

    @property
    def needs_sensitive_feature(self) -> bool:
        """True when predictions read the sensitive column (post-processing)."""
        return isinstance(self.mitigator, ThresholdOptimizer)

    def fit(self, X: pd.DataFrame, y: Any) -> FairnessMitigatedClassifier:
        groups = sensitive_values(X, self.sensitive_feature)
        self.preprocess_ = clone(self.preprocess).fit(X, y)
        features = _dense(self.preprocess_.transform(X))
        mitigator = clone(self.mitigator)
        if isinstance(mitigator, ThresholdOptimizer):
            mitigator.set_params(prefit=False)
        self.mitigator_ = mitigator.fit(features, np.asarray(y), sensitive_features=groups)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability that the (randomised) fair classifier predicts each class."""
        if isinstance(self.mitigator_, ThresholdOptimizer):
            groups = sensitive_values(X, self.sensitive_feature)
            known = set(self.mitigator_.interpolated_thresholder_.interpolation_dict)
            unknown = sorted(set(groups) - known)
            if unknown:
                raise DataError(
                    f"{self.sensitive_feature!r} value(s) {unknown[:5]} were not seen when the "
                    f"fairness thresholds were fitted (known: {sorted(known)})"
                )
            features = _dense(self.preprocess_.transform(X))
            pmf = self.mitigator_._pmf_predict(features, sensitive_features=groups)
        else:
            pmf = self.mitigator_._pmf_predict(_dense(self.preprocess_.transform(X)))
        return np.asarray(pmf, dtype=float)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        positive = self.predict_proba(X)[:, 1]
        return (row_uniforms(X) < positive).astype(int)

    def explainable_pipeline(self) -> Pipeline:
        """The plain Pipeline whose explanations stand for this model.

        ThresholdOptimizer: the underlying scorer (the group thresholds come after it).
        ExponentiatedGradient: the mixture's heaviest-weighted predictor.
        """
        mitigator = self.mitigator_
        if isinstance(mitigator, ThresholdOptimizer):
            estimator = mitigator.estimator_
        else:
            estimator = mitigator.predictors_[int(np.argmax(np.asarray(mitigator.weights_)))]
        return Pipeline([("preprocess", self.preprocess_), ("model", estimator)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MitigationCandidate(_Model):
    name: str
    method: Literal["unmitigated", "exponentiated_gradient", "grid_search", "threshold_optimizer"]
    setting: dict[str, float] = Field(default_factory=dict)
    accuracy: float = Field(description="on the validation rows")
    demographic_parity_difference: float | None = Field(description="pairwise, on the validation rows")
    demographic_parity_ratio: float | None
    meets_constraint: bool
    fit_seconds: float
    needs_sensitive_feature: bool = False
    chosen: bool = False


class MitigationResult(_Model):
    """Every candidate with its validation accuracy and disparity, and the one chosen."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    sensitive_feature: str
    bound: float = Field(description="largest allowed pairwise demographic parity difference")
    ratio_min: float | None = None
    margin: float = Field(description="headroom below the bound required on validation data")
    evaluated_on: str = "validation"
    n_validation_rows: int
    unmitigated: MitigationCandidate
    candidates: list[MitigationCandidate]
    chosen: str | None = Field(description="name of the chosen candidate; None when none met the bound")
    accuracy_loss: float | None = Field(description="unmitigated minus chosen validation accuracy")
    max_accuracy_loss: float
    within_accuracy_budget: bool | None
    needs_sensitive_feature: bool = Field(
        description="the chosen model reads the sensitive column at prediction time"
    )
    plot: str | None = None
    duration_s: float
    notes: list[str] = Field(default_factory=list)
    model: Any = Field(default=None, exclude=True, repr=False)
    candidate_models: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    def table(self) -> pd.DataFrame:
        """The trade-off table: one row per candidate, the unmitigated model first."""
        rows = [self.unmitigated, *self.candidates]
        return pd.DataFrame([c.model_dump(exclude={"setting"}) for c in rows])


def _ratio(y_pred: np.ndarray, groups: pd.Series, min_group_size: int) -> float | None:
    rates = pd.Series(y_pred == 1).groupby(groups.to_numpy()).agg(["mean", "size"])
    rates = rates[rates["size"] >= min_group_size]["mean"]
    if len(rates) < 2:
        return None
    return float(rates.min() / rates.max()) if rates.max() > 0 else 1.0


def _score(
    name: str,
    method: str,
    model: Any,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    groups: pd.Series,
    *,
    setting: dict[str, float],
    limit: float,
    ratio_min: float | None,
    min_group_size: int,
    fit_seconds: float,
) -> MitigationCandidate:
    pred = np.asarray(model.predict(X_valid)).astype(int)
    dpd = demographic_parity_difference(pred, groups, min_group_size=min_group_size)
    ratio = _ratio(pred, groups, min_group_size)
    meets = dpd is not None and dpd <= limit and (ratio_min is None or (ratio or 0.0) >= ratio_min)
    return MitigationCandidate(
        name=name,
        method=method,  # type: ignore[arg-type]
        setting=setting,
        accuracy=float(np.mean(pred == y_valid)),
        demographic_parity_difference=dpd,
        demographic_parity_ratio=ratio,
        meets_constraint=bool(meets),
        fit_seconds=round(fit_seconds, 3),
        needs_sensitive_feature=getattr(model, "needs_sensitive_feature", False),
    )


def reduction_bound(bound: float, groups: pd.Series) -> float:
    """fairlearn's DemographicParity bound that keeps the pairwise difference within ``bound``.

    fairlearn bounds each group's gap to the *overall* selection rate. With two groups
    whose largest share is p, a pairwise difference D gives gaps of at most p * D; with
    more groups the gaps can add up to twice the bound, so half of it is used.
    """
    shares = groups.value_counts(normalize=True)
    return float(bound * shares.max()) if len(shares) == 2 else bound / 2


def _check_inputs(
    model_pipeline: Any,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    sensitive_feature: str,
    methods: Sequence[str],
) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(
            f"responsible_ai.mitigation.methods: unknown or empty {unknown or list(methods)}; "
            f"allowed: {list(METHODS)}"
        )
    if not isinstance(model_pipeline, Pipeline) or "preprocess" not in model_pipeline.named_steps:
        raise ConfigError(
            "mitigate needs the fitted govml Pipeline([('preprocess', ...), ('model', ...)])"
        )
    for name, X, y in (("training", X_train, y_train), ("validation", X_valid, y_valid)):
        if len(X) != len(y):
            raise DataError(f"{name} features have {len(X)} rows but the target has {len(y)}")
        if sensitive_feature not in X.columns:
            raise DataError(
                f"the mitigation attribute {sensitive_feature!r} is not a column of the {name} "
                "features; it must stay in the model input"
            )
        labels = set(np.unique(y).tolist())
        if not labels <= {0, 1}:
            raise DataError(f"mitigation needs a binary 0/1 target; {name} target holds {sorted(labels)[:5]}")
    n_groups = X_train[sensitive_feature].nunique(dropna=False)
    if n_groups < 2:
        raise DataError(f"the mitigation attribute {sensitive_feature!r} has a single group")
    if n_groups > _MAX_SENSITIVE_VALUES:
        raise DataError(
            f"the mitigation attribute {sensitive_feature!r} has {n_groups} distinct values; "
            f"mitigation needs a categorical attribute with at most {_MAX_SENSITIVE_VALUES} groups"
        )


def mitigate(
    model_pipeline: Pipeline,
    X_train: pd.DataFrame,
    y_train: Sequence[int] | np.ndarray | pd.Series,
    X_valid: pd.DataFrame,
    y_valid: Sequence[int] | np.ndarray | pd.Series,
    sensitive_feature: str,
    *,
    bound: float = 0.1,
    methods: Sequence[str] = METHODS,
    ratio_min: float | None = None,
    margin: float = 0.01,
    max_accuracy_loss: float = 0.015,
    min_group_size: int = 30,
    base_estimator: BaseEstimator | None = None,
    grid_size: int = 11,
    grid_limit: float = 0.5,
    eg_max_iter: int = 50,
    out_dir: Path | None = None,
) -> MitigationResult:
    """Fit mitigated candidates and choose the most accurate one that meets the bound.

    ``model_pipeline`` is the fitted govml Pipeline; its fitted ``preprocess`` step is
    reused and its ``model`` step (or ``base_estimator``) is the estimator the reductions
    refit. A candidate meets the constraint when its pairwise demographic parity
    difference on the validation rows is at most ``bound - margin`` (and its ratio at
    least ``ratio_min`` when given). ``result.model`` holds the chosen estimator (not
    serialised), ``result.candidate_models`` every candidate by name; ``out_dir`` receives the trade-off plot.
    """
    started = time.perf_counter()
    y_tr = np.asarray(y_train).astype(int)
    y_va = np.asarray(y_valid).astype(int)
    _check_inputs(model_pipeline, X_train, y_tr, X_valid, y_va, sensitive_feature, methods)
    preprocess = model_pipeline.named_steps["preprocess"]
    base = clone(base_estimator if base_estimator is not None else model_pipeline.steps[-1][1])
    groups_train = sensitive_values(X_train, sensitive_feature)
    groups_valid = sensitive_values(X_valid, sensitive_feature)
    features_train = _dense(preprocess.transform(X_train))
    limit = bound - margin

    def score(name: str, method: str, model: Any, setting: dict[str, float], seconds: float) -> MitigationCandidate:
        return _score(
            name, method, model, X_valid, y_va, groups_valid, setting=setting, limit=limit,
            ratio_min=ratio_min, min_group_size=min_group_size, fit_seconds=seconds,
        )

    unmitigated = score("unmitigated", "unmitigated", model_pipeline, {}, 0.0)
    scored: list[tuple[MitigationCandidate, Any]] = []
    notes: list[str] = []

    if "threshold_optimizer" in methods:
        scorer = model_pipeline.steps[-1][1]
        for fraction in _TOLERANCE_FRACTIONS:
            tol = round(limit * fraction, 4)
            t0 = time.perf_counter()
            post = ThresholdOptimizer(
                estimator=scorer, constraints="demographic_parity", objective="accuracy_score",
                prefit=True, predict_method="predict_proba", tol=tol,
            ).fit(features_train, y_tr, sensitive_features=groups_train)
            model = FairnessMitigatedClassifier.from_fitted(
                preprocess, post, sensitive_feature=sensitive_feature
            )
            seconds = time.perf_counter() - t0
            scored.append((score(f"threshold_optimizer(tol={tol})", "threshold_optimizer", model,
                                 {"tol": tol}, seconds), model))

    if "grid_search" in methods:
        t0 = time.perf_counter()
        search = GridSearch(clone(base), DemographicParity(), grid_size=grid_size, grid_limit=grid_limit).fit(
            features_train, y_tr, sensitive_features=groups_train
        )
        seconds = (time.perf_counter() - t0) / max(len(search.predictors_), 1)
        lambdas = search.lambda_vecs_
        for index, predictor in enumerate(search.predictors_):
            model = Pipeline([("preprocess", preprocess), ("model", predictor)])
            # With two groups the grid has one degree of freedom: the (+, group 0) multiplier.
            setting = {"grid_index": float(index), "lambda": float(lambdas[index].iloc[0])}
            scored.append((score(f"grid_search[{index}]", "grid_search", model, setting, seconds), model))

    if "exponentiated_gradient" in methods:
        eps = reduction_bound(limit, groups_train)
        t0 = time.perf_counter()
        reduction = ExponentiatedGradient(
            clone(base), DemographicParity(difference_bound=eps), eps=eps, max_iter=eg_max_iter
        ).fit(features_train, y_tr, sensitive_features=groups_train)
        model = FairnessMitigatedClassifier.from_fitted(
            preprocess, reduction, sensitive_feature=sensitive_feature
        )
        seconds = time.perf_counter() - t0
        scored.append((score(f"exponentiated_gradient(bound={eps:.4f})", "exponentiated_gradient",
                             model, {"difference_bound": eps}, seconds), model))
        notes.append(
            f"exponentiated_gradient: fairlearn bound {eps:.4f} (gap to the overall rate) for a "
            f"pairwise bound of {limit:.4f}"
        )

    eligible = [(c, m) for c, m in scored if c.meets_constraint]
    chosen_candidate, chosen_model = max(eligible, key=lambda cm: cm[0].accuracy, default=(None, None))
    candidates = [c.model_copy(update={"chosen": c is chosen_candidate}) for c, _ in scored]
    if chosen_candidate is None:
        notes.append(f"no candidate reached a demographic parity difference <= {limit:.3f} on validation")
        loss = None
    else:
        loss = unmitigated.accuracy - chosen_candidate.accuracy
        if loss > max_accuracy_loss:
            notes.append(
                f"the chosen model loses {loss:.4f} accuracy, more than max_accuracy_loss {max_accuracy_loss}"
            )
    result = MitigationResult(
        sensitive_feature=sensitive_feature,
        bound=bound,
        ratio_min=ratio_min,
        margin=margin,
        n_validation_rows=len(X_valid),
        unmitigated=unmitigated,
        candidates=candidates,
        chosen=chosen_candidate.name if chosen_candidate else None,
        accuracy_loss=loss,
        max_accuracy_loss=max_accuracy_loss,
        within_accuracy_budget=None if loss is None else loss <= max_accuracy_loss,
        needs_sensitive_feature=bool(chosen_candidate and chosen_candidate.needs_sensitive_feature),
        duration_s=round(time.perf_counter() - started, 3),
        notes=notes,
        model=chosen_model,
        candidate_models={c.name: m for c, m in scored},
    )
    if out_dir is not None:
        path = plot_tradeoff(result, Path(out_dir) / f"fairness_tradeoff_{sensitive_feature}.png")
        result = result.model_copy(update={"plot": str(path)})
    return result


def plot_tradeoff(result: MitigationResult, path: Path) -> Path:
    """Save a PNG of validation accuracy against demographic parity difference, per candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"unmitigated": "s", "exponentiated_gradient": "D", "grid_search": "o",
               "threshold_optimizer": "^"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, marker in markers.items():
        points = [(c.demographic_parity_difference, c.accuracy) for c in [result.unmitigated, *result.candidates]
                  if c.method == method and c.demographic_parity_difference is not None]
        if points:
            ax.scatter([dp for dp, _ in points], [acc for _, acc in points], marker=marker, label=method,
                       alpha=0.8)
    chosen = [c for c in result.candidates if c.chosen]
    if chosen and chosen[0].demographic_parity_difference is not None:
        ax.scatter([chosen[0].demographic_parity_difference], [chosen[0].accuracy], s=200,
                   facecolors="none", edgecolors="red", linewidths=2, label=f"chosen: {chosen[0].name}")
    ax.axvline(result.bound, color="grey", linestyle="--", linewidth=1, label=f"bound {result.bound}")
    ax.set_xlabel(f"demographic parity difference ({result.sensitive_feature}, validation)")
    ax.set_ylabel("accuracy (validation)")
    ax.set_title("Fairness mitigation: accuracy vs disparity")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
