"""Evaluation: metrics, fairness per group, SHAP explanations, privacy risk.

The public names below are imported on first use, so that ``import
govml.evaluation.metrics`` does not pay for fairlearn, SHAP and Presidio.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FairnessReport": "fairness",
    "AttributeFairness": "fairness",
    "GroupMetrics": "fairness",
    "assess_fairness": "fairness",
    "plot_selection_rates": "fairness",
    "ExplanationReport": "explanations",
    "RowExplainer": "explanations",
    "RowExplanations": "explanations",
    "build_row_explainer": "explanations",
    "explain_model": "explanations",
    "PiiScanReport": "privacy",
    "PrivacyRiskReport": "privacy",
    "membership_inference_risk": "privacy",
    "scan_personal_data": "privacy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'govml.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"govml.evaluation.{_EXPORTS[name]}"), name)
