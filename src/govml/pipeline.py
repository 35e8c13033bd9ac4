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
from govml.carbon import CarbonMeter
from govml.config import PipelineConfig, load_config
from govml.data.prepare import PreparedData, prepare_data
from govml.evaluation.metrics import (
    bootstrap_intervals,
    check_metric,
    compute_metrics,
    default_metric,
    higher_is_better,
    improvement_pct,
)
from govml.features.drift import DriftReference, compute_drift
from govml.features.preprocess import build_preprocessor, split_columns
from govml.record import (
    BaselineResult,
    EvaluationResult,
    FeatureResult,
    MetricWithInterval,
    RunRecord,
    StageStatus,
)
from govml.registry import CANDIDATE, CHAMPION, log_sklearn_model, register_model
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

    spec = get_spec(cfg.model)
    result = run_search(
        spec, search_data, task=task, metric=metric,  # type: ignore[arg-type]
        n_trials=cfg.search.n_trials, timeout_seconds=cfg.search.timeout_seconds,
        seed=ctx.config.data.seed, pruning=cfg.search.pruning, fixed_params=cfg.params,
        over_budget=over_budget,
        on_trial=lambda number, value: ctx.progress("training", f"trial {number}: {value}"),
    )
    ctx.record.training = result
    # The final model: preprocessing and the best estimator refitted on train + validation.
    full = data.train_full
    estimator = spec.build(task, result.best_params, seed=ctx.config.data.seed, n_classes=n_classes)  # type: ignore[arg-type]
    ctx.model = Pipeline([("preprocess", clone(preprocessor)), ("model", estimator)]).fit(full.X, full.y)


def _evaluation_stage(ctx: _Context) -> None:
    assert ctx.data is not None and ctx.model is not None and ctx.record.training is not None
    data, task = ctx.data, ctx.data.task
    metric = ctx.record.training.search_metric
    test = data.test
    scores = predict_scores(ctx.model, test.X, task)  # type: ignore[arg-type]
    ctx.test_scores = scores
    values = compute_metrics(test.y, scores, task)
    intervals = bootstrap_intervals(test.y, scores, task, seed=ctx.config.data.seed)
    full = data.train_full
    baseline_results = []
    for name, factory in baselines(task).items():  # type: ignore[arg-type]
        pipe = Pipeline([("preprocess", clone(ctx.preprocessor)), ("model", factory(ctx.config.data.seed))])
        pipe.fit(full.X, full.y)
        baseline_results.append(
            BaselineResult(name=name, metrics=compute_metrics(test.y, predict_scores(pipe, test.X, task), task))  # type: ignore[arg-type]
        )
    better = higher_is_better(metric)
    best = (max if better else min)(baseline_results, key=lambda b: b.metrics[metric])
    ctx.record.evaluation = EvaluationResult(
        primary_metric=metric,
        higher_is_better=better,
        metrics={k: MetricWithInterval(value=v, ci_low=intervals[k][0], ci_high=intervals[k][1]) for k, v in values.items()},
        baselines=baseline_results,
        best_baseline=best.name,
        improvement_pct=improvement_pct(values[metric], best.metrics[metric], metric),
        evaluated_on="test",
        n_rows=len(test.y),
    )


def _gates(ctx: _Context) -> list[str]:
    """Performance gates; responsible-AI gates are added by their stages."""
    failed = []
    evaluation = ctx.record.evaluation
    perf = ctx.config.responsible_ai.performance
    if evaluation is not None:
        if evaluation.improvement_pct < perf.min_improvement_pct:
            failed.append("performance")
        elif perf.min_metric is not None:
            value = evaluation.metrics[evaluation.primary_metric].value
            if (value < perf.min_metric) if evaluation.higher_is_better else (value > perf.min_metric):
                failed.append("performance")
    return failed


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
    assert ctx.data is not None
    run.log_text(ctx.data.schema.to_json(), "govml/schema.json")
    run.log_text(ctx.drift_reference.to_json(), "govml/drift_reference.json")
    for name, path in ctx.plots.items():
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
            with _stage(ctx, "features"):
                _features_stage(ctx)
            with _stage(ctx, "training") as handle:
                _training_stage(ctx, handle)
            with _stage(ctx, "evaluation"):
                _evaluation_stage(ctx)
            record.failed_gates = _gates(ctx)
            meter.stop()
            record.carbon = meter.result()
            _log_run_artifacts(ctx, run)
            with _stage(ctx, "registration", measure_energy=False):
                _registration_stage(ctx, run)
            record.status = "gates_failed" if record.failed_gates else "succeeded"
            record.finished_at = datetime.now(UTC)
            run.log_json(record.model_dump(mode="json"), "govml/record.json")
            run.finish()
        except BaseException:
            meter.stop()
            record.status = "failed"
            record.finished_at = datetime.now(UTC)
            try:
                run.log_json(record.model_dump(mode="json"), "govml/record.json")
            finally:
                run.finish(failed=True)
            raise
    return record
