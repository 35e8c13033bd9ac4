"""Predictions for validated batches: the compiled path when it is proven exact, else the model itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from govml.serving.fastpath import CompiledModel, NotCompilable, verify
from govml.serving.loading import LoadedModel
from govml.serving.payload import RawBatch, RequestError
from govml.serving.validation import InputValidator, ValidatedBatch, frame_to_batch

InferencePath = Literal["compiled", "sklearn", "pyfunc"]
PROBE_ROWS = 256


@dataclass(frozen=True)
class Prediction:
    """``labels`` is what MLflow's pyfunc ``predict`` returns; ``probabilities`` follow ``classes``."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any] | None


class Predictor:
    """Runs a :class:`LoadedModel` on validated batches through the fastest exact path."""

    def __init__(self, model: LoadedModel, validator: InputValidator) -> None:
        self.model = model
        self.validator = validator
        self.path: InferencePath = "pyfunc" if model.sklearn_model is None else "sklearn"
        self.fallback_reason: str | None = None
        self.max_abs_difference: float | None = None
        self._compiled: CompiledModel | None = None
        if model.sklearn_model is not None:
            self._try_compile()
        elif model.pyfunc_model is not None:
            self.fallback_reason = "not an sklearn-flavour model"

    def _try_compile(self) -> None:
        pipeline = self.model.sklearn_model
        try:
            compiled = CompiledModel(pipeline)
            probe = self.probe_frame()
            check = verify(compiled, pipeline, probe, self._columns_of)
        except NotCompilable as exc:
            self.fallback_reason = f"cannot compile {exc}"
            return
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.fallback_reason = f"compiled path failed on probe rows: {type(exc).__name__}: {exc}"
            return
        self.max_abs_difference = check.max_abs_difference
        if not check.ok:
            self.fallback_reason = (
                f"compiled path differs from the model on {check.rows} probe rows "
                f"(max |diff| {check.max_abs_difference:.2e}, labels equal: {check.labels_equal})"
            )
            return
        self._compiled = compiled
        self.path = "compiled"

    def probe_frame(self, rows: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
        """Rows that exercise every branch: known and unseen categories, nulls, values across the range."""
        rng = np.random.default_rng(seed)
        reference = self.model.drift_reference
        example = self.model.input_example
        data: dict[str, Any] = {}
        for rule in self.validator.rules:
            pool: list[Any] = []
            if example is not None and rule.name in example.columns:
                pool.extend(v for v in example[rule.name].tolist() if v is not None)
            col_ref = reference.columns.get(rule.name) if reference is not None else None
            if col_ref is not None and col_ref.kind == "numeric":
                pool.extend(col_ref.sketch[:: max(1, len(col_ref.sketch) // 50)])
            elif col_ref is not None:
                pool.extend(col_ref.categories)
            if rule.kind in ("integer", "float"):
                numbers = [float(v) for v in pool if isinstance(v, int | float) and not isinstance(v, bool)]
                pool = numbers or [0.0, 1.0]
                if rule.kind == "integer":
                    pool = [float(round(v)) for v in pool]
            elif rule.kind == "string":
                pool = [str(v) for v in pool] + ["__unseen__"]
            if rule.nullable:
                pool.append(None)
            choice = [pool[i] for i in rng.integers(0, len(pool), rows)]
            data[rule.name] = choice
        return self.validator.validate(RawBatch(columns=data, n_rows=rows), enforce=False).to_frame()

    def _columns_of(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.validator.validate(frame_to_batch(frame), enforce=False).columns

    def predict(self, batch: ValidatedBatch) -> Prediction:
        if self._compiled is not None:
            X = self._compiled.preprocessor.transform(batch.columns)
            proba = self._compiled.predict_proba(X)
            labels = self._compiled.predict(X, proba)
            classes = list(self._compiled.classes) if self._compiled.classes is not None else None
            return Prediction(labels=labels, probabilities=proba, classes=classes)
        frame = batch.to_frame()
        try:
            return self._predict_model(frame)
        except (ValueError, TypeError, KeyError, MlflowException) as exc:  # the model's own input checks
            raise RequestError(f"the model rejected the input: {type(exc).__name__}: {exc}", status=422) from None

    def _predict_model(self, frame: pd.DataFrame) -> Prediction:
        if self.model.sklearn_model is not None:
            estimator = self.model.sklearn_model
            labels = np.asarray(estimator.predict(frame))
            proba = np.asarray(estimator.predict_proba(frame)) if hasattr(estimator, "predict_proba") else None
            classes = list(getattr(estimator, "classes_", [])) or None
            return Prediction(labels=labels, probabilities=proba, classes=classes)
        output = self.model.pyfunc_model.predict(frame)  # type: ignore[union-attr]
        if isinstance(output, pd.DataFrame):
            output = output.iloc[:, 0]
        return Prediction(labels=np.asarray(output), probabilities=None, classes=None)

    def transform(self, batch: ValidatedBatch) -> np.ndarray:
        """The preprocessed matrix the estimator sees (for explanations)."""
        if self._compiled is not None:
            return self._compiled.preprocessor.transform(batch.columns)
        pipeline = self.model.sklearn_model
        if pipeline is None:
            raise NotCompilable("explanations need an sklearn-flavour model")
        return np.asarray(pipeline[:-1].transform(batch.to_frame()), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "inference_path": self.path,
            "fallback_reason": self.fallback_reason,
            "verified_max_abs_difference": self.max_abs_difference,
        }
