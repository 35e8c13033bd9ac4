"""A compiled inference path for ``Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])``.

The fitted ColumnTransformer is translated into numpy operations on typed columns
(imputation, scaling, one-hot encoding with sklearn's unknown/infrequent rules) that
produce the same float64 matrix, and the matrix goes straight to the estimator: for
LightGBM to ``Booster.predict``, skipping the wrapper's validation. Most of a plain
sklearn pipeline's per-request time is DataFrame handling and input checks, not trees.

Compilation refuses anything it cannot reproduce exactly (:class:`NotCompilable`), and
:func:`verify` compares the compiled path with the pipeline on probe rows; the server
uses the compiled path only when both succeed.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Columns = list[np.ndarray]
Step = Callable[[Columns], Columns]
# FunctionTransformer functions whose effect the compiled path reproduces.
_KNOWN_FUNCTIONS = {"govml.features.preprocess._as_object"}
# Below this many rows a dict lookup per value beats pandas' hash index, whose per-call set-up
# (index construction, dtype inference) costs ~0.5 ms a column.
_DICT_LOOKUP_ROWS = 4096
# Up to this many rows, missing values are found by a loop in Python: ``pd.isna`` costs ~10 us a call.
_SMALL_ROWS = 32


class NotCompilable(Exception):
    """The pipeline holds a step the compiled path cannot reproduce exactly."""


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _missing_rows(col: np.ndarray) -> Sequence[int] | np.ndarray:
    """The rows ``pd.isna`` marks in ``col``; for a few rows of text, None and float NaN without pandas."""
    if len(col) <= _SMALL_ROWS and col.dtype == object:
        rows = []
        for row, value in enumerate(col.tolist()):
            if value.__class__ is str:
                continue
            if value is None or (value.__class__ is float and value != value):
                rows.append(row)
            else:  # anything rarer (pd.NA, NaT, a numpy scalar): ask pandas about the whole column
                return np.flatnonzero(pd.isna(col))
        return rows
    return np.flatnonzero(pd.isna(col))


def _to_object(columns: Columns) -> Columns:
    """What ``frame.astype(object).where(frame.notna(), None)`` does to each column."""
    out = []
    for col in columns:
        array = col.astype(object)
        missing = _missing_rows(array)
        if len(missing):
            array[missing] = None
        out.append(array)
    return out


def _float_nan_mask(col: np.ndarray) -> np.ndarray:
    """Float NaN entries of an object column (sklearn's NaN test there: ``x != x``; None is not NaN)."""
    return np.asarray(col != col, dtype=bool)


def _to_float(col: np.ndarray) -> np.ndarray:
    if col.dtype == np.float64:
        return col
    return np.array([np.nan if v is None else v for v in col.tolist()], dtype=np.float64)


def _compile_imputer(imputer: Any) -> Step:
    if getattr(imputer, "add_indicator", False):
        raise NotCompilable("SimpleImputer(add_indicator=True)")
    stats = list(imputer.statistics_)
    marker = imputer.missing_values
    if any(_is_nan(s) for s in stats):
        raise NotCompilable("SimpleImputer with an all-missing training column")

    def missing(col: np.ndarray) -> np.ndarray:
        if col.dtype == np.float64:
            if _is_nan(marker):
                return np.isnan(col)
            return col == marker
        if _is_nan(marker):  # sklearn treats only float NaN (not None) as NaN in object arrays
            return _float_nan_mask(col)
        items = col.tolist()
        if marker is None:
            return np.array([v is None for v in items], dtype=bool)
        return np.array([v == marker for v in items], dtype=bool)

    def step(columns: Columns) -> Columns:
        if len(columns) != len(stats):
            raise ValueError("imputer width mismatch")
        out = []
        for col, fill in zip(columns, stats, strict=True):
            mask = missing(col)
            if mask.any():
                col = col.copy()
                col[mask] = fill
            out.append(col)
        return out

    return step


def _compile_scaler(scaler: Any) -> Step:
    mean = scaler.mean_ if getattr(scaler, "with_mean", False) else None
    scale = scaler.scale_ if getattr(scaler, "with_std", False) else None

    def step(columns: Columns) -> Columns:
        # One matrix and two array operations, as sklearn does, rather than two per column:
        # the same element-wise arithmetic, so the same bits.
        x = np.column_stack([_to_float(col) for col in columns])
        if mean is not None:
            x = x - mean
        if scale is not None:
            x = x / scale
        return [x[:, j] for j in range(x.shape[1])]

    return step


def _compile_one_hot(encoder: Any) -> Step:
    if encoder.drop_idx_ is not None:
        raise NotCompilable("OneHotEncoder(drop=...)")
    if encoder.handle_unknown not in ("ignore", "infrequent_if_exist", "error"):
        raise NotCompilable(f"OneHotEncoder(handle_unknown={encoder.handle_unknown!r})")
    infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(encoder.categories_)
    features = []
    for categories, rare in zip(encoder.categories_, infrequent, strict=True):
        rare_set = set(rare.tolist()) if rare is not None else set()
        frequent = [c for c in categories.tolist() if c not in rare_set]
        width = len(frequent) + (1 if rare_set else 0)
        lookup: dict[Any, int] = {}
        nan_position: int | None = None
        for position, category in enumerate(frequent):
            if _is_nan(category):
                nan_position = position
            else:
                lookup[category] = position
        for category in rare_set:
            if _is_nan(category):
                nan_position = len(frequent)
            else:
                lookup[category] = len(frequent)
        unknown = len(frequent) if rare_set and encoder.handle_unknown == "infrequent_if_exist" else -1
        known = [c for c in lookup if c is not None]
        index = pd.Index(np.array(known, dtype=object), dtype=object) if known else None
        targets = np.array([lookup[c] for c in known] + [unknown], dtype=np.int64)  # -1 from the index: unknown
        features.append((lookup, nan_position, unknown, width, index, targets))
    if encoder.handle_unknown == "error":
        raise NotCompilable("OneHotEncoder(handle_unknown='error') raises on unseen categories")

    def step(columns: Columns) -> Columns:
        out: Columns = []
        for col, (lookup, nan_position, unknown, width, index, targets) in zip(columns, features, strict=True):
            n = len(col)
            block = np.zeros((n, width), dtype=np.float64)
            if n <= _SMALL_ROWS and index is not None:
                # sklearn's dict lookup; a float NaN goes to the NaN category (pandas' missing-value
                # settling below changes nothing else on this path)
                nan_target = nan_position if nan_position is not None else unknown
                for row, value in enumerate(col.tolist()):
                    if isinstance(value, float) and value != value:
                        position = nan_target
                    else:
                        position = lookup.get(value, unknown)
                    if position >= 0:
                        block[row, position] = 1.0
                out.append(block)
                continue
            if index is None:
                idx = np.full(n, unknown, dtype=np.int64)
            elif n < _DICT_LOOKUP_ROWS:  # sklearn maps object categories with a dict too; same matches
                idx = np.fromiter((lookup.get(v, unknown) for v in col.tolist()), dtype=np.int64, count=n)
            else:
                idx = targets[index.get_indexer(pd.Index(col, dtype=object))]
            # pandas matches None and NaN to each other; sklearn does not: settle missing values one by one
            for missing in np.flatnonzero(pd.isna(col)):
                value = col[missing]
                if _is_nan(value):
                    idx[missing] = nan_position if nan_position is not None else unknown
                else:
                    idx[missing] = lookup.get(value, unknown)
            hit = idx >= 0
            block[np.flatnonzero(hit), idx[hit]] = 1.0
            out.append(block)  # a 2-D block: one-hot output is final within its branch
        return out

    return step


def _compile_function(transformer: Any) -> Step:
    func = transformer.func
    if func is None:
        return lambda columns: columns
    qualified = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}"
    if qualified in _KNOWN_FUNCTIONS:
        return _to_object
    raise NotCompilable(f"FunctionTransformer({qualified})")


