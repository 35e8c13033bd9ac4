from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from govml.errors import ConfigError, DataError
from govml.evaluation.fairness import demographic_parity_difference
from govml.mitigation.fairness import (
    FairnessMitigatedClassifier,
    MitigationResult,
    mitigate,
    reduction_bound,
    row_uniforms,
)
from tests.evaluation.datasets import adult, fit_pipeline, german


def _lgbm() -> LGBMClassifier:
    return LGBMClassifier(n_estimators=80, verbose=-1, n_jobs=1, random_state=0)


@pytest.fixture(scope="module")
def adult_splits():
    X, y = adult(9000, seed=5)
    X_test, y_test = adult(5000, split="test", seed=6)
    X_train, y_train, X_valid, y_valid = X.iloc[:6000], y[:6000], X.iloc[6000:], y[6000:]
    model = fit_pipeline(X_train, y_train, _lgbm())
    return model, X_train, y_train, X_valid, y_valid, X_test, y_test


@pytest.fixture(scope="module")
def adult_result(adult_splits, tmp_path_factory) -> MitigationResult:
    model, X_train, y_train, X_valid, y_valid, _, _ = adult_splits
    out = tmp_path_factory.mktemp("mitigation")
    return mitigate(model, X_train, y_train, X_valid, y_valid, "sex", bound=0.1,
                    methods=("threshold_optimizer", "grid_search"), out_dir=out)


def test_chosen_model_meets_the_bound_and_is_the_most_accurate_eligible(adult_result) -> None:
    result = adult_result
    assert result.unmitigated.demographic_parity_difference > 0.12
    assert result.chosen is not None
    chosen = next(c for c in result.candidates if c.chosen)
    assert chosen.name == result.chosen
    assert chosen.demographic_parity_difference <= result.bound - result.margin
    eligible = [c for c in result.candidates if c.meets_constraint]
    assert chosen.accuracy == max(c.accuracy for c in eligible)
    assert {c.method for c in result.candidates} == {"threshold_optimizer", "grid_search"}
    assert result.accuracy_loss == pytest.approx(result.unmitigated.accuracy - chosen.accuracy)
    table = result.table()
    assert len(table) == len(result.candidates) + 1 and table.iloc[0]["name"] == "unmitigated"
    assert Path(result.plot).read_bytes()[:4] == b"\x89PNG"
    # The result goes into the run record as JSON; the model object stays out of it.
    dumped = result.model_dump(mode="json")
    assert "model" not in dumped
    assert MitigationResult.model_validate(dumped).chosen == result.chosen


def test_chosen_model_reduces_disparity_on_the_test_split(adult_splits, adult_result) -> None:
    model, *_, X_test, y_test = adult_splits
    before = demographic_parity_difference(model.predict(X_test), X_test["sex"])
    after_pred = adult_result.model.predict(X_test)
    after = demographic_parity_difference(after_pred, X_test["sex"])
    assert after < before - 0.05
    assert after <= 0.12
    accuracy_before = np.mean(model.predict(X_test) == y_test)
    assert np.mean(after_pred == y_test) >= accuracy_before - 0.03


def test_threshold_model_serves_raw_rows_and_needs_the_sensitive_column(adult_splits) -> None:
    model, X_train, y_train, X_valid, y_valid, X_test, _ = adult_splits
    result = mitigate(model, X_train, y_train, X_valid, y_valid, "sex", methods=("threshold_optimizer",))
    fair = result.model
    assert isinstance(fair, FairnessMitigatedClassifier) and result.needs_sensitive_feature
    rows = X_test.iloc[:200]
    proba = fair.predict_proba(rows)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1.0)
    batch = fair.predict(rows)
    assert set(np.unique(batch)) <= {0, 1}
    # The same row gets the same answer alone and in a batch, and after a pickle round trip.
    singles = np.array([fair.predict(rows.iloc[[i]])[0] for i in range(20)])
    assert np.array_equal(singles, batch[:20])
    restored = pickle.loads(pickle.dumps(fair))
    assert np.array_equal(restored.predict(rows), batch)
    with pytest.raises(DataError, match="must include the column 'sex'"):
        fair.predict(rows.drop(columns=["sex"]))
    with pytest.raises(DataError, match="not seen"):
        fair.predict(rows.assign(sex="Unknown"))
    explained = fair.explainable_pipeline()
    assert isinstance(explained, Pipeline) and explained.steps[-1][1] is model.steps[-1][1]


