"""SHAP values and fairness counts of large evaluation sets, split into Ray tasks.

Both give what the in-process path gives. SHAP: the rows are cut into consecutive
chunks, each Ray task explains one chunk with the explainer put once in the object
store, and the chunks are joined in order; every explainer govml builds explains a row
on its own (Kernel SHAP seeds its sampling from the row's values), so the split changes
nothing. Fairness: the group labels are made in the driver (quantile bins need every
row), each task counts true/false positives and negatives per group of its chunk, and
the driver sums the counts and derives the rates fairlearn's MetricFrame computes.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from govml.compute.ray_session import engine_executor
from govml.config import ComputeConfig

if TYPE_CHECKING:  # the counting tasks' workers need neither shap nor fairlearn
    from govml.evaluation.explanations import RowExplainer, RowExplanations

DEFAULT_MIN_ROWS_PER_TASK = 50
"""Fewer rows than twice this stay in the driver. Small enough that the shipped examples'
SHAP samples (143 to 500 rows) and test splits are split when the engine is Ray."""
DEFAULT_MAX_ROWS_PER_TASK = 200_000
"""More rows than parallelism x this get more tasks than CPUs, to bound one task's memory."""

# Cells of the confusion matrix, in the order ``2 * y_true + y_pred``.
_TN, _FP, _FN, _TP = range(4)


@dataclass(frozen=True)
class SplitRun:
    """What one split computation did: how many rows, in how many Ray tasks, on how many workers."""

    work: Literal["shap", "fairness"]
    rows: int
    tasks: int
    workers: int

    def describe(self) -> str:
        what = "SHAP values" if self.work == "shap" else "fairness counts"
        return f"{what} of {self.rows} rows computed in {self.tasks} Ray tasks on {self.workers} worker(s)"


