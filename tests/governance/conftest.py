"""Real MLflow store, real registered models and a real pipeline run for the governance tests.

Creating a SQLite MLflow store takes seconds, so the tests of this package share one,
under a package-wide GOVML_HOME (restored when the package's tests end); each test
registers models under names no other test uses.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow.sklearn
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from govml.governance.audit import AuditLog
from govml.paths import default_tracking_uri
from govml.record import RunRecord
from tests.conftest import write_pipeline

RegisterVersion = Callable[..., ModelVersion]
_names = itertools.count()


@pytest.fixture(scope="package")
def governance_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("govml-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GOVML_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        yield home


def _migrated_sqlite_template(cache: pytest.Cache) -> Path:
    """An empty MLflow SQLite store at the current schema, built once per MLflow version
    and kept in pytest's cache: creating one runs every schema migration (~10 s of CPU)."""
    template = cache.mkdir(f"mlflow-{mlflow.__version__}-sqlite") / "mlflow.db"
    if not template.exists():
        building = template.with_name(f"building-{os.getpid()}.db")
        uri = f"sqlite:///{building}"
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
        MlflowClient(tracking_uri=uri).search_experiments()
        os.replace(building, template)  # atomic: concurrent sessions never see half a file
    return template


@pytest.fixture(scope="package")
def mlflow_store(governance_home: Path, pytestconfig: pytest.Config) -> tuple[MlflowClient, str]:
    """The SQLite tracking + registry store of GOVML_HOME, and an experiment for the tests."""
    assert pytestconfig.cache is not None
    shutil.copyfile(_migrated_sqlite_template(pytestconfig.cache), governance_home / "mlflow.db")
    uri = default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment(
        "governance-tests", artifact_location=(governance_home / "mlruns").as_uri()
    )
    return client, experiment_id


@pytest.fixture(scope="package")
def saved_sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real classifier trained on breast cancer and saved in MLflow format."""
    features, target = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(features, target)
    path = tmp_path_factory.mktemp("model") / "model"
    # Explicit requirements and cloudpickle, as govml.registry does: inferring requirements
    # imports every installed package, and the default skops format scans all estimators.
    mlflow.sklearn.save_model(
        model,
        path,
        pip_requirements=["scikit-learn"],
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    return path


@pytest.fixture(scope="package")
def real_run(
    mlflow_store: tuple[MlflowClient, str], tmp_path_factory: pytest.TempPathFactory
) -> RunRecord:
    """`govml run` on the German credit example (small search), in the shared store."""
    from govml.pipeline import run_pipeline

    directory = tmp_path_factory.mktemp("pipeline")
    path = write_pipeline(
        directory,
        "german-credit",
        training={
            "model": "logistic_regression",
            "search": {"n_trials": 2, "timeout_seconds": 30, "metric": "roc_auc"},
        },
    )
    return run_pipeline(path)


@pytest.fixture
def mlflow_client(mlflow_store: tuple[MlflowClient, str]) -> MlflowClient:
    return mlflow_store[0]


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses (the store is shared)."""
    return f"model-{next(_names)}"


@pytest.fixture
def audit_log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl", actor="tester@host")


@pytest.fixture
def register_version(
    mlflow_store: tuple[MlflowClient, str], saved_sklearn_model: Path
) -> RegisterVersion:
    """Log the saved model in a new run and register it as a new version with ``tags``."""
    client, experiment_id = mlflow_store

    def register(name: str, tags: dict[str, str]) -> ModelVersion:
        run = client.create_run(experiment_id)
        client.log_artifacts(run.info.run_id, str(saved_sklearn_model), "model")
        client.set_terminated(run.info.run_id)
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name)
        return client.create_model_version(
            name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
        )

    return register


@pytest.fixture(scope="package")
def report_inputs(
    real_run: RunRecord,
    mlflow_store: tuple[MlflowClient, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The real run's record and plots as `govml report` loads them from MLflow. Where the
    pipeline has not filled them itself, the responsible-AI results of the registered model
    are computed here with govml's own stages: per-group fairness on the test split,
    SHAP explanations, and a threshold-optimizer mitigation on sex, with their plots."""
    from govml.config import PipelineConfig
    from govml.data.prepare import prepare_data
    from govml.evaluation.explanations import explain_model
    from govml.evaluation.fairness import assess_fairness, plot_selection_rates
    from govml.governance.report import load_registered_run
    from govml.mitigation.fairness import mitigate

    client = mlflow_store[0]
    workdir = tmp_path_factory.mktemp("report-inputs")
    loaded = load_registered_run(client, f"{real_run.pipeline}@candidate", workdir)
    record, plots = dict(loaded.record), dict(loaded.plots)
    config = PipelineConfig.model_validate(record["config"])
    data = prepare_data(config.data, config.validation)
    model = mlflow.sklearn.load_model(
        client.download_artifacts(loaded.run_id, "model", str(workdir))
    )
    if record.get("fairness") is None:
        attributes = config.responsible_ai.sensitive_attributes
        fairness = assess_fairness(
            data.test.y,
            model.predict(data.test.X),
            data.test.X[attributes].reset_index(drop=True),
            min_group_size=config.responsible_ai.fairness.min_group_size,
        )
        record["fairness"] = fairness.model_dump(mode="json")
        plots["fairness_selection_rates"] = plot_selection_rates(fairness, workdir / "fairness.png")
    if record.get("explanations") is None:
        explanations = explain_model(model, data.test.X, max_rows=200, out_dir=workdir)
        record["explanations"] = explanations.model_dump(mode="json")
        plots.update({Path(p).stem: Path(p) for p in explanations.plots})
    if record.get("mitigation") is None:
        mitigation = mitigate(
            model,
            data.train.X,
            data.train.y,
            data.valid.X,
            data.valid.y,
            "sex",
            methods=["threshold_optimizer"],
            out_dir=workdir,
        )
        record["mitigation"] = mitigation.model_dump(mode="json")
        if mitigation.plot:
            plots[Path(mitigation.plot).stem] = Path(mitigation.plot)
    return record, plots
