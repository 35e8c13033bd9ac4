"""The ``govml`` command: run | serve | monitor | report | audit | models | llm.

Known user errors (:class:`GovmlError`) print their message and exit with its code
(2 for bad input, 1 for a failed strict gate) without a traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from govml.errors import GateFailedError, GovmlError

if TYPE_CHECKING:  # the CLI starts fast: heavy modules load inside the commands
    from govml.record import RunRecord

app = typer.Typer(
    name="govml",
    help="Production machine learning with responsible AI built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """govml: governed pipelines, monitored serving and a guarded LLM gateway."""


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline YAML file.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Validate, train, evaluate, govern and register a model from one YAML file."""
    from govml.config import load_config
    from govml.pipeline import run_pipeline

    config = load_config(pipeline)
    _quiet_third_party()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(stage: str, event: str) -> None:
            if event == "start":
                tasks[stage] = bar.add_task(stage, total=1, detail="")
            elif event in ("ok", "failed"):
                mark = "[green]done" if event == "ok" else "[red]failed"
                bar.update(tasks[stage], completed=1, detail=mark)
            elif stage in tasks:
                bar.update(tasks[stage], detail=event)

        record = run_pipeline(config, progress=on_progress)
    print_summary(record)
    if record.failed_gates and config.responsible_ai.requirements == "strict":
        raise GateFailedError(
            f"strict gate(s) failed: {', '.join(record.failed_gates)}; version "
            f"{record.registration.version if record.registration else '?'} was registered without "
            "the 'champion' alias"
        )


def print_summary(record: RunRecord) -> None:
    """The terminal summary of a run, rendered from its record."""
    if record.data is not None:
        d = record.data
        table = Table(title="Data", show_header=False)
        table.add_row("rows read", f"{d.rows_read:,}")
        table.add_row("rows dropped by validation", f"{d.rows_dropped:,}")
        table.add_row("splits", ", ".join(f"{k} {v:,}" for k, v in d.split_rows.items()))
        table.add_row("task", d.task + (f" ({', '.join(d.classes)})" if d.classes else ""))
        table.add_row("data sha256", d.data_hash[:16] + "…")
        console.print(table)
    if record.features is not None:
        drift = record.features.drift
        console.print(
            f"Drift train → test: {len(drift.drifted_columns)} of {len(drift.columns)} columns drifted"
            + (f" ({', '.join(drift.drifted_columns)})" if drift.drifted_columns else "")
        )
    if record.training is not None:
        t = record.training
        console.print(
            f"Search: {t.model_type}, {t.n_trials_completed} trials completed, {t.n_trials_pruned} pruned, "
            f"best validation {t.search_metric} {t.best_validation_score:.4f} ({t.duration_s:.1f}s, "
            f"stopped by {t.stopped_by})"
        )
    if record.evaluation is not None:
        e = record.evaluation
        table = Table(title=f"Test metrics ({e.n_rows:,} rows)")
        table.add_column("metric")
        table.add_column("model", justify="right")
        table.add_column("95% CI", justify="right")
        for baseline in e.baselines:
            table.add_column(baseline.name, justify="right")
        for name, metric in e.metrics.items():
            ci = f"[{metric.ci_low:.4f}, {metric.ci_high:.4f}]" if metric.ci_low is not None else ""
            style = "bold" if name == e.primary_metric else None
            table.add_row(
                name, f"{metric.value:.4f}", ci, *(f"{b.metrics[name]:.4f}" for b in e.baselines), style=style
            )
        console.print(table)
        console.print(f"Improvement over {e.best_baseline} on {e.primary_metric}: {e.improvement_pct:+.2f}%")
    _print_responsible_ai(record)
    if record.carbon is not None:
        c = record.carbon
        console.print(
            f"Carbon: {c.energy_kwh * 1000:.3f} Wh, {c.emissions_kg * 1000:.3f} g CO2e ({c.country_iso_code} grid)"
            + (" — carbon budget exhausted, search stopped early" if c.budget_exhausted else "")
        )
    if record.failed_gates:
        console.print(f"[red]Failed gates: {', '.join(record.failed_gates)}")
    if record.registration is not None:
        r = record.registration
        console.print(
            f"[green]Registered {r.model_name} version {r.version}[/] with aliases {', '.join(r.aliases)} "
            f"({r.model_uri}); run {record.run_id}"
        )


