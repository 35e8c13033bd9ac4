from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from govml.errors import DataError
from govml.evaluation.privacy import (
    PiiScanReport,
    PrivacyRiskReport,
    membership_inference_risk,
    scan_personal_data,
)
from tests.evaluation.datasets import adult, fit_pipeline, german


@pytest.fixture(scope="module")
def members_and_nonmembers():
    X, y = adult(3000, seed=21)
    return X.iloc[:1500], y[:1500], X.iloc[1500:], y[1500:]


def test_overfitting_model_leaks_membership(members_and_nonmembers) -> None:
    X_in, y_in, X_out, y_out = members_and_nonmembers
    # Unpruned trees, each on every training row: members get near-certain, correct scores.
    memoriser = fit_pipeline(X_in, y_in, RandomForestClassifier(n_estimators=40, bootstrap=False,
                                                                random_state=0, n_jobs=1))
    report = membership_inference_risk(memoriser, X_in, y_in, X_out, y_out, auc_max=0.6)
    assert report.auc > 0.7 and not report.passed
    assert report.advantage > 0.3
    assert report.member_mean_loss < report.nonmember_mean_loss
    assert {a.attack for a in report.attacks} == {"loss", "confidence"}
    assert PrivacyRiskReport.model_validate_json(report.model_dump_json()) == report


def test_regularised_model_does_not(members_and_nonmembers) -> None:
    X_in, y_in, X_out, y_out = members_and_nonmembers
    model = fit_pipeline(X_in, y_in, LogisticRegression(C=0.05, max_iter=500))
    report = membership_inference_risk(model, X_in, y_in, X_out, y_out)
    assert 0.4 < report.auc < 0.6 and report.passed
    assert report.n_members == report.n_nonmembers == 1500


def test_german_credit_members_are_balanced_against_non_members() -> None:
    X, y = german()
    model = fit_pipeline(X.iloc[:800], y[:800], RandomForestClassifier(n_estimators=50, random_state=0))
    report = membership_inference_risk(model, X.iloc[:800], y[:800], X.iloc[800:], y[800:], max_rows=150)
    assert report.n_members == report.n_nonmembers == 150
    assert report.auc > 0.6  # a default forest on 800 rows memorises them


def test_membership_bad_inputs(members_and_nonmembers) -> None:
    X_in, y_in, X_out, y_out = members_and_nonmembers
    model = fit_pipeline(X_in.iloc[:200], y_in[:200], LogisticRegression(max_iter=300))
    with pytest.raises(DataError, match="differ in length"):
        membership_inference_risk(model, X_in, y_in[:-1], X_out, y_out)
    with pytest.raises(DataError, match="at least 10"):
        membership_inference_risk(model, X_in.iloc[:5], y_in[:5], X_out, y_out)
    with pytest.raises(DataError, match="auc_max"):
        membership_inference_risk(model, X_in, y_in, X_out, y_out, auc_max=0.3)


def _with_personal_data(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    first = np.array(["Anna", "Lukas", "Maria", "Jonas", "Sophie", "Felix", "Laura", "Paul"])
    last = np.array(["Schmidt", "Meyer", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann"])
    given, family = rng.choice(first, len(frame)), rng.choice(last, len(frame))
    return frame.assign(
        applicant_name=[f"{a} {b}" for a, b in zip(given, family, strict=True)],
        contact=[f"{a.lower()}.{b.lower()}{i}@example.org" for i, (a, b) in enumerate(zip(given, family, strict=True))],
        mobile=[f"+49 15{rng.integers(10, 99)} {rng.integers(1_000_000, 9_999_999)}" for _ in range(len(frame))],
    )


def test_personal_data_columns_are_flagged_before_training() -> None:
    X, _ = german()
    report = scan_personal_data(_with_personal_data(X), sample_rows=40)
    assert report.engine == "presidio" and report.has_personal_data
    high = {f.column: f for f in report.findings if f.severity == "high"}
    assert set(high) == {"applicant_name", "contact", "mobile"}
    assert high["contact"].entities["EMAIL_ADDRESS"] == 1.0
    assert high["applicant_name"].entities["PERSON"] >= 0.5
    assert "PHONE_NUMBER" in high["mobile"].entities
    assert "drop_columns" in high["contact"].message
    # The original "telephone" column (yes/no) is only a name hint.
    low = {f.column: f for f in report.findings if f.severity == "low"}
    assert low["telephone"].name_hint == "PHONE_NUMBER" and not low["telephone"].entities
    assert PiiScanReport.model_validate_json(report.model_dump_json()) == report


def test_adult_has_no_personal_data() -> None:
    X, _ = adult(1000, seed=4)
    report = scan_personal_data(X, sample_rows=40)
    assert not report.has_personal_data and report.findings == []
    assert report.scanned_columns == list(X.columns)


def test_scan_bad_inputs() -> None:
    with pytest.raises(DataError, match="DataFrame"):
        scan_personal_data([{"email": "a@b.c"}])  # type: ignore[arg-type]
    with pytest.raises(DataError, match="sample_rows"):
        scan_personal_data(pd.DataFrame({"a": ["x"]}), sample_rows=0)
