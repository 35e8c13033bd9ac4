"""Real example data and real fitted govml pipelines for the responsible-AI tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from govml.features.preprocess import build_preprocessor, split_columns

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@cache
def _adult(split: str) -> pd.DataFrame:
    return pd.read_csv(EXAMPLES / "credit-risk" / "data" / f"adult_{split}.csv.gz", skipinitialspace=True)


def adult(n: int | None = None, *, split: str = "train", seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Adult features (fnlwgt dropped, as the example YAML does) and the target (1 = >50K)."""
    frame = _adult(split)
    if n is not None and n < len(frame):
        frame = frame.sample(n, random_state=seed)
    frame = frame.reset_index(drop=True)
    y = (frame["income"] == ">50K").astype(int).to_numpy()
    return frame.drop(columns=["income", "fnlwgt"]), y


@cache
def _german() -> pd.DataFrame:
    return pd.read_csv(EXAMPLES / "german-credit" / "data" / "german.csv.gz")


def german() -> tuple[pd.DataFrame, np.ndarray]:
    """German credit features and the target (1 = good credit)."""
    frame = _german()
    return frame.drop(columns=["credit"]), (frame["credit"] == "good").astype(int).to_numpy()


def fit_pipeline(X: pd.DataFrame, y: np.ndarray, estimator: BaseEstimator) -> Pipeline:
    """The govml model contract: Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])."""
    preprocess = build_preprocessor(split_columns(X))
    return Pipeline([("preprocess", preprocess), ("model", estimator)]).fit(X, y)
