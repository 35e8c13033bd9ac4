"""Run the stages of a pipeline in order and record each stage's result.

``run_pipeline`` is the whole of ``govml run``: it returns the :class:`RunRecord`
and raises :class:`GateFailedError` after registration when a strict gate failed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

import govml
from govml import responsible_ai as rai_stage
from govml.carbon import CarbonMeter
from govml.compute.distributed_eval import RayEvaluation, evaluation_executor
from govml.compute.ray_session import compute_session
from govml.compute.trials import trial_executor
from govml.config import PipelineConfig, load_config
from govml.data.prepare import PreparedData, prepare_data
from govml.errors import ConfigError
from govml.evaluation.fairness import FairnessReport
from govml.evaluation.metrics import (
    DECISION_METRICS,
    bootstrap_intervals,
    check_metric,
    compute_metrics,
    decision_scores,
    default_metric,
    higher_is_better,
    improvement_pct,
)
from govml.features.drift import DriftReference, compute_drift
from govml.features.preprocess import build_preprocessor, split_columns
from govml.governance.audit import AuditLog, default_audit_path
from govml.governance.compliance import gate_failures
from govml.governance.report import publish_report
from govml.governance.run_audit import (
    audit_registration,
    audit_run_finished,
    audit_run_started,
    audit_stage,
)
from govml.mitigation.dp import train_dp_model
from govml.mitigation.fairness import FairnessMitigatedClassifier
from govml.record import (
    BaselineResult,
    EvaluationResult,
    FeatureResult,
    MetricWithInterval,
    PrivacyResult,
    RunRecord,
    StageStatus,
    TrainingResult,
)
from govml.registry import CANDIDATE, CHAMPION, log_sklearn_model, register_model, set_version_tags
from govml.training.estimators import baselines, get_spec
from govml.training.search import SearchData, predict_scores, run_search
from govml.training.tracking import TrackedRun, ensure_experiment, make_client, tracking_uri_for

ProgressCallback = Callable[[str, str], None]
"""Called with (stage, event) where event is "start", "ok", "failed" or a detail line."""


@dataclass
class _Context:
    """What the stages share while a run is under way."""

    config: PipelineConfig
    record: RunRecord
    meter: CarbonMeter
    progress: ProgressCallback
    workdir: Path
    data: PreparedData | None = None
    model: Pipeline | None = None
    test_scores: np.ndarray | None = None
    preprocessor: ColumnTransformer | None = None
    drift_reference: DriftReference | None = None
    plots: dict[str, Path] = field(default_factory=dict)


@contextmanager
def _stage(ctx: _Context, name: str, *, measure_energy: bool = True) -> Iterator[Any]:
    """Run a stage: progress events, its status in the record, and its energy when measured."""
    ctx.progress(name, "start")
    started = time.perf_counter()
    try:
        if measure_energy:
            with ctx.meter.stage(name) as handle:
                yield handle
        else:
            yield None
    except BaseException as exc:
        ctx.record.stages.append(
            StageStatus(name=name, status="failed", duration_s=time.perf_counter() - started, message=str(exc)[:500])
        )
        ctx.progress(name, "failed")
        raise
    ctx.record.stages.append(StageStatus(name=name, status="ok", duration_s=time.perf_counter() - started))
    ctx.progress(name, "ok")


def _features_stage(ctx: _Context) -> None:
    assert ctx.data is not None
    cfg = ctx.config.features
    columns = split_columns(ctx.data.train.X, numeric=cfg.numeric, categorical=cfg.categorical)
    reference = DriftReference.from_frame(
        ctx.data.train.X, numeric=columns.numeric, categorical=columns.categorical,
        max_categories=cfg.max_categories,
    )
    drift = compute_drift(
        reference, ctx.data.test.X,
        psi_threshold=cfg.drift.psi_threshold, p_value=cfg.drift.p_value, js_threshold=cfg.drift.js_threshold,
    )
    preprocessor = build_preprocessor(columns, scaling=cfg.scaling, max_categories=cfg.max_categories)
    ctx.preprocessor = preprocessor
    ctx.drift_reference = reference
    width = preprocessor.fit(ctx.data.train.X).transform(ctx.data.train.X.head(1)).shape[1]
    ctx.record.features = FeatureResult(
        numeric=columns.numeric, categorical=columns.categorical, transformed_width=int(width), drift=drift
    )


def _training_stage(ctx: _Context, handle: Any) -> None:
    assert ctx.data is not None
    cfg = ctx.config.training
    data = ctx.data
    task = data.task
    n_classes = len(data.classes) if task == "classification" else 0
    metric = check_metric(cfg.search.metric or default_metric(task, n_classes), task)
    preprocessor = ctx.preprocessor
    assert preprocessor is not None, "the features stage runs before training"
    search_data = SearchData(
        X_train=preprocessor.transform(data.train.X),
        y_train=data.train.y,
        X_valid=preprocessor.transform(data.valid.X),
        y_valid=data.valid.y,
        n_classes=n_classes,
    )
    budget = ctx.config.carbon.budget_kg

    def over_budget() -> bool:
        if budget is None:
            return False
        exhausted = handle.checkpoint() >= budget
        if exhausted:
            ctx.meter.mark_budget_exhausted()
        return exhausted

    dp = ctx.config.responsible_ai.privacy.differential_privacy
    if dp.enabled:
        _train_private(ctx, metric)
        return
    spec = get_spec(cfg.model)
    with trial_executor(ctx.config.compute) as executor:  # Ray tasks with compute.engine: ray
        result = run_search(
            spec, search_data, task=task, metric=metric,  # type: ignore[arg-type]
            n_trials=cfg.search.n_trials, timeout_seconds=cfg.search.timeout_seconds,
            seed=ctx.config.data.seed, pruning=cfg.search.pruning, fixed_params=cfg.params,
            over_budget=over_budget, executor=executor,
            on_trial=lambda number, value: ctx.progress("training", f"trial {number}: {value}"),
        )
    ctx.record.training = result
    # The final model: preprocessing and the best estimator refitted on train + validation.
    full = data.train_full
    estimator = spec.build(task, result.best_params, seed=ctx.config.data.seed, n_classes=n_classes)  # type: ignore[arg-type]
    ctx.model = Pipeline([("preprocess", clone(preprocessor)), ("model", estimator)]).fit(full.X, full.y)


def _train_private(ctx: _Context, metric: str) -> None:
    """Differentially private training instead of the search.

    A search would look at the data once per trial and spend more privacy than the
    configured epsilon, so a private model is fitted once on train + validation.
    """
    assert ctx.data is not None and ctx.preprocessor is not None
    dp = ctx.config.responsible_ai.privacy.differential_privacy
    if ctx.data.task != "classification":
        raise ConfigError("responsible_ai.privacy.differential_privacy supports classification only")
    full = ctx.data.train_full
    started = time.perf_counter()
    model, result = train_dp_model(
        clone(ctx.preprocessor), full.X, full.y, model=dp.model, epsilon=dp.epsilon, seed=ctx.config.data.seed
    )
    ctx.model = model
    ctx.record.privacy = (ctx.record.privacy or PrivacyResult()).model_copy(update={"differential_privacy": result})
    ctx.record.training = TrainingResult(
        model_type=f"dp_{dp.model}",
        best_params={"epsilon": dp.epsilon, "clip": result.clip, "data_norm": result.data_norm},
        search_metric=metric,
        search_direction="maximize" if higher_is_better(metric) else "minimize",
        best_validation_score=None,
        trials=[],
        n_trials_completed=0,
        n_trials_pruned=0,
        duration_s=time.perf_counter() - started,
        notes=[f"differentially private {dp.model} with epsilon {dp.epsilon}; no hyperparameter search"],
    )


def _score_model(ctx: _Context) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Test metrics of the current model with bootstrap intervals; keeps its test scores.

    A fairness-mitigated model decides at random between thresholds (drawn per row from a
    hash of it): its decision metrics are those of the decisions it really returns, not
    of the arg-max of its probabilities.
    """
    assert ctx.data is not None and ctx.model is not None
    data, seed = ctx.data, ctx.config.data.seed
    scores = predict_scores(ctx.model, data.test.X, data.task)  # type: ignore[arg-type]
    ctx.test_scores = scores
    values = compute_metrics(data.test.y, scores, data.task)
    intervals = bootstrap_intervals(data.test.y, scores, data.task, seed=seed)
    if isinstance(ctx.model, FairnessMitigatedClassifier):
        decided = decision_scores(ctx.model.predict(data.test.X), scores.shape[1])
        ctx.test_scores = decided
        for source, target in (
            (compute_metrics(data.test.y, decided, data.task), values),
            (bootstrap_intervals(data.test.y, decided, data.task, seed=seed), intervals),
        ):
            target.update({name: source[name] for name in DECISION_METRICS})  # type: ignore[misc]
    return values, intervals


