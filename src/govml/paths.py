"""Where govml keeps its local state (``GOVML_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path


def govml_home() -> Path:
    """Return ``$GOVML_HOME`` (default ``./.govml``) as an absolute path, creating it."""
    home = Path(os.environ.get("GOVML_HOME") or ".govml").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_tracking_uri() -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` or a SQLite store under GOVML_HOME."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{govml_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    """Where runs store artifacts when govml created the tracking store itself."""
    return (govml_home() / "mlruns").as_uri()
