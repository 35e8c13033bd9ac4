"""The compliance checklist: ten items scored out of 100, and the gates that block release.

The items follow the technical documentation the EU AI Act asks of high-risk systems
(Annex IV) and the functions of the NIST AI Risk Management Framework 1.0 (GOVERN, MAP,
MEASURE, MANAGE). Each item is a pure check of the run's evidence; the score is the sum
of the weights of the items that pass. Three items are gates (performance, fairness,
privacy): with ``requirements: strict`` a failed or unassessed gate blocks the
``champion`` alias; with ``advisory`` only measured failures are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Gate = Literal["performance", "fairness", "privacy"]
GATES: tuple[Gate, ...] = ("performance", "fairness", "privacy")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComplianceEvidence(_Model):
    """What the run can show; ``None`` means the run did not produce that evidence."""

    intended_use: str | None = None
    out_of_scope_use: str | None = None
    data_hash: str | None = None
    data_source: str | None = None
    data_validation_passed: bool | None = None
    data_issue_count: int | None = None
    primary_metric: str | None = None
    metric_value: float | None = None
    higher_is_better: bool = True
    min_metric: float | None = None
    improvement_pct: float | None = Field(default=None, description="over the best baseline, %")
    min_improvement_pct: float = 0.0
    fairness_passed: bool | None = None
    fairness_failures: list[str] = Field(default_factory=list)
    fairness_attributes: list[str] = Field(default_factory=list)
    mitigation_applied: str | None = Field(
        default=None, description="name of the chosen mitigation"
    )
    explanation_artifacts: list[str] = Field(default_factory=list)
    explainer: str | None = None
    membership_auc: float | None = None
    membership_auc_max: float | None = None
    privacy_passed: bool | None = None
    pii_columns: list[str] | None = Field(
        default=None, description="None: no scan; []: scanned, none"
    )
    differential_privacy_epsilon: float | None = None
    carbon_kg: float | None = None
    energy_kwh: float | None = None
    owner: str | None = None
    owner_contact: str | None = None
    limitations: list[str] = Field(default_factory=list)


class ComplianceItem(_Model):
    id: str
    title: str
    passed: bool
    assessed: bool = Field(description="False when the run produced no evidence for this item")
    weight: int
    evidence: str
    reference: str = Field(description="EU AI Act Annex IV point and NIST AI RMF subcategory")
    gate: Gate | None = None


class ComplianceReport(_Model):
    score: int = Field(description="sum of the weights of passed items, out of 100")
    max_score: int = 100
    items: list[ComplianceItem]
    passed_items: list[str]
    failed_items: list[str]

    def item(self, item_id: str) -> ComplianceItem:
        for entry in self.items:
            if entry.id == item_id:
                return entry
        raise KeyError(item_id)


_Outcome = tuple[bool, bool, str]  # passed, assessed, evidence


def _intended_use(e: ComplianceEvidence) -> _Outcome:
    if e.intended_use and e.intended_use.strip():
        extra = f"; out of scope: {e.out_of_scope_use}" if e.out_of_scope_use else ""
        return True, True, f"intended use: {e.intended_use}{extra}"
    return False, False, "no intended use stated (governance.intended_use)"


def _provenance(e: ComplianceEvidence) -> _Outcome:
    if e.data_hash:
        source = f" from {e.data_source}" if e.data_source else " (source not stated: data.source)"
        return True, True, f"training data sha256 {e.data_hash[:16]}...{source}"
    return False, False, "no data fingerprint recorded"


def _data_validation(e: ComplianceEvidence) -> _Outcome:
    if e.data_validation_passed is None:
        return False, False, "data validation did not run"
    issues = f" ({e.data_issue_count} issue(s) handled)" if e.data_issue_count else ""
    verdict = "passed" if e.data_validation_passed else "failed"
    return e.data_validation_passed, True, f"schema validation {verdict}{issues}"


def _performance(e: ComplianceEvidence) -> _Outcome:
    if e.improvement_pct is None and e.metric_value is None:
        return False, False, "no test metrics against a baseline"
    problems = []
    parts = []
    if e.metric_value is not None:
        parts.append(f"{e.primary_metric or 'primary metric'} = {e.metric_value:.4f}")
        if e.min_metric is not None:
            ok = (
                e.metric_value >= e.min_metric
                if e.higher_is_better
                else e.metric_value <= e.min_metric
            )
            if not ok:
                problems.append(f"required {'>=' if e.higher_is_better else '<='} {e.min_metric}")
    if e.improvement_pct is None:
        problems.append("no baseline comparison")
    else:
        parts.append(f"{e.improvement_pct:+.1f}% over the best baseline")
        if e.improvement_pct < e.min_improvement_pct:
            problems.append(f"required at least {e.min_improvement_pct:+.1f}%")
    return not problems, True, "; ".join(parts + problems)


def _fairness(e: ComplianceEvidence) -> _Outcome:
    if e.fairness_passed is None:
        return False, False, "fairness not assessed (responsible_ai.sensitive_attributes)"
    scope = f" for {', '.join(e.fairness_attributes)}" if e.fairness_attributes else ""
    mitigated = f" after mitigation ({e.mitigation_applied})" if e.mitigation_applied else ""
    if e.fairness_passed:
        return True, True, f"within bounds{scope}{mitigated}"
    return False, True, "; ".join(e.fairness_failures) or f"outside bounds{scope}"


def _explanations(e: ComplianceEvidence) -> _Outcome:
    if e.explanation_artifacts:
        return (
            True,
            True,
            f"{e.explainer or 'SHAP'} explanations: {len(e.explanation_artifacts)} artifact(s)",
        )
    return False, False, "no explanations produced"


def _privacy(e: ComplianceEvidence) -> _Outcome:
    if e.privacy_passed is None:
        return False, False, "membership-inference risk not assessed"
    parts = []
    if e.membership_auc is not None:
        limit = f" (limit {e.membership_auc_max})" if e.membership_auc_max is not None else ""
        parts.append(f"membership-inference AUC {e.membership_auc:.3f}{limit}")
    if e.differential_privacy_epsilon is not None:
        parts.append(f"trained with differential privacy, epsilon {e.differential_privacy_epsilon}")
    if e.pii_columns:
        parts.append(f"personal data in column(s) {', '.join(e.pii_columns)}")
    elif e.pii_columns is not None:
        parts.append("no personal-data columns found")
    passed = e.privacy_passed and not e.pii_columns
    return passed, True, "; ".join(parts) or ("passed" if passed else "failed")


def _carbon(e: ComplianceEvidence) -> _Outcome:
    if e.carbon_kg is None:
        return False, False, "no energy or emissions recorded"
    energy = f", {e.energy_kwh:.6f} kWh" if e.energy_kwh is not None else ""
    return True, True, f"{e.carbon_kg:.6f} kg CO2eq{energy}"


def _oversight(e: ComplianceEvidence) -> _Outcome:
    if e.owner and e.owner_contact:
        return True, True, f"owner {e.owner} <{e.owner_contact}>"
    if e.owner:
        return False, True, f"owner {e.owner} has no contact (governance.owner.email)"
    return False, False, "no owner / human-oversight contact (governance.owner)"


def _limitations(e: ComplianceEvidence) -> _Outcome:
    stated = [item for item in e.limitations if item.strip()]
    if stated:
        return True, True, f"{len(stated)} limitation(s) stated"
    return False, False, "no limitations stated (governance.limitations)"


_Check = Callable[[ComplianceEvidence], _Outcome]
_CHECKLIST: tuple[tuple[str, str, int, str, Gate | None, _Check], ...] = (
    (
        "intended_use",
        "Intended purpose stated",
        10,
        "EU AI Act Annex IV 1(a); NIST AI RMF MAP 1.1",
        None,
        _intended_use,
    ),
    (
        "data_provenance",
        "Training data provenance recorded",
        10,
        "EU AI Act Annex IV 2(d); NIST AI RMF MAP 4.1",
        None,
        _provenance,
    ),
    (
        "data_validation",
        "Data validated against a schema",
        10,
        "EU AI Act Annex IV 2(d), Art. 10(2); NIST AI RMF MEASURE 2.1",
        None,
        _data_validation,
    ),
    (
        "performance",
        "Validated performance beats the baseline",
        15,
        "EU AI Act Annex IV 2(g); NIST AI RMF MEASURE 2.3",
        "performance",
        _performance,
    ),
    (
        "fairness",
        "Fairness within bounds",
        15,
        "EU AI Act Annex IV 2(g), Art. 10(2)(f); NIST AI RMF MEASURE 2.11",
        "fairness",
        _fairness,
    ),
    (
        "explanations",
        "Explanations produced",
        10,
        "EU AI Act Annex IV 2(b), Art. 13; NIST AI RMF MEASURE 2.9",
        None,
        _explanations,
    ),
    (
        "privacy",
        "Privacy risk assessed and acceptable",
        10,
        "EU AI Act Annex IV 2(d), Art. 10(5); NIST AI RMF MEASURE 2.10",
        "privacy",
        _privacy,
    ),
    (
        "carbon",
        "Energy and emissions recorded",
        5,
        "EU AI Act Annex XI 1(2)(e); NIST AI RMF MEASURE 2.12",
        None,
        _carbon,
    ),
    (
        "human_oversight",
        "Owner and human-oversight contact named",
        10,
        "EU AI Act Annex IV 2(e), Art. 14; NIST AI RMF GOVERN 2.1",
        None,
        _oversight,
    ),
    (
        "limitations",
        "Known limitations stated",
        5,
        "EU AI Act Annex IV 3; NIST AI RMF MAP 2.2",
        None,
        _limitations,
    ),
)


def score_compliance(evidence: ComplianceEvidence) -> ComplianceReport:
    """Run every checklist item on the evidence; the score is the weight of those that pass."""
    items = []
    for item_id, title, weight, reference, gate, check in _CHECKLIST:
        passed, assessed, text = check(evidence)
        items.append(
            ComplianceItem(
                id=item_id,
                title=title,
                passed=passed,
                assessed=assessed,
                weight=weight,
                evidence=text,
                reference=reference,
                gate=gate,
            )
        )
    return ComplianceReport(
        score=sum(i.weight for i in items if i.passed),
        items=items,
        passed_items=[i.id for i in items if i.passed],
        failed_items=[i.id for i in items if not i.passed],
    )


def gate_failures(
    report: ComplianceReport, requirements: Literal["strict", "advisory"]
) -> list[str]:
    """Names of the failed gates, in the order performance, fairness, privacy.

    ``strict``: a gate fails when its check failed or was not assessed (no evidence is
    no proof). ``advisory``: only gates whose check ran and failed are named.
    """
    if requirements not in ("strict", "advisory"):
        raise ValueError(f"requirements must be 'strict' or 'advisory', got {requirements!r}")
    failed: list[str] = []
    for gate in GATES:
        for item in report.items:
            if item.gate != gate or item.passed:
                continue
            if item.assessed or requirements == "strict":
                failed.append(gate)
                break
    return failed
