"""Model lifecycle in the MLflow registry: list, promote to an alias, roll back.

A promotion is refused, with every reason, when the version's responsible-AI gates
failed and, for models registered with ``requirements: strict``, when the version does
not beat the current holder of the alias on the primary metric. Each alias keeps its
history in the registered-model tag ``govml.<alias>_history`` (a JSON list of versions,
most recent last) so that :func:`rollback` can restore the previous holder. Every
change is written to the audit log.
"""

from __future__ import annotations

import json
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field

from govml.errors import GovmlError
from govml.governance.audit import AuditLog, AuditSubject

CHAMPION = "champion"
LOWER_IS_BETTER = frozenset({"rmse", "mse", "mae", "mape", "log_loss", "brier_score"})
_HISTORY_LIMIT = 50

Requirements = Literal["strict", "advisory"]


class PromotionRefusedError(GovmlError):
    """A promotion broke a governance rule; ``reasons`` lists every rule it broke."""

    exit_code = 1

    def __init__(self, name: str, version: str, alias: str, reasons: list[str]) -> None:
        self.reasons = reasons
        lines = "\n".join(f"  - {reason}" for reason in reasons)
        super().__init__(f"promotion of {name} version {version} to @{alias} refused:\n{lines}")


class VersionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    run_id: str | None
    aliases: list[str]
    created_at_ms: int | None
    primary_metric: str | None
    metric_value: float | None
    gates_passed: bool | None
    failed_gates: list[str]
    requirements: str | None
    compliance_score: float | None


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: dict[str, str] = Field(description="alias -> version")
    versions: list[VersionSummary] = Field(description="newest first")


class PromotionResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    alias: str
    version: str
    previous: str | None
    changed: bool
    checks: list[str] = Field(description="what was checked and passed")


class RollbackResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    alias: str
    from_version: str
    to_version: str


def history_tag(alias: str) -> str:
    return f"govml.{alias}_history"


def list_models(client: MlflowClient) -> list[ModelSummary]:
    """Every registered model with its aliases and its versions' governance tags."""
    models = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        for registered in page:
            versions = client.search_model_versions(f"name = '{_quote(registered.name)}'")
            aliases = {alias: str(v) for alias, v in (registered.aliases or {}).items()}
            models.append(
                ModelSummary(
                    name=registered.name,
                    aliases=aliases,
                    versions=sorted(
                        (_summarise(v, aliases) for v in versions),
                        key=lambda s: int(s.version),
                        reverse=True,
                    ),
                )
            )
        token = page.token
        if not token:
            return sorted(models, key=lambda m: m.name)


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    to: str = CHAMPION,
    requirements: Requirements | None = None,
    audit: AuditLog | None = None,
) -> PromotionResult:
    """Point alias ``to`` at ``version`` if governance allows it, else raise.

    ``requirements`` overrides the version's ``govml.requirements`` tag; ``strict`` adds the
    must-beat-the-current-holder check. Raises PromotionRefusedError (exit 1) with every
    reason, GovmlError (exit 2) for an unknown model or version.
    """
    version = str(version)
    candidate = _get_version(client, name, version)
    current = _alias_version(client, name, to)
    if current == version:
        return PromotionResult(
            name=name, alias=to, version=version, previous=version, changed=False, checks=[]
        )
    mode = requirements or candidate.tags.get("govml.requirements", "advisory")
    reasons, checks = _gate_reasons(candidate)
    if mode == "strict" and current is not None:
        metric_reasons, metric_checks = _beats(candidate, client.get_model_version(name, current))
        reasons += metric_reasons
        checks += metric_checks
    if reasons:
        _audit(audit).append(
            "model.promote.refused",
            AuditSubject(model=name, version=version, alias=to, run_id=candidate.run_id),
            details={"reasons": reasons, "requirements": mode},
        )
        raise PromotionRefusedError(name, version, to, reasons)
    previous = current
    _move_alias(client, name, to, version, previous)
    _audit(audit).append(
        "model.promote",
        AuditSubject(model=name, version=version, alias=to, run_id=candidate.run_id),
        details={"previous": previous, "requirements": mode, "checks": checks},
    )
    return PromotionResult(
        name=name, alias=to, version=version, previous=previous, changed=True, checks=checks
    )


def rollback(
    client: MlflowClient, name: str, *, alias: str = CHAMPION, audit: AuditLog | None = None
) -> RollbackResult:
    """Move ``alias`` back to the version that held it before the current one."""
    current = _alias_version(client, name, alias)
    if current is None:
        raise GovmlError(f"{name} has no @{alias}: nothing to roll back")
    history = _read_history(client, name, alias)
    while history and history[-1] == current:
        history.pop()
    target = None
    while history:
        candidate = history[-1]
        if _version_exists(client, name, candidate):
            target = candidate
            break
        history.pop()  # the version was deleted since; skip it
    if target is None:
        raise GovmlError(
            f"{name}: no earlier @{alias} recorded in {history_tag(alias)} (current is version "
            f"{current}); promote a version explicitly instead"
        )
    client.set_registered_model_alias(name, alias, target)
    _write_history(client, name, alias, history)
    _audit(audit).append(
        "model.rollback",
        AuditSubject(model=name, version=target, alias=alias),
        details={"from_version": current, "to_version": target},
    )
    return RollbackResult(name=name, alias=alias, from_version=current, to_version=target)


