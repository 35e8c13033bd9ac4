"""Experiment tracking with an explicit MlflowClient (no fluent, global active run)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from govml.paths import default_artifact_root, default_tracking_uri

_MAX_PARAM_LENGTH = 6000


def tracking_uri_for(configured: str | None) -> str:
    """The YAML's tracking URI wins, then MLFLOW_TRACKING_URI, then SQLite under GOVML_HOME."""
    return configured or default_tracking_uri()


def make_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(client: MlflowClient, name: str, *, tracking_uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_location = default_artifact_root() if tracking_uri == default_tracking_uri() else None
    return client.create_experiment(name, artifact_location=artifact_location)


class TrackedRun:
    """One MLflow run, logged through the client with its run id."""

    def __init__(self, client: MlflowClient, experiment_id: str, *, run_name: str, tags: Mapping[str, str]):
        self.client = client
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri

    def log_params(self, params: Mapping[str, Any], *, prefix: str = "") -> None:
        items = [
            Param(f"{prefix}{key}", str(value)[:_MAX_PARAM_LENGTH]) for key, value in sorted(params.items())
        ]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0, prefix: str = "") -> None:
        import time

        now = int(time.time() * 1000)
        items = [
            Metric(f"{prefix}{key}", float(value), now, step)
            for key, value in sorted(metrics.items())
            if value is not None and math.isfinite(float(value))
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_json(self, payload: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent or ""))

    def log_text(self, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent or ""))

    def log_file(self, path: Path, artifact_dir: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_dir(self, path: Path, artifact_dir: str) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_dir)

    def finish(self, *, failed: bool = False) -> None:
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
        self.client.set_terminated(self.run_id, status=status)
