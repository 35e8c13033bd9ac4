"""SHAP values per request row, aggregated from the model's encoded features back to its raw columns.

INTEGRATION: ``govml.evaluation.explanations`` (the responsible-AI part) will own the
SHAP wrapper; until it lands this module builds a ``shap.TreeExplainer`` on the
pipeline's final estimator and sums one-hot columns back to the raw feature names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from govml.serving.loading import LoadedModel


class ExplanationUnavailable(Exception):
    """The served model cannot be explained (not a tree model, or not an sklearn pipeline)."""


@dataclass(frozen=True)
class RowExplanations:
    feature_names: list[str]
    values: np.ndarray  # (rows, raw features)
    base_value: float
    output: str


def raw_feature_groups(pipeline: Any) -> list[tuple[str, slice]]:
    """Which slice of the preprocessed matrix each raw input column produced."""
    from sklearn.compose import ColumnTransformer

    preprocess = pipeline.steps[0][1]
    if not isinstance(preprocess, ColumnTransformer):
        raise ExplanationUnavailable("the pipeline's first step is not a ColumnTransformer")
    names_in = [str(n) for n in preprocess.feature_names_in_]
    groups: list[tuple[str, slice]] = []
    for name, fitted, columns in preprocess.transformers_:
        if fitted == "drop":
            continue
        block = preprocess.output_indices_[name]
        if block.stop == block.start:
            continue
        cols = [columns] if isinstance(columns, str) else list(columns)
        cols = [names_in[c] if isinstance(c, int | np.integer) else str(c) for c in cols]
        width = block.stop - block.start
        if len(cols) == width:
            groups.extend((col, slice(block.start + i, block.start + i + 1)) for i, col in enumerate(cols))
            continue
        out_names = (
            [str(n) for n in fitted.get_feature_names_out(cols)] if hasattr(fitted, "get_feature_names_out") else []
        )
        if len(out_names) != width:
            raise ExplanationUnavailable(f"cannot map the outputs of transformer {name!r} back to its columns")
        # One-hot names are "<column>_<category>": the longest matching column prefix owns each.
        for i, out in enumerate(out_names):
            owner = max((c for c in cols if out == c or out.startswith(f"{c}_")), key=len, default=None)
            if owner is None:
                raise ExplanationUnavailable(f"cannot tell which column produced feature {out!r}")
            groups.append((owner, slice(block.start + i, block.start + i + 1)))
    return groups


class TreeRowExplainer:
    """Explains a fitted tree model in log-odds (classifiers) or output units (regressors)."""

    def __init__(self, model: LoadedModel) -> None:
        pipeline = model.sklearn_model
        if pipeline is None or not hasattr(pipeline, "steps") or len(pipeline.steps) != 2:
            raise ExplanationUnavailable("explanations need an sklearn Pipeline (preprocess, model)")
        import shap

        estimator = pipeline.steps[-1][1]
        try:
            self._explainer = shap.TreeExplainer(estimator)
        except Exception as exc:  # shap raises bare Exception for unsupported model types
            raise ExplanationUnavailable(
                f"SHAP TreeExplainer does not support {type(estimator).__name__}: {exc}"
            ) from None
        groups = raw_feature_groups(pipeline)
        produced = {name for name, _ in groups}
        inputs = [str(c) for c in getattr(pipeline, "feature_names_in_", [])]
        self.feature_names = [c for c in inputs if c in produced] + sorted(produced - set(inputs))
        index = {name: i for i, name in enumerate(self.feature_names)}
        width = max(s.stop for _, s in groups)
        self._owner = np.zeros(width, dtype=np.int64)
        for name, s in groups:
            self._owner[s] = index[name]
        classes = getattr(estimator, "classes_", None)
        self._positive = np.asarray(classes)[-1].item() if classes is not None else None

    def explain(self, X: np.ndarray) -> RowExplanations:
        raw = self._explainer.shap_values(X, check_additivity=False)
        expected = np.atleast_1d(np.asarray(self._explainer.expected_value, dtype=float))
        values = np.asarray(raw, dtype=float)
        if isinstance(raw, list):  # older SHAP: one array per class
            values = np.asarray(raw[-1], dtype=float)
        elif values.ndim == 3:  # (rows, features, classes)
            values = values[:, :, -1]
        aggregated = np.zeros((values.shape[0], len(self.feature_names)))
        np.add.at(aggregated.T, self._owner, values.T)
        output = f"log-odds of class {self._positive!r}" if self._positive is not None else "model output"
        return RowExplanations(
            feature_names=self.feature_names, values=aggregated, base_value=float(expected[-1]), output=output
        )
