"""Resolve ``govml serve MODEL`` to a registry or run URI and load the model with its govml artifacts.

Only ``models:/`` and ``runs:/`` URIs (and the ``name@alias`` / ``name/version``
shortcuts) are accepted: loading an sklearn model unpickles it, and govml unpickles
only what the tracking store or registry holds, never a file from a user's path.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.signature import ModelSignature

from govml.errors import GovmlError
from govml.features.drift import DriftReference

SCHEMA_ARTIFACT = "govml/schema.json"
DRIFT_ARTIFACT = "govml/drift_reference.json"
RECORD_ARTIFACT = "govml/record.json"

_ALIAS = re.compile(r"^(?P<name>[^/@:]+)@(?P<alias>[^/@]+)$")
_VERSION = re.compile(r"^(?P<name>[^/@:]+)/(?P<version>\d+)$")


class ModelLoadError(GovmlError):
    """The model spec does not resolve to a loadable model in the registry or tracking store."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: the URI to load and what the registry knows about it."""

    uri: str
    name: str
    version: str | None
    run_id: str | None
    location: str = field(default="", compare=False)  # where the artifacts are stored


@dataclass
class LoadedModel:
    """A served model: the estimator (sklearn flavour) or pyfunc, its signature and govml artifacts."""

    ref: ModelRef
    sklearn_model: Any | None
    pyfunc_model: Any | None
    signature: ModelSignature | None
    input_example: pd.DataFrame | None
    schema_json: str | None
    drift_reference: DriftReference | None
    record: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        if self.record and (self.record.get("data") or {}).get("task"):
            return str(self.record["data"]["task"])
        estimator = self.sklearn_model
        return "classification" if estimator is not None and hasattr(estimator, "predict_proba") else "regression"

    @property
    def class_names(self) -> list[str]:
        """Human-readable class names in ``predict_proba`` column order, when the record has them."""
        if self.record and (self.record.get("data") or {}).get("classes"):
            return [str(c) for c in self.record["data"]["classes"]]
        return []


def resolve_model(spec: str, client: MlflowClient) -> ModelRef:
    """Turn ``name@alias``, ``name/version``, ``models:/...`` or ``runs:/...`` into a :class:`ModelRef`."""
    spec = spec.strip()
    body = spec[len("models:/") :] if spec.startswith("models:/") else None
    try:
        if spec.startswith("runs:/"):
            parts = spec[len("runs:/") :].split("/", 1)
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ModelLoadError(f"{spec!r}: a runs URI is runs:/<run_id>/<artifact path>")
            run = client.get_run(parts[0])
            location = f"{run.info.artifact_uri.rstrip('/')}/{parts[1].strip('/')}"
            name = parts[1].rstrip("/").split("/")[-1]
            return ModelRef(uri=spec, name=name, version=None, run_id=parts[0], location=location)
        target = body if body is not None else spec
        if match := _ALIAS.match(target):
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
        elif match := _VERSION.match(target):
            mv = client.get_model_version(match["name"], match["version"])
        elif body is not None and body.startswith("m-"):
            logged = client.get_logged_model(body.split("/")[0])
            return ModelRef(
                uri=spec, name=logged.name, version=None, run_id=logged.source_run_id,
                location=logged.artifact_location,
            )
        else:
            raise ModelLoadError(
                f"{spec!r} is not a model govml can serve: use NAME@ALIAS, NAME/VERSION, "
                "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH "
                "(paths and other URIs are refused: govml loads only what the registry holds)"
            )
        location = client.get_model_version_download_uri(mv.name, mv.version)
        if location.startswith("models:/m-"):  # a version of a model logged with MLflow 3's log_model
            location = client.get_logged_model(location[len("models:/") :].split("/")[0]).artifact_location
    except MlflowException as exc:
        raise ModelLoadError(f"{spec!r}: {exc.message}") from None
    return ModelRef(
        uri=f"models:/{mv.name}/{mv.version}", name=mv.name, version=str(mv.version), run_id=mv.run_id,
        location=location,
    )


def _run_text(client: MlflowClient, run_id: str | None, path: str, workdir: Path) -> str | None:
    if run_id is None:
        return None
    try:
        local = client.download_artifacts(run_id, path, str(workdir))
    except (MlflowException, OSError):
        return None
    return Path(local).read_text(encoding="utf-8")


def load_model(spec: str, *, tracking_uri: str) -> LoadedModel:
    """Load the model behind ``spec`` from the tracking store at ``tracking_uri``."""
    import mlflow.pyfunc
    import mlflow.sklearn

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = resolve_model(spec, client)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="govml-serve-") as tmp:
        workdir = Path(tmp)
        try:
            # The resolved storage location, not the models:/ URI: MLflow would resolve that
            # through its global default registry, not ``tracking_uri``.
            local = download_artifacts(
                artifact_uri=ref.location, dst_path=str(workdir / "model"), tracking_uri=tracking_uri
            )
            meta = Model.load(local)
        except (MlflowException, OSError) as exc:
            raise ModelLoadError(f"cannot download {ref.uri}: {exc}") from None
        sklearn_model = pyfunc_model = None
        if "sklearn" in meta.flavors:
            sklearn_model = mlflow.sklearn.load_model(local)
        elif "python_function" in meta.flavors:
            pyfunc_model = mlflow.pyfunc.load_model(local)
            notes.append("not an sklearn-flavour model: served through MLflow pyfunc, no fast path")
        else:
            raise ModelLoadError(f"{ref.uri} has neither an sklearn nor a python_function flavour")
        try:
            example = meta.load_input_example(local)
        except (MlflowException, OSError, ValueError):
            example = None
        schema_json = _run_text(client, ref.run_id, SCHEMA_ARTIFACT, workdir)
        drift_text = _run_text(client, ref.run_id, DRIFT_ARTIFACT, workdir)
        record_text = _run_text(client, ref.run_id, RECORD_ARTIFACT, workdir)
    if schema_json is None:
        notes.append(f"no {SCHEMA_ARTIFACT} in the model's run: inputs are validated against the signature only")
    if drift_text is None:
        notes.append(f"no {DRIFT_ARTIFACT} in the model's run: live drift is unavailable")
    return LoadedModel(
        ref=ref,
        sklearn_model=sklearn_model,
        pyfunc_model=pyfunc_model,
        signature=meta.signature,
        input_example=example if isinstance(example, pd.DataFrame) else None,
        schema_json=schema_json,
        drift_reference=DriftReference.from_json(drift_text) if drift_text else None,
        record=json.loads(record_text) if record_text else None,
        notes=notes,
    )