def _evaluation_result(
    ctx: _Context,
    values: dict[str, float],
    intervals: dict[str, tuple[float, float]],
    baseline_results: list[BaselineResult],
) -> EvaluationResult:
    assert ctx.data is not None and ctx.record.training is not None
    metric = ctx.record.training.search_metric
    if isinstance(ctx.model, FairnessMitigatedClassifier) and metric not in DECISION_METRICS:
        # a mitigated model is a decision rule (group thresholds or a randomised mixture):
        # its scores no longer rank rows, so it is compared with the baselines on accuracy
        metric = "accuracy"
    better = higher_is_better(metric)
    best = (max if better else min)(baseline_results, key=lambda b: b.metrics[metric])
    return EvaluationResult(
        primary_metric=metric,
        higher_is_better=better,
        metrics={
            k: MetricWithInterval(value=v, ci_low=intervals[k][0], ci_high=intervals[k][1]) for k, v in values.items()
        },
        baselines=baseline_results,
        best_baseline=best.name,
        improvement_pct=improvement_pct(values[metric], best.metrics[metric], metric),
        evaluated_on="test",
        n_rows=len(ctx.data.test.y),
    )


def _evaluation_stage(ctx: _Context) -> None:
    assert ctx.data is not None and ctx.preprocessor is not None
    data, task = ctx.data, ctx.data.task
    values, intervals = _score_model(ctx)
    full = data.train_full
    baseline_results = []
    for name, factory in baselines(task).items():  # type: ignore[arg-type]
        pipe = Pipeline([("preprocess", clone(ctx.preprocessor)), ("model", factory(ctx.config.data.seed))])
        pipe.fit(full.X, full.y)
        scores = predict_scores(pipe, data.test.X, task)  # type: ignore[arg-type]
        baseline_results.append(BaselineResult(name=name, metrics=compute_metrics(data.test.y, scores, task)))
    ctx.record.evaluation = _evaluation_result(ctx, values, intervals, baseline_results)


