from __future__ import annotations

import pytest
from sklearn.ensemble import RandomForestClassifier

from govml.evaluation.fairness import assess_fairness
from govml.evaluation.privacy import membership_inference_risk
from govml.governance.compliance import (
    ComplianceEvidence,
    ComplianceReport,
    gate_failures,
    score_compliance,
)
from tests.evaluation.datasets import fit_pipeline, german

COMPLETE = ComplianceEvidence(
    intended_use="Supporting loan officers; a person decides.",
    out_of_scope_use="Fully automated credit decisions.",
    data_hash="ab" * 32,
    data_source="Statlog German credit",
    data_validation_passed=True,
    data_issue_count=0,
    primary_metric="roc_auc",
    metric_value=0.78,
    min_metric=0.7,
    improvement_pct=12.0,
    min_improvement_pct=5.0,
    fairness_passed=True,
    fairness_attributes=["sex"],
    explanation_artifacts=["govml/plots/shap_importance.png"],
    explainer="tree",
    membership_auc=0.55,
    membership_auc_max=0.6,
    privacy_passed=True,
    pii_columns=[],
    carbon_kg=0.0001,
    energy_kwh=0.0003,
    owner="Retail Credit Analytics",
    owner_contact="credit-analytics@example.com",
    limitations=["1,000 applications from one bank in the 1970s."],
)


def test_complete_evidence_scores_100_and_passes_every_gate() -> None:
    report = score_compliance(COMPLETE)
    assert report.score == 100 and report.failed_items == []
    assert sum(item.weight for item in report.items) == 100
    assert len(report.items) == 10
    assert all(item.reference and "NIST AI RMF" in item.reference for item in report.items)
    assert all("Annex" in item.reference for item in report.items)
    assert gate_failures(report, "strict") == [] and gate_failures(report, "advisory") == []
    assert ComplianceReport.model_validate_json(report.model_dump_json()) == report


def test_missing_evidence_fails_gates_only_in_strict_mode() -> None:
    report = score_compliance(ComplianceEvidence())
    assert report.score == 0 and not any(item.assessed for item in report.items)
    assert gate_failures(report, "strict") == ["performance", "fairness", "privacy"]
    assert gate_failures(report, "advisory") == []
    assert "governance.intended_use" in report.item("intended_use").evidence


@pytest.mark.parametrize(
    ("change", "item", "gate"),
    [
        ({"improvement_pct": 1.0}, "performance", "performance"),
        ({"metric_value": 0.6}, "performance", "performance"),
        ({"fairness_passed": False, "fairness_failures": ["sex: demographic parity difference 0.18 > 0.1"]},
         "fairness", "fairness"),
        ({"privacy_passed": False, "membership_auc": 0.8}, "privacy", "privacy"),
        ({"pii_columns": ["email"]}, "privacy", "privacy"),
    ],
)
def test_a_measured_failure_fails_its_gate_in_both_modes(change: dict, item: str, gate: str) -> None:
    report = score_compliance(COMPLETE.model_copy(update=change))
    failed = report.item(item)
    assert not failed.passed and failed.assessed
    assert report.score == 100 - failed.weight
    assert gate_failures(report, "strict") == [gate] == gate_failures(report, "advisory")


def test_lower_is_better_metrics_are_compared_the_right_way() -> None:
    evidence = COMPLETE.model_copy(update={"primary_metric": "rmse", "metric_value": 3.0,
                                           "min_metric": 4.0, "higher_is_better": False})
    assert score_compliance(evidence).item("performance").passed
    worse = evidence.model_copy(update={"metric_value": 5.0})
    assert not score_compliance(worse).item("performance").passed


def test_non_gate_items_lower_the_score_but_block_nothing() -> None:
    evidence = COMPLETE.model_copy(update={"owner_contact": None, "limitations": [], "carbon_kg": None})
    report = score_compliance(evidence)
    assert report.score == 100 - 10 - 5 - 5
    assert set(report.failed_items) == {"human_oversight", "limitations", "carbon"}
    assert "governance.owner.email" in report.item("human_oversight").evidence
    assert gate_failures(report, "strict") == []


def test_evidence_from_real_reports_on_german_credit() -> None:
    X, y = german()
    model = fit_pipeline(X.iloc[:700], y[:700], RandomForestClassifier(n_estimators=40, random_state=0))
    X_test, y_test = X.iloc[700:], y[700:]
    fairness = assess_fairness(y_test, model.predict(X_test), X_test[["sex"]])
    privacy = membership_inference_risk(model, X.iloc[:700], y[:700], X_test, y_test)
    evidence = COMPLETE.model_copy(update={
        "fairness_passed": fairness.passed, "fairness_failures": fairness.failures,
        "membership_auc": privacy.auc, "membership_auc_max": privacy.auc_max,
        "privacy_passed": privacy.passed,
    })
    report = score_compliance(evidence)
    assert report.item("fairness").passed == fairness.passed
    assert report.item("privacy").passed == privacy.passed
    assert f"{privacy.auc:.3f}" in report.item("privacy").evidence
    expected = [g for g, ok in (("fairness", fairness.passed), ("privacy", privacy.passed)) if not ok]
    assert gate_failures(report, "advisory") == expected


def test_unknown_requirements_are_rejected() -> None:
    with pytest.raises(ValueError, match="strict"):
        gate_failures(score_compliance(COMPLETE), "lenient")  # type: ignore[arg-type]
