"""Promotion, refusal reasons and rollback against a real MLflow registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from govml.errors import GovmlError
from govml.governance.audit import AuditLog
from govml.governance.lifecycle import (
    PromotionRefusedError,
    PromotionResult,
    RollbackResult,
    history_tag,
    list_models,
    promote,
    record_alias,
    rollback,
)

RegisterVersion = Callable[..., ModelVersion]


def _tags(
    *, gates: str | None = "true", mode: str = "strict", metric: str = "roc_auc", value: float = 0.9
) -> dict[str, str]:
    tags = {
        "govml.requirements": mode,
        "govml.primary_metric": metric,
        f"govml.metric.{metric}": str(value),
        "govml.compliance_score": "90",
    }
    if gates is not None:
        tags["govml.gates_passed"] = gates
        tags["govml.failed_gates"] = "" if gates == "true" else "demographic_parity_difference"
    return tags


@dataclass
class ModelUnderTest:
    """A registered model name of its own in the shared store, with an audit log."""

    client: MlflowClient
    name: str
    audit: AuditLog
    register_version: RegisterVersion

    def register(self, tags: dict[str, str]) -> ModelVersion:
        return self.register_version(self.name, tags)

    def promote(self, version: str | int, **options: Any) -> PromotionResult:
        return promote(self.client, self.name, version, audit=self.audit, **options)

    def rollback(self) -> RollbackResult:
        return rollback(self.client, self.name, audit=self.audit)

    def champion(self) -> str:
        return str(self.client.get_model_version_by_alias(self.name, "champion").version)


@pytest.fixture
def model(
    mlflow_client: MlflowClient,
    register_version: RegisterVersion,
    model_name: str,
    audit_log: AuditLog,
) -> ModelUnderTest:
    return ModelUnderTest(mlflow_client, model_name, audit_log, register_version)


def test_promote_sets_alias_history_and_audits(model: ModelUnderTest) -> None:
    model.register(_tags(value=0.80))
    model.register(_tags(value=0.85))
    first = model.promote("1")
    assert first.changed and first.previous is None
    second = model.promote(2)
    assert second.previous == "1"
    assert any("beats the current holder" in check for check in second.checks)
    assert model.champion() == "2"
    tags = model.client.get_registered_model(model.name).tags
    assert json.loads(tags[history_tag("champion")]) == ["1", "2"]
    entries = model.audit.entries(model=model.name)
    assert [(e.action, e.subject.version) for e in entries] == [
        ("model.promote", "1"),
        ("model.promote", "2"),
    ]
    assert entries[1].details["previous"] == "1"
    assert model.audit.verify().ok
    again = model.promote("2")
    assert not again.changed


def test_refused_when_gates_failed(model: ModelUnderTest) -> None:
    model.register(_tags(gates="false", mode="advisory"))
    with pytest.raises(PromotionRefusedError) as caught:
        model.promote("1")
    assert caught.value.exit_code == 1
    assert caught.value.reasons == [
        "its responsible-AI gates failed: demographic_parity_difference"
    ]
    assert "champion" not in model.client.get_registered_model(model.name).aliases
    refused = model.audit.entries(model=model.name)
    assert [e.action for e in refused] == ["model.promote.refused"]


def test_refused_when_gates_unknown(model: ModelUnderTest) -> None:
    model.register(_tags(gates=None))
    with pytest.raises(PromotionRefusedError, match="no govml.gates_passed tag"):
        model.promote("1")


def test_strict_refused_when_not_better_than_champion(model: ModelUnderTest) -> None:
    model.register(_tags(value=0.90))
    model.register(_tags(value=0.90))
    model.promote("1")
    with pytest.raises(PromotionRefusedError) as caught:
        model.promote("2")
    (reason,) = caught.value.reasons
    assert "does not beat the current holder" in reason
    assert "roc_auc 0.9 vs 0.9" in reason and "higher is better" in reason
    assert model.champion() == "1"


def test_strict_lower_is_better_metric(model: ModelUnderTest) -> None:
    model.register(_tags(metric="rmse", value=3.0))
    model.register(_tags(metric="rmse", value=3.5))
    model.register(_tags(metric="rmse", value=2.5))
    model.promote("1")
    with pytest.raises(PromotionRefusedError, match="lower is better"):
        model.promote("2")
    assert model.promote("3").previous == "1"


def test_strict_refused_without_metric_and_lists_every_reason(model: ModelUnderTest) -> None:
    model.register(_tags(value=0.9))
    tags = _tags(gates="false")
    del tags["govml.metric.roc_auc"]
    model.register(tags)
    model.promote("1")
    with pytest.raises(PromotionRefusedError) as caught:
        model.promote("2")
    assert len(caught.value.reasons) == 2
    assert "gates failed" in caught.value.reasons[0]
    assert "no govml.metric.roc_auc tag" in caught.value.reasons[1]


def test_strict_refused_when_primary_metrics_differ(model: ModelUnderTest) -> None:
    model.register(_tags(metric="roc_auc", value=0.8))
    model.register(_tags(metric="accuracy", value=0.99))
    model.promote("1")
    with pytest.raises(PromotionRefusedError, match="cannot be compared"):
        model.promote("2")


def test_advisory_allows_a_worse_model_and_override(model: ModelUnderTest) -> None:
    model.register(_tags(mode="advisory", value=0.9))
    model.register(_tags(mode="advisory", value=0.7))
    model.promote("1")
    with pytest.raises(PromotionRefusedError, match="does not beat"):
        model.promote("2", requirements="strict")
    assert model.promote("2").changed
    assert model.champion() == "2"


def test_rollback_restores_previous_champion(model: ModelUnderTest) -> None:
    for value in (0.80, 0.85, 0.90):
        model.register(_tags(value=value))
    for version in ("1", "2", "3"):
        model.promote(version)
    result = model.rollback()
    assert (result.from_version, result.to_version) == ("3", "2")
    assert model.champion() == "2"
    assert model.rollback().to_version == "1"
    with pytest.raises(GovmlError, match="no earlier @champion"):
        model.rollback()
    actions = [e.action for e in model.audit.entries(model=model.name)]
    assert actions == ["model.promote"] * 3 + ["model.rollback"] * 2
    assert model.audit.verify().ok


def test_rollback_skips_deleted_versions_and_outside_moves(model: ModelUnderTest) -> None:
    for value in (0.80, 0.85, 0.90):
        model.register(_tags(value=value))
    record_alias(model.client, model.name, "1")  # as the pipeline does after its gates
    model.promote("2")
    model.client.set_registered_model_alias(model.name, "champion", "3")  # moved by hand in MLflow
    model.client.delete_model_version(model.name, "2")
    result = model.rollback()
    assert result.to_version == "1"


def test_user_errors(model: ModelUnderTest) -> None:
    with pytest.raises(GovmlError, match="no registered model named") as caught:
        promote(model.client, "no-such-model", "1", audit=model.audit)
    assert caught.value.exit_code == 2
    model.register(_tags())
    with pytest.raises(GovmlError, match="has no version '7'"):
        model.promote("7")
    with pytest.raises(GovmlError, match="has no @champion"):
        model.rollback()
    model.client.set_registered_model_tag(model.name, history_tag("champion"), "{broken")
    with pytest.raises(GovmlError, match="not a JSON list"):
        model.promote("1")
    assert model.audit.entries() == []


def test_list_models(model: ModelUnderTest) -> None:
    model.register(_tags(value=0.8))
    model.register(_tags(gates="false", value=0.95))
    model.promote("1")
    (summary,) = [m for m in list_models(model.client) if m.name == model.name]
    assert summary.aliases == {"champion": "1"}
    newest, oldest = summary.versions
    assert (newest.version, newest.gates_passed, newest.failed_gates) == (
        "2",
        False,
        ["demographic_parity_difference"],
    )
    assert (oldest.aliases, oldest.metric_value, oldest.compliance_score) == (
        ["champion"],
        0.8,
        90.0,
    )