def _compile_step(transformer: Any) -> Step:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    if transformer == "passthrough":
        return lambda columns: [_to_float(c) if c.dtype != object else c for c in columns]
    if isinstance(transformer, Pipeline):
        fitted = [t for _, t in transformer.steps if t not in (None, "passthrough")]
        if any(type(t) is OneHotEncoder for t in fitted[:-1]):
            raise NotCompilable("a step after OneHotEncoder")
        steps = [_compile_step(t) for t in fitted]

        def chained(columns: Columns) -> Columns:
            for step in steps:
                columns = step(columns)
            return columns

        return chained
    kind = type(transformer)
    if kind is SimpleImputer:
        return _compile_imputer(transformer)
    if kind is StandardScaler:
        return _compile_scaler(transformer)
    if kind is OneHotEncoder:
        return _compile_one_hot(transformer)
    if kind is FunctionTransformer:
        return _compile_function(transformer)
    raise NotCompilable(f"{kind.__module__}.{kind.__name__}")


@dataclass(frozen=True)
class _Branch:
    input_columns: list[str]
    step: Step


class CompiledPreprocessor:
    """The fitted ColumnTransformer as numpy code over named columns."""

    def __init__(self, transformer: Any) -> None:
        from sklearn.compose import ColumnTransformer

        if not isinstance(transformer, ColumnTransformer):
            raise NotCompilable(f"preprocess step is {type(transformer).__name__}, not a ColumnTransformer")
        names_in = [str(n) for n in getattr(transformer, "feature_names_in_", [])]
        self.branches: list[_Branch] = []
        for _, fitted, columns in transformer.transformers_:
            if fitted == "drop":
                continue
            cols = _column_names(columns, names_in)
            if not cols:
                continue
            self.branches.append(_Branch(cols, _compile_step(fitted)))

    def transform(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        blocks: list[np.ndarray] = []
        for branch in self.branches:
            blocks.extend(branch.step([columns[c] for c in branch.input_columns]))
        n = len(next(iter(columns.values()))) if columns else 0
        width = sum(1 if b.ndim == 1 else b.shape[1] for b in blocks)
        X = np.empty((n, width), dtype=np.float64)
        j = 0
        for block in blocks:
            if block.ndim == 1:
                X[:, j] = _to_float(block)
                j += 1
            else:
                X[:, j : j + block.shape[1]] = block
                j += block.shape[1]
        return X


def _column_names(columns: Any, names_in: Sequence[str]) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice) or callable(columns):
        raise NotCompilable("ColumnTransformer column selector by slice or callable")
    items = list(np.asarray(columns).tolist()) if not isinstance(columns, list) else list(columns)
    if all(isinstance(c, bool) for c in items):
        return [n for n, keep in zip(names_in, items, strict=True) if keep]
    if all(isinstance(c, int) for c in items):
        return [names_in[i] for i in items]
    return [str(c) for c in items]


