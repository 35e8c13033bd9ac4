"""Bias mitigation (fairlearn) and differentially private training (diffprivlib).

Public names are imported on first use: fairlearn and diffprivlib load only when needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FairnessMitigatedClassifier": "fairness",
    "MitigationCandidate": "fairness",
    "MitigationResult": "fairness",
    "mitigate": "fairness",
    "plot_tradeoff": "fairness",
    "DPTrainingResult": "dp",
    "train_dp_model": "dp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'govml.mitigation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"govml.mitigation.{_EXPORTS[name]}"), name)
