"""The preprocessing half of every govml model: a ColumnTransformer fitted on training data only."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from govml.errors import ConfigError


@dataclass(frozen=True)
class FeatureColumns:
    numeric: list[str]
    categorical: list[str]


def split_columns(
    frame: pd.DataFrame,
    *,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
) -> FeatureColumns:
    """Decide which columns are numeric and which categorical (declared ones win)."""
    declared = set(numeric or []) | set(categorical or [])
    unknown = sorted(declared - set(frame.columns))
    if unknown:
        raise ConfigError(f"features lists column(s) {unknown} that are not in the data")
    both = sorted(set(numeric or []) & set(categorical or []))
    if both:
        raise ConfigError(f"features.numeric and features.categorical both list {both}")
    rest = [c for c in frame.columns if c not in declared]
    inferred_numeric = [
        c for c in rest
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    num = list(numeric or []) + inferred_numeric
    cat = list(categorical or []) + [c for c in rest if c not in inferred_numeric]
    return FeatureColumns(numeric=num, categorical=cat)


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    # pandas 3 reads text as the "str" dtype whose missing value is NaN; sklearn's
    # imputer and encoder handle object columns uniformly, whatever the request JSON held.
    return frame.astype(object).where(frame.notna(), None)


def build_preprocessor(
    columns: FeatureColumns, *, scaling: str = "standard", max_categories: int = 50
) -> ColumnTransformer:
    """Imputation, one-hot encoding (unknown categories ignored) and scaling."""
    numeric_steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy="median"))]
    if scaling == "standard":
        numeric_steps.append(("scale", StandardScaler()))
    categorical = Pipeline(
        [
            ("as_object", FunctionTransformer(_as_object, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
            (
                "encode",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    max_categories=max_categories,
                    sparse_output=False,
                ),
            ),
        ]
    )
    transformers = []
    if columns.numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), columns.numeric))
    if columns.categorical:
        transformers.append(("categorical", categorical, columns.categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
