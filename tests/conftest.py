"""Shared fixtures: an isolated GOVML_HOME and pipeline files pointing at the shipped data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def govml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh GOVML_HOME (and so a fresh SQLite MLflow store) per test."""
    home = tmp_path / "govml-home"
    monkeypatch.setenv("GOVML_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def write_pipeline(directory: Path, example: str, **overrides: Any) -> Path:
    """Copy an example's pipeline.yaml into ``directory`` with data paths made absolute.

    ``overrides`` replace top-level sections key by key (one level deep).
    """
    source = EXAMPLES / example / "pipeline.yaml"
    config = yaml.safe_load(source.read_text())
    for key in ("train", "test"):
        if config["data"].get(key):
            config["data"][key] = str((source.parent / config["data"][key]).resolve())
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    path = directory / f"{example}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def pipeline_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(example: str, **overrides: Any) -> Path:
        return write_pipeline(tmp_path, example, **overrides)

    return make


@contextmanager
def mlflow_store_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at ``uri`` for a block, then restore
    them *and* the environment variables MLflow's setters write (``set_registry_uri``
    exports MLFLOW_REGISTRY_URI and never removes it, which leaks into later tests)."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