def _print_responsible_ai(record: RunRecord) -> None:
    if record.privacy is not None and record.privacy.pii_scan is not None:
        for warning in record.privacy.pii_scan.warnings:
            console.print(f"[yellow]personal data:[/] {warning}")
    for label, report in (("before mitigation", record.fairness_before_mitigation), ("", record.fairness)):
        if report is None:
            continue
        table = Table(title=f"Fairness on test {label}".strip())
        for column in ("attribute", "DP difference", "DP ratio", "EO difference", "status"):
            table.add_column(column)
        for item in report.attributes:
            table.add_row(
                item.attribute,
                *(
                    f"{v:.3f}" if v is not None else "–"
                    for v in (
                        item.demographic_parity_difference,
                        item.demographic_parity_ratio,
                        item.equalized_odds_difference,
                    )
                ),
                {"pass": "[green]pass", "fail": "[red]fail"}.get(item.status, item.status),
            )
        console.print(table)
    if record.mitigation is not None:
        m = record.mitigation
        console.print(
            f"Mitigation on {m.sensitive_feature}: chose {m.chosen or 'nothing (no candidate met the bound)'} "
            f"among {len(m.candidates)} candidates ({m.duration_s:.1f}s)"
        )
    if record.explanations is not None:
        top = ", ".join(record.explanations.top_features)
        console.print(f"Explanations ({record.explanations.explainer}): top features {top}")
    if record.privacy is not None and record.privacy.membership_inference is not None:
        mi = record.privacy.membership_inference
        console.print(
            f"Membership inference: attack AUC {mi.auc:.3f} (limit {mi.auc_max}), advantage {mi.advantage:.3f} "
            + ("[green]pass" if mi.passed else "[red]fail")
        )
    if record.compliance is not None:
        console.print(f"Compliance score: [bold]{record.compliance.score}/100[/]")
    report_path = record.registration.tags.get("govml.governance_report") if record.registration else None
    if report_path:
        console.print(f"Governance report: {report_path}")


def _quiet_third_party() -> None:
    """Keep the terminal for govml's summary: silence libraries' routine notices that a
    user cannot act on (each is either handled by govml or recorded in the run)."""
    import logging
    import warnings

    import mlflow  # noqa: F401  (configures its loggers on import: import first, then quiet)

    for name in ("mlflow", "alembic", "optuna", "codecarbon"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("mlflow.store.db.utils", "mlflow.sklearn"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # govml writes the model with cloudpickle on purpose and loads it only from the registry
    warnings.filterwarnings("ignore", message=r".*pickle or cloudpickle format.*")
    # the signature's integer columns are checked by govml's own schema at serving time
    warnings.filterwarnings("ignore", message=r"Hint: Inferred schema contains integer column")
    warnings.filterwarnings("ignore", message=r"LightGBM binary classifier with TreeExplainer")


def _mount(module: str, group: str | None = None) -> None:
    """Mount a part's commands: its ``register(app)``, or its Typer ``app`` as a group."""
    mod = importlib.import_module(module)
    if group is None:
        mod.register(app)
    else:
        app.add_typer(mod.app, name=group)


_mount("govml.serving.cli")
_mount("govml.governance.cli")
_mount("govml.compute.cli")
_mount("govml.llm.cli", group="llm")


def main() -> None:
    """Entry point: run the app and turn known errors into messages and exit codes."""
    try:
        app()
    except GovmlError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
