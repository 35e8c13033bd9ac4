"""The search's trials as Ray tasks give the same trials and best parameters as the local search."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.datasets import make_classification

from govml.compute.ray_session import ray_connection
from govml.compute.trials import RayTrialExecutor, trial_executor
from govml.config import ComputeConfig, PipelineConfig
from govml.errors import ConfigError
from govml.training.estimators import get_spec
from govml.training.search import SearchData, run_search

ENQUEUED = [
    {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
     "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0},
    {"n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10,
     "subsample": 0.9, "colsample_bytree": 0.7, "reg_lambda": 0.1},
]


@pytest.fixture(scope="module")
def data() -> SearchData:
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    return SearchData(X_train=X[:400], y_train=y[:400], X_valid=X[400:], y_valid=y[400:], n_classes=2)


def _search(data: SearchData, **extra: Any):  # type: ignore[no-untyped-def]
    return run_search(
        get_spec("lightgbm"), data, task="classification", metric="roc_auc", n_trials=5,
        timeout_seconds=None, seed=3, enqueued=ENQUEUED, fixed_params={"n_estimators": 60}, **extra,
    )


def test_ray_trials_match_the_local_search(data: SearchData, ray_cluster: Any) -> None:
    local = _search(data)
    seen: list[int] = []
    with trial_executor(ComputeConfig(engine="ray")) as executor:
        assert isinstance(executor, RayTrialExecutor) and executor.parallelism == 2
        remote = _search(data, executor=executor, on_trial=lambda number, value: seen.append(number))
    assert ray_cluster.is_initialized()  # a Ray the caller started is left running
    assert [t.params for t in remote.trials] == [t.params for t in local.trials]
    assert [t.value for t in remote.trials] == [t.value for t in local.trials]
    assert remote.best_params == local.best_params
    assert remote.best_validation_score == local.best_validation_score
    assert remote.trials[0].params["num_leaves"] == 31  # the enqueued trials ran first
    assert sorted(seen) == [0, 1, 2, 3, 4] and remote.stopped_by == "n_trials"
    assert len({tuple(sorted(t.params.items())) for t in remote.trials}) == 5


def test_a_failing_trial_on_a_worker_stops_the_search_with_its_error(data: SearchData, ray_cluster: Any) -> None:
    executor = RayTrialExecutor(parallelism=2)
    with pytest.raises(Exception, match="num_leaves"):
        run_search(
            get_spec("lightgbm"), data, task="classification", metric="roc_auc", n_trials=2,
            timeout_seconds=None, seed=0, fixed_params={"num_leaves": -3, "n_estimators": 5}, executor=executor,
        )


def test_over_budget_stops_the_batched_search(data: SearchData, ray_cluster: Any) -> None:
    calls: list[int] = []

    def over_budget() -> bool:
        calls.append(1)
        return len(calls) >= 3

    result = _search(data, executor=RayTrialExecutor(parallelism=2), over_budget=over_budget)
    # Batches of two: the budget runs out in the second batch, so no third batch is asked.
    assert result.stopped_by == "carbon_budget" and len(result.trials) == 4


def test_local_engine_needs_no_ray() -> None:
    with trial_executor(ComputeConfig()) as executor:
        assert executor is None


def test_num_cpus_with_a_cluster_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="compute.num_cpus"), ray_connection(address="auto", num_cpus=2):
        pass


def test_compute_section_is_validated() -> None:
    base = {"name": "x", "data": {"train": "t.csv", "target": "y"}}
    config = PipelineConfig.model_validate({**base, "compute": {"engine": "ray", "address": "ray://head:10001"}})
    assert config.compute.engine == "ray" and config.compute.address == "ray://head:10001"
    assert PipelineConfig.model_validate(base).compute.engine == "local"
    for bad in ({"engine": "spark"}, {"engine": "ray", "workers": 3}, {"num_cpus": 0}):
        with pytest.raises(ValueError):
            PipelineConfig.model_validate({**base, "compute": bad})
