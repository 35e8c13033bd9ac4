"""The machine-readable model card of a run, after Mitchell et al. (2019), "Model Cards
for Model Reporting".

:func:`build_model_card` turns a run record into a JSON-able dict with the paper's
sections (model details, intended use, factors, metrics, evaluation data, training data,
quantitative analyses, ethical considerations, caveats and recommendations) plus the
compliance checklist. The record is read as the plain dict of
``RunRecord.model_dump(mode="json")`` so that a record written by an older or newer
govml still renders; a stage that did not run is ``None`` in the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from govml.record import RunRecord

SCHEMA = "govml.model_card/v1"
CITATION = (
    "Mitchell, M. et al. (2019). Model Cards for Model Reporting. "
    "FAT* '19. https://doi.org/10.1145/3287560.3287596"
)


def as_record_dict(record: Mapping[str, Any] | RunRecord) -> dict[str, Any]:
    """The record as the plain JSON dict everything here reads."""
    if isinstance(record, RunRecord):
        return record.model_dump(mode="json")
    if not isinstance(record, Mapping):
        raise TypeError(f"expected a RunRecord or its dict, got {type(record).__name__}")
    return dict(record)


def dig(data: Any, path: str, default: Any = None) -> Any:
    """``data["a"]["b"]`` for ``path="a.b"``, or ``default`` where a level is missing."""
    for key in path.split("."):
        if not isinstance(data, Mapping) or data.get(key) is None:
            return default
        data = data[key]
    return data


def build_model_card(record: Mapping[str, Any] | RunRecord) -> dict[str, Any]:
    """The JSON model card of a run (see the module docstring for its sections)."""
    rec = as_record_dict(record)
    return {
        "schema": SCHEMA,
        "reference": CITATION,
        "model_details": _model_details(rec),
        "intended_use": {
            "intended_use": dig(rec, "config.governance.intended_use"),
            "out_of_scope_use": dig(rec, "config.governance.out_of_scope_use"),
        },
        "factors": _factors(rec),
        "metrics": _metrics(rec),
        "evaluation_data": _evaluation_data(rec),
        "training_data": _training_data(rec),
        "quantitative_analyses": {
            "fairness": rec.get("fairness"),
            "fairness_before_mitigation": rec.get("fairness_before_mitigation"),
            "mitigation": rec.get("mitigation"),
            "explanations": rec.get("explanations"),
        },
        "ethical_considerations": {
            "privacy": rec.get("privacy"),
            "environmental_impact": rec.get("carbon"),
        },
        "compliance": rec.get("compliance"),
        "caveats_and_recommendations": caveats(rec),
    }


def caveats(rec: Mapping[str, Any]) -> list[str]:
    """Stated limitations, then what the run itself flags: failed gates, drift, small
    groups, missing intervals, an exhausted carbon budget, stages that did not run."""
    items = [str(text) for text in dig(rec, "config.governance.limitations", [])]
    if rec.get("failed_gates"):
        mode = dig(rec, "config.responsible_ai.requirements", "advisory")
        items.append(f"Failed gates ({mode} mode): {', '.join(rec['failed_gates'])}.")
    drifted = dig(rec, "features.drift.drifted_columns", [])
    if drifted:
        items.append(
            "Distribution drift between training and evaluation data in: "
            + ", ".join(drifted)
            + "."
        )
    for attribute in dig(rec, "fairness.attributes", []):
        if attribute.get("excluded_groups"):
            items.append(
                f"Fairness for {attribute['attribute']}: groups too small to score "
                f"({', '.join(attribute['excluded_groups'])}); their metrics are not reliable."
            )
    metrics = dig(rec, "evaluation.metrics", {})
    if metrics and all(m.get("ci_low") is None for m in metrics.values()):
        items.append("No confidence intervals were computed for the test metrics.")
    if dig(rec, "carbon.budget_exhausted"):
        items.append(
            f"The carbon budget ({dig(rec, 'carbon.budget_kg')} kg CO2e) stopped the "
            "hyperparameter search early; a larger search may find a better model."
        )
    dropped = dig(rec, "data.rows_dropped", 0)
    if dropped:
        items.append(f"{dropped} rows failed validation and were dropped before training.")
    missing = [name for name in ("fairness", "explanations", "privacy") if rec.get(name) is None]
    if missing:
        items.append("Not assessed in this run: " + ", ".join(missing) + ".")
    return items


def _model_details(rec: Mapping[str, Any]) -> dict[str, Any]:
    registration = rec.get("registration") or {}
    return {
        "name": rec.get("pipeline"),
        "description": dig(rec, "config.description"),
        "version": registration.get("version"),
        "model_id": registration.get("model_id"),
        "model_uri": registration.get("model_uri"),
        "aliases": registration.get("aliases", []),
        "model_type": dig(rec, "training.model_type"),
        "task": dig(rec, "data.task"),
        "classes": dig(rec, "data.classes", []),
        "hyperparameters": dig(rec, "training.best_params", {}),
        "owner": dig(rec, "config.governance.owner"),
        "run_id": rec.get("run_id"),
        "tracking_uri": rec.get("tracking_uri"),
        "started_at": rec.get("started_at"),
        "finished_at": rec.get("finished_at"),
        "status": rec.get("status"),
        "govml_version": rec.get("govml_version"),
        "requirements": dig(rec, "config.responsible_ai.requirements"),
        "data_licence": dig(rec, "config.data.licence"),
    }


def _factors(rec: Mapping[str, Any]) -> dict[str, Any]:
    attributes = dig(rec, "fairness.attributes", [])
    return {
        "sensitive_attributes": dig(rec, "config.responsible_ai.sensitive_attributes", []),
        "evaluated_groups": {
            a["attribute"]: [g["group"] for g in a.get("groups", [])] for a in attributes
        },
    }


def _metrics(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    evaluation = rec.get("evaluation")
    if evaluation is None:
        return None
    return {
        "primary_metric": evaluation.get("primary_metric"),
        "higher_is_better": evaluation.get("higher_is_better"),
        "evaluated_on": evaluation.get("evaluated_on"),
        "n_rows": evaluation.get("n_rows"),
        "performance": [
            {
                "metric": name,
                "value": value.get("value"),
                "confidence_interval": None
                if value.get("ci_low") is None
                else {"level": 0.95, "lower": value.get("ci_low"), "upper": value.get("ci_high")},
            }
            for name, value in evaluation.get("metrics", {}).items()
        ],
        "baselines": evaluation.get("baselines", []),
        "best_baseline": evaluation.get("best_baseline"),
        "improvement_pct": evaluation.get("improvement_pct"),
    }


def _evaluation_data(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    data = rec.get("data")
    if data is None:
        return None
    return {
        "source": data.get("test_path") or f"held-out split of {data.get('train_path')}",
        "rows": (data.get("split_rows") or {}).get("test"),
        "drift_from_training": dig(rec, "features.drift"),
    }


def _training_data(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    data = rec.get("data")
    if data is None:
        return None
    return {
        "source": data.get("train_path"),
        "provenance": dig(rec, "config.data.source"),
        "licence": dig(rec, "config.data.licence"),
        "sha256": data.get("data_hash"),
        "rows_read": data.get("rows_read"),
        "rows_dropped": data.get("rows_dropped"),
        "split_rows": data.get("split_rows"),
        "target": data.get("target"),
        "class_balance": data.get("class_balance"),
        "validation_policy": data.get("policy"),
        "validation_issue_count": data.get("issue_count"),
        "features": {
            "numeric": dig(rec, "features.numeric", []),
            "categorical": dig(rec, "features.categorical", []),
        },
    }
