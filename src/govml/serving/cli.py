"""``govml serve`` and ``govml monitor``: mounted on the main app by :func:`register`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from govml.errors import DataError, GovmlError

if TYPE_CHECKING:
    from govml.features.drift import DriftReport
    from govml.serving.loading import LoadedModel
    from govml.serving.monitoring import CarbonSettings

console = Console()


def carbon_settings(country: str | None, cpu_watts: float | None, record: dict | None) -> CarbonSettings:
    """Grid intensity of the country (flag, run record, or USA) and the power of one busy core."""
    from govml.carbon import grid_intensity_g_per_kwh
    from govml.serving.monitoring import DEFAULT_CPU_WATTS, CarbonSettings

    recorded = ((record or {}).get("carbon") or {}).get("country_iso_code")
    code = (country or os.environ.get("GOVML_COUNTRY") or recorded or "USA").upper()
    watts = cpu_watts if cpu_watts is not None else float(os.environ.get("GOVML_CPU_WATTS", DEFAULT_CPU_WATTS))
    return CarbonSettings(cpu_watts=watts, grid_g_per_kwh=grid_intensity_g_per_kwh(code), country_iso_code=code)


LOG_URL_HELP = (
    "Prediction log: postgresql://user@host:5432/db (shared by replicas) or sqlite:///file.db;"
    " default: $GOVML_HOME/predictions.db."
)


def prediction_log_target(log_url: str | None) -> str | Path:
    """The prediction log named by ``--log-url`` (checked, ConfigError when malformed), else the default file."""
    from govml.paths import govml_home
    from govml.storage import parse_storage_url

    if log_url is None:
        return govml_home() / "predictions.db"
    parse_storage_url(log_url)
    return log_url


def api_keys_from_env() -> frozenset[str]:
    return frozenset(k.strip() for k in os.environ.get("GOVML_API_KEYS", "").split(",") if k.strip())


def serve(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION, models:/... or runs:/RUN_ID/PATH.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted, MiB.")] = 16.0,
    max_rows: Annotated[int, typer.Option(help="Most rows per request.")] = 100_000,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log predictions.")] = False,
    country: Annotated[str | None, typer.Option(help="ISO alpha-3 country for grid intensity.")] = None,
    cpu_watts: Annotated[float | None, typer.Option(help="Power of one busy CPU core, W.")] = None,
    log_url: Annotated[str | None, typer.Option(envvar="GOVML_PREDICTION_LOG_URL", help=LOG_URL_HELP)] = None,
) -> None:
    """Serve a registered model: MLflow scoring, Open Inference Protocol v2, /explain, /metrics."""
    import uvicorn

    from govml.paths import default_tracking_uri, govml_home
    from govml.serving.app import ServeSettings, create_app
    from govml.serving.loading import load_model

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    keys = api_keys_from_env()
    log_target = prediction_log_target(log_url)
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        console.print(f"[yellow]warning:[/] binding {host} without GOVML_API_KEYS: anyone who reaches it can call it")
    loaded = load_model(model, tracking_uri=default_tracking_uri())
    settings = ServeSettings(
        home=govml_home(),
        carbon=carbon_settings(country, cpu_watts, loaded.record),
        api_keys=keys,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_rows=max_rows,
        log_predictions=not no_log,
        prediction_log_url=None if isinstance(log_target, Path) else log_target,
    )
    app = create_app(loaded, settings)
    state = app.state.serving
    console.print(
        f"serving [bold]{loaded.ref.uri}[/] on http://{host}:{port}  "
        f"(inference: {state.predictor.path}"
        + (f", fallback: {state.predictor.fallback_reason}" if state.predictor.fallback_reason else "")
        + f"; validation: {state.validator.source}; API keys: {'on' if keys else 'off'})"
    )
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}")
    _audit_start(loaded, host, port, inference=state.predictor.path)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _audit_start(loaded: LoadedModel, host: str, port: int, *, inference: str) -> None:
    """``server.start`` in the audit trail, with the hash of the served model's bytes."""
    import cloudpickle

    from govml.governance.audit import AuditLog, default_audit_path, sha256_hex
    from govml.governance.run_audit import audit_server_start

    inputs = {}
    if loaded.sklearn_model is not None:
        inputs["model"] = sha256_hex(cloudpickle.dumps(loaded.sklearn_model))
    if loaded.schema_json is not None:
        inputs["schema"] = sha256_hex(loaded.schema_json)
    ref = loaded.ref
    audit_server_start(
        AuditLog(default_audit_path()), "serve", host=host, port=port, model=ref.name,
        version=ref.version, run_id=ref.run_id, details={"model_uri": ref.uri, "inference": inference},
        inputs=inputs,
    )