class _SingleRowBooster:
    """LightGBM's C call for one row (``LGBM_BoosterPredictForMatSingleRowFast``).

    ``Booster.predict`` parses its parameters and builds a predictor on every call (~70 us);
    this sets that up once. Same predictor code, so the same bits (:func:`verify` checks).
    """

    def __init__(self, booster: Any, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._booster = booster  # the config points into the booster: keep it alive as long as this
        self._config = ctypes.c_void_p()
        num_iteration = booster.best_iteration  # what Booster.predict uses by default
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(num_iteration),  # normal prediction
                ctypes.c_int(1), ctypes.c_int32(n_features), _c_str("num_threads=1"),  # float64 input
                ctypes.byref(self._config),
            )
        )
        self.n_features = n_features
        self._out = np.empty(booster.num_model_per_iteration(), dtype=np.float64)
        self._out_len = ctypes.c_int64(0)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._lock = threading.Lock()  # the config holds one output buffer; worker threads take turns

    def predict(self, row: np.ndarray) -> np.ndarray:
        row = np.ascontiguousarray(row, dtype=np.float64)
        with self._lock:
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._config, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._out_len), self._out_pointer
                )
            )
            return self._out[: self._out_len.value].copy()

    def __del__(self) -> None:
        if getattr(self, "_config", None) is not None and self._config.value:
            self._lib.LGBM_FastConfigFree(self._config)


