from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)
from lightgbm import LGBMClassifier
from sklearn.ensemble import RandomForestClassifier

from govml.errors import DataError
from govml.evaluation.fairness import FairnessReport, assess_fairness, plot_selection_rates
from tests.evaluation.datasets import adult, fit_pipeline, german


@pytest.fixture(scope="module")
def adult_predictions() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    X_train, y_train = adult(4000, seed=1)
    X_test, y_test = adult(3000, split="test", seed=2)
    model = fit_pipeline(X_train, y_train, LGBMClassifier(n_estimators=60, verbose=-1, n_jobs=1, random_state=0))
    return X_test, y_test, model.predict(X_test)


def test_single_attribute_matches_fairlearn(adult_predictions) -> None:
    X, y, pred = adult_predictions
    report = assess_fairness(y, pred, X[["sex"]], dp_ratio_min=None)
    sex = report.attribute("sex")
    assert sex.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=X["sex"])
    )
    assert sex.demographic_parity_ratio == pytest.approx(demographic_parity_ratio(y, pred, sensitive_features=X["sex"]))
    assert sex.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=X["sex"])
    )
    assert {g.group for g in sex.groups} == {"Male", "Female"}
    assert sum(g.count for g in sex.groups) == len(X)
    female = next(g for g in sex.groups if g.group == "Female")
    mask = (X["sex"] == "Female").to_numpy()
    assert female.selection_rate == pytest.approx(pred[mask].mean())
    assert female.true_positive_rate == pytest.approx(pred[mask & (y == 1)].mean())
    assert female.false_positive_rate == pytest.approx(pred[mask & (y == 0)].mean())
    # An unmitigated model on Adult favours men by well over 0.1.
    assert sex.demographic_parity_difference > 0.1
    assert sex.status == "fail" and not report.passed
    assert any("sex: demographic parity difference" in f for f in report.failures)


def test_intersection_flags_small_groups_and_excludes_them(adult_predictions) -> None:
    X, y, pred = adult_predictions
    report = assess_fairness(y, pred, X[["sex", "race"]], min_group_size=30, dp_difference_max=1.0, dp_ratio_min=None)
    inter = report.attribute("sex x race")
    assert inter.intersection and inter.columns == ["sex", "race"]
    small = [g for g in inter.groups if g.small]
    assert small, "3000 Adult rows have sex x race groups under 30 rows"
    assert all(g.count < 30 for g in small)
    assert set(inter.excluded_groups) == {g.group for g in small}
    assert any("left out of the disparities" in note for note in inter.notes)
    kept = [g.selection_rate for g in inter.groups if not g.small]
    assert inter.demographic_parity_difference == pytest.approx(max(kept) - min(kept))
    # Intersections are reported but gate only when asked.
    assert report.passed
    strict = assess_fairness(
        y, pred, X[["sex", "race"]], dp_difference_max=0.05, dp_ratio_min=None, gate_on_intersections=True
    )
    assert any(f.startswith("sex x race") for f in strict.failures)


def test_thresholds_decide_pass_and_fail(adult_predictions) -> None:
    X, y, pred = adult_predictions
    lenient = assess_fairness(y, pred, X[["sex"]], dp_difference_max=0.9, dp_ratio_min=0.0)
    assert lenient.passed and lenient.attribute("sex").status == "pass"
    eo = assess_fairness(y, pred, X[["sex"]], dp_difference_max=None, dp_ratio_min=None, eo_difference_max=0.01)
    assert not eo.passed and "equalized odds" in eo.failures[0]


def test_german_credit_bins_age_and_marks_unassessable_attributes() -> None:
    X, y = german()
    model = fit_pipeline(X.iloc[:700], y[:700], RandomForestClassifier(n_estimators=50, random_state=0))
    X_test, y_test = X.iloc[700:], y[700:]
    pred = model.predict(X_test)
    report = assess_fairness(y_test, pred, X_test[["sex", "age", "foreign_worker"]], min_group_size=30)
    age = report.attribute("age")
    assert age.binned and len(age.groups) == 4
    foreign = report.attribute("foreign_worker")
    # About 4% of applicants are not foreign workers: 300 test rows leave that group tiny.
    assert foreign.status == "not_assessable" and foreign.demographic_parity_difference is None
    assert any("foreign_worker: not assessable" in n for n in report.notes)
    assert {a.attribute for a in report.attributes} >= {"sex x age", "sex x foreign_worker", "age x foreign_worker"}
    summary = report.summary_metrics()
    assert (
        "sex.demographic_parity_difference" in summary and "foreign_worker.demographic_parity_difference" not in summary
    )
    again = FairnessReport.model_validate_json(report.model_dump_json())
    assert again == report


def test_missing_sensitive_values_form_their_own_group() -> None:
    X, y = adult(2000, split="test", seed=3)
    pred = (X["age"] > 40).astype(int).to_numpy()
    sensitive = X[["workclass"]]
    assert sensitive["workclass"].isna().any()
    report = assess_fairness(y, pred, sensitive)
    assert "(missing)" in {g.group for g in report.attribute("workclass").groups}


def test_plot_writes_png(adult_predictions, tmp_path: Path) -> None:
    X, y, pred = adult_predictions
    report = assess_fairness(y, pred, X[["sex", "race"]])
    path = plot_selection_rates(report, tmp_path / "plots" / "fairness.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1, 2, 1], [0, 1, 1, 0], "binary labels"),
        ([0, 1, 1], [0, 1, 1, 0], "4 rows"),
        ([0, 1, None, 1], [0, 1, 1, 0], "missing values"),
    ],
)
def test_bad_labels_are_rejected(y_true, y_pred, message: str) -> None:
    sensitive = pd.DataFrame({"sex": ["a", "b", "a", "b"]})
    with pytest.raises(DataError, match=message):
        assess_fairness(y_true, y_pred, sensitive)


def test_no_sensitive_columns_is_rejected() -> None:
    with pytest.raises(DataError, match="at least one sensitive column"):
        assess_fairness([0, 1], [0, 1], pd.DataFrame(index=[0, 1]))
