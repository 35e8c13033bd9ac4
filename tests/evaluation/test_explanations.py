from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from govml.errors import DataError
from govml.evaluation.explanations import (
    ExplanationReport,
    build_row_explainer,
    explain_model,
    raw_feature_sources,
)
from govml.mitigation.fairness import mitigate
from tests.evaluation.datasets import adult, fit_pipeline, german


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


@pytest.fixture(scope="module")
def adult_data():
    X, y = adult(3000, seed=11)
    return X, y


@pytest.fixture(scope="module")
def lgbm_model(adult_data):
    X, y = adult_data
    return fit_pipeline(X, y, LGBMClassifier(n_estimators=60, verbose=-1, n_jobs=1, random_state=0))


def test_tree_model_global_importance_and_plots(lgbm_model, adult_data, tmp_path: Path) -> None:
    X, _ = adult_data
    report = explain_model(lgbm_model, X, max_rows=300, top_features=3, out_dir=tmp_path)
    assert report.explainer == "tree" and report.output == "log_odds"
    assert report.explained_model == "LGBMClassifier" and report.n_rows == 300
    # Importance is per raw column: the one-hot columns of a category are summed back.
    assert {i.feature for i in report.importance} == set(X.columns)
    values = [i.mean_abs_shap for i in report.importance]
    assert values == sorted(values, reverse=True) and [i.rank for i in report.importance] == list(range(1, 14))
    assert report.top_features == [i.feature for i in report.importance[:3]]
    assert {"relationship", "marital_status", "capital_gain", "age"} & set(report.top_features)
    assert len(report.plots) == 4
    for plot in report.plots:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    assert ExplanationReport.model_validate_json(report.model_dump_json()) == report


def test_tree_row_explanations_add_up_to_the_log_odds(lgbm_model, adult_data) -> None:
    X, _ = adult_data
    explainer = build_row_explainer(lgbm_model, X.head(100))
    rows = X.iloc[100:110]
    explained = explainer.explain(rows)
    assert explained.feature_names == list(X.columns) and explained.values.shape == (10, 13)
    margin = _logit(lgbm_model.predict_proba(rows)[:, 1])
    assert np.allclose(explained.base_values + explained.values.sum(axis=1), margin, atol=1e-6)
    name, value = explained.top(0, 1)[0]
    assert abs(value) == np.abs(explained.values[0]).max()
    started = time.perf_counter()
    for i in range(5):
        explainer.explain(X.iloc[[i]])
    assert (time.perf_counter() - started) / 5 < 0.5, "one row must be cheap enough to explain per request"


def test_linear_model_uses_the_linear_explainer(adult_data) -> None:
    X, y = adult_data
    model = fit_pipeline(X, y, LogisticRegression(max_iter=500))
    explainer = build_row_explainer(model, X.head(200))
    assert explainer.kind == "linear"
    rows = X.iloc[:20]
    explained = explainer.explain(rows)
    margin = _logit(model.predict_proba(rows)[:, 1])
    assert np.allclose(explained.base_values + explained.values.sum(axis=1), margin, atol=1e-6)


def test_probability_trees_on_german_credit(tmp_path: Path) -> None:
    X, y = german()
    model = fit_pipeline(X, y, RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0))
    report = explain_model(model, X, max_rows=100, top_features=2, out_dir=tmp_path)
    assert report.explainer == "tree" and report.output == "probability"
    explained = build_row_explainer(model, X.head(50)).explain(X.iloc[:5])
    assert np.allclose(explained.base_values + explained.values.sum(axis=1), model.predict_proba(X.iloc[:5])[:, 1])


def test_other_models_fall_back_to_sampled_kernel_shap() -> None:
    X, y = german()
    model = fit_pipeline(X, y, GaussianNB())
    explainer = build_row_explainer(model, X.head(80))
    assert explainer.kind == "kernel" and explainer.output == "probability"
    assert any("GaussianNB" in note for note in explainer.notes)
    rows = X.iloc[200:203]
    explained = explainer.explain(rows)
    assert explained.values.shape == (3, X.shape[1])
    # Kernel SHAP is efficient: contributions add up to the prediction.
    assert np.allclose(explained.base_values + explained.values.sum(axis=1),
                       model.predict_proba(rows)[:, 1], atol=1e-6)


def test_kernel_shap_is_reproducible_under_concurrent_requests() -> None:
    # the serving endpoint explains in a thread pool: rows explained at the same time in
    # several threads get exactly the values they get alone
    from concurrent.futures import ThreadPoolExecutor

    X, y = german()
    model = fit_pipeline(X, y, GaussianNB())
    explainer = build_row_explainer(model, X.head(80))
    batches = [X.iloc[300 + 2 * i : 302 + 2 * i] for i in range(8)]
    alone = [explainer.explain(b).values for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda b: explainer.explain(b).values, batches))
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, t)


def test_mitigated_model_is_explained_through_its_underlying_estimator(lgbm_model, adult_data) -> None:
    X, y = adult_data
    result = mitigate(lgbm_model, X.iloc[:2000], y[:2000], X.iloc[2000:], y[2000:], "sex",
                      methods=("threshold_optimizer",))
    fair = result.candidate_models[result.candidates[0].name]
    report = explain_model(fair, X, max_rows=100)
    assert report.explainer == "tree"
    assert any("fairness-mitigated" in note and "LGBMClassifier" in note for note in report.notes)
    explained = build_row_explainer(fair, X.head(50)).explain(X.iloc[:3])
    assert explained.values.shape == (3, 13)


def test_raw_feature_sources_follow_the_column_transformer(lgbm_model) -> None:
    preprocess = lgbm_model.named_steps["preprocess"]
    raw, sources = raw_feature_sources(preprocess)
    assert len(sources) == len(preprocess.get_feature_names_out())
    assert sources.count("sex") == 2 and sources.count("age") == 1
    assert set(sources) <= set(raw)


def test_bad_inputs_are_rejected(lgbm_model, adult_data) -> None:
    X, _ = adult_data
    with pytest.raises(DataError, match="non-empty"):
        explain_model(lgbm_model, X.head(0))
    explainer = build_row_explainer(lgbm_model, X.head(20))
    with pytest.raises(DataError, match="lacks the model's column"):
        explainer.explain(X.drop(columns=["age"]).head(2))
    with pytest.raises(DataError, match="background"):
        build_row_explainer(lgbm_model, X.head(0))
