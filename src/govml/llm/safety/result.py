"""The typed result of a safety check, and how layer risks combine into one score."""

from __future__ import annotations

from pydantic import BaseModel, Field

from govml.pii import PiiFinding


class GuardResult(BaseModel):
    """What a prompt or answer check found.

    ``safety_score`` is 1 minus the highest layer risk (1 = safe); ``flagged`` is true
    when it falls below the guard's threshold. ``layers`` holds each layer's risk in
    [0, 1] and ``category_scores`` each classifier head's raw probability.
    Personal data is reported in ``pii`` and ``categories`` (as ``"pii"``) but does not
    lower the score: it is handled by redaction, not by refusal.
    """

    safety_score: float = Field(ge=0.0, le=1.0)
    flagged: bool
    categories: list[str]
    layers: dict[str, float]
    category_scores: dict[str, float] = Field(default_factory=dict)
    rule_matches: list[str] = Field(default_factory=list)
    normalisation: list[str] = Field(default_factory=list)
    pii: list[PiiFinding] = Field(default_factory=list)
    redacted_text: str


def scaled_risk(probability: float, threshold: float) -> float:
    """Map a head's probability to a risk where its decision threshold sits at 0.5,
    linearly on each side, so heads with different thresholds compare on one scale."""
    p = min(max(float(probability), 0.0), 1.0)
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1 - t)


def combine(layers: dict[str, float]) -> float:
    """Safety score from layer risks: 1 minus the highest risk (any one layer can veto)."""
    return 1.0 - max(layers.values(), default=0.0)