def drift_table(report: DriftReport, title: str) -> Table:
    table = Table(title=title)
    for name in ("column", "kind", "PSI", "KS / chi2", "p-value", "JS", "nulls ref → batch", "drifted"):
        table.add_column(name, justify="left" if name in ("column", "kind") else "right")
    for c in report.columns:
        stat = c.ks_statistic if c.kind == "numeric" else c.chi2_statistic
        p = c.ks_p_value if c.kind == "numeric" else c.chi2_p_value
        table.add_row(
            c.column, c.kind, f"{c.psi:.3f}", f"{stat:.3g}" if stat is not None else "",
            f"{p:.3g}" if p is not None else "", f"{c.js_distance:.3f}" if c.js_distance is not None else "",
            f"{c.null_rate_reference:.1%} → {c.null_rate_batch:.1%}",
            "[red]yes[/]" if c.drifted else "no",
        )
    return table


def monitor(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION, models:/... or runs:/RUN_ID/PATH.")],
    batch: Annotated[Path | None, typer.Option(help="CSV or Parquet file to check instead of the log.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent logged rows to use.")] = 100_000,
    psi_threshold: Annotated[float, typer.Option(help="PSI from which a numeric column counts as drifted.")] = 0.2,
    p_value: Annotated[float, typer.Option(help="Significance level of the KS and chi-squared tests.")] = 0.05,
    js_threshold: Annotated[float, typer.Option(help="Jensen-Shannon distance for categorical columns.")] = 0.1,
    max_share: Annotated[float, typer.Option(help="Exit 1 when the share of drifted columns exceeds this.")] = 0.0,
    log_url: Annotated[str | None, typer.Option(envvar="GOVML_PREDICTION_LOG_URL", help=LOG_URL_HELP)] = None,
) -> None:
    """Print a drift report for a model's logged traffic (or a file); exit 1 when drift passes the threshold."""
    from mlflow import MlflowClient

    from govml.features.drift import compute_drift
    from govml.paths import default_tracking_uri
    from govml.serving.loading import resolve_model
    from govml.serving.monitoring import read_logged_inputs

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log_target = prediction_log_target(log_url)
    tracking_uri = default_tracking_uri()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = resolve_model(model, client)
    reference = _drift_reference(client, ref.run_id)
    if batch is not None:
        frame = _read_batch(batch)
        source = str(batch)
    else:
        frame = read_logged_inputs(log_target, ref.name, limit=limit)
        source = f"{len(frame):,} logged predictions of {ref.name}"
    report = compute_drift(reference, frame, psi_threshold=psi_threshold, p_value=p_value, js_threshold=js_threshold)
    console.print(drift_table(report, f"drift of {source} against the training data of {ref.uri}"))
    verdict = f"{len(report.drifted_columns)} of {len(report.columns)} columns drifted ({report.share_drifted:.0%})"
    if report.share_drifted > max_share:
        console.print(f"[red]{verdict}: {', '.join(report.drifted_columns)}[/]")
        raise typer.Exit(1)
    console.print(f"[green]{verdict}[/]")


def _drift_reference(client: object, run_id: str | None):  # type: ignore[no-untyped-def]
    import tempfile

    from mlflow.exceptions import MlflowException

    from govml.features.drift import DriftReference
    from govml.serving.loading import DRIFT_ARTIFACT

    if run_id is None:
        raise GovmlError("the model has no run, so no drift reference: monitor needs a govml-trained model")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, DRIFT_ARTIFACT, tmp)  # type: ignore[attr-defined]
        except (MlflowException, OSError):
            raise GovmlError(
                f"run {run_id} has no {DRIFT_ARTIFACT}: drift monitoring is unavailable for this model"
            ) from None
        return DriftReference.from_json(Path(path).read_text(encoding="utf-8"))


def _read_batch(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    if not path.exists():
        raise DataError(f"batch file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read batch file {path}: {exc}") from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``monitor`` to the main ``govml`` app."""
    app.command("serve")(serve)
    app.command("monitor")(monitor)
