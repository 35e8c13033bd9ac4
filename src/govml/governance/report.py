"""The governance report: one self-contained HTML file per run, and its model card.

:func:`render_report` lays out the sections of :mod:`govml.governance.report_sections`
with a Jinja2 template (autoescaped: record text never reaches the page unescaped),
inline CSS and plots as data URIs. A Content-Security-Policy allows nothing but inline
styles and ``data:`` images, so the file opens offline and makes no request.
:func:`publish_report` logs the report and the JSON model card to the run;
:func:`load_registered_run` fetches what ``govml report NAME@ALIAS`` needs to re-render.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from govml.errors import GovmlError
from govml.governance import report_sections as rs
from govml.governance.model_card import as_record_dict, build_model_card, dig
from govml.record import RunRecord

REPORT_ARTIFACT = "govml/report.html"
MODEL_CARD_ARTIFACT = "govml/model_card.json"
RECORD_ARTIFACT = "govml/record.json"
PLOTS_ARTIFACT_DIR = "govml/plots"

SECTION_IDS = (
    "model-details",
    "intended-use",
    "factors",
    "metrics",
    "evaluation-data",
    "training-data",
    "fairness",
    "mitigation",
    "explanations",
    "privacy",
    "carbon",
    "compliance",
    "caveats",
)


class Badge(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    tone: str = ""


class RegisteredRun(BaseModel):
    """A registered version's run record and plots, downloaded to ``workdir``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    version: str
    run_id: str
    record: dict[str, Any]
    plots: dict[str, Path]


def render_report(
    record: Mapping[str, Any] | RunRecord, *, plots: Mapping[str, Path] | None = None
) -> str:
    """The governance report of a run as one self-contained HTML page.

    ``plots`` maps a plot name (e.g. ``shap_summary``) to a PNG or JPEG file; each section
    takes the plots whose names match it, the rest go under Metrics.
    """
    rec = as_record_dict(record)
    card = build_model_card(rec)
    pool = rs.PlotPool(plots or {})
    sections = [
        rs.model_details_section(rec, card),
        rs.intended_use_section(rec, card),
        rs.factors_section(rec, card),
        rs.metrics_section(rec, pool),
        rs.evaluation_data_section(rec, card),
        rs.training_data_section(rec, card),
        rs.fairness_section(rec, pool),
        rs.mitigation_section(rec, pool),
        rs.explanations_section(rec, pool),
        rs.privacy_section(rec, pool),
        rs.carbon_section(rec),
        rs.compliance_section(rec),
        rs.caveats_section(rec),
    ]
    leftovers = pool.rest()
    if leftovers:
        sections[3].blocks.extend([rs.heading("Other figures"), *leftovers])
    version = dig(rec, "registration.version")
    title = f"{rec.get('pipeline', 'unnamed run')}" + (f" version {version}" if version else "")
    return _template().render(
        css=_css(),
        title=title,
        subtitle=rec.get("config", {}).get("description")
        or "Model card and responsible-AI evidence",
        badges=_badges(rec),
        sections=sections,
        run_id=rec.get("run_id"),
        govml_version=rec.get("govml_version", ""),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(
    path: str | Path,
    record: Mapping[str, Any] | RunRecord,
    *,
    plots: Mapping[str, Path] | None = None,
) -> Path:
    """Render the report to ``path`` and its model card beside it (``<stem>.model_card.json``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(record, plots=plots), encoding="utf-8")
    card_path = out.with_name(f"{out.stem}.model_card.json")
    card_path.write_text(
        json.dumps(build_model_card(record), indent=2, default=str), encoding="utf-8"
    )
    return out


def publish_report(
    client: MlflowClient,
    run_id: str,
    record: Mapping[str, Any] | RunRecord,
    plots: Mapping[str, Path] | None = None,
) -> str:
    """Log ``govml/report.html`` and ``govml/model_card.json`` to the run; return the
    report's artifact URI (the value of the ``govml.governance_report`` tag)."""
    client.log_text(run_id, render_report(record, plots=plots), REPORT_ARTIFACT)
    client.log_dict(run_id, build_model_card(record), MODEL_CARD_ARTIFACT)
    return f"{client.get_run(run_id).info.artifact_uri}/{REPORT_ARTIFACT}"


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` to (name, alias, version)."""
    if "@" in ref:
        name, _, alias = ref.rpartition("@")
        if name and alias:
            return name, alias, None
    elif "/" in ref:
        name, _, version = ref.rpartition("/")
        if name and version.isdigit():
            return name, None, version
    raise GovmlError(f"{ref!r}: expected NAME@ALIAS (e.g. credit-risk@champion) or NAME/VERSION")


def load_registered_run(client: MlflowClient, ref: str, workdir: Path) -> RegisteredRun:
    """Download the record and plots of the run behind ``NAME@ALIAS`` into ``workdir``."""
    name, alias, version = parse_model_ref(ref)
    try:
        if alias is not None:
            model_version = client.get_model_version_by_alias(name, alias)
        else:
            model_version = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise GovmlError(f"{ref}: no such registered model version ({exc.message})") from exc
    run_id = model_version.run_id
    if not run_id:
        raise GovmlError(
            f"{ref}: the version has no MLflow run, so there is no record to report on"
        )
    try:
        local = client.download_artifacts(run_id, RECORD_ARTIFACT, str(workdir))
    except (MlflowException, OSError) as exc:
        raise GovmlError(
            f"{ref}: run {run_id} has no {RECORD_ARTIFACT}; was it made by `govml run`?"
        ) from exc
    try:
        record = json.loads(Path(local).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GovmlError(f"{ref}: {RECORD_ARTIFACT} of run {run_id} is not valid JSON") from exc
    plots: dict[str, Path] = {}
    names = [a.path for a in client.list_artifacts(run_id, PLOTS_ARTIFACT_DIR) if not a.is_dir]
    for artifact in names:
        path = Path(client.download_artifacts(run_id, artifact, str(workdir)))
        plots[path.stem] = path
    return RegisteredRun(
        name=name, version=str(model_version.version), run_id=run_id, record=record, plots=plots
    )


def report_for_registered(client: MlflowClient, ref: str, out: Path) -> Path:
    """Re-render the report of ``NAME@ALIAS`` from its run's record and plots into ``out``."""
    with tempfile.TemporaryDirectory(prefix="govml-report-") as tmp:
        run = load_registered_run(client, ref, Path(tmp))
        return write_report(out, run.record, plots=run.plots)


def _badges(rec: Mapping[str, Any]) -> list[Badge]:
    badges = []
    status = rec.get("status")
    if status:
        badges.append(Badge(text=f"run {status}", tone="ok" if status == "succeeded" else "warn"))
    failed = rec.get("failed_gates") or []
    badges.append(
        Badge(text="gates failed: " + ", ".join(failed), tone="fail")
        if failed
        else Badge(text="all gates passed", tone="ok")
    )
    score = dig(rec, "compliance.score")
    if score is not None:
        badges.append(Badge(text=f"compliance {rs.fmt(score)}/100"))
    requirements = dig(rec, "config.responsible_ai.requirements")
    if requirements:
        badges.append(Badge(text=f"requirements: {requirements}"))
    aliases = dig(rec, "registration.aliases", [])
    if aliases:
        badges.append(Badge(text="aliases: " + ", ".join(aliases)))
    return badges


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("govml.governance", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    return env.get_template("report.html")


@lru_cache(maxsize=1)
def _css() -> str:
    return (
        resources.files("govml.governance")
        .joinpath("templates/report.css")
        .read_text(encoding="utf-8")
    )