def _responsible_ai_stage(ctx: _Context) -> None:
    """Fairness (and mitigation when it fails), explanations and membership-inference risk."""
    with evaluation_executor(ctx.config.compute) as evaluator:  # Ray tasks with compute.engine: ray
        _responsible_ai(ctx, evaluator)


def _responsible_ai(ctx: _Context, evaluator: RayEvaluation | None) -> None:
    assert ctx.data is not None and ctx.model is not None and ctx.test_scores is not None
    config, data, record = ctx.config, ctx.data, ctx.record
    rai = config.responsible_ai
    plots = ctx.workdir / "plots"
    plots.mkdir(exist_ok=True)
    rai_stage.check_sensitive_columns(config, data)
    if rai_stage.fairness_applies(config, data):
        report = rai_stage.assess_group_fairness(
            rai, data, ctx.test_scores.argmax(axis=1), plot_path=plots / "fairness_selection_rates.png",
            evaluator=evaluator,
        )
        record.fairness = report
        verdict = "passed" if report.passed else "failed: " + "; ".join(report.failures)
        ctx.progress("responsible_ai", f"fairness {verdict}")
        if not report.passed and rai.mitigation.enabled:
            _mitigate(ctx, report, plots, evaluator)
    if rai.explanations.enabled:
        ctx.progress("responsible_ai", "explaining")
        record.explanations = rai_stage.explain(
            rai, data, ctx.model, out_dir=plots, seed=config.data.seed, evaluator=evaluator
        )
    ctx.progress("responsible_ai", "membership inference")
    risk = rai_stage.membership_risk(rai, data, ctx.model, seed=config.data.seed)
    record.privacy = (record.privacy or PrivacyResult()).model_copy(update={"membership_inference": risk})
    ctx.plots.update({path.stem: path for path in sorted(plots.glob("*.png"))})


