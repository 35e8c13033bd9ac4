"""The run record: one typed result per pipeline stage.

The pipeline fills a :class:`RunRecord` as stages finish; the terminal summary, the
registry tags, the governance report and the audit log are all rendered from it, and
it is stored with the run as ``govml/record.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from govml.evaluation.explanations import ExplanationReport
from govml.evaluation.fairness import FairnessReport
from govml.evaluation.privacy import PiiScanReport, PrivacyRiskReport
from govml.features.drift import DriftReport
from govml.governance.compliance import ComplianceReport
from govml.mitigation.dp import DPTrainingResult
from govml.mitigation.fairness import MitigationResult


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidationIssue(_Result):
    column: str | None
    check: str
    failure_case: str | None
    line: int | None = Field(description="1-based line in the source file (header is line 1)")


class DataResult(_Result):
    """What was read and what validation found."""

    train_path: str
    test_path: str | None
    data_hash: str = Field(description="sha256 over the bytes of the data files, in order")
    rows_read: int
    rows_dropped: int
    columns: list[str]
    target: str
    task: Literal["classification", "regression"]
    classes: list[str] = Field(default_factory=list)
    class_balance: dict[str, float] = Field(default_factory=dict)
    issues: list[ValidationIssue] = Field(default_factory=list)
    issue_count: int = 0
    policy: Literal["fail", "drop"]
    split_rows: dict[str, int] = Field(default_factory=dict)


class FeatureResult(_Result):
    numeric: list[str]
    categorical: list[str]
    transformed_width: int
    drift: DriftReport


class TrialRecord(_Result):
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    duration_s: float | None


class TrainingResult(_Result):
    model_type: str
    best_params: dict[str, Any]
    search_metric: str
    search_direction: Literal["maximize", "minimize"]
    best_validation_score: float | None = Field(description="None when no search ran (DP training)")
    trials: list[TrialRecord]
    n_trials_completed: int
    n_trials_pruned: int
    stopped_by: Literal["n_trials", "timeout", "carbon_budget"] | None = None
    notes: list[str] = Field(default_factory=list)
    duration_s: float


class MetricWithInterval(_Result):
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


class BaselineResult(_Result):
    name: str
    metrics: dict[str, float]


class EvaluationResult(_Result):
    primary_metric: str
    higher_is_better: bool
    metrics: dict[str, MetricWithInterval]
    baselines: list[BaselineResult]
    best_baseline: str
    improvement_pct: float = Field(description="improvement of the primary metric over the best baseline, %")
    evaluated_on: str = Field(description="which split the metrics come from")
    before_mitigation: dict[str, float] | None = Field(
        default=None, description="the unmitigated model's test metrics when mitigation replaced it"
    )
    n_rows: int


class StageEnergy(_Result):
    stage: str
    duration_s: float
    energy_kwh: float
    emissions_kg: float


class CarbonResult(_Result):
    country_iso_code: str
    energy_kwh: float
    emissions_kg: float
    stages: list[StageEnergy] = Field(default_factory=list)
    budget_kg: float | None = None
    budget_exhausted: bool = False
    method: str = "codecarbon offline tracker"


class PrivacyResult(_Result):
    pii_scan: PiiScanReport | None = None
    membership_inference: PrivacyRiskReport | None = None
    differential_privacy: DPTrainingResult | None = None


class RegistrationResult(_Result):
    model_name: str
    version: str
    model_id: str
    model_uri: str
    aliases: list[str]
    tags: dict[str, str]


class StageStatus(_Result):
    name: str
    status: Literal["ok", "failed", "skipped"]
    duration_s: float
    message: str | None = None


class RunRecord(_Result):
    """Everything one `govml run` did, stage by stage."""

    pipeline: str
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    govml_version: str
    config: dict[str, Any]
    stages: list[StageStatus] = Field(default_factory=list)
    data: DataResult | None = None
    features: FeatureResult | None = None
    training: TrainingResult | None = None
    evaluation: EvaluationResult | None = None
    fairness: FairnessReport | None = None
    fairness_before_mitigation: FairnessReport | None = None
    mitigation: MitigationResult | None = None
    explanations: ExplanationReport | None = None
    privacy: PrivacyResult | None = None
    compliance: ComplianceReport | None = None
    carbon: CarbonResult | None = None
    registration: RegistrationResult | None = None
    failed_gates: list[str] = Field(default_factory=list)
    status: Literal["running", "succeeded", "gates_failed", "failed"] = "running"
