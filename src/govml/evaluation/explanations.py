"""SHAP explanations of a govml model, reported per raw input column.

The explainer follows the model: TreeExplainer for tree ensembles, LinearExplainer for
linear models (both on the preprocessed features, their attributions then summed back
to the raw column each one-hot or scaled column came from), and a sampled
Kernel SHAP on the raw columns for anything else. :func:`explain_model` gives
global importance and dependence plots; :func:`build_row_explainer` gives the per-row
explainer the serving layer calls on each request.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import shap
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from govml.errors import DataError

ExplainerKind = Literal["tree", "linear", "kernel"]
Output = Literal["log_odds", "probability", "raw"]
_BACKGROUND_ROWS = 100
_KERNEL_BACKGROUND_ROWS = 50
_KERNEL_MAX_ROWS = 100
_KERNEL_EXTRA_SAMPLES = 200


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureImportance(_Model):
    feature: str
    mean_abs_shap: float
    rank: int


class ExplanationReport(_Model):
    """Global SHAP importance per raw column, and where the plots were written."""

    explainer: ExplainerKind
    explained_model: str = Field(description="class of the estimator the attributions describe")
    output: Output = Field(description="scale of the attributions: log-odds, probability or raw output")
    n_rows: int
    importance: list[FeatureImportance]
    top_features: list[str]
    plots: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    duration_s: float


@dataclass(frozen=True)
class RowExplanations:
    """SHAP values of some rows: ``values[i, j]`` is raw column ``feature_names[j]``'s share.

    ``base_values[i] + values[i].sum()`` is the explained output of row ``i`` (for
    multi-class models: of the class in ``output_class[i]``, the predicted one).
    """

    feature_names: list[str]
    values: np.ndarray
    base_values: np.ndarray
    output: Output
    output_class: np.ndarray | None = None

    @property
    def base_value(self) -> float:
        return float(self.base_values[0])

    def top(self, row: int, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` columns with the largest absolute contribution to one row."""
        order = np.argsort(-np.abs(self.values[row]))[:k]
        return [(self.feature_names[j], float(self.values[row, j])) for j in order]


def unwrap_model(model: Any) -> tuple[Any, list[str]]:
    """The plain pipeline to explain, and a note when it stands in for a wrapper."""
    explainable = getattr(model, "explainable_pipeline", None)
    if callable(explainable):
        inner = explainable()
        kind = type(getattr(model, "mitigator_", model)).__name__
        return inner, [
            f"the model is fairness-mitigated ({kind}); the explanations describe its underlying "
            f"estimator {type(inner.steps[-1][1]).__name__}, not the mitigation step"
        ]
    return model, []


def _column_names(columns: Any, raw: list[str]) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    items = list(columns) if not callable(columns) else []
    if items and isinstance(items[0], (bool, np.bool_)):
        return [name for name, keep in zip(raw, items, strict=True) if keep]
    if items and isinstance(items[0], (int, np.integer)):
        return [raw[i] for i in items]
    return [str(c) for c in items]


def _source_of(output: str, columns: list[str]) -> str:
    matches = [c for c in columns if output == c or output.startswith(f"{c}_")]
    if not matches:
        raise ValueError(f"cannot tell which input column the transformed column {output!r} comes from")
    return max(matches, key=len)


def raw_feature_sources(preprocess: ColumnTransformer) -> tuple[list[str], list[str]]:
    """The raw input columns, and for each transformed column the raw column it came from."""
    raw = [str(c) for c in preprocess.feature_names_in_]
    sources: list[str] = []
    for _, transformer, columns in preprocess.transformers_:
        names = _column_names(columns, raw)
        if transformer == "drop" or not names:
            continue
        outputs = names if transformer == "passthrough" else list(transformer.get_feature_names_out(names))
        if len(outputs) == len(names):
            sources.extend(names)
        else:
            sources.extend(_source_of(str(o), names) for o in outputs)
    return raw, sources


def _aggregation_matrix(raw: list[str], sources: list[str]) -> np.ndarray:
    index = {name: j for j, name in enumerate(raw)}
    matrix = np.zeros((len(sources), len(raw)))
    for i, name in enumerate(sources):
        matrix[i, index[name]] = 1.0
    return matrix


