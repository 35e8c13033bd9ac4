"""SHAP values and fairness counts split into Ray tasks equal the in-process results, on real data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from govml import responsible_ai as rai_stage
from govml.compute.distributed_eval import RayEvaluation, evaluation_executor, row_chunks
from govml.config import ComputeConfig, load_config
from govml.data.prepare import prepare_data
from govml.evaluation.explanations import build_row_explainer, explain_model
from govml.evaluation.fairness import assess_fairness
from govml.pipeline import run_pipeline
from tests.conftest import EXAMPLES, write_pipeline
from tests.evaluation.datasets import adult, fit_pipeline


@pytest.fixture(scope="module")
def adult_model() -> Any:
    X, y = adult(3000, seed=5)
    return fit_pipeline(X, y, LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1, random_state=0))


@pytest.fixture(scope="module")
def adult_test() -> tuple[Any, np.ndarray]:
    return adult(split="test")  # Adult's official test split: 16,281 rows


def test_fairness_counts_summed_over_ray_tasks_equal_metric_frame_on_adult(
    ray_cluster: Any, adult_model: Any, adult_test: tuple[Any, np.ndarray]
) -> None:
    X, y = adult_test
    predictions = adult_model.predict(X)
    # sex, race (small groups in sex x race) and age, cut into quartiles in the driver.
    sensitive = X[["sex", "race", "age"]]
    options: dict[str, Any] = {"min_group_size": 30, "eo_difference_max": 0.2}
    local = assess_fairness(y, predictions, sensitive, **options)
    evaluator = RayEvaluation(parallelism=2)
    remote = assess_fairness(y, predictions, sensitive, group_tables=evaluator.group_tables, **options)

    assert [run.tasks for run in evaluator.runs] == [2], "the counts were not split into two Ray tasks"
    assert evaluator.runs[0].rows == len(y) == 16281
    intersections = [a for a in remote.attributes if a.intersection]
    assert len(intersections) == 3 and any(g.small for a in intersections for g in a.groups)
    for mine, theirs in zip(remote.attributes, local.attributes, strict=True):
        assert [g.group for g in mine.groups] == [g.group for g in theirs.groups]  # MetricFrame's order
        assert [(g.count, g.small) for g in mine.groups] == [(g.count, g.small) for g in theirs.groups]
        assert mine.excluded_groups == theirs.excluded_groups and mine.status == theirs.status
        for a, b in zip(mine.groups, theirs.groups, strict=True):
            for name in ("selection_rate", "accuracy", "true_positive_rate", "false_positive_rate"):
                x, z = getattr(a, name), getattr(b, name)
                assert (x is None and z is None) or abs(x - z) <= 1e-12, (mine.attribute, a.group, name)
        for name in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"):
            x, z = getattr(mine, name), getattr(theirs, name)
            assert (x is None and z is None) or abs(x - z) <= 1e-12, (mine.attribute, name)
    assert remote == local  # and the whole report, field by field


@pytest.mark.parametrize(
    ("estimator", "rows", "kind"),
    [
        (LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1, random_state=0), 300, "tree"),
        (LogisticRegression(max_iter=300), 300, "linear"),
        (GaussianNB(), 24, "kernel"),  # hundreds of model calls per row: few rows, small tasks
    ],
    ids=["tree", "linear", "kernel"],
)
def test_shap_in_ray_tasks_equals_shap_in_process(
    ray_cluster: Any, adult_test: tuple[Any, np.ndarray], estimator: Any, rows: int, kind: str
) -> None:
    X_train, y_train = adult(2000, seed=7)
    model = fit_pipeline(X_train, y_train, estimator)
    X = adult_test[0].sample(rows, random_state=3)
    explainer = build_row_explainer(model, X_train.head(100))
    assert explainer.kind == kind
    local = explainer.explain(X)
    evaluator = RayEvaluation(parallelism=2, min_rows_per_task=10)
    remote = evaluator.explain_rows(explainer, X)

    assert [run.tasks for run in evaluator.runs] == [2], "the rows were not split into two Ray tasks"
    assert remote.values.shape == local.values.shape == (rows, 13)
    assert np.abs(remote.values - local.values).max() <= 1e-9
    assert np.abs(remote.base_values - local.base_values).max() <= 1e-9
    assert remote.feature_names == local.feature_names and remote.output == local.output
    # Rows in order: each row's attributions add up to its own prediction.
    margin = local.base_values + local.values.sum(axis=1)
    assert np.abs(remote.base_values + remote.values.sum(axis=1) - margin).max() <= 1e-9


def test_explain_model_with_ray_tasks_reports_the_same_importance(
    ray_cluster: Any, adult_model: Any, adult_test: tuple[Any, np.ndarray]
) -> None:
    X = adult_test[0]
    local = explain_model(adult_model, X, max_rows=200, seed=1)
    evaluator = RayEvaluation(parallelism=2)
    remote = explain_model(adult_model, X, max_rows=200, seed=1, explain_rows=evaluator.explain_rows)
    assert evaluator.runs[0].tasks == 2 and evaluator.runs[0].rows == 200
    assert [i.feature for i in remote.importance] == [i.feature for i in local.importance]
    for mine, theirs in zip(remote.importance, local.importance, strict=True):
        assert abs(mine.mean_abs_shap - theirs.mean_abs_shap) <= 1e-9


def test_small_sets_stay_in_the_driver_and_chunks_cover_every_row_in_order() -> None:
    assert row_chunks(99, 8) == [slice(0, 99)]  # under two tasks' worth of rows: no Ray at all
    assert row_chunks(143, 2) == [slice(0, 72), slice(72, 143)]  # healthcare's test split
    assert len(row_chunks(16281, 24)) == 24 and len(row_chunks(16281, 24, min_rows=1000)) == 16
    chunks = row_chunks(1_000_000, 2, max_rows=200_000)
    assert len(chunks) == 5 and chunks[0].start == 0 and chunks[-1].stop == 1_000_000
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    # Without a cluster (no ray_cluster fixture), a small set is computed in process.
    X, y = adult(80, seed=2)
    model = fit_pipeline(X, y, LogisticRegression(max_iter=300))
    evaluator = RayEvaluation(parallelism=2)
    explained = evaluator.explain_rows(build_row_explainer(model, X), X)
    tables = evaluator.group_tables(y, model.predict(X), [X[["sex"]].astype(str)])
    assert explained.values.shape == (80, 13) and list(tables[0].index) == ["Female", "Male"]
    assert evaluator.runs == []


def test_pipeline_stages_use_ray_tasks_only_with_engine_ray(ray_cluster: Any, tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "german-credit" / "pipeline.yaml")
    data = prepare_data(config.data, config.validation)
    rai = config.responsible_ai
    model = fit_pipeline(data.train.X, data.train.y, LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1))
    predictions = model.predict(data.test.X)
    reports = {}
    for engine in ("local", "ray"):
        with evaluation_executor(ComputeConfig(engine=engine)) as evaluator:
            assert (evaluator is None) == (engine == "local")
            fairness = rai_stage.assess_group_fairness(rai, data, predictions, plot_path=None, evaluator=evaluator)
            explained = rai_stage.explain(rai, data, model, out_dir=tmp_path / engine, seed=0, evaluator=evaluator)
        reports[engine] = (fairness, explained)
    (fair_local, shap_local), (fair_ray, shap_ray) = reports["local"], reports["ray"]
    assert ray_cluster.is_initialized()  # a Ray the caller started is left running
    assert fair_ray.notes[:-1] == fair_local.notes
    assert fair_ray.notes[-1].startswith(f"fairness counts of {len(data.test.y)} rows computed in 2 Ray tasks")
    assert fair_ray.model_copy(update={"notes": fair_local.notes}) == fair_local
    assert shap_ray.notes[:-1] == shap_local.notes
    assert shap_ray.notes[-1].startswith(f"SHAP values of {shap_local.n_rows} rows computed in 2 Ray tasks")
    assert [i.feature for i in shap_ray.importance] == [i.feature for i in shap_local.importance]
    for mine, theirs in zip(shap_ray.importance, shap_local.importance, strict=True):
        assert abs(mine.mean_abs_shap - theirs.mean_abs_shap) <= 1e-9


def test_the_local_engine_does_not_import_ray() -> None:
    code = (
        "import sys\n"
        "import govml.pipeline\n"
        "from govml.compute.distributed_eval import evaluation_executor\n"
        "from govml.compute.ray_session import compute_session\n"
        "from govml.config import ComputeConfig\n"
        "with compute_session(ComputeConfig()), evaluation_executor(ComputeConfig()) as evaluator:\n"
        "    assert evaluator is None\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_german_credit_run_on_ray_splits_fairness_and_shap_like_the_local_run(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = {"model": "lightgbm", "params": {"n_estimators": 50},
                "search": {"n_trials": 2, "timeout_seconds": None, "metric": "roc_auc"}}
    records = {}
    for engine in ("local", "ray"):
        monkeypatch.setenv("GOVML_HOME", str(tmp_path / engine))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        folder = tmp_path / f"yaml-{engine}"
        folder.mkdir()
        records[engine] = run_pipeline(
            write_pipeline(folder, "german-credit", training=training, compute={"engine": engine})
        )
    local, remote = records["local"], records["ray"]
    assert remote.training.best_params == local.training.best_params
    assert remote.fairness.notes[-1].startswith("fairness counts of 250 rows computed in 2 Ray tasks")
    assert remote.fairness.model_copy(update={"notes": local.fairness.notes, "plot": local.fairness.plot}) == (
        local.fairness
    )
    assert remote.explanations.notes[-1].startswith("SHAP values of 250 rows computed in 2 Ray tasks")
    assert [i.feature for i in remote.explanations.importance] == [i.feature for i in local.explanations.importance]
