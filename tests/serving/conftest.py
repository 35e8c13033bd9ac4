"""Real registered models in a temporary MLflow store, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from govml.config import ColumnConstraint
from govml.data.validation import build_schema
from govml.features.drift import DriftReference
from govml.features.preprocess import build_preprocessor, split_columns
from govml.serving.app import ServeSettings, create_app
from govml.serving.loading import LoadedModel, load_model
from govml.serving.monitoring import CarbonSettings
from tests.conftest import mlflow_store_uri

DATA = Path(__file__).resolve().parents[2] / "examples" / "credit-risk" / "data"
TARGET = "income"
CONSTRAINTS = {
    "age": ColumnConstraint(min=17, max=100, nullable=False),
    "sex": ColumnConstraint(allowed=["Male", "Female"]),
    "hours_per_week": ColumnConstraint(min=1, max=99),
}


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    home: Path
    client: MlflowClient


@dataclass(frozen=True)
class AdultData:
    train_X: pd.DataFrame
    train_y: pd.Series
    test_X: pd.DataFrame


@pytest.fixture(scope="session")
def adult() -> AdultData:
    train = pd.read_csv(DATA / "adult_train.csv.gz").sample(6000, random_state=0).reset_index(drop=True)
    test = pd.read_csv(DATA / "adult_test.csv.gz").sample(2000, random_state=1).reset_index(drop=True)
    y = (train.pop(TARGET) == ">50K").astype(int)
    return AdultData(train_X=train, train_y=y, test_X=test.drop(columns=TARGET))


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    home = tmp_path_factory.mktemp("govml_home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_experiment("serving-tests", artifact_location=(home / "mlruns").as_uri())
    return Store(tracking_uri=uri, home=home, client=client)


def _log_model(store: Store, model: Pipeline, example: pd.DataFrame, *, govml_artifacts: dict[str, str]) -> str:
    """Log like govml.registry does (client API, sklearn flavour) and return the run id."""
    experiment = store.client.get_experiment_by_name("serving-tests")
    run = store.client.create_run(experiment.experiment_id)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.sklearn.save_model(
            model, f"{tmp}/model", signature=infer_signature(example, model.predict(example)),
            input_example=example, serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        store.client.log_artifacts(run_id, f"{tmp}/model", "model")
        for name, text in govml_artifacts.items():
            Path(tmp, name).write_text(text, encoding="utf-8")
            store.client.log_artifact(run_id, str(Path(tmp, name)), "govml")
    store.client.set_terminated(run_id)
    return run_id


def _register(store: Store, name: str, run_id: str, alias: str) -> str:
    try:
        store.client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        store.client.create_registered_model(name)
    source = f"{store.client.get_run(run_id).info.artifact_uri}/model"
    version = store.client.create_model_version(name, source=source, run_id=run_id)
    store.client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


@pytest.fixture(scope="session")
def adult_pipeline(adult: AdultData) -> Pipeline:
    """govml's preprocessing and a LightGBM classifier, fitted on a sample of Adult."""
    columns = split_columns(adult.train_X)
    model = Pipeline(
        [
            ("preprocess", build_preprocessor(columns)),
            ("model", lgb.LGBMClassifier(n_estimators=60, num_leaves=15, verbose=-1, n_jobs=1)),
        ]
    )
    return model.fit(adult.train_X, adult.train_y)


@pytest.fixture(scope="session")
def registered(store: Store, adult: AdultData, adult_pipeline: Pipeline) -> str:
    """``adult@candidate`` with govml/schema.json and govml/drift_reference.json in its run."""
    schema = build_schema(adult.train_X, CONSTRAINTS)
    reference = DriftReference.from_frame(adult.train_X)
    run_id = _log_model(
        store, adult_pipeline, adult.train_X.head(5),
        govml_artifacts={"schema.json": schema.to_json(), "drift_reference.json": reference.to_json()},
    )
    _register(store, "adult", run_id, "candidate")
    return "adult@candidate"


@pytest.fixture(scope="session")
def foreign_model(store: Store, adult: AdultData) -> str:
    """A plain sklearn pipeline logged with ``mlflow.sklearn.log_model``: no govml artifacts at all."""
    numeric = ["age", "education_num", "hours_per_week", "capital_gain"]
    categorical = ["workclass", "sex"]
    frame = adult.train_X[numeric + categorical].astype({c: object for c in categorical})
    model = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
                        ("cat", Pipeline([
                            ("impute", SimpleImputer(strategy="most_frequent")),
                            ("encode", OneHotEncoder(handle_unknown="ignore")),
                        ]), categorical),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, adult.train_y)
    with mlflow_store_uri(store.tracking_uri):
        experiment = store.client.get_experiment_by_name("serving-tests")
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=frame.head(3),
                signature=infer_signature(frame.head(3), model.predict(frame.head(3))),
                registered_model_name="foreign",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
    return f"foreign/{info.registered_model_version}"


@pytest.fixture(scope="session")
def loaded(store: Store, registered: str) -> LoadedModel:
    return load_model(registered, tracking_uri=store.tracking_uri)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    app: object
    home: Path


def carbon() -> CarbonSettings:
    return CarbonSettings(cpu_watts=15.0, grid_g_per_kwh=400.0, country_iso_code="USA")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start real uvicorn servers for loaded models; all are stopped at the end of the test."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(model: LoadedModel, **overrides: object) -> RunningServer:
        home = Path(str(overrides.pop("home", tmp_path)))
        settings = ServeSettings(home=home, carbon=carbon(), **overrides)  # type: ignore[arg-type]
        app = create_app(model, settings)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return RunningServer(url=f"http://127.0.0.1:{port}", app=app, home=home)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def server(make_server, loaded: LoadedModel) -> RunningServer:  # type: ignore[no-untyped-def]
    return make_server(loaded)
