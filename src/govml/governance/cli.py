"""``govml audit ...``, ``govml models ...`` and ``govml report``.

User errors raise :class:`govml.errors.GovmlError`; the main CLI prints them and exits
with their code (2 for bad input, 1 for a refused promotion or a broken audit chain).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from govml.errors import GovmlError
from govml.governance.audit import AuditLog, default_audit_path

console = Console()

audit_app = typer.Typer(help="The hash-chained audit trail under GOVML_HOME.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: list, promote, roll back.", no_args_is_help=True)


class AuditTamperedError(GovmlError):
    """The audit chain is broken."""

    exit_code = 1


def _client():  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    from govml.paths import default_tracking_uri

    uri = default_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _log(path: Path | None) -> AuditLog:
    return AuditLog(path or default_audit_path())


LogOption = Annotated[
    Path | None, typer.Option("--log", help="Audit log file (default: $GOVML_HOME/audit.jsonl).")
]


@audit_app.command("verify")
def audit_verify(
    log: LogOption = None,
    expect_head: Annotated[
        str | None,
        typer.Option("--expect-head", help="A head hash saved earlier with `govml audit head`."),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 naming the first edited, removed or reordered entry."""
    audit = _log(log)
    result = audit.verify(expected_head=expect_head)
    if not result.ok:
        where = f"seq {result.first_bad_seq}" if result.first_bad_seq is not None else "log"
        line = f" (line {result.line})" if result.line is not None else ""
        raise AuditTamperedError(
            f"{audit.path}: audit chain broken at {where}{line}: {result.reason}"
        )
    head = f"; head {result.head.hash}" if result.head else ""
    console.print(f"[green]ok[/]: {result.entries} entries, chain intact{head}", highlight=False)


@audit_app.command("show")
def audit_show(
    model: Annotated[
        str | None, typer.Option("--model", help="Only entries about this model.")
    ] = None,
    log: LogOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON entry per line.")] = False,
    last: Annotated[
        int | None, typer.Option("--last", min=1, help="Only the last N entries.")
    ] = None,
) -> None:
    """List audit entries: who did what, when, to which model."""
    audit = _log(log)
    if not audit.path.exists():
        raise GovmlError(f"{audit.path}: no audit log yet")
    entries = audit.entries(model=model)
    if last is not None:
        entries = entries[-last:]
    if as_json:
        for entry in entries:
            typer.echo(entry.model_dump_json())
        return
    table = Table(title=f"Audit log {audit.path}" + (f" — {model}" if model else ""))
    for column in ("seq", "time (UTC)", "actor", "action", "subject", "details", "hash"):
        table.add_column(column)
    for entry in entries:
        subject = " ".join(
            f"{k}={v}" for k, v in entry.subject.model_dump().items() if v is not None
        )
        details = json.dumps(entry.details, ensure_ascii=False)
        table.add_row(
            str(entry.seq),
            entry.timestamp[:19].replace("T", " "),
            entry.actor,
            entry.action,
            subject,
            details if len(details) <= 80 else details[:77] + "...",
            entry.hash[:12],
        )
    console.print(table)


@audit_app.command("head")
def audit_head(log: LogOption = None) -> None:
    """Print the last entry's seq and hash, to keep outside GOVML_HOME as an anchor."""
    head = _log(log).head()
    if head is None:
        raise GovmlError("the audit log is empty: nothing to anchor")
    typer.echo(f"{head.seq} {head.hash}")


@models_app.command("list")
def models_list() -> None:
    """Registered models, their versions, aliases and governance status."""
    from govml.governance.lifecycle import list_models

    models = list_models(_client())
    if not models:
        console.print("No registered models yet: run `govml run pipeline.yaml`.")
        return
    table = Table(title="Registered models")
    for column in (
        "model",
        "version",
        "aliases",
        "created",
        "primary metric",
        "gates",
        "compliance",
    ):
        table.add_column(column)
    for model in models:
        for v in model.versions:
            created = (
                datetime.fromtimestamp(v.created_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
                if v.created_at_ms
                else ""
            )
            metric = (
                f"{v.primary_metric} {v.metric_value:.4g}" if v.metric_value is not None else ""
            )
            gates = (
                "?"
                if v.gates_passed is None
                else "[green]passed"
                if v.gates_passed
                else "[red]failed: " + ", ".join(v.failed_gates)
            )
            score = f"{v.compliance_score:g}/100" if v.compliance_score is not None else ""
            table.add_row(
                model.name, v.version, ", ".join(v.aliases), created, metric, gates, score
            )
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "champion",
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--advisory",
            help="Override the version's govml.requirements tag.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Point an alias at a version; refused (exit 1) when governance forbids it."""
    from govml.governance.lifecycle import Requirements, promote

    requirements: Requirements | None = None
    if strict is not None:
        requirements = "strict" if strict else "advisory"
    result = promote(_client(), name, version, to=to, requirements=requirements)
    if not result.changed:
        console.print(f"{name} version {version} already is @{to}.")
        return
    for check in result.checks:
        console.print(f"  [green]✓[/] {check}", highlight=False)
    previous = f" (was version {result.previous})" if result.previous else ""
    console.print(f"[green]{name}@{to} -> version {version}[/]{previous}", highlight=False)


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to roll back.")] = "champion",
) -> None:
    """Move an alias back to the version that held it before."""
    from govml.governance.lifecycle import rollback

    result = rollback(_client(), name, alias=alias)
    console.print(
        f"[green]{name}@{alias} rolled back: version {result.from_version} -> "
        f"{result.to_version}[/]",
        highlight=False,
    )


def report_command(
    model: Annotated[
        str, typer.Argument(help="NAME@ALIAS (e.g. credit-risk@champion) or NAME/VERSION.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output HTML file (default: NAME-ALIAS-report.html)."),
    ] = None,
) -> None:
    """Re-render the governance report of a registered model from its run record."""
    from govml.governance.report import parse_model_ref, report_for_registered

    # MLflow draws a progress bar per downloaded artifact; a report needs a handful.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name, alias, version = parse_model_ref(model)
    target = out or Path(f"{name}-{alias or version}-report.html")
    path = report_for_registered(_client(), model, target)
    console.print(
        f"Report written to {path} (model card: {path.with_name(path.stem + '.model_card.json')})"
    )


def register(app: typer.Typer) -> None:
    """Mount ``audit``, ``models`` and ``report`` on the main ``govml`` app."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(models_app, name="models")
    app.command("report")(report_command)