def _mitigate(ctx: _Context, report: FairnessReport, plots: Path, evaluator: RayEvaluation | None) -> None:
    """Replace the model by the chosen mitigated candidate and re-evaluate it on test."""
    assert ctx.data is not None and ctx.model is not None and ctx.record.evaluation is not None
    record, rai = ctx.record, ctx.config.responsible_ai
    ctx.progress("responsible_ai", "mitigating bias")
    outcome = rai_stage.mitigate_bias(rai, ctx.data, ctx.model, report, out_dir=plots)
    record.mitigation = outcome.result
    if outcome.model is None:
        return
    previous = ctx.record.evaluation
    before = {k: m.value for k, m in previous.metrics.items()}
    ctx.model = outcome.model
    values, intervals = _score_model(ctx)
    evaluation = _evaluation_result(ctx, values, intervals, previous.baselines)
    record.evaluation = evaluation.model_copy(update={"before_mitigation": before})
    record.fairness_before_mitigation = report
    assert ctx.test_scores is not None
    record.fairness = rai_stage.assess_group_fairness(
        rai, ctx.data, ctx.test_scores.argmax(axis=1), plot_path=plots / "fairness_selection_rates_mitigated.png",
        evaluator=evaluator,
    )


def model_tags(record: RunRecord) -> dict[str, str]:
    """The registry tags of a run (see docs/architecture.md)."""
    tags: dict[str, str] = {
        "govml.model_id": f"{record.pipeline}-{(record.run_id or '')[:8]}",
        "govml.run_id": record.run_id or "",
        "govml.requirements": record.config["responsible_ai"]["requirements"],
        "govml.gates_passed": "true" if not record.failed_gates else "false",
        "govml.failed_gates": ",".join(record.failed_gates),
        "govml.govml_version": record.govml_version,
    }
    if record.data is not None:
        tags["govml.task"] = record.data.task
        tags["govml.data_hash"] = record.data.data_hash
        if record.data.classes:
            tags["govml.classes"] = ",".join(record.data.classes)
    if record.training is not None:
        tags["govml.model_type"] = record.training.model_type
    if record.evaluation is not None:
        tags["govml.primary_metric"] = record.evaluation.primary_metric
        tags["govml.baseline_improvement_pct"] = f"{record.evaluation.improvement_pct:.4f}"
        for name, metric in record.evaluation.metrics.items():
            tags[f"govml.metric.{name}"] = f"{metric.value:.6g}"
    if record.fairness is not None:
        tags["govml.fairness.passed"] = "true" if record.fairness.passed else "false"
        for name, value in record.fairness.summary_metrics().items():
            tags[f"govml.fairness.{name}"] = f"{value:.6g}"
    if record.mitigation is not None:
        tags["govml.mitigation"] = record.mitigation.chosen or "none met the bound"
        tags["govml.needs_sensitive_feature"] = str(record.mitigation.needs_sensitive_feature).lower()
    if record.privacy is not None and record.privacy.membership_inference is not None:
        tags["govml.privacy.membership_auc"] = f"{record.privacy.membership_inference.auc:.4f}"
    if record.compliance is not None:
        tags["govml.compliance_score"] = str(record.compliance.score)
        tags["govml.compliance_status"] = "pass" if not record.failed_gates else "fail"
    if record.carbon is not None:
        tags["govml.energy_kwh"] = f"{record.carbon.energy_kwh:.6g}"
        tags["govml.carbon_kg"] = f"{record.carbon.emissions_kg:.6g}"
    return tags


def _registration_stage(ctx: _Context, run: TrackedRun) -> None:
    assert ctx.data is not None and ctx.model is not None
    record = ctx.record
    example = ctx.data.test.X.head(5)
    source = log_sklearn_model(
        run.client, run.run_id, ctx.model, input_example=example, predict_fn_output=ctx.model.predict(example)
    )
    aliases = [CANDIDATE]
    strict = ctx.config.responsible_ai.requirements == "strict"
    if not (strict and record.failed_gates):
        aliases.append(CHAMPION)
    record.registration = register_model(
        run.client, ctx.config.name, source=source, run_id=run.run_id, tags=model_tags(record),
        aliases=aliases, description=ctx.config.description,
    )


