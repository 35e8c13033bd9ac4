"""The responsible-AI stages of a run, fed from the config and the prepared data.

Each function takes the config section it needs and returns the typed result of the
library function it calls (fairness, mitigation, explanations, privacy, compliance);
the pipeline stores them in the run record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.pipeline import Pipeline

from govml.config import PipelineConfig, ResponsibleAIConfig
from govml.data.prepare import PreparedData
from govml.evaluation.explanations import ExplanationReport, RowExplainer, explain_model
from govml.evaluation.fairness import FairnessReport, assess_fairness, metric_frame_tables, plot_selection_rates
from govml.evaluation.privacy import PiiScanReport, PrivacyRiskReport, membership_inference_risk, scan_personal_data
from govml.governance.compliance import ComplianceEvidence, ComplianceReport, score_compliance
from govml.mitigation.fairness import MitigationResult, mitigate
from govml.record import RunRecord

if TYPE_CHECKING:
    from govml.compute.distributed_eval import RayEvaluation


def fairness_applies(config: PipelineConfig, data: PreparedData) -> bool:
    """Group fairness is assessed for binary classification with sensitive attributes."""
    return bool(config.responsible_ai.sensitive_attributes) and data.task == "classification" and len(data.classes) == 2


def check_sensitive_columns(config: PipelineConfig, data: PreparedData) -> None:
    from govml.errors import ConfigError

    missing = [c for c in config.responsible_ai.sensitive_attributes if c not in data.test.X.columns]
    if missing:
        raise ConfigError(
            f"responsible_ai.sensitive_attributes names column(s) {missing} that are not model inputs "
            f"(dropped or absent); columns are {list(data.test.X.columns)}"
        )


def _split_notes(evaluator: RayEvaluation | None, since: int) -> list[str]:
    return [run.describe() for run in evaluator.runs[since:]] if evaluator is not None else []


def assess_group_fairness(
    rai: ResponsibleAIConfig, data: PreparedData, predictions: np.ndarray, *, plot_path: Path | None,
    evaluator: RayEvaluation | None = None,
) -> FairnessReport:
    """Fairness on the test split; ``evaluator`` (compute.engine: ray) counts the groups in Ray tasks."""
    fairness = rai.fairness
    since = len(evaluator.runs) if evaluator is not None else 0
    report = assess_fairness(
        data.test.y,
        predictions,
        data.test.X[rai.sensitive_attributes],
        min_group_size=fairness.min_group_size,
        dp_difference_max=fairness.demographic_parity_difference_max,
        dp_ratio_min=fairness.demographic_parity_ratio_min,
        eo_difference_max=fairness.equalized_odds_difference_max,
        group_tables=evaluator.group_tables if evaluator is not None else metric_frame_tables,
    )
    if notes := _split_notes(evaluator, since):
        report = report.model_copy(update={"notes": [*report.notes, *notes]})
    if plot_path is not None:
        plot_selection_rates(report, plot_path)
        report = report.model_copy(update={"plot": str(plot_path)})
    return report


@dataclass(frozen=True)
class MitigationOutcome:
    result: MitigationResult
    model: Pipeline | None


def mitigate_bias(
    rai: ResponsibleAIConfig, data: PreparedData, model: Pipeline, failed: FairnessReport, *, out_dir: Path
) -> MitigationOutcome:
    """Fit the configured mitigations for the first failing attribute; keep the chosen model."""
    cfg = rai.mitigation
    attribute = cfg.sensitive_attribute or next(
        (a.attribute for a in failed.attributes if a.status == "fail" and not a.intersection),
        rai.sensitive_attributes[0],
    )
    result = mitigate(
        model,
        data.train.X,
        data.train.y,
        data.valid.X,
        data.valid.y,
        attribute,
        bound=rai.fairness.demographic_parity_difference_max,
        methods=cfg.methods,
        ratio_min=None,
        max_accuracy_loss=cfg.max_accuracy_loss,
        min_group_size=rai.fairness.min_group_size,
        out_dir=out_dir,
    )
    return MitigationOutcome(result=result, model=result.model if result.chosen else None)


def explain(
    rai: ResponsibleAIConfig, data: PreparedData, model: Pipeline, *, out_dir: Path, seed: int,
    evaluator: RayEvaluation | None = None,
) -> ExplanationReport:
    """SHAP on a sample of the test split; ``evaluator`` (compute.engine: ray) splits the rows into Ray tasks."""
    since = len(evaluator.runs) if evaluator is not None else 0
    report = explain_model(
        model,
        data.test.X,
        max_rows=rai.explanations.sample_size,
        top_features=rai.explanations.top_features,
        out_dir=out_dir,
        seed=seed,
        explain_rows=evaluator.explain_rows if evaluator is not None else RowExplainer.explain,
    )
    if notes := _split_notes(evaluator, since):
        report = report.model_copy(update={"notes": [*report.notes, *notes]})
    return report


def membership_risk(rai: ResponsibleAIConfig, data: PreparedData, model: Pipeline, *, seed: int) -> PrivacyRiskReport:
    """Members are the rows the final model was fitted on; non-members the test rows."""
    full = data.train_full
    return membership_inference_risk(
        model, full.X, full.y, data.test.X, data.test.y, auc_max=rai.privacy.membership_auc_max, seed=seed
    )


def scan_for_personal_data(data: PreparedData, *, seed: int) -> PiiScanReport:
    return scan_personal_data(data.train.X, seed=seed)


def compliance_evidence(config: PipelineConfig, record: RunRecord) -> ComplianceEvidence:
    """What the record can show, item by item (None where a stage did not run)."""
    gov, rai = config.governance, config.responsible_ai
    evaluation, privacy = record.evaluation, record.privacy
    membership = privacy.membership_inference if privacy else None
    dp = privacy.differential_privacy if privacy else None
    owner = gov.owner
    return ComplianceEvidence(
        intended_use=gov.intended_use,
        out_of_scope_use=gov.out_of_scope_use,
        data_hash=record.data.data_hash if record.data else None,
        data_source=config.data.source,
        data_validation_passed=record.data is not None,
        data_issue_count=record.data.issue_count if record.data else None,
        primary_metric=evaluation.primary_metric if evaluation else None,
        metric_value=evaluation.metrics[evaluation.primary_metric].value if evaluation else None,
        higher_is_better=evaluation.higher_is_better if evaluation else True,
        min_metric=rai.performance.min_metric,
        improvement_pct=evaluation.improvement_pct if evaluation else None,
        min_improvement_pct=rai.performance.min_improvement_pct,
        fairness_passed=record.fairness.passed if record.fairness else None,
        fairness_failures=record.fairness.failures if record.fairness else [],
        fairness_attributes=list(rai.sensitive_attributes),
        mitigation_applied=record.mitigation.chosen if record.mitigation else None,
        explanation_artifacts=record.explanations.plots if record.explanations else [],
        explainer=record.explanations.explainer if record.explanations else None,
        membership_auc=membership.auc if membership else None,
        membership_auc_max=rai.privacy.membership_auc_max,
        privacy_passed=membership.passed if membership else None,
        pii_columns=[f.column for f in privacy.pii_scan.findings] if privacy and privacy.pii_scan else None,
        differential_privacy_epsilon=dp.epsilon if dp else None,
        carbon_kg=record.carbon.emissions_kg if record.carbon else None,
        energy_kwh=record.carbon.energy_kwh if record.carbon else None,
        owner=owner.name if owner else None,
        owner_contact=owner.email if owner else None,
        limitations=list(gov.limitations),
    )


def assess_compliance(config: PipelineConfig, record: RunRecord) -> ComplianceReport:
    return score_compliance(compliance_evidence(config, record))