def _dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype=float)


def _is_linear(estimator: Any) -> bool:
    return hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")


class _RawCodec:
    """Numbers for raw frames (categories as codes), so SHAP can mask raw columns."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.columns = list(frame.columns)
        self.dtypes = frame.dtypes
        self.categories: dict[str, list[Any]] = {}
        for column in self.columns:
            series = frame[column]
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                self.categories[column] = list(pd.unique(series.dropna()))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.columns)))
        for j, column in enumerate(self.columns):
            if column in self.categories:
                codes = {value: k for k, value in enumerate(self.categories[column])}
                out[:, j] = [codes.get(v, np.nan) for v in frame[column].tolist()]
            else:
                out[:, j] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        return out

    def decode(self, array: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, column in enumerate(self.columns):
            if column in self.categories:
                lookup = np.array([*self.categories[column], None], dtype=object)
                codes = np.where(np.isnan(array[:, j]), -1, array[:, j]).astype(int)
                data[column] = lookup[codes]
            else:
                data[column] = array[:, j]
        return pd.DataFrame(data)


def _select_output(
    values: np.ndarray, base: np.ndarray, predicted: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, f) values and (n,) base values: positive class for binary, predicted class beyond."""
    n = values.shape[0]
    if values.ndim == 2:
        return values, np.broadcast_to(np.asarray(base, dtype=float).reshape(-1)[-1], (n,)).copy(), None
    base = np.asarray(base, dtype=float)
    if base.ndim == 2:
        base = base[0]
    if values.shape[2] == 2:
        return values[:, :, 1], np.full(n, float(base[1])), None
    pick = predicted if predicted is not None else np.zeros(n, dtype=int)
    return values[np.arange(n), :, pick], base[pick], pick


class RowExplainer:
    """Explains rows of the raw feature frame; built once, called per request."""

    def __init__(
        self,
        kind: ExplainerKind,
        explain_matrix: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]],
        *,
        feature_names: list[str],
        output: Output,
        model: Any,
        explained_model: str,
        notes: list[str],
    ) -> None:
        self.kind = kind
        self._explain_matrix = explain_matrix
        self.feature_names = feature_names
        self.output = output
        self._model = model
        self.explained_model = explained_model
        self.notes = notes
        self._recipe: tuple[Any, pd.DataFrame] | None = None  # what build_row_explainer built it from

    def __reduce_ex__(self, protocol: Any) -> Any:
        # shap's explainers do not all pickle (KernelExplainer holds Cython state): a copy sent to
        # another process, a Ray task, is rebuilt there from the model and background rows instead.
        if self._recipe is None:
            return super().__reduce_ex__(protocol)
        return _rebuilt_row_explainer, (*self._recipe, list(self.notes))

    def explain(self, X: pd.DataFrame) -> RowExplanations:
        """SHAP values per raw column for each row of ``X`` (raw feature frame)."""
        if not isinstance(X, pd.DataFrame) or len(X) == 0:
            raise DataError("explain needs a non-empty DataFrame of raw features")
        missing = [c for c in self.feature_names if c not in X.columns]
        if missing:
            raise DataError(f"explain: input lacks the model's column(s) {missing}")
        frame = X[self.feature_names]
        values, base = self._explain_matrix(frame)
        predicted = None
        if values.ndim == 3 and values.shape[2] > 2:
            predicted = np.asarray(self._model.predict(frame)).astype(int)
        values, base_values, picked = _select_output(values, base, predicted)
        return RowExplanations(
            feature_names=self.feature_names,
            values=values,
            base_values=base_values,
            output=self.output,
            output_class=picked,
        )


ExplainRows = Callable[[RowExplainer, pd.DataFrame], RowExplanations]
"""Computes an explainer's :class:`RowExplanations` of some rows, in row order; any split of
the rows must give what :meth:`RowExplainer.explain` gives on all of them."""


def _tree_output(explainer: Any) -> Output:
    tree_output = getattr(getattr(explainer, "model", None), "tree_output", None)
    if tree_output == "log_odds":
        return "log_odds"
    if tree_output == "probability":
        return "probability"
    return "raw"


