"""The pipeline on a real PostgreSQL tracking store with its trials on Ray matches the local SQLite run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from govml.pipeline import run_pipeline
from govml.record import RunRecord
from tests.conftest import EXAMPLES, mlflow_store_uri, write_pipeline

# No wall-clock budget: the same seed then gives the same trials on any machine (docs/scale.md).
GERMAN = {
    "model": "lightgbm", "params": {"n_estimators": 50},
    "search": {"n_trials": 3, "timeout_seconds": None, "metric": "roc_auc"},
}
CREDIT = {
    "model": "lightgbm", "params": {"n_estimators": 100},
    "search": {"n_trials": 4, "timeout_seconds": None, "metric": "roc_auc"},
}


def _run(tmp: Path, example: str, training: dict[str, Any], *, uri: str, engine: str) -> RunRecord:
    folder = tmp / f"{engine}-{uri.split(':')[0]}"
    folder.mkdir()
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)  # a database store keeps artifacts in ./mlruns
    mp.setenv("GOVML_HOME", str(folder / "home"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        path = write_pipeline(folder, example, training=training, tracking={"uri": uri}, compute={"engine": engine})
        return run_pipeline(path)
    finally:
        mp.undo()


def _assert_same_search(remote: RunRecord, local: RunRecord) -> None:
    assert [t.params for t in remote.training.trials] == [t.params for t in local.training.trials]
    assert [t.value for t in remote.training.trials] == [t.value for t in local.training.trials]
    assert remote.training.best_params == local.training.best_params
    # Loosely: a model with n_jobs=2 may sum in another order (random_forest: ~1e-4 in roc_auc).
    for name, metric in local.evaluation.metrics.items():
        assert remote.evaluation.metrics[name].value == pytest.approx(metric.value, abs=2e-3)


def _assert_registered(record: RunRecord, uri: str, name: str) -> None:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(name, "candidate")
    assert str(version.version) == record.registration.version == "1"
    assert version.tags["govml.run_id"] == record.run_id
    assert version.tags == record.registration.tags
    roc_auc = record.evaluation.metrics["roc_auc"].value
    assert float(version.tags["govml.metric.roc_auc"]) == pytest.approx(roc_auc, rel=1e-5)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.params["config.compute.engine"] == "ray"


def test_german_credit_on_postgres_and_ray_matches_sqlite_local(
    tmp_path: Path, postgres: Any, ray_cluster: Any
) -> None:
    uri = postgres.uri("german")
    local = _run(tmp_path, "german-credit", GERMAN, uri=f"sqlite:///{tmp_path / 'local.db'}", engine="local")
    remote = _run(tmp_path, "german-credit", GERMAN, uri=uri, engine="ray")
    assert remote.tracking_uri == uri
    _assert_same_search(remote, local)
    _assert_registered(remote, uri, "german-credit")
    # The version registered in PostgreSQL loads and predicts like the local one.
    with mlflow_store_uri(uri):
        model = mlflow.sklearn.load_model("models:/german-credit@candidate")
    rows = pd.read_csv(EXAMPLES / "german-credit/data/german.csv.gz").drop(columns=["credit"]).head(20)
    assert model.predict(rows).shape == (20,)


@pytest.mark.slow
def test_credit_risk_on_postgres_and_ray_matches_sqlite_local(
    tmp_path: Path, postgres: Any, ray_cluster: Any
) -> None:
    uri = postgres.uri("credit_risk")
    local = _run(tmp_path, "credit-risk", CREDIT, uri=f"sqlite:///{tmp_path / 'local.db'}", engine="local")
    remote = _run(tmp_path, "credit-risk", CREDIT, uri=uri, engine="ray")
    _assert_same_search(remote, local)
    _assert_registered(remote, uri, "credit-risk")
    assert remote.evaluation.metrics["accuracy"].value > 0.85
