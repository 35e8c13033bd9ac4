"""Pure metrics for a binary safety decision (1 = unsafe / blocked)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel


class BinaryMetrics(BaseModel):
    """Counts and rates of a safe/unsafe decision; rates are ``None`` when undefined."""

    n: int
    positives: int
    negatives: int
    true_positives: int
    false_positives: int
    precision: float | None
    recall: float | None
    f1: float | None
    false_positive_rate: float | None


def binary_metrics(truth: Sequence[bool], predicted: Sequence[bool]) -> BinaryMetrics:
    """Precision, recall, F1 and false-positive rate of ``predicted`` against ``truth``."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    fp = sum((not t) and p for t, p in zip(truth, predicted, strict=True))
    positives = sum(bool(t) for t in truth)
    negatives = len(truth) - positives
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / positives if positives else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall
        else None
    )
    return BinaryMetrics(
        n=len(truth),
        positives=positives,
        negatives=negatives,
        true_positives=tp,
        false_positives=fp,
        precision=precision,
        recall=recall,
        f1=f1,
        false_positive_rate=fp / negatives if negatives else None,
    )


def rate(flags: Sequence[bool]) -> float | None:
    """Share of ``True`` in ``flags`` (``None`` for an empty sequence)."""
    return sum(bool(f) for f in flags) / len(flags) if flags else None