def record_alias(client: MlflowClient, name: str, version: str, *, alias: str = CHAMPION) -> None:
    """Set ``alias`` and keep its history, without checks: for the pipeline, which has
    already applied the gates. Auditing is left to the caller."""
    current = _alias_version(client, name, alias)
    _move_alias(client, name, alias, str(version), current)


def _move_alias(
    client: MlflowClient, name: str, alias: str, version: str, previous: str | None
) -> None:
    history = _read_history(client, name, alias)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # the alias was moved outside govml; keep it restorable
    client.set_registered_model_alias(name, alias, version)
    if not history or history[-1] != version:
        history.append(version)
    _write_history(client, name, alias, history)


def _gate_reasons(version: ModelVersion) -> tuple[list[str], list[str]]:
    gates = version.tags.get("govml.gates_passed")
    if gates is None:
        return [
            "the version has no govml.gates_passed tag: it was not registered by a govml run, "
            "so its responsible-AI gates are unknown"
        ], []
    if gates.lower() != "true":
        failed = version.tags.get("govml.failed_gates") or "unnamed"
        return [f"its responsible-AI gates failed: {failed}"], []
    return [], ["responsible-AI gates passed"]


def _beats(candidate: ModelVersion, current: ModelVersion) -> tuple[list[str], list[str]]:
    metric = candidate.tags.get("govml.primary_metric")
    if not metric:
        return ["strict mode needs govml.primary_metric on the version; it has none"], []
    current_metric = current.tags.get("govml.primary_metric")
    if current_metric and current_metric != metric:
        return [
            f"strict mode: primary metrics differ (version {candidate.version}: {metric}, "
            f"current version {current.version}: {current_metric}); they cannot be compared"
        ], []
    new = _metric(candidate, metric)
    old = _metric(current, metric)
    if new is None:
        return [f"strict mode: version {candidate.version} has no govml.metric.{metric} tag"], []
    if old is None:
        return [], [f"current version {current.version} has no {metric} to compare against"]
    lower = metric in LOWER_IS_BETTER
    better = new < old if lower else new > old
    relation = f"{metric} {new:.4g} vs {old:.4g} for current version {current.version}"
    direction = "lower" if lower else "higher"
    if not better:
        return [
            f"strict mode: it does not beat the current holder: {relation} ({direction} is better)"
        ], []
    return [], [f"beats the current holder: {relation}"]


def _metric(version: ModelVersion, metric: str) -> float | None:
    raw = version.tags.get(f"govml.metric.{metric}")
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def _summarise(version: ModelVersion, aliases: dict[str, str]) -> VersionSummary:
    # search_model_versions leaves ModelVersion.aliases empty: take them from the model.
    tags = version.tags or {}
    metric = tags.get("govml.primary_metric")
    gates = tags.get("govml.gates_passed")
    score = tags.get("govml.compliance_score")
    failed = tags.get("govml.failed_gates") or ""
    return VersionSummary(
        version=str(version.version),
        run_id=version.run_id,
        aliases=sorted(a for a, v in aliases.items() if v == str(version.version)),
        created_at_ms=version.creation_timestamp,
        primary_metric=metric,
        metric_value=_metric(version, metric) if metric else None,
        gates_passed=None if gates is None else gates.lower() == "true",
        failed_gates=[g.strip() for g in failed.split(",") if g.strip()],
        requirements=tags.get("govml.requirements"),
        compliance_score=_float_or_none(score),
    )


def _float_or_none(raw: str | None) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise GovmlError(f"no registered model named {name!r} (see `govml models list`)") from exc
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise GovmlError(f"{name} has no version {version!r} (see `govml models list`)") from exc


def _version_exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, as a string, or None."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        raise GovmlError(f"no registered model named {name!r} (see `govml models list`)") from exc
    version = (registered.aliases or {}).get(alias)
    return None if version is None else str(version)


def _read_history(client: MlflowClient, name: str, alias: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(history_tag(alias))
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise GovmlError(f"{name}: tag {history_tag(alias)} is not a JSON list: {raw!r}") from exc
    if not isinstance(value, list):
        raise GovmlError(f"{name}: tag {history_tag(alias)} is not a JSON list: {raw!r}")
    return [str(v) for v in value]


def _write_history(client: MlflowClient, name: str, alias: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, history_tag(alias), json.dumps(history[-_HISTORY_LIMIT:]))


def _audit(audit: AuditLog | None) -> AuditLog:
    return audit or AuditLog.default()


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