def row_chunks(
    n_rows: int, parallelism: int, *, min_rows: int = DEFAULT_MIN_ROWS_PER_TASK,
    max_rows: int = DEFAULT_MAX_ROWS_PER_TASK,
) -> list[slice]:
    """Consecutive slices of ``n_rows`` rows: one per CPU, none under ``min_rows`` or over ``max_rows``."""
    tasks = max(1, min(parallelism, n_rows // min_rows), -(-n_rows // max_rows))
    bounds = np.linspace(0, n_rows, tasks + 1).round().astype(int)
    return [slice(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def _where() -> tuple[str, int]:
    import ray

    return ray.get_runtime_context().get_task_id() or "driver", os.getpid()


def _explain_chunk(explainer: RowExplainer, rows: pd.DataFrame) -> tuple[RowExplanations, tuple[str, int]]:
    return explainer.explain(rows), _where()


def _count_chunk(
    y_true: np.ndarray, y_pred: np.ndarray, codes: np.ndarray, groupings: list[tuple[list[int], list[int]]]
) -> tuple[list[np.ndarray], tuple[str, int]]:
    """Per grouping, a (groups, 4) array of TN, FP, FN, TP counts; a group's key is its mixed-radix code."""
    cell = 2 * y_true.astype(np.int64) + y_pred.astype(np.int64)
    counts = []
    for columns, sizes in groupings:
        key = np.zeros(len(cell), dtype=np.int64)
        for column, size in zip(columns, sizes, strict=True):
            key = key * size + codes[:, column]
        n_groups = int(np.prod(sizes))
        counts.append(np.bincount(4 * key + cell, minlength=4 * n_groups).reshape(n_groups, 4))
    return counts, _where()


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # The same float division as np.mean over the group's 0/1 outcomes; NaN for an empty denominator.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def table_from_counts(counts: np.ndarray, labels: list[np.ndarray]) -> pd.DataFrame:
    """A :data:`~govml.evaluation.fairness.GroupTables` table from summed (groups, 4) counts.

    Groups are numbered in mixed radix over the sorted ``labels`` of each column, which is
    MetricFrame's order (the product of each column's sorted values); empty groups are dropped.
    """
    from govml.evaluation.fairness import INTERSECTION_SEPARATOR

    tn, fp, fn, tp = (counts[:, k] for k in (_TN, _FP, _FN, _TP))
    n = counts.sum(axis=1)
    grids = np.meshgrid(*labels, indexing="ij")
    names = [INTERSECTION_SEPARATOR.join(map(str, parts)) for parts in zip(*(g.ravel() for g in grids), strict=True)]
    table = pd.DataFrame(
        {
            "selection_rate": _rate(fp + tp, n),
            "accuracy": _rate(tn + tp, n),
            "true_positive_rate": _rate(tp, tp + fn),
            "false_positive_rate": _rate(fp, fp + tn),
            "count": n,
        },
        index=names,
    )
    return table[table["count"] > 0]


@dataclass
class RayEvaluation:
    """Splits the SHAP values and fairness counts of large evaluation sets into Ray tasks.

    Its methods are the ``explain_rows`` of :func:`~govml.evaluation.explanations.explain_model`
    and the ``group_tables`` of :func:`~govml.evaluation.fairness.assess_fairness`. Sets of
    fewer than ``2 * min_rows_per_task`` rows are computed in the driver. ``runs`` lists
    what each split computation did, for the run record's notes.
    """

    parallelism: int
    min_rows_per_task: int = DEFAULT_MIN_ROWS_PER_TASK
    max_rows_per_task: int = DEFAULT_MAX_ROWS_PER_TASK
    runs: list[SplitRun] = field(default_factory=list)

    def _chunks(self, n_rows: int) -> list[slice]:
        return row_chunks(n_rows, self.parallelism, min_rows=self.min_rows_per_task, max_rows=self.max_rows_per_task)

    def _record(self, work: Literal["shap", "fairness"], rows: int, where: list[tuple[str, int]]) -> None:
        self.runs.append(SplitRun(work, rows, len({t for t, _ in where}), len({p for _, p in where})))

    def explain_rows(self, explainer: RowExplainer, X: pd.DataFrame) -> RowExplanations:
        """SHAP values of ``X``'s rows, chunk by chunk in Ray tasks, joined in row order."""
        chunks = self._chunks(len(X))
        if len(chunks) == 1:
            return explainer.explain(X)
        import ray

        from govml.evaluation.explanations import RowExplanations

        explainer_ref = ray.put(explainer)  # once: every task reads the same copy
        task = ray.remote(num_cpus=1, max_retries=0)(_explain_chunk)
        results = ray.get([task.remote(explainer_ref, X.iloc[chunk]) for chunk in chunks])
        self._record("shap", len(X), [where for _, where in results])
        parts = [part for part, _ in results]
        picked = [p.output_class for p in parts]
        return RowExplanations(
            feature_names=parts[0].feature_names,
            values=np.concatenate([p.values for p in parts]),
            base_values=np.concatenate([p.base_values for p in parts]),
            output=parts[0].output,
            output_class=None if picked[0] is None else np.concatenate(picked),  # type: ignore[arg-type]
        )

    def group_tables(self, y_true: np.ndarray, y_pred: np.ndarray, groupings: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """Per-group tables of every grouping from counts summed over Ray tasks."""
        chunks = self._chunks(len(y_true))
        if len(chunks) == 1:
            from govml.evaluation.fairness import metric_frame_tables

            return metric_frame_tables(y_true, y_pred, groupings)
        import ray

        # Every grouping's columns coded once: sorted labels, so codes follow MetricFrame's order.
        labels: dict[Any, np.ndarray] = {}
        coded: dict[Any, np.ndarray] = {}
        for groups in groupings:
            for column in groups.columns:
                if column not in labels:
                    coded[column], labels[column] = pd.factorize(groups[column], sort=True)
        names = list(labels)
        codes = np.column_stack([coded[c].astype(np.int64) for c in names])
        specs = [
            ([names.index(c) for c in groups.columns], [len(labels[c]) for c in groups.columns])
            for groups in groupings
        ]
        task = ray.remote(num_cpus=1, max_retries=0)(_count_chunk)
        results = ray.get([task.remote(y_true[c], y_pred[c], codes[c], specs) for c in chunks])
        self._record("fairness", len(y_true), [where for _, where in results])
        totals = [sum(part[g] for part, _ in results) for g in range(len(groupings))]
        return [
            table_from_counts(total, [np.asarray(labels[c]) for c in groups.columns])
            for total, groups in zip(totals, groupings, strict=True)
        ]


def evaluation_executor(config: ComputeConfig) -> AbstractContextManager[RayEvaluation | None]:
    """Who computes SHAP values and fairness counts: None (in process) for ``local``, Ray tasks for ``ray``."""
    return engine_executor(config, lambda cpus: RayEvaluation(parallelism=cpus))