class CompiledModel:
    """Compiled preprocessing plus the estimator's fastest exact prediction call."""

    def __init__(self, pipeline: Any) -> None:
        from sklearn.pipeline import Pipeline

        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            raise NotCompilable("the model is not a two-step sklearn Pipeline (preprocess, model)")
        self.preprocessor = CompiledPreprocessor(pipeline.steps[0][1])
        self.estimator = pipeline.steps[1][1]
        self.classes = getattr(self.estimator, "classes_", None)
        self._booster = None
        self._lgbm_classifier = False
        self.single_row: _SingleRowBooster | None = None
        try:
            import lightgbm

            if isinstance(self.estimator, lightgbm.LGBMModel) and not callable(self.estimator.objective):
                self._booster = self.estimator.booster_
                self._lgbm_classifier = isinstance(self.estimator, lightgbm.LGBMClassifier)
                self.single_row = _single_row_booster(self._booster)
        except ImportError:  # lightgbm is a core dependency; other estimators work without it
            pass

    def _booster_predict(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 1 and self.single_row is not None and X.shape[1] == self.single_row.n_features:
            out = self.single_row.predict(X[0])
            return out if len(out) == 1 else out.reshape(1, -1)
        return np.asarray(self._booster.predict(X, num_threads=1 if len(X) < 256 else 0))  # type: ignore[union-attr]

    def predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        if self._booster is not None and self._lgbm_classifier:
            raw = self._booster_predict(X)
            if raw.ndim == 1:
                return np.vstack((1.0 - raw, raw)).T
            return raw
        if hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(X))
        return None

    def predict(self, X: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
        if self._booster is not None:
            if self._lgbm_classifier and proba is not None and self.classes is not None:
                return np.asarray(self.classes)[np.argmax(proba, axis=1)]
            if not self._lgbm_classifier:
                return self._booster_predict(X)
        return np.asarray(self.estimator.predict(X))


def _single_row_booster(booster: Any) -> _SingleRowBooster | None:
    """The one-row C path, or None when this LightGBM build lacks it (then ``Booster.predict`` serves)."""
    from lightgbm.basic import LightGBMError

    try:
        return _SingleRowBooster(booster, booster.num_feature())
    except (ImportError, AttributeError, LightGBMError):
        return None


@dataclass(frozen=True)
class Verification:
    rows: int
    max_abs_difference: float
    labels_equal: bool

    @property
    def ok(self) -> bool:
        return self.labels_equal and self.max_abs_difference <= 1e-9


def verify(
    compiled: CompiledModel,
    pipeline: Any,
    probe: pd.DataFrame,
    columns_of: Callable[[pd.DataFrame], dict[str, np.ndarray]],
) -> Verification:
    """Compare the compiled path with the pipeline on ``probe`` rows, scored as one batch and as the
    one-row requests a server mostly sees (which take the small-batch code and LightGBM's one-row call)."""
    columns = columns_of(probe)
    X = compiled.preprocessor.transform(columns)
    one_by_one = np.vstack(
        [compiled.preprocessor.transform({k: v[i : i + 1] for k, v in columns.items()}) for i in range(len(probe))]
    )
    reference_labels = np.asarray(pipeline.predict(probe))
    reference = np.asarray(pipeline.predict_proba(probe)) if hasattr(pipeline, "predict_proba") else None
    outcomes = [_outputs(compiled, X), _outputs(compiled, one_by_one)]
    if compiled.single_row is not None:
        singles = [_outputs(compiled, one_by_one[i : i + 1]) for i in range(len(probe))]
        probas = [p for p, _ in singles]
        stacked = None if any(p is None for p in probas) else np.vstack(probas)  # type: ignore[arg-type]
        outcomes.append((stacked, np.concatenate([labels for _, labels in singles])))
    difference, labels_equal = 0.0, True
    for proba, labels in outcomes:
        if proba is not None and reference is not None:
            gap = float(np.max(np.abs(proba - reference))) if proba.shape == reference.shape else math.inf
        else:
            gap = float(np.max(np.abs(np.asarray(labels, dtype=float) - np.asarray(reference_labels, dtype=float))))
        difference = max(difference, gap)
        labels_equal = labels_equal and bool(np.array_equal(np.asarray(labels), reference_labels))
    return Verification(rows=len(probe), max_abs_difference=difference, labels_equal=labels_equal)


def _outputs(compiled: CompiledModel, X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    proba = compiled.predict_proba(X)
    return proba, compiled.predict(X, proba)