def test_exponentiated_gradient_wrapper_is_a_refittable_estimator(adult_splits) -> None:
    model, X_train, y_train, X_valid, y_valid, X_test, _ = adult_splits
    result = mitigate(
        model, X_train.iloc[:3000], y_train[:3000], X_valid, y_valid, "sex",
        methods=("exponentiated_gradient",), base_estimator=DecisionTreeClassifier(max_depth=4, random_state=0),
        eg_max_iter=15,
    )
    (candidate,) = result.candidates
    assert candidate.method == "exponentiated_gradient" and not candidate.needs_sensitive_feature
    assert candidate.setting["difference_bound"] == pytest.approx(
        reduction_bound(0.09, X_train["sex"].iloc[:3000])
    )
    fair = result.candidate_models[candidate.name]
    assert isinstance(fair, FairnessMitigatedClassifier)
    rows = X_test.iloc[:100]
    assert fair.predict_proba(rows).shape == (100, 2)
    # fit() refits preprocessing and mitigator from scratch, as any sklearn estimator does.
    refit = FairnessMitigatedClassifier(
        model.named_steps["preprocess"], fair.mitigator, sensitive_feature="sex"
    ).fit(X_train.iloc[:2000], y_train[:2000])
    assert refit.predict(X_test.iloc[:10]).shape == (10,)
    assert isinstance(fair.explainable_pipeline().steps[-1][1], DecisionTreeClassifier)


def test_reduction_bound_converts_pairwise_to_fairlearn_bound() -> None:
    two = pd.Series(["a"] * 70 + ["b"] * 30)
    assert reduction_bound(0.1, two) == pytest.approx(0.07)
    three = pd.Series(["a", "b", "c"] * 10)
    assert reduction_bound(0.1, three) == pytest.approx(0.05)


def test_german_credit_mitigation_on_sex() -> None:
    X, y = german()
    X_train, y_train = X.iloc[:600], y[:600]
    X_valid, y_valid = X.iloc[600:], y[600:]
    model = fit_pipeline(X_train, y_train, RandomForestClassifier(n_estimators=60, random_state=0))
    result = mitigate(model, X_train, y_train, X_valid, y_valid, "sex", bound=0.05,
                      methods=("threshold_optimizer", "grid_search"), grid_size=7)
    assert len(result.candidates) == 5 + 7
    assert all(c.demographic_parity_difference is not None for c in result.candidates)
    if result.chosen is None:
        assert any("no candidate" in note for note in result.notes) and result.model is None
    else:
        pred = result.model.predict(X_valid)
        dpd = demographic_parity_difference(pred, X_valid["sex"])
        assert dpd <= 0.05


def test_row_uniforms_depend_on_row_values_only() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    u = row_uniforms(frame)
    assert ((u >= 0) & (u < 1)).all()
    assert np.array_equal(row_uniforms(frame.iloc[[2, 0]].set_index(pd.Index([7, 8]))), u[[2, 0]])


def test_bad_inputs_are_named(adult_splits) -> None:
    model, X_train, y_train, X_valid, y_valid, _, _ = adult_splits
    with pytest.raises(ConfigError, match="allowed"):
        mitigate(model, X_train, y_train, X_valid, y_valid, "sex", methods=("magic",))
    with pytest.raises(ConfigError, match="Pipeline"):
        mitigate(model.steps[-1][1], X_train, y_train, X_valid, y_valid, "sex")
    with pytest.raises(DataError, match="not a column"):
        mitigate(model, X_train.drop(columns=["sex"]), y_train, X_valid, y_valid, "sex")
    with pytest.raises(DataError, match="rows"):
        mitigate(model, X_train, y_train[:-1], X_valid, y_valid, "sex")
    with pytest.raises(DataError, match="distinct values"):
        mitigate(model, X_train, y_train, X_valid, y_valid, "age")
    with pytest.raises(DataError, match="binary"):
        mitigate(model, X_train, y_train * 2, X_valid, y_valid, "sex")


@pytest.mark.slow
def test_acceptance_full_adult(tmp_path: Path) -> None:
    """Issue 3 acceptance: DP difference <= 0.1 on Adult's test split, at most 1.5 points lost."""
    X, y = adult()
    X_test, y_test = adult(split="test")
    rng = np.random.default_rng(42)
    valid = rng.random(len(X)) < 0.2
    model = fit_pipeline(X[~valid], y[~valid], LGBMClassifier(verbose=-1, n_jobs=2, random_state=0))
    result = mitigate(model, X[~valid], y[~valid], X[valid], y[valid], "sex", bound=0.1, out_dir=tmp_path)
    before = model.predict(X_test)
    after = result.model.predict(X_test)
    assert demographic_parity_difference(before, X_test["sex"]) > 0.15
    assert demographic_parity_difference(after, X_test["sex"]) <= 0.1
    assert np.mean(after == y_test) >= np.mean(before == y_test) - 0.015