def _log_run_artifacts(ctx: _Context, run: TrackedRun) -> None:
    assert ctx.data is not None and ctx.drift_reference is not None
    run.log_text(ctx.data.schema.to_json(), "govml/schema.json")
    run.log_text(ctx.drift_reference.to_json(), "govml/drift_reference.json")
    for path in ctx.plots.values():
        run.log_file(path, "govml/plots")
    if ctx.record.training is not None:
        run.log_params(ctx.record.training.best_params, prefix="model.")
    if ctx.record.evaluation is not None:
        run.log_metrics({f"test_{k}": v.value for k, v in ctx.record.evaluation.metrics.items()})
        for baseline in ctx.record.evaluation.baselines:
            run.log_metrics(baseline.metrics, prefix=f"baseline_{baseline.name}_")
        run.log_metrics({"improvement_pct": ctx.record.evaluation.improvement_pct})
    if ctx.record.training is not None:
        for trial in ctx.record.training.trials:
            if trial.value is not None:
                run.log_metrics({"trial_value": trial.value}, step=trial.number)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def run_pipeline(
    config: PipelineConfig | str | Path,
    *,
    progress: ProgressCallback | None = None,
) -> RunRecord:
    """Run every stage of the pipeline; the returned record holds each stage's result."""
    config_path = None if isinstance(config, PipelineConfig) else Path(config)
    if not isinstance(config, PipelineConfig):
        config = load_config(config)
    progress = progress or (lambda stage, event: None)
    tracking_uri = tracking_uri_for(config.tracking.uri)
    client = make_client(tracking_uri)
    experiment_id = ensure_experiment(client, config.tracking.experiment or config.name, tracking_uri=tracking_uri)
    record = RunRecord(
        pipeline=config.name,
        started_at=datetime.now(UTC),
        govml_version=govml.__version__,
        config=config.model_dump(mode="json"),
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
    )
    run = TrackedRun(client, experiment_id, run_name=config.name, tags={"govml.pipeline": config.name})
    record.run_id = run.run_id
    flat: dict[str, Any] = {}
    _flatten("", config.model_dump(mode="json", exclude={"governance"}), flat)
    run.log_params(flat, prefix="config.")
    meter = CarbonMeter(config.carbon.country_iso_code, budget_kg=config.carbon.budget_kg)
    with tempfile.TemporaryDirectory(prefix="govml-") as tmp:
        ctx = _Context(config=config, record=record, meter=meter, progress=progress, workdir=Path(tmp))
        meter.start()
        try:
            with _stage(ctx, "data"):
                ctx.data = prepare_data(config.data, config.validation)
                record.data = ctx.data.result
                if config.responsible_ai.privacy.pii_scan:
                    scan = rai_stage.scan_for_personal_data(ctx.data, seed=config.data.seed)
                    record.privacy = PrivacyResult(pii_scan=scan)
                    for warning in scan.warnings:
                        progress("data", f"personal data: {warning}")
            with _stage(ctx, "features"):
                _features_stage(ctx)
            with compute_session(config.compute):  # one Ray, if any, for the trials and the evaluation
                with _stage(ctx, "training") as handle:
                    _training_stage(ctx, handle)
                with _stage(ctx, "evaluation"):
                    _evaluation_stage(ctx)
                with _stage(ctx, "responsible_ai"):
                    _responsible_ai_stage(ctx)
            meter.stop()
            record.carbon = meter.result()
            record.compliance = rai_stage.assess_compliance(config, record)
            record.failed_gates = gate_failures(record.compliance, config.responsible_ai.requirements)
            _log_run_artifacts(ctx, run)
            with _stage(ctx, "registration", measure_energy=False):
                _registration_stage(ctx, run)
            record.status = "gates_failed" if record.failed_gates else "succeeded"
            record.finished_at = datetime.now(UTC)
            report_uri = publish_report(run.client, run.run_id, record, ctx.plots)
            assert record.registration is not None
            set_version_tags(
                run.client, record.pipeline, record.registration.version, {"govml.governance_report": report_uri}
            )
            record.registration.tags["govml.governance_report"] = report_uri
            run.log_json(record.model_dump(mode="json"), "govml/record.json")
            run.finish()
            _audit_run(record, config_path)
        except BaseException:
            meter.stop()
            record.status = "failed"
            record.finished_at = datetime.now(UTC)
            try:
                run.log_json(record.model_dump(mode="json"), "govml/record.json")
            finally:
                run.finish(failed=True)
                _audit_run(record, config_path)
            raise
    return record


def _audit_run(record: RunRecord, config_path: Path | None) -> None:
    """Write the run's entries to the audit trail, all from its final record."""
    log = AuditLog(default_audit_path())
    audit_run_started(log, record, config_path=config_path)
    for stage in record.stages:
        audit_stage(log, record, stage)
    if record.registration is not None:
        audit_registration(log, record)
    audit_run_finished(log, record)