def build_row_explainer(model_pipeline: Any, background: pd.DataFrame) -> RowExplainer:
    """Choose the SHAP explainer for the model and prepare it on ``background`` rows.

    ``background`` is a sample of raw training features (a hundred rows is plenty); tree
    models do not need it, linear models use its mean, the Kernel SHAP fallback
    integrates over it.
    """
    if not isinstance(background, pd.DataFrame) or len(background) == 0:
        raise DataError("build_row_explainer needs a non-empty background DataFrame of raw features")
    explainer = _build_row_explainer(model_pipeline, background)
    explainer._recipe = (model_pipeline, background)
    return explainer


def _rebuilt_row_explainer(model_pipeline: Any, background: pd.DataFrame, notes: list[str]) -> RowExplainer:
    explainer = build_row_explainer(model_pipeline, background)  # deterministic: the same explainer
    explainer.notes = notes
    return explainer


def _build_row_explainer(model_pipeline: Any, background: pd.DataFrame) -> RowExplainer:
    pipeline, notes = unwrap_model(model_pipeline)
    steps = getattr(pipeline, "named_steps", {})
    preprocess = steps.get("preprocess")
    estimator = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
    if isinstance(preprocess, ColumnTransformer) and len(pipeline.steps) == 2:
        raw, sources = raw_feature_sources(preprocess)
        aggregate = _aggregation_matrix(raw, sources)
        explainer: Any = None
        kind: ExplainerKind
        if _is_linear(estimator):
            sample = background.sample(min(len(background), _BACKGROUND_ROWS), random_state=0)
            masker = shap.maskers.Independent(_dense(preprocess.transform(sample[raw])))
            explainer, kind = shap.LinearExplainer(estimator, masker), "linear"
            output: Output = "log_odds" if is_classifier(estimator) else "raw"
        else:
            try:
                explainer, kind = shap.TreeExplainer(estimator), "tree"
                output = _tree_output(explainer)
            except ValueError as exc:  # shap's InvalidModelError: not a supported tree model
                notes = [*notes, f"no tree or linear explainer for {type(estimator).__name__} ({exc})"]
        if explainer is not None:
            fitted = explainer

            def explain_transformed(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
                shap_values = fitted.shap_values(_dense(preprocess.transform(frame)))
                # Older explainers return one (n, t) array per class instead of (n, t, k).
                values = np.stack(shap_values, axis=-1) if isinstance(shap_values, list) else shap_values
                summed = np.einsum("ntk,tf->nfk", values, aggregate) if values.ndim == 3 else values @ aggregate
                return summed, np.asarray(fitted.expected_value)

            return RowExplainer(kind, explain_transformed, feature_names=raw, output=output,
                                model=pipeline, explained_model=type(estimator).__name__, notes=notes)
    return _kernel_explainer(pipeline, background, notes)


#: numpy's global random state, which Kernel SHAP draws from: one seeded row at a time
_GLOBAL_RNG = threading.Lock()


def _kernel_explainer(pipeline: Any, background: pd.DataFrame, notes: list[str]) -> RowExplainer:
    columns = [str(c) for c in getattr(pipeline, "feature_names_in_", background.columns)]
    frame = background[columns]
    codec = _RawCodec(frame)
    classifier = hasattr(pipeline, "predict_proba")

    def predict(array: np.ndarray) -> np.ndarray:
        decoded = codec.decode(array)
        return pipeline.predict_proba(decoded) if classifier else pipeline.predict(decoded)

    sample = frame.sample(min(len(frame), _KERNEL_BACKGROUND_ROWS), random_state=0)
    # KernelExplainer rather than PermutationExplainer: the latter JIT-compiles with numba
    # on first use in every process, tens of seconds the first request would pay.
    explainer = shap.KernelExplainer(predict, codec.encode(sample))
    n_samples = 2 * len(columns) + _KERNEL_EXTRA_SAMPLES

    def explain_raw(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        # Kernel SHAP samples coalitions from numpy's global RNG (shap takes no Generator).
        # Seeding it per row from the row's values gives a row the same attributions in any
        # batch, process or Ray task; the lock keeps two threads (concurrent /explain
        # requests) from drawing from the state the other one seeded.
        per_row = []
        for row in codec.encode(rows):
            with _GLOBAL_RNG:
                state = np.random.get_state()
                try:
                    np.random.seed(zlib.crc32(row.tobytes()))
                    values = explainer.shap_values(row[None, :], nsamples=n_samples, l1_reg=False, silent=True)
                finally:
                    np.random.set_state(state)
            per_row.append(np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values))
        return np.concatenate(per_row), np.asarray(explainer.expected_value)

    estimator = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
    return RowExplainer(
        "kernel", explain_raw, feature_names=columns,
        output="probability" if classifier else "raw", model=pipeline,
        explained_model=type(estimator).__name__,
        notes=[*notes, f"sampled Kernel SHAP on raw columns ({n_samples} coalitions per row, seeded from the "
                       f"row's values; {len(sample)} background rows)"],
    )


def _plot_importance(importance: list[FeatureImportance], output: Output, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = importance[:20][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh([i.feature for i in shown], [i.mean_abs_shap for i in shown], color="#3b75af")
    ax.set_xlabel(f"mean |SHAP value| ({output})")
    ax.set_title("Global feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_dependence(feature: str, data: pd.Series, values: np.ndarray, output: Output, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if pd.api.types.is_numeric_dtype(data) and not pd.api.types.is_bool_dtype(data):
        ax.scatter(data.to_numpy(dtype=float), values, s=8, alpha=0.5)
    else:
        labels = data.astype(object).where(data.notna(), "(missing)").astype(str)
        order = labels.value_counts().index[:25].tolist()
        groups = [values[(labels == c).to_numpy()] for c in order]
        ax.boxplot(groups, tick_labels=order)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(feature)
    ax.set_ylabel(f"SHAP value ({output})")
    ax.set_title(f"Dependence: {feature}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def explain_model(
    model_pipeline: Any,
    X: pd.DataFrame,
    *,
    max_rows: int = 500,
    top_features: int = 5,
    out_dir: Path | None = None,
    seed: int = 0,
    explain_rows: ExplainRows = RowExplainer.explain,
) -> ExplanationReport:
    """Global SHAP importance per raw column on a sample of ``X``, plus PNG plots in ``out_dir``.

    Writes ``shap_importance.png`` and ``shap_dependence_<feature>.png`` for the top
    features when ``out_dir`` is given. ``explain_rows`` computes the sample's SHAP values:
    in process by default, or split across workers (``govml.compute.distributed_eval``).
    """
    started = time.perf_counter()
    if not isinstance(X, pd.DataFrame) or len(X) == 0:
        raise DataError("explain_model needs a non-empty DataFrame of raw features")
    if max_rows < 1 or top_features < 1:
        raise DataError("explain_model: max_rows and top_features must be at least 1")
    sample = X.sample(min(len(X), max_rows), random_state=seed)
    row_explainer = build_row_explainer(model_pipeline, sample)
    if row_explainer.kind == "kernel" and len(sample) > _KERNEL_MAX_ROWS:
        # Each row costs hundreds of model calls: a smaller sample keeps the stage affordable.
        sample = sample.sample(_KERNEL_MAX_ROWS, random_state=seed)
        row_explainer.notes.append(f"global importance from {_KERNEL_MAX_ROWS} sampled rows")
    explained = explain_rows(row_explainer, sample)
    mean_abs = np.abs(explained.values).mean(axis=0)
    order = np.argsort(-mean_abs)
    importance = [
        FeatureImportance(feature=explained.feature_names[j], mean_abs_shap=float(mean_abs[j]), rank=r + 1)
        for r, j in enumerate(order)
    ]
    top = [i.feature for i in importance[:top_features]]
    plots: list[str] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plots.append(str(_plot_importance(importance, explained.output, out / "shap_importance.png")))
        for feature in top:
            j = explained.feature_names.index(feature)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in feature)
            path = out / f"shap_dependence_{safe}.png"
            plots.append(str(_plot_dependence(feature, sample[feature], explained.values[:, j],
                                              explained.output, path)))
    return ExplanationReport(
        explainer=row_explainer.kind,
        explained_model=row_explainer.explained_model,
        output=explained.output,
        n_rows=len(sample),
        importance=importance,
        top_features=top,
        plots=plots,
        notes=row_explainer.notes,
        duration_s=round(time.perf_counter() - started, 3),
    )
